//! `imagegen show ADDRESS` and `imagegen graph`: parse, call one operation, render.

use super::args::{GraphArgs, ShowArgs};
use super::commands::{print_json, to_selection};
use super::context::Context;
use crate::error::{Result, exit};
use crate::key::short_hash;
use crate::ops::{self, ActionDetail, PlanRequest};

pub(crate) fn graph(context: &Context, args: &GraphArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let request = PlanRequest {
        locked: false,
        selection: to_selection(&args.selection, &[]),
        ..PlanRequest::default()
    };
    let report = ops::graph(&workspace, &request)?;
    if context.json() {
        print_json(&report)?;
    } else {
        print!("{}", report.dot);
    }
    Ok(exit::OK)
}

pub(crate) fn show(context: &Context, args: &ShowArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let detail = ops::show(&workspace, &args.address)?;
    if context.json() {
        print_json(&detail)?;
    } else {
        print!("{}", render_detail(&detail));
    }
    Ok(exit::OK)
}

/// `imagegen show ADDRESS` for people: the plan's block for the action, then everything
/// behind it.
fn render_detail(detail: &ActionDetail) -> String {
    use std::fmt::Write;
    let action = &detail.action;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  ({:?}, fleet `{}`)",
        action.address, action.action, detail.fleet
    );
    let _ = writeln!(
        out,
        "  key           {}",
        action
            .key
            .as_deref()
            .unwrap_or("(known after an earlier step)")
    );
    if let Some(previous) = &action.previous_key {
        let _ = writeln!(out, "  recorded key  {previous}");
    }
    for reason in &action.reasons {
        let _ = writeln!(out, "  because       {}", reason.text);
    }
    if let Some(primary) = &action.same_inputs_as {
        let _ = writeln!(out, "  same inputs as {primary} (built once, reused here)");
    } else if action.cache_hit {
        let _ = writeln!(
            out,
            "  cache hit     a recorded build with this key is reused"
        );
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(out, "  depends on    {}", list(&action.depends_on));
    let _ = writeln!(out, "  needed by     {}", list(&detail.dependents));
    for (name, value) in &action.details {
        let _ = writeln!(out, "  {name:<13} {value}");
    }
    if let Some(canonical) = &detail.canonical_inputs {
        let _ = writeln!(out, "  key inputs (blake3 of this text is the key):");
        for line in canonical.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(record) = &detail.builder_record {
        let _ = writeln!(
            out,
            "  last result   {:?}, archive {} ({})",
            record.status,
            record.archive,
            short_hash(&record.archive_sha256)
        );
    }
    for (what, record) in [
        ("last result", &detail.current_build),
        ("wanted key", &detail.wanted_build),
    ] {
        if let Some(record) = record {
            let _ = writeln!(
                out,
                "  {what:<13} build {} {:?} ({} artifacts){}",
                short_hash(&record.key),
                record.status,
                record.artifacts.len(),
                record
                    .log_path
                    .as_ref()
                    .map(|log| format!(", log {}", log.display()))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(pointer) = &detail.device_pointer {
        let _ = writeln!(
            out,
            "  last result   flashed {} (flash #{})",
            short_hash(&pointer.artifact_sha256),
            pointer.flash_id
        );
    }
    let nothing_recorded = detail.builder_record.is_none()
        && detail.current_build.is_none()
        && detail.wanted_build.is_none()
        && detail.device_pointer.is_none();
    if nothing_recorded {
        let _ = writeln!(out, "  last result   nothing recorded yet");
    }
    out
}
