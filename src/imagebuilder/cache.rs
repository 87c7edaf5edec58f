//! The local Image Builder cache: signed target metadata kept by hash for offline checks,
//! unpacked builders ([`ensure`], [`fetch_pinned`]) with their state records, and [`prune`].
//! Network access goes through [`super::MirrorClient`]; offline, only `file://` mirrors and
//! what is already cached are used.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{FetchOptions, FetchProgress, Keyring, MirrorClient, TargetMetadata};
use crate::error::{Error, ErrorCode, Result};
use crate::settings::Settings;
use crate::state::{BuilderRecord, BuilderStatus, Store};
use crate::triple::Triple;

/// The mirror client for the effective settings.
pub fn client(settings: &Settings) -> Result<MirrorClient> {
    MirrorClient::new(
        &settings.mirror.value,
        FetchOptions {
            offline: settings.offline.value,
            ..FetchOptions::default()
        },
    )
}

/// The official keys plus every configured trusted key.
pub fn keyring(settings: &Settings) -> Result<Keyring> {
    let mut keyring = Keyring::official();
    for path in &settings.trusted_keys.value {
        keyring.add_file(path)?;
    }
    Ok(keyring)
}

/// True when the configured mirror may be read in this run.
pub fn mirror_reachable(settings: &Settings) -> bool {
    !settings.offline.value || settings.mirror.value.starts_with("file://")
}

/// Fails with a clear `precondition` when offline mode forbids reading the mirror to `what`.
pub fn require_mirror(settings: &Settings, what: &str) -> Result<()> {
    if mirror_reachable(settings) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Precondition,
        format!("offline: cannot {what} without the network"),
    )
    .with_help("drop `--offline` / `OWRT_IMG_OFFLINE`, or use a `file://` mirror"))
}

fn metadata_dir(settings: &Settings) -> PathBuf {
    settings.cache_dir.value.join("metadata")
}

/// Where a fetched `profiles.json` is kept, by its sha256, for offline validation.
fn cached_profiles_path(settings: &Settings, triple: &Triple, sha256: &str) -> PathBuf {
    metadata_dir(settings)
        .join(&triple.release)
        .join(&triple.target)
        .join(&triple.subtarget)
        .join(format!("profiles-{sha256}.json"))
}

/// The cached `profiles.json` with this sha256, if an earlier fetch kept it.
pub fn cached_profiles_json(settings: &Settings, triple: &Triple, sha256: &str) -> Option<Vec<u8>> {
    std::fs::read(cached_profiles_path(settings, triple, sha256)).ok()
}

/// Fetches one target's signed metadata and keeps its `profiles.json` in the cache.
pub fn fetch_metadata(settings: &Settings, triple: &Triple) -> Result<TargetMetadata> {
    fetch_metadata_with(&client(settings)?, settings, triple)
}

/// [`fetch_metadata`] through a given client (planning uses one that gives up quickly).
pub fn fetch_metadata_with(
    client: &MirrorClient,
    settings: &Settings,
    triple: &Triple,
) -> Result<TargetMetadata> {
    let metadata = super::fetch_target(
        client,
        &keyring(settings)?,
        settings.verify_signatures.value,
        triple,
    )?;
    crate::fsutil::write_atomically(
        &cached_profiles_path(settings, triple, &metadata.profiles_json_sha256),
        &metadata.profiles_json,
    )?;
    Ok(metadata)
}

/// The release's `.overview.json`, from the cache or (when the mirror may be read) fetched
/// and cached. `None` when neither works: it only improves suggestions.
pub fn overview_json(settings: &Settings, release: &str) -> Option<Vec<u8>> {
    let cached = metadata_dir(settings).join(release).join("overview.json");
    if let Ok(bytes) = std::fs::read(&cached) {
        return Some(bytes);
    }
    if !mirror_reachable(settings) {
        return None;
    }
    let bytes = super::fetch_overview(&client(settings).ok()?, release).ok()?;
    let _ = crate::fsutil::write_atomically(&cached, &bytes);
    Some(bytes)
}

/// Outcome of ensuring one builder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ensured {
    pub address: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub archive_sha256: String,
    /// False when the cache already held it.
    pub fetched: bool,
}

/// Makes sure the Image Builder for `triple` (the archive `pinned` names, when the lock pins
/// one) is unpacked in the cache and recorded as ready. A failure records nothing: a
/// transient download error is never a fact.
pub fn ensure(
    store: &Store,
    settings: &Settings,
    pinned: Option<&str>,
    triple: &Triple,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<Ensured> {
    if let Some(path) = ready_path(store, pinned, triple, settings.verify_signatures.value)? {
        return Ok(Ensured {
            address: triple.address(),
            path,
            archive_sha256: pinned.unwrap_or_default().to_string(),
            fetched: false,
        });
    }
    let existing = store.read()?.builder(triple)?;
    let record = fetch_pinned(settings, pinned, triple, existing.as_ref(), progress)?;
    let mut writer = store.write()?;
    writer.put_builder(&record)?;
    writer.commit()?;
    Ok(Ensured {
        address: triple.address(),
        path: record.path.clone().unwrap_or_default(),
        archive_sha256: record.archive_sha256,
        fetched: true,
    })
}

/// The unpacked tree of a recorded, ready builder matching the `pinned` archive sha256 (any,
/// when nothing is pinned), if there is one. With `require_verified`, a builder fetched while
/// signature verification was off does not count: it must be verified first.
pub fn ready_path(
    store: &Store,
    pinned: Option<&str>,
    triple: &Triple,
    require_verified: bool,
) -> Result<Option<PathBuf>> {
    let record = store.read()?.builder(triple)?;
    Ok(record.and_then(|record| {
        let matches = pinned.is_none_or(|sha256| sha256 == record.archive_sha256);
        let verified = !require_verified || record.key_id.is_some();
        let path = record.path.filter(|path| path.is_dir())?;
        (record.status == BuilderStatus::Ready && matches && verified).then_some(path)
    }))
}

/// Fetches, verifies and unpacks the builder whose archive sha256 is `pinned` (the live
/// upstream one when unpinned) and returns the record to store. Touches no database.
pub fn fetch_pinned(
    settings: &Settings,
    pinned: Option<&str>,
    triple: &Triple,
    previous: Option<&BuilderRecord>,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<BuilderRecord> {
    require_mirror(settings, &format!("fetch Image Builder {triple}"))?;
    let metadata = fetch_metadata(settings, triple)?;
    if metadata.key_id.is_none() {
        tracing::warn!(
            builder = %triple,
            "Image Builder is NOT signature-verified: `verify_signatures` is off, so only the mirror's own sha256sums vouches for it"
        );
    }
    if let Some(pinned) = pinned
        && pinned != metadata.archive_sha256
    {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "imagegen.lock pins {} for {triple} but the mirror now has {}",
                crate::key::short_hash(pinned),
                crate::key::short_hash(&metadata.archive_sha256)
            ),
        )
        .with_help(format!(
            "run `imagegen lock --upgrade {triple}` and review the change"
        )));
    }
    crate::fsutil::ensure_private_dir(&settings.tmp_dir.value)?;
    let path = super::fetch_builder(
        &client(settings)?,
        &metadata,
        &settings.cache_dir.value,
        &settings.tmp_dir.value,
        progress,
    )?;
    let now = crate::state::unix_now();
    let tree_digest = entry_dir(&path).and_then(super::download::recorded_tree_digest);
    Ok(BuilderRecord {
        triple: triple.clone(),
        archive: metadata.archive.clone(),
        archive_sha256: metadata.archive_sha256.clone(),
        url: metadata.url_of_archive.clone(),
        key_id: metadata.key_id.clone(),
        version_code: Some(metadata.version_code.clone()),
        status: BuilderStatus::Ready,
        size: tree_size(&path),
        path: Some(path),
        first_used: previous.map_or(now, |record| record.first_used),
        last_used: now,
        error: None,
        tree_digest,
    })
}

/// The cache entry (the directory holding the completion marker) of an unpacked tree.
pub fn entry_dir(tree: &Path) -> Option<&Path> {
    tree.parent()
}

/// Bytes used by a tree (regular files), for display.
pub fn tree_size(path: &Path) -> u64 {
    fn walk(path: &Path, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&entry.path(), total);
            } else if kind.is_file() {
                *total += entry.metadata().map_or(0, |metadata| metadata.len());
            }
        }
    }
    let mut total = 0;
    walk(path, &mut total);
    total
}

/// What `prune` did with one cached builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneAction {
    Removed,
    /// `--dry-run`: would be removed.
    WouldRemove,
    Kept,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneReason {
    /// No recorded build uses it.
    Unused,
    /// Recorded builds use it; `--force` removes it anyway.
    InUse,
    /// Recorded builds use it and `--force` was given.
    Forced,
}

impl PruneReason {
    pub fn describe(self) -> &'static str {
        match self {
            PruneReason::Unused => "no recorded build uses it",
            PruneReason::InUse => "recorded builds use it (pass --force to remove anyway)",
            PruneReason::Forced => "forced",
        }
    }
}

/// One builder `prune` removed or kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pruned {
    pub address: String,
    pub archive_sha256: String,
    pub bytes: u64,
    pub action: PruneAction,
    pub reason: PruneReason,
}

/// Removes cached builders that no recorded build references (all of them with `force`).
pub fn prune(
    store: &Store,
    settings: &Settings,
    force: bool,
    dry_run: bool,
) -> Result<Vec<Pruned>> {
    let reader = store.read()?;
    let referenced: BTreeSet<String> = reader
        .builds()?
        .into_iter()
        .filter_map(|build| build.inputs.builder.archive_sha256)
        .collect();
    let mut result = Vec::new();
    for record in reader.builders()? {
        let used = referenced.contains(&record.archive_sha256);
        let (action, reason) = match (used, force, dry_run) {
            (true, false, _) => (PruneAction::Kept, PruneReason::InUse),
            (_, _, true) => (PruneAction::WouldRemove, reason_for(used)),
            (_, _, false) => (PruneAction::Removed, reason_for(used)),
        };
        if action == PruneAction::Removed {
            if let Some(path) = &record.path
                && let Some(dir) = path
                    .parent()
                    .filter(|dir| dir.starts_with(&settings.cache_dir.value))
            {
                remove_tree(dir)?;
            }
            let mut writer = store.write()?;
            writer.remove_builder(&record.triple)?;
            writer.commit()?;
        }
        result.push(Pruned {
            address: record.triple.address(),
            archive_sha256: record.archive_sha256,
            bytes: record.size,
            action,
            reason,
        });
    }
    Ok(result)
}

fn reason_for(used: bool) -> PruneReason {
    if used {
        PruneReason::Forced
    } else {
        PruneReason::Unused
    }
}

/// Removes a cache entry so that no half-removed tree looks complete: the completion
/// marker goes first.
fn remove_tree(dir: &Path) -> Result<()> {
    let marker = dir.join(super::download::COMPLETE_MARKER);
    match std::fs::remove_file(&marker) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("removing", &marker, error));
        }
        _ => {}
    }
    std::fs::remove_dir_all(dir).map_err(|error| Error::io("removing", dir, error))
}
