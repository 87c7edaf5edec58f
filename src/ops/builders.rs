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

/// What `builders verify` found for one cached Image Builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeState {
    /// The tree's content digest matches the one recorded when it was fetched.
    Intact,
    /// It does not: the tree changed after it was verified. It is marked broken and its
    /// completion marker removed, so the next apply fetches it again.
    Damaged,
    /// Fetched before imagegen recorded tree digests; fetch it again to get one.
    Unrecorded,
    /// The recorded tree is gone from the cache.
    Missing,
}

/// One cached Image Builder checked by `builders verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuilderVerification {
    pub address: String,
    pub state: TreeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

/// Re-hashes every file of the cached Image Builders (all recorded ones, or those given)
/// and compares with the digest recorded at fetch time. A damaged tree is marked broken (the
/// next apply fetches it again) and makes the whole operation an error listing it.
pub fn verify_builders(
    workspace: &Workspace,
    triples: &[Triple],
) -> Result<Vec<BuilderVerification>> {
    let store = workspace.store("imagegen builders verify")?;
    let records: Vec<BuilderRecord> = store
        .read()?
        .builders()?
        .into_iter()
        .filter(|record| triples.is_empty() || triples.contains(&record.triple))
        .collect();
    let mut results = Vec::new();
    for mut record in records {
        let (state, actual) = check_tree(&record)?;
        if state == TreeState::Damaged {
            mark_broken(&store, &mut record)?;
        }
        results.push(BuilderVerification {
            address: record.triple.address(),
            state,
            expected: record.tree_digest.clone(),
            actual,
        });
    }
    let damaged: Vec<&str> = results
        .iter()
        .filter(|result| result.state == TreeState::Damaged)
        .map(|result| result.address.as_str())
        .collect();
    if damaged.is_empty() {
        return Ok(results);
    }
    Err(Error::new(
        ErrorCode::ImagebuilderError,
        format!(
            "cached Image Builders changed since they were fetched: {}",
            damaged.join(", ")
        ),
    )
    .with_details(serde_json::to_value(&results).unwrap_or_default())
    .with_help("they are marked broken; `imagegen apply` (or `imagegen builders ensure`) fetches them again"))
}

fn check_tree(record: &BuilderRecord) -> Result<(TreeState, Option<String>)> {
    let Some(entry) = record
        .path
        .as_deref()
        .filter(|path| path.is_dir())
        .and_then(cache::entry_dir)
    else {
        return Ok((TreeState::Missing, None));
    };
    let Some(expected) = &record.tree_digest else {
        return Ok((TreeState::Unrecorded, None));
    };
    let actual = crate::imagebuilder::tree::digest_tree(
        entry,
        &[crate::imagebuilder::download::COMPLETE_MARKER],
    )?;
    let state = match &actual == expected {
        true => TreeState::Intact,
        false => TreeState::Damaged,
    };
    Ok((state, Some(actual)))
}

/// A damaged tree is never used again: the record says broken and the completion marker
/// goes, so the cache treats the entry as a leftover and fetches it anew.
fn mark_broken(store: &crate::state::Store, record: &mut BuilderRecord) -> Result<()> {
    if let Some(entry) = record.path.as_deref().and_then(cache::entry_dir) {
        let marker = entry.join(crate::imagebuilder::download::COMPLETE_MARKER);
        match std::fs::remove_file(&marker) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("removing", &marker, error));
            }
            _ => {}
        }
    }
    record.status = crate::state::BuilderStatus::Broken;
    record.error = Some("its files changed after it was fetched (tree digest mismatch)".into());
    let mut writer = store.write()?;
    writer.put_builder(record)?;
    writer.commit()
}
