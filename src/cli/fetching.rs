//! `imagegen lock` and `imagegen builders ...`.

use serde::Serialize;

use super::args::{BuildersCommand, LockArgs};
use super::commands::print_json;
use super::context::Context;
use crate::builders::{self, Triple, Upgrade};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::manifest::LockFile;
use crate::state::Store;

pub(crate) fn lock(context: &Context, args: &LockArgs) -> Result<i32> {
    let fleet = context.load_fleet()?;
    let settings = context.settings(Some(&fleet))?;
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
    let report = builders::lock(&fleet, &settings, &upgrade)?;
    if context.json() {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    for change in &report.changes {
        let symbol = match change.change.as_str() {
            "added" => "+",
            "updated" => "~",
            "removed" => "-",
            _ => " ",
        };
        println!(
            "{symbol} {}  {}  sha256 {}  {}  key {}",
            change.address,
            change.archive,
            crate::key::short_hash(&change.archive_sha256),
            change.version_code,
            change.key_id.as_deref().unwrap_or("(not verified)")
        );
    }
    if report.written {
        println!("Wrote {}; commit it.", report.path.display());
    } else {
        println!("{} is up to date.", report.path.display());
    }
    Ok(exit::OK)
}

pub(crate) fn builders(context: &Context, command: BuildersCommand) -> Result<i32> {
    match command {
        BuildersCommand::List => list(context),
        BuildersCommand::Info { address } => info(context, &address),
        BuildersCommand::Ensure { addresses } => ensure(context, &addresses),
        BuildersCommand::Prune { force, dry_run } => prune(context, force, dry_run),
    }
}

/// Settings with the fleet when there is one (builders commands also work outside a fleet).
fn settings_and_lock(
    context: &Context,
) -> Result<(
    Option<crate::manifest::Fleet>,
    crate::settings::Settings,
    Option<LockFile>,
)> {
    let fleet = context.optional_fleet()?;
    let settings = context.settings(fleet.as_ref())?;
    let lock = match &fleet {
        Some(fleet) => LockFile::read(&crate::plan::lock_path(fleet))?,
        None => None,
    };
    Ok((fleet, settings, lock))
}

fn list(context: &Context) -> Result<i32> {
    let (_, settings, _) = settings_and_lock(context)?;
    let store = Store::open(&settings.db.value, "imagegen builders list")?;
    let records = store.read()?.builders()?;
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
            "{}/{}/{}  {:?}  {}  sha256 {}  {:.1} MB",
            record.release,
            record.target,
            record.subtarget,
            record.status,
            record.archive,
            crate::key::short_hash(&record.archive_sha256),
            record.size as f64 / 1e6
        );
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct BuilderInfo {
    address: String,
    record: Option<crate::state::BuilderRecord>,
    lock: Option<crate::manifest::LockEntry>,
}

fn info(context: &Context, address: &str) -> Result<i32> {
    let triple = Triple::parse(address)?;
    let (_, settings, lock) = settings_and_lock(context)?;
    let store = Store::open(&settings.db.value, "imagegen builders info")?;
    let record = store
        .read()?
        .builder(&triple.release, &triple.target, &triple.subtarget)?;
    let info = BuilderInfo {
        address: format!("builder.{}", triple.key()),
        record,
        lock: lock.and_then(|lock| lock.entries.get(&triple.key()).cloned()),
    };
    if info.record.is_none() && info.lock.is_none() {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("no Image Builder `{}` is recorded or locked", triple.key()),
        )
        .with_help("`imagegen builders list` shows what is recorded"));
    }
    print_json(&info)?;
    Ok(exit::OK)
}

fn ensure(context: &Context, addresses: &[String]) -> Result<i32> {
    let (fleet, settings, lock) = settings_and_lock(context)?;
    let triples = if addresses.is_empty() {
        let fleet = fleet.ok_or_else(|| {
            Error::new(
                ErrorCode::Precondition,
                "no fleet: name the Image Builders to fetch",
            )
        })?;
        builders::fleet_triples(&fleet)
    } else {
        addresses
            .iter()
            .map(|text| Triple::parse(text))
            .collect::<Result<Vec<_>>>()?
    };
    let store = Store::open(&settings.db.value, "imagegen builders ensure")?;
    let mut results = Vec::new();
    for triple in &triples {
        let mut last_reported = 0u64;
        let ensured =
            builders::ensure(&store, &settings, lock.as_ref(), triple, &mut |progress| {
                if !context.json() && progress.downloaded >= last_reported + 16 * 1024 * 1024 {
                    last_reported = progress.downloaded;
                    eprintln!(
                        "  {} {:.1} MB",
                        triple.key(),
                        progress.downloaded as f64 / 1e6
                    );
                }
            })?;
        if !context.json() {
            let verb = if ensured.fetched { "fetched" } else { "cached" };
            println!("{verb} {} → {}", ensured.address, ensured.path.display());
        }
        results.push(ensured);
    }
    if context.json() {
        print_json(&results)?;
    }
    Ok(exit::OK)
}

fn prune(context: &Context, force: bool, dry_run: bool) -> Result<i32> {
    let (_, settings, _) = settings_and_lock(context)?;
    let store = Store::open(&settings.db.value, "imagegen builders prune")?;
    let pruned = builders::prune(&store, &settings, force, dry_run)?;
    if context.json() {
        print_json(&pruned)?;
        return Ok(exit::OK);
    }
    let mut freed = 0;
    for item in &pruned {
        let verb = match (item.removed, dry_run) {
            (true, _) => "removed",
            (false, true) if !item.reason.contains("--force") => "would remove",
            _ => "kept",
        };
        if verb != "kept" {
            freed += item.bytes;
        }
        println!("{verb} {}  ({})", item.address, item.reason);
    }
    println!(
        "{:.1} MB {}",
        freed as f64 / 1e6,
        if dry_run { "reclaimable" } else { "freed" }
    );
    Ok(exit::OK)
}
