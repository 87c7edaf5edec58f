//! `validate`, `plan`, `config` and `profiles ...`: parse, call one operation, render.

use serde::Serialize;

use super::args::{
    FormatArg, PlanArgs, ProfileFilterArgs, ProfilesCommand, SelectionArgs, ValidateArgs,
};
use super::context::Context;
use crate::error::{Error, Result, exit, printable};
use crate::manifest::{self, ProfileFilter};
use crate::ops::{self, PlanRequest, ValidateRequest};
use crate::plan::{self, FlashPermission, Selection};
use crate::source::Format;

/// Prints a `Serialize` value as pretty JSON on stdout, streamed: a plan with pinned feeds
/// lists every package of every build (tens of MB for a large fleet), which is never held
/// as one string.
pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(|error| Error::internal(format!("cannot serialize output: {error}")))?;
    writeln!(out)
        .and_then(|()| out.flush())
        .map_err(|error| Error::io("writing", std::path::Path::new("standard output"), error))
}

/// `1 profile`, `2 profiles`.
pub(crate) fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

pub(crate) fn validate(context: &Context, args: &ValidateArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let request = ValidateRequest {
        locked: args.locked,
        strict: args.strict,
    };
    let report = ops::validate(&workspace, &request)?;
    if context.json() {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    for notice in &report.notices {
        eprintln!("note: {notice}");
    }
    let checked = if report.skipped.is_empty() {
        "valid"
    } else {
        "valid as far as it could be checked"
    };
    println!(
        "Fleet `{}` is {checked}: {}, {}.",
        report.fleet,
        plural(report.profiles, "profile"),
        plural(report.devices, "device")
    );
    for skipped in &report.skipped {
        println!(
            "Not checked: {} for {} ({}): {}",
            skipped.check,
            plural(skipped.profiles.len(), "profile"),
            skipped.builders.join(", "),
            skipped.reason
        );
        println!("hint: {}; `--strict` makes this an error", skipped.hint);
    }
    Ok(exit::OK)
}

pub(crate) fn plan(context: &Context, args: &PlanArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let request = PlanRequest {
        locked: args.locked,
        selection: to_selection(&args.selection, &[]),
        allow_flash: to_permission(&args.flash),
    };
    let plan = ops::plan(&workspace, &request)?;
    if let Some(out) = &args.out {
        ops::save_plan(&plan, out)?;
    }
    if context.json() {
        print_json(&plan)?;
    } else {
        print!("{}", printable(&plan::render_text(&plan, args.verbose)));
        if let Some(out) = &args.out {
            println!(
                "\nSaved the plan to `{}`; run `imagegen apply {}` to carry it out.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

/// The selection options, plus profile ids given as positional arguments (`build`).
/// `--flash` (alone: every device) and `--flash DEVICE_ID` (repeatable).
pub(crate) fn to_permission(flags: &[String]) -> FlashPermission {
    if flags.iter().any(String::is_empty) {
        return FlashPermission::all();
    }
    let mut devices = flags.to_vec();
    devices.sort();
    devices.dedup();
    FlashPermission {
        all: false,
        devices,
    }
}

pub(crate) fn to_selection(args: &SelectionArgs, profiles: &[String]) -> Selection {
    let mut ids = profiles.to_vec();
    ids.extend(args.profiles.iter().cloned());
    Selection {
        targets: args.targets.clone(),
        profiles: ids,
        tags: args.tags.clone(),
        release: args.release.clone(),
        builder: args.builder.clone(),
    }
}

pub(crate) fn config(context: &Context) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    let entries = workspace.config();
    if context.json() {
        print_json(&entries)?;
        return Ok(exit::OK);
    }
    let width = entries
        .iter()
        .map(|entry| entry.name.len())
        .max()
        .unwrap_or(0);
    for entry in &entries {
        let value = match &entry.value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        println!("{:width$}  {value}  ({})", entry.name, entry.origin);
    }
    Ok(exit::OK)
}

pub(crate) fn profiles(context: &Context, command: ProfilesCommand) -> Result<i32> {
    match command {
        ProfilesCommand::List(filter) => profiles_list(context, &filter),
        ProfilesCommand::Show { profile_id } => profiles_show(context, &profile_id),
        ProfilesCommand::Validate { files } if files.is_empty() => {
            validate(context, &ValidateArgs::default())
        }
        ProfilesCommand::Validate { files } => {
            let valid = ops::validate_profile_files(&files)?;
            if context.json() {
                print_json(&valid)?;
            } else {
                for item in &valid {
                    println!("ok: {} ({})", item.file, item.profile_id);
                }
            }
            Ok(exit::OK)
        }
        ProfilesCommand::Import {
            files,
            format,
            force,
        } => {
            let workspace = context.workspace()?;
            let written = ops::import_profiles(&workspace, &files, format.map(to_format), force)?;
            if context.json() {
                print_json(&written)?;
            } else {
                for item in &written {
                    println!("imported {} → {}", item.profile_id, item.file);
                }
                println!("Run `imagegen plan` to see what the new profiles would build.");
            }
            Ok(exit::OK)
        }
        ProfilesCommand::Export {
            profile_ids,
            format,
            out,
            filter,
        } => {
            let workspace = context.workspace()?;
            let format = to_format(format);
            let report = ops::export_profiles(
                &workspace,
                &profile_ids,
                &to_filter(&filter),
                format,
                out.as_deref(),
            )?;
            if context.json() && out.is_none() {
                print_json(&report.profiles)?;
            } else if context.json() {
                print_json(&report.files)?;
            }
            for file in &report.files {
                eprintln!("wrote {}", file.display());
            }
            if !context.json() {
                for (index, text) in report.texts.iter().enumerate() {
                    if index > 0 && format == Format::Yaml {
                        println!("---");
                    }
                    print!("{text}");
                }
            }
            Ok(exit::OK)
        }
    }
}

pub(crate) fn to_filter(args: &ProfileFilterArgs) -> ProfileFilter {
    ProfileFilter {
        tag: args.tag.clone(),
        release: args.release.clone(),
        target: args.target.clone(),
        subtarget: args.subtarget.clone(),
        device: args.device.clone(),
    }
}

fn to_format(format: FormatArg) -> Format {
    match format {
        FormatArg::Yaml => Format::Yaml,
        FormatArg::Json => Format::Json,
        FormatArg::Toml => Format::Toml,
    }
}

fn profiles_list(context: &Context, filter: &ProfileFilterArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let rows = ops::list_profiles(&workspace, &to_filter(filter))?;
    if context.json() {
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!("No profiles match.");
        return Ok(exit::OK);
    }
    let id_width = rows
        .iter()
        .map(|row| row.profile_id.len())
        .max()
        .unwrap_or(0)
        .max(10);
    println!(
        "{:id_width$}  {:12}  {:24}  IMAGE BUILDER PROFILE",
        "PROFILE", "RELEASE", "TARGET"
    );
    for row in &rows {
        let target = format!("{}/{}", row.target, row.subtarget);
        let line = format!(
            "{:id_width$}  {:12}  {:24}  {}",
            row.profile_id, row.openwrt_release, target, row.imagebuilder_profile
        );
        println!("{}", printable(&line));
    }
    Ok(exit::OK)
}

fn profiles_show(context: &Context, profile_id: &str) -> Result<i32> {
    let workspace = context.workspace()?;
    let detail = ops::show_profile(&workspace, profile_id)?;
    if context.json() {
        print_json(&detail.profile)?;
    } else {
        println!("# {}", detail.file);
        let text = manifest::export_profile(&detail.profile, Format::Yaml)?;
        print!("{}", printable(&text));
    }
    Ok(exit::OK)
}
