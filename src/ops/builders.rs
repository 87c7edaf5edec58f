//! `lock` and `builders list|info|ensure|prune`: the fleet's Image Builders, pinned and cached.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Workspace;
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::FetchProgress;
use crate::imagebuilder::cache::{self, Ensured, PruneAction, Pruned};
use crate::lock::{self, LockEntry, LockReport, Upgrade};
use crate::state::BuilderRecord;
use crate::triple::Triple;

/// `imagegen lock`: pins every Image Builder the fleet uses into `imagegen.lock`.
pub fn lock(workspace: &Workspace, upgrade: &Upgrade) -> Result<LockReport> {
    lock::lock(workspace.fleet()?, &workspace.settings, upgrade)
}

/// Every Image Builder recorded in the state store.
pub fn list_builders(workspace: &Workspace) -> Result<Vec<BuilderRecord>> {
    workspace
        .store("imagegen builders list")?
        .read()?
        .builders()
}

/// One Image Builder: its state record and its lock entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuilderInfo {
    pub address: String,
    pub record: Option<BuilderRecord>,
    pub lock: Option<LockEntry>,
}

/// One Image Builder, recorded or locked; `builder_not_found` when neither.
pub fn builder_info(workspace: &Workspace, triple: &Triple) -> Result<BuilderInfo> {
    let store = workspace.store("imagegen builders info")?;
    let record = store.read()?.builder(triple)?;
    let lock = workspace
        .lock_file()?
        .and_then(|lock| lock.get(triple).cloned());
    if record.is_none() && lock.is_none() {
        return Err(Error::new(
            ErrorCode::BuilderNotFound,
            format!("no Image Builder `{triple}` is recorded or locked"),
        )
        .with_help("`imagegen builders list` shows what is recorded"));
    }
    Ok(BuilderInfo {
        address: triple.address(),
        record,
        lock,
    })
}

/// Fetches (verifies, unpacks) the given Image Builders, or every one the fleet uses.
pub fn ensure_builders(
    workspace: &Workspace,
    triples: &[Triple],
    progress: &mut dyn FnMut(&Triple, FetchProgress),
) -> Result<Vec<Ensured>> {
    let triples = match triples {
        [] => workspace
            .fleet
            .as_ref()
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Precondition,
                    "no fleet: name the Image Builders to fetch",
                )
                .with_help("e.g. `imagegen builders ensure 23.05.4/ath79/generic`")
            })?
            .triples(),
        given => given.to_vec(),
    };
    let lock = workspace.lock_file()?;
    let store = workspace.store("imagegen builders ensure")?;
    triples
        .iter()
        .map(|triple| {
            let pinned = lock
                .as_ref()
                .and_then(|lock| lock.get(triple))
                .map(|entry| entry.archive_sha256.as_str());
            cache::ensure(&store, &workspace.settings, pinned, triple, &mut |update| {
                progress(triple, update)
            })
        })
        .collect()
}

/// What `builders prune` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    pub dry_run: bool,
    pub builders: Vec<Pruned>,
    /// Bytes freed (or, with `dry_run`, that would be).
    pub bytes: u64,
}

/// Removes cached Image Builders no recorded build uses (all of them with `force`).
pub fn prune_builders(workspace: &Workspace, force: bool, dry_run: bool) -> Result<PruneReport> {
    let store = workspace.store("imagegen builders prune")?;
    let builders = cache::prune(&store, &workspace.settings, force, dry_run)?;
    let bytes = builders
        .iter()
        .filter(|item| item.action != PruneAction::Kept)
        .map(|item| item.bytes)
        .sum();
    Ok(PruneReport {
        dry_run,
        builders,
        bytes,
    })
}
