//! `imagegen builds ...`, `imagegen artifacts ...` and `imagegen gc`: what the store holds.

use std::collections::BTreeSet;

use serde::Serialize;

use super::args::{ArtifactsCommand, BuildsCommand, GcArgs};
use super::commands::print_json;
use super::context::Context;
use crate::error::{Error, ErrorCode, Result, exit};
use crate::settings::Settings;
use crate::state::{BuildRecord, Store};

/// Settings for commands that work with or without a fleet.
fn settings(context: &Context) -> Result<Settings> {
    let fleet = context.optional_fleet()?;
    context.settings(fleet.as_ref())
}

pub(crate) fn builds(context: &Context, command: BuildsCommand) -> Result<i32> {
    let settings = settings(context)?;
    let store = Store::open(&settings.db.value, "imagegen builds")?;
    let records = store.read()?.builds()?;
    match command {
        BuildsCommand::List => {
            if context.json() {
                print_json(&records)?;
            } else if records.is_empty() {
                eprintln!("No builds recorded yet; `imagegen apply` builds the fleet.");
            } else {
                for record in &records {
                    println!(
                        "{}  {:?}  {}  {} artifacts",
                        crate::key::short_hash(&record.key),
                        record.status,
                        record.profile_id,
                        record.artifacts.len()
                    );
                }
            }
        }
        BuildsCommand::Show { key } => {
            let record = find_build(&records, &key)?;
            print_json(record)?;
        }
        BuildsCommand::Log { key } => {
            let record = find_build(&records, &key)?;
            let path = record.log_path.as_ref().ok_or_else(|| {
                Error::new(
                    ErrorCode::BuildNotFound,
                    format!("build `{key}` has no log (it was reused, not built here)"),
                )
            })?;
            let text =
                std::fs::read_to_string(path).map_err(|error| Error::io("reading", path, error))?;
            print!("{text}");
        }
    }
    Ok(exit::OK)
}

fn find_build<'a>(records: &'a [BuildRecord], prefix: &str) -> Result<&'a BuildRecord> {
    let matches: Vec<&BuildRecord> = records
        .iter()
        .filter(|record| record.key.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::new(
            ErrorCode::BuildNotFound,
            format!("no recorded build `{prefix}`"),
        )
        .with_help("`imagegen builds list` shows the keys")),
        _ => Err(Error::new(
            ErrorCode::Validation,
            format!(
                "`{prefix}` matches {} builds; give more digits",
                matches.len()
            ),
        )),
    }
}

pub(crate) fn artifacts(context: &Context, command: ArtifactsCommand) -> Result<i32> {
    let settings = settings(context)?;
    let store = Store::open(&settings.db.value, "imagegen artifacts")?;
    let records = store.read()?.artifacts()?;
    let cas = crate::cas::Cas::open(&settings.artifacts_dir.value)?;
    match command {
        ArtifactsCommand::List => {
            if context.json() {
                print_json(&records)?;
            } else {
                for record in &records {
                    println!(
                        "{}  {:<14} {:>10}  {}",
                        crate::key::short_hash(&record.sha256),
                        record.kind,
                        record.size,
                        record.name
                    );
                }
            }
        }
        ArtifactsCommand::Show { sha256 } => {
            let matches: Vec<_> = records
                .iter()
                .filter(|record| record.sha256.starts_with(&sha256))
                .collect();
            let [record] = matches.as_slice() else {
                return Err(Error::new(
                    ErrorCode::ArtifactNotFound,
                    format!("no single artifact `{sha256}` ({} match)", matches.len()),
                ));
            };
            let value = serde_json::json!({ "artifact": record, "path": cas.blob_path(&record.sha256), "present": cas.contains(&record.sha256) });
            print_json(&value)?;
        }
        ArtifactsCommand::Verify => return verify(context, &cas, &records),
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct VerifyReport {
    checked: usize,
    missing: Vec<String>,
    corrupted: Vec<String>,
}

/// Re-hashes every recorded artifact. A corrupted blob is deleted (it can never be trusted
/// again); the builds that produced it then plan as "artifacts missing" and are rebuilt.
fn verify(
    context: &Context,
    cas: &crate::cas::Cas,
    records: &[crate::state::ArtifactRecord],
) -> Result<i32> {
    let mut report = VerifyReport {
        checked: 0,
        missing: Vec::new(),
        corrupted: Vec::new(),
    };
    for record in records {
        report.checked += 1;
        if !cas.contains(&record.sha256) {
            report.missing.push(record.sha256.clone());
        } else if !cas.verify(&record.sha256)? {
            cas.remove(&record.sha256)?;
            report.corrupted.push(record.sha256.clone());
        }
    }
    if report.missing.is_empty() && report.corrupted.is_empty() {
        if context.json() {
            print_json(&report)?;
        } else {
            println!("{} artifacts verified; all intact.", report.checked);
        }
        return Ok(exit::OK);
    }
    Err(Error::new(
        ErrorCode::InternalError,
        format!(
            "artifact store damaged: {} corrupted (removed), {} missing, of {} artifacts",
            report.corrupted.len(),
            report.missing.len(),
            report.checked
        ),
    )
    .with_details(serde_json::to_value(&report).unwrap_or_default())
    .with_help("run `imagegen plan` to see what will be rebuilt, then `imagegen apply`"))
}

#[derive(Serialize)]
struct GcReport {
    dry_run: bool,
    removed_blobs: usize,
    removed_builds: usize,
    bytes: u64,
}

pub(crate) fn gc(context: &Context, args: &GcArgs) -> Result<i32> {
    let settings = settings(context)?;
    let store = Store::open(&settings.db.value, "imagegen gc")?;
    let cas = crate::cas::Cas::open(&settings.artifacts_dir.value)?;
    let reader = store.read()?;
    let pointed: BTreeSet<String> = reader
        .all_profile_pointers()?
        .into_iter()
        .map(|pointer| pointer.build_key)
        .collect();
    let cutoff = crate::state::unix_now() - (args.keep_days as i64) * 86_400;
    let builds = reader.builds()?;
    let (kept, dropped): (Vec<&BuildRecord>, Vec<&BuildRecord>) = builds
        .iter()
        .partition(|build| pointed.contains(&build.key) || build.finished_at >= cutoff);
    let live: BTreeSet<&str> = kept
        .iter()
        .flat_map(|build| {
            build
                .artifacts
                .iter()
                .map(|artifact| artifact.sha256.as_str())
        })
        .collect();
    let garbage: Vec<(String, u64)> = cas
        .blobs()?
        .into_iter()
        .filter(|(sha, _)| !live.contains(sha.as_str()))
        .collect();
    let bytes = garbage.iter().map(|(_, size)| size).sum();
    if !args.dry_run {
        let mut writer = store.write()?;
        for build in &dropped {
            writer.remove_build(&build.key)?;
        }
        for (sha, _) in &garbage {
            writer.remove_artifact(sha)?;
        }
        // Records go first: a blob whose record is gone is only wasted space, never a
        // record pointing at nothing.
        writer.commit()?;
        for (sha, _) in &garbage {
            cas.remove(sha)?;
        }
    }
    let report = GcReport {
        dry_run: args.dry_run,
        removed_blobs: garbage.len(),
        removed_builds: dropped.len(),
        bytes,
    };
    if context.json() {
        print_json(&report)?;
    } else {
        let verb = if args.dry_run { "would free" } else { "freed" };
        println!(
            "{verb} {:.1} MB: {} artifacts, {} build records no fleet points at and older than {} days.",
            bytes as f64 / 1e6,
            report.removed_blobs,
            report.removed_builds,
            args.keep_days
        );
    }
    Ok(exit::OK)
}
