//! `imagegen lock` and `imagegen builders ...`.

use super::args::{BuildersCommand, LockArgs};
use super::commands::print_json;
use super::context::Context;
use crate::error::{Result, exit};
use crate::imagebuilder::cache::PruneAction;
use crate::key::short_hash;
use crate::lock::Upgrade;
use crate::ops;
use crate::triple::Triple;

pub(crate) fn lock(context: &Context, args: &LockArgs) -> Result<i32> {
    let workspace = context.workspace()?;
    let upgrade = match &args.upgrade {
        None => Upgrade::Missing,
        Some(addresses) if addresses.is_empty() => Upgrade::All,
        Some(addresses) => Upgrade::Only(
            addresses
                .iter()
                .map(|text| Triple::parse(text))
                .collect::<Result<_>>()?,
        ),
    };
    let report = ops::lock(&workspace, &upgrade)?;
    if context.json() {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    for change in &report.changes {
        println!(
            "{} {}  {}  sha256 {}  {}  key {}",
            change.change.symbol(),
            change.address,
            change.archive,
            short_hash(&change.archive_sha256),
            change.version_code,
            change.key_id.as_deref().unwrap_or("(not verified)")
        );
        for feed in &change.feeds {
            println!("      feed {feed}");
        }
    }
    if report.written {
        println!("Wrote {}; commit it.", report.path.display());
    } else {
        println!("{} is up to date.", report.path.display());
    }
    Ok(exit::OK)
}

pub(crate) fn builders(context: &Context, command: BuildersCommand) -> Result<i32> {
    let workspace = context.optional_workspace()?;
    match command {
        BuildersCommand::List => {
            let records = ops::list_builders(&workspace)?;
            if context.json() {
                print_json(&records)?;
                return Ok(exit::OK);
            }
            if records.is_empty() {
                eprintln!(
                    "No Image Builders recorded yet; `imagegen builders ensure` fetches the fleet's."
                );
            }
            for record in &records {
                println!(
                    "{}  {:?}  {}  sha256 {}  {:.1} MB",
                    record.triple,
                    record.status,
                    record.archive,
                    short_hash(&record.archive_sha256),
                    record.size as f64 / 1e6
                );
            }
        }
        BuildersCommand::Info { address } => {
            let info = ops::builder_info(&workspace, &Triple::parse(&address)?)?;
            if context.json() {
                print_json(&info)?;
                return Ok(exit::OK);
            }
            println!("{}", info.address);
            if let Some(record) = &info.record {
                println!(
                    "  cached     {:?} at {}",
                    record.status,
                    record
                        .path
                        .as_deref()
                        .unwrap_or(std::path::Path::new("-"))
                        .display()
                );
                println!(
                    "  archive    {} (sha256 {})",
                    record.archive,
                    short_hash(&record.archive_sha256)
                );
                println!(
                    "  signed by  {}",
                    record.key_id.as_deref().unwrap_or("(not verified)")
                );
                println!("  size       {:.1} MB", record.size as f64 / 1e6);
            } else {
                println!(
                    "  cached     no (`imagegen builders ensure {}` fetches it)",
                    info.address
                );
            }
            if let Some(entry) = &info.lock {
                println!(
                    "  locked     {} (sha256 {}), {}",
                    entry.archive,
                    short_hash(&entry.archive_sha256),
                    entry.version_code
                );
            } else {
                println!("  locked     no (`imagegen lock` pins it)");
            }
        }
        BuildersCommand::Ensure { addresses } => {
            let triples = addresses
                .iter()
                .map(|text| Triple::parse(text))
                .collect::<Result<Vec<_>>>()?;
            let json = context.json();
            let mut last_reported = 0u64;
            let ensured = ops::ensure_builders(&workspace, &triples, &mut |triple, progress| {
                if !json && progress.downloaded >= last_reported + 16 * 1024 * 1024 {
                    last_reported = progress.downloaded;
                    eprintln!("  {triple} {:.1} MB", progress.downloaded as f64 / 1e6);
                }
            })?;
            if json {
                print_json(&ensured)?;
            } else {
                for item in &ensured {
                    let verb = if item.fetched { "fetched" } else { "cached" };
                    println!("{verb} {} → {}", item.address, item.path.display());
                }
            }
        }
        BuildersCommand::Verify { addresses } => {
            let triples = addresses
                .iter()
                .map(|text| Triple::parse(text))
                .collect::<Result<Vec<_>>>()?;
            let results = ops::verify_builders(&workspace, &triples)?;
            if context.json() {
                print_json(&results)?;
                return Ok(exit::OK);
            }
            for result in &results {
                let state = match result.state {
                    ops::TreeState::Intact => "intact",
                    ops::TreeState::Damaged => "DAMAGED",
                    ops::TreeState::Unrecorded => {
                        "no digest recorded (fetched by an older imagegen; prune and fetch it again to get one)"
                    }
                    ops::TreeState::Missing => "missing from the cache",
                };
                println!("{}  {state}", result.address);
            }
        }
        BuildersCommand::Prune { force, dry_run } => {
            let report = ops::prune_builders(&workspace, force, dry_run)?;
            if context.json() {
                print_json(&report)?;
                return Ok(exit::OK);
            }
            for item in &report.builders {
                let verb = match item.action {
                    PruneAction::Removed => "removed",
                    PruneAction::WouldRemove => "would remove",
                    PruneAction::Kept => "kept",
                };
                println!("{verb} {}  ({})", item.address, item.reason.describe());
            }
            println!(
                "{:.1} MB {}",
                report.bytes as f64 / 1e6,
                if dry_run { "reclaimable" } else { "freed" }
            );
        }
    }
    Ok(exit::OK)
}
