//! `imagegen apply` and `imagegen build`: run an operation with the interrupt handler and the
//! terminal's event display, then print where the images are.

use super::args::{ApplyArgs, BuildArgs};
use std::sync::Arc;

use super::commands::{plural, to_permission, to_selection};
use super::context::Context;
use super::display::reporter_for;
use super::flash_confirm::confirm_flashes;
use crate::apply::ApplyReport;
use crate::error::{Result, exit, printable};
use crate::exec::{OutcomeKind, install_interrupt_handler};
use crate::lock::{Change, LockReport};
use crate::ops::{self, ApplyRequest, BuildRequest, ProfileImages, RunHooks};
use crate::plan::{self, Plan};

pub(crate) fn apply(context: &Context, args: &ApplyArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let request = ApplyRequest {
        saved_plan: args
            .plan_file
            .as_deref()
            .map(ops::read_saved_plan)
            .transpose()?,
        locked: args.locked,
        keep_going: args.keep_going,
        selection: to_selection(&args.selection, &[]),
        allow_flash: to_permission(&args.flash),
    };
    let reporter = reporter_for(context.json());
    let cancel = install_interrupt_handler()?;
    let show_plan = |plan: &Plan| {
        if !context.json() {
            match args.verbose {
                true => print!("{}", printable(&plan::render_text(plan, false))),
                false => println!("{}", plan::summary_line(plan)),
            }
        }
        confirm_flashes(plan, args.yes, &cancel)
    };
    let hooks = RunHooks {
        cancel: Arc::clone(&cancel),
        reporter: reporter.as_ref(),
        on_plan: &show_plan,
    };
    let outcome = ops::apply(&workspace, &request, &hooks)?;
    drop(reporter);
    if let Some(locked) = &outcome.locked
        && !context.json()
    {
        print_locked(locked);
    }
    let Some(report) = &outcome.report else {
        if context.json() {
            print_summary_event(&outcome.summary_event());
        } else {
            print!("{}", printable(&plan::render_text(&outcome.plan, false)));
        }
        return Ok(exit::OK);
    };
    if context.json() {
        print_summary_event(&outcome.summary_event());
    } else {
        print_report(report, &outcome.images, &outcome.plan);
    }
    Ok(report.run.exit_code())
}

/// NDJSON: the events came first; the summary is the last line.
fn print_summary_event(line: &serde_json::Value) {
    println!("{}", serde_json::to_string(line).unwrap_or_default());
}

fn print_locked(report: &LockReport) {
    eprintln!(
        "Pinned {} in {}; commit it.",
        plural(report.count(Change::Added), "Image Builder"),
        report.path.display()
    );
}

pub(crate) fn build(context: &Context, args: &BuildArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let request = BuildRequest {
        selection: to_selection(&args.selection, &args.profile_ids),
        force: args.force,
        keep_going: args.keep_going,
        ..BuildRequest::default()
    };
    let reporter = reporter_for(context.json());
    let hooks = RunHooks {
        cancel: install_interrupt_handler()?,
        reporter: reporter.as_ref(),
        on_plan: &|_| Ok(()),
    };
    let outcome = ops::build(&workspace, &request, &hooks)?;
    drop(reporter);
    if context.json() {
        print_summary_event(&outcome.summary_event());
    } else {
        for profile in &outcome.profiles {
            let result = serde_json::to_value(profile.result)
                .ok()
                .and_then(|value| value.as_str().map(str::to_string))
                .unwrap_or_default();
            println!("{}: {result}", profile.profile_id);
            for artifact in &profile.artifacts {
                let path = artifact
                    .bin_dir_path
                    .as_ref()
                    .unwrap_or(&artifact.store_path);
                println!("    {:<12} {}", artifact.artifact.kind, path.display());
            }
            if let Some(error) = &profile.error {
                println!("    error[{}]: {}", error.code, error.message);
            }
            if let Some(log) = &profile.log_path
                && profile.error.is_some()
            {
                println!("    log: {}", log.display());
            }
        }
    }
    Ok(outcome
        .report
        .as_ref()
        .map_or(exit::OK, |report| report.run.exit_code()))
}

fn print_report(report: &ApplyReport, images: &[ProfileImages], plan: &Plan) {
    println!("\nSummary for fleet `{}`:", report.fleet);
    for step in &report.steps {
        let outcome = match (step.outcome, step.cache_hit) {
            (OutcomeKind::Succeeded, true) => "reused (cache hit)".to_string(),
            (kind, _) => kind.as_str().to_string(),
        };
        println!("  {:<44} {outcome}", step.address);
        let current = step
            .profile_id
            .as_ref()
            .and_then(|id| images.iter().find(|images| &images.profile_id == id));
        if let Some(current) = current.filter(|_| step.outcome == OutcomeKind::Succeeded) {
            for located in current.artifacts.iter().filter(|located| {
                !matches!(located.artifact.kind.as_str(), "manifest" | "metadata")
            }) {
                let path = located.bin_dir_path.as_ref().unwrap_or(&located.store_path);
                println!("      {:<12} {}", located.artifact.kind, path.display());
            }
        }
        if let Some(record) = &step.flash {
            println!("      {}", flashed_line(record));
        }
        if let Some(error) = &step.error {
            println!("      error[{}]: {}", error.code, error.message);
        }
        if let Some(reason) = &step.reason {
            println!("      {reason}");
        }
        if let Some(kept) = &step.kept_build_dir {
            println!("      build tree kept in {}", kept.display());
        }
        if let Some(log) = &step.log_path
            && step.outcome != OutcomeKind::Succeeded
        {
            println!("      log: {}", log.display());
        }
    }
    let run = &report.run;
    println!(
        "Apply: {} succeeded, {} failed, {} skipped, {} cancelled in {:.1} s.",
        run.succeeded,
        run.failed,
        run.skipped,
        run.cancelled,
        run.duration_ms as f64 / 1000.0
    );
    if run.interrupted {
        println!(
            "Interrupted: finished steps are recorded; run `imagegen apply` again to continue."
        );
    } else if run.failed > 0 {
        println!(
            "Fix the failures above (see the logs), then run `imagegen apply` again; finished steps are kept."
        );
    } else {
        println!(
            "Images are in the store (paths above); `imagegen artifacts export PROFILE --out DIR` copies them out by name."
        );
    }
    let skipped_flashes = plan
        .actions
        .iter()
        .filter(|action| {
            action.resource == plan::Resource::Flash && action.action == plan::ActionKind::Skip
        })
        .count();
    if skipped_flashes > 0 {
        println!(
            "{} skipped (see the plan); `imagegen apply --flash DEVICE_ID` writes a device.",
            plural(skipped_flashes, "device flash")
        );
    }
}

/// `wrote 12.0 MiB to /dev/loop3 (verified 12.0 MiB); flash #4`.
fn flashed_line(record: &crate::state::FlashRecord) -> String {
    let verified = match &record.verification {
        Some(result) => format!("verified {}", crate::flash::format_size(result.bytes)),
        None => "not verified".to_string(),
    };
    format!(
        "wrote {} to {} ({verified}); flash #{}",
        crate::flash::format_size(record.bytes_written),
        record.device_node.display(),
        record.id
    )
}
