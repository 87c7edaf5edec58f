//! `imagegen flash image|write|list` and `imagegen devices`: build the request, call the
//! flash operation (`ops::flash_image`, `ops::flash_artifact`, `ops::flash_list`,
//! `ops::devices`) and render what it returns. The terminal side of a flash (confirmation,
//! progress, test hook) is [`super::flash_observer`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::args::{FlashCommand, FlashListArgs, FlashOptionArgs};
use super::commands::print_json;
use super::context::Context;
use super::flash_observer::CliObserver;
use crate::error::{Result, exit};
use crate::flash::{DeviceCandidate, FlashReport, format_size};
use crate::ops::{self, FlashFilter, FlashListing, FlashOutcome, FlashRequest};
use crate::settings::env_vars;
use crate::state::{FlashRecord, FlashStatus};

pub(crate) fn flash(context: &Context, command: FlashCommand) -> Result<i32> {
    match command {
        FlashCommand::Image(args) => {
            let image = args.image;
            run(
                context,
                args.device,
                &args.options,
                |workspace, request, observer| {
                    ops::flash_image(workspace, &image, request, observer)
                },
            )
        }
        FlashCommand::Write(args) => {
            let artifact = args.artifact;
            run(
                context,
                args.device,
                &args.options,
                |workspace, request, observer| {
                    ops::flash_artifact(workspace, &artifact, request, observer)
                },
            )
        }
        FlashCommand::List(args) => list(context, &args),
    }
}

/// One flash: the request from the flags, the operation, the output.
fn run(
    context: &Context,
    device: std::path::PathBuf,
    options: &FlashOptionArgs,
    operation: impl FnOnce(&ops::Workspace, &FlashRequest, &mut CliObserver) -> Result<FlashOutcome>,
) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    // A dry run writes nothing, so Ctrl-C may simply end it (also while it decompresses).
    let cancel = if options.dry_run {
        Arc::new(AtomicBool::new(false))
    } else {
        crate::exec::install_interrupt_handler()?
    };
    let request = FlashRequest {
        device,
        dry_run: options.dry_run,
        force: options.force,
        wipe: options.wipe,
        verify: options.verify,
        cancel: Some(Arc::clone(&cancel)),
    };
    let hook = context
        .env
        .get(env_vars::IMAGEGEN_TEST_FLASH_BEFORE_VERIFY)
        .cloned();
    let mut observer = CliObserver::new(context.json(), cancel, hook);
    let result = operation(&workspace, &request, &mut observer);
    observer.finish(result.as_ref().err());
    match result {
        Ok(outcome) if context.json() => {
            print_line(&Summary {
                event: "summary",
                outcome: &outcome,
            });
            Ok(exit::OK)
        }
        Ok(outcome) => {
            print_outcome(&outcome);
            Ok(exit::OK)
        }
        // With --json the output stays one JSON object per line, the error last.
        Err(error) if context.json() => {
            print_line(&serde_json::json!({ "error": error }));
            Ok(error.exit_code())
        }
        Err(error) => Err(error),
    }
}

/// The last line of `--json` output, after the run events (as `apply --json` ends):
/// `{"event":"summary","source":…,"device_key":…,"report":…,"record":…}`.
#[derive(serde::Serialize)]
struct Summary<'a> {
    event: &'static str,
    #[serde(flatten)]
    outcome: &'a FlashOutcome,
}

fn print_line(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

fn print_outcome(outcome: &FlashOutcome) {
    if let Some(artifact) = &outcome.source.artifact {
        let from = match (&artifact.profile_id, &artifact.build_key) {
            (Some(profile), Some(key)) => {
                format!(" of `{profile}`, build {}", key.get(..12).unwrap_or(key))
            }
            _ => String::new(),
        };
        println!(
            "Artifact `{}` ({}{from}), sha256 {}",
            artifact.name,
            artifact.kind,
            artifact.sha256.get(..12).unwrap_or(&artifact.sha256)
        );
    }
    let image = match &outcome.source.artifact {
        Some(artifact) => artifact.name.clone(),
        None => outcome.source.path.display().to_string(),
    };
    print_report(&outcome.report, &image);
    match &outcome.record {
        Some(record) => println!(
            "Recorded as flash #{} of device `{}`.",
            record.id, outcome.device_key
        ),
        None if outcome.report.dry_run => {}
        None => println!("Not recorded."),
    }
}

fn print_report(report: &FlashReport, image: &str) {
    let plan = &report.plan;
    if report.dry_run {
        println!(
            "Dry run: nothing was written. Flashing `{}` would:",
            plan.device_path.display()
        );
        for (number, step) in plan.steps.iter().enumerate() {
            println!("  {}. {step}", number + 1);
        }
        println!("Run it without `--dry-run` to flash (with `--force` to skip the question).");
        return;
    }
    println!(
        "Flashed `{image}` ({}) to `{}`: {}",
        plan.image.format.as_str(),
        plan.device.node.display(),
        plan.device.describe()
    );
    if report.wiped_bytes > 0 {
        println!(
            "  wiped {} at both ends",
            format_size(report.wiped_bytes / 2)
        );
    }
    println!(
        "  wrote {} in {:.1} s",
        format_size(report.bytes_written),
        report.write_ms as f64 / 1000.0
    );
    match &report.verification {
        Some(verification) => println!(
            "  verified {}: the SHA-256 of all {} blocks read back matches ({:.1} s)",
            format_size(verification.bytes),
            verification.blocks,
            report.verify_ms as f64 / 1000.0
        ),
        None => println!("  not verified (`--verify none`)"),
    }
}

fn list(context: &Context, args: &FlashListArgs) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    let filter = FlashFilter {
        device: args.device.clone(),
        limit: args.limit,
    };
    let listing = ops::flash_list(&workspace, &filter)?;
    if context.json() {
        print_json(&listing)?;
    } else if listing.flashes.is_empty() {
        eprintln!(
            "No flashes recorded{}.",
            match &args.device {
                Some(device) => format!(" for `{device}`"),
                None => String::new(),
            }
        );
    } else {
        print!("{}", listing_text(&listing));
    }
    Ok(exit::OK)
}

/// Devices first (what each holds, suspect ones loudly), then the attempts, newest first.
fn listing_text(listing: &FlashListing) -> String {
    let mut text = String::from("Devices:\n");
    for device in &listing.devices {
        text.push_str(&format!(
            "  {}  {}  (flash #{}, {}, {})\n",
            device.key,
            device.describe(),
            device.last_flash_id,
            utc(device.updated_at),
            device.node.display()
        ));
    }
    text.push_str("Flashes, newest first:\n");
    for entry in &listing.flashes {
        let record = &entry.record;
        let mut status = record.status.describe().to_string();
        if let Some(later) = entry.superseded_by {
            status.push_str(&format!(", superseded by #{later}"));
        }
        text.push_str(&format!(
            "  #{}  {}  {} -> {}  {}\n",
            record.id,
            utc(record.started_at),
            image_label(record),
            record.device_node.display(),
            status
        ));
        text.push_str(&format!("      {}\n", facts(record)));
        if let Some(error) = &record.error {
            text.push_str(&format!("      error[{}]: {}\n", error.code, error.message));
        }
    }
    text
}

fn image_label(record: &FlashRecord) -> String {
    let name = match &record.artifact {
        Some(artifact) => match &artifact.profile_id {
            Some(profile) => format!("{profile}:{} ({})", artifact.kind, artifact.name),
            None => artifact.name.clone(),
        },
        None => record.image_path.display().to_string(),
    };
    let sha = record
        .image_sha256
        .get(..12)
        .unwrap_or(&record.image_sha256);
    format!("{name} [{sha}]")
}

/// `device lab-sd-1, 9.0 MiB written, wiped, verify full: matched`.
fn facts(record: &FlashRecord) -> String {
    let mut facts = Vec::new();
    if let Some(device) = &record.device_id {
        facts.push(format!("fleet device {device}"));
    }
    facts.push(format!("{} written", format_size(record.bytes_written)));
    if record.wipe {
        facts.push("wiped".to_string());
    }
    let verified = match (&record.verification, record.status) {
        (Some(result), _) if result.matched => "matched".to_string(),
        (Some(result), _) => match result.mismatch_offset {
            Some(offset) => format!("MISMATCH at byte {offset}"),
            None => "MISMATCH".to_string(),
        },
        (None, FlashStatus::InProgress) => "not reached".to_string(),
        (None, _) if record.verify_mode == "none" => "skipped".to_string(),
        (None, _) => "not reached".to_string(),
    };
    facts.push(format!("verify {}: {verified}", record.verify_mode));
    facts.join(", ")
}

/// `2026-11-30 18:04:05 UTC`.
fn utc(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub(crate) fn devices(context: &Context) -> Result<i32> {
    let candidates = ops::devices();
    if context.json() {
        print_json(&candidates)?;
        return Ok(exit::OK);
    }
    if candidates.is_empty() {
        println!("No disks with a medium found.");
        return Ok(exit::OK);
    }
    for candidate in &candidates {
        print!("{}", device_text(candidate));
    }
    Ok(exit::OK)
}

fn device_text(candidate: &DeviceCandidate) -> String {
    let device = &candidate.device;
    let mut flags = Vec::new();
    if device.removable {
        flags.push("removable");
    }
    if device.rotational {
        flags.push("rotational");
    }
    if device.read_only {
        flags.push("read-only");
    }
    let mut text = format!(
        "{}  {}  {}",
        device.node.display(),
        format_size(device.size),
        device.transport.as_deref().unwrap_or("-")
    );
    for part in [device.model.as_deref(), device.serial.as_deref()]
        .into_iter()
        .flatten()
    {
        text.push_str(&format!("  {part}"));
    }
    if !flags.is_empty() {
        text.push_str(&format!("  ({})", flags.join(", ")));
    }
    text.push('\n');
    if let Some(file) = &device.backing_file {
        text.push_str(&format!("    backing file: {}\n", file.display()));
    }
    for link in &device.by_id {
        text.push_str(&format!("    {}\n", link.display()));
    }
    for partition in &device.partitions {
        let mounted = if partition.mountpoints.is_empty() {
            String::new()
        } else {
            format!(", mounted on {}", partition.mountpoints.join(", "))
        };
        text.push_str(&format!(
            "    {} {}{mounted}\n",
            partition.name,
            format_size(partition.size)
        ));
    }
    match &candidate.refusal {
        Some(refusal) => text.push_str(&format!(
            "    refused [{}]: {}\n",
            refusal.code, refusal.message
        )),
        None => text.push_str("    can be flashed\n"),
    }
    text
}
