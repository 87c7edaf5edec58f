//! What the store holds: `builds list|show|log`, `artifacts list|show|verify` and `gc`
//! (with its crash-safe deletion order).

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Workspace;
use crate::cas::Cas;
use crate::error::{Error, ErrorCode, Result};
use crate::state::{ArtifactRecord, BuildRecord};

/// Every recorded build, newest first.
pub fn builds_list(workspace: &Workspace) -> Result<Vec<BuildRecord>> {
    workspace.store("imagegen builds")?.read()?.builds()
}

/// One build by key or unique key prefix.
pub fn build_show(workspace: &Workspace, key: &str) -> Result<BuildRecord> {
    let records = builds_list(workspace)?;
    find_build(&records, key).cloned()
}

/// Which recorded builds [`builds_filtered`] returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildFilter {
    /// Only the builds of this profile id.
    #[serde(default)]
    pub profile: Option<String>,
    /// At most this many, the newest.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Recorded builds, newest first: those of one profile, and at most `limit` of them.
pub fn builds_filtered(workspace: &Workspace, filter: &BuildFilter) -> Result<Vec<BuildRecord>> {
    Ok(builds_list(workspace)?
        .into_iter()
        .filter(|record| {
            filter
                .profile
                .as_ref()
                .is_none_or(|profile| &record.profile_id == profile)
        })
        .take(filter.limit.unwrap_or(usize::MAX))
        .collect())
}

/// A build's log (or its last `tail_bytes`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildLog {
    pub key: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// The log's size on disk.
    pub size: u64,
    /// True when `text` is only the end of the log.
    pub truncated: bool,
    pub text: String,
}

/// The log of a build (key or unique prefix); with `tail_bytes`, only its end.
pub fn build_log(workspace: &Workspace, key: &str, tail_bytes: Option<u64>) -> Result<BuildLog> {
    let record = build_show(workspace, key)?;
    let path = record.log_path.clone().ok_or_else(|| {
        Error::new(
            ErrorCode::BuildNotFound,
            format!("build `{key}` has no log (it was reused, not built here)"),
        )
    })?;
    let mut file =
        std::fs::File::open(&path).map_err(|error| Error::io("reading", &path, error))?;
    let size = file
        .metadata()
        .map_err(|error| Error::io("reading", &path, error))?
        .len();
    let start = tail_bytes.map_or(0, |tail| size.saturating_sub(tail));
    file.seek(SeekFrom::Start(start))
        .map_err(|error| Error::io("reading", &path, error))?;
    let mut bytes = Vec::new();
    file.take(size - start)
        .read_to_end(&mut bytes)
        .map_err(|error| Error::io("reading", &path, error))?;
    Ok(BuildLog {
        key: record.key,
        path,
        size,
        truncated: start > 0,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
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

/// Which artifacts `artifacts list` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArtifactFilter {
    /// Only the artifacts of this build (key or unique prefix).
    #[serde(default)]
    pub build: Option<String>,
    /// Only the artifacts of builds this profile id made or applied.
    #[serde(default)]
    pub profile: Option<String>,
}

/// The artifacts in the store, optionally of one build or one profile's builds.
pub fn artifacts_list(
    workspace: &Workspace,
    filter: &ArtifactFilter,
) -> Result<Vec<ArtifactRecord>> {
    // The store must outlive the reader: dropping it closes the database and unlocks it.
    let store = workspace.store("imagegen artifacts")?;
    let reader = store.read()?;
    let records = reader.artifacts()?;
    if filter.build.is_none() && filter.profile.is_none() {
        return Ok(records);
    }
    let builds = reader.builds()?;
    let mut keys: BTreeSet<&str> = builds.iter().map(|build| build.key.as_str()).collect();
    if let Some(prefix) = &filter.build {
        keys = BTreeSet::from([find_build(&builds, prefix)?.key.as_str()]);
    }
    if let Some(profile) = &filter.profile {
        // A build serves every profile that applied it, not only the one that made it.
        keys.retain(|key| {
            builds
                .iter()
                .any(|build| build.key == *key && build.used_by_profile(profile))
        });
    }
    Ok(records
        .into_iter()
        .filter(|record| record.builds.iter().any(|key| keys.contains(key.as_str())))
        .collect())
}

/// One artifact and where its bytes are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactDetail {
    pub artifact: ArtifactRecord,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// False when the blob is missing from the store (run `artifacts verify`).
    pub present: bool,
}

/// One artifact by sha256 or unique prefix.
pub fn artifact_show(workspace: &Workspace, sha256: &str) -> Result<ArtifactDetail> {
    let records = workspace.store("imagegen artifacts")?.read()?.artifacts()?;
    let cas = Cas::open(&workspace.settings.artifacts_dir.value)?;
    let artifact = find_artifact(records, sha256)?;
    Ok(ArtifactDetail {
        path: cas.blob_path(&artifact.sha256),
        present: cas.contains(&artifact.sha256),
        artifact,
    })
}

/// The one record whose sha256 starts with `prefix`.
pub(crate) fn find_artifact(records: Vec<ArtifactRecord>, prefix: &str) -> Result<ArtifactRecord> {
    let matches: Vec<_> = records
        .into_iter()
        .filter(|record| record.sha256.starts_with(prefix))
        .collect();
    match <[ArtifactRecord; 1]>::try_from(matches) {
        Ok([artifact]) => Ok(artifact),
        Err(matches) if matches.is_empty() => Err(Error::new(
            ErrorCode::ArtifactNotFound,
            format!("no artifact `{prefix}`"),
        )
        .with_help("`imagegen artifacts list` shows the artifacts")),
        Err(matches) => Err(Error::new(
            ErrorCode::Validation,
            format!(
                "`{prefix}` matches {} artifacts; give more digits",
                matches.len()
            ),
        )),
    }
}

/// What `artifacts verify` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub missing: Vec<String>,
    pub corrupted: Vec<String>,
}

/// Re-hashes every recorded artifact. A corrupted blob is deleted (it can never be trusted
/// again); the builds that produced it then plan as "artifacts missing" and are rebuilt.
/// A damaged store is an error whose details are this report.
pub fn artifacts_verify(workspace: &Workspace) -> Result<VerifyReport> {
    let records = workspace.store("imagegen artifacts")?.read()?.artifacts()?;
    let cas = Cas::open(&workspace.settings.artifacts_dir.value)?;
    let mut report = VerifyReport::default();
    for record in &records {
        report.checked += 1;
        if !cas.contains(&record.sha256) {
            report.missing.push(record.sha256.clone());
        } else if !cas.verify(&record.sha256)? {
            cas.remove(&record.sha256)?;
            report.corrupted.push(record.sha256.clone());
        }
    }
    if report.missing.is_empty() && report.corrupted.is_empty() {
        return Ok(report);
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

/// Options of `gc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcRequest {
    /// Only report what would be removed.
    #[serde(default)]
    pub dry_run: bool,
    /// Keep builds finished within this many days even when no fleet points at them.
    pub keep_days: u64,
}

/// What `gc` removed (or would remove).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed_blobs: usize,
    pub removed_builds: usize,
    /// Bytes of blobs and of stale temp files of interrupted stores.
    pub bytes: u64,
    pub keep_days: u64,
    /// The feed caches: unpinned indexes and package files no pinned index lists, older
    /// than `keep_days` (docs/feeds.md); their bytes are in `bytes` too.
    pub feeds: crate::feeds::gc::FeedGc,
}

/// Temp files of an interrupted store younger than this may belong to a store in progress.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes build records no fleet points at that are older than `keep_days`, every blob no
/// kept build references, and what the feed caches hold for no pinned feed. Records go first: a blob whose record is gone is only wasted
/// space, never a record pointing at nothing.
pub fn gc(workspace: &Workspace, request: &GcRequest) -> Result<GcReport> {
    let store = workspace.store("imagegen gc")?;
    let cas = Cas::open(&workspace.settings.artifacts_dir.value)?;
    let reader = store.read()?;
    let pointed: BTreeSet<String> = reader
        .all_profile_pointers()?
        .into_iter()
        .map(|pointer| pointer.build_key)
        .collect();
    let cutoff = crate::state::unix_now()
        - i64::try_from(request.keep_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
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
    let mut bytes: u64 = garbage.iter().map(|(_, size)| size).sum();
    if !request.dry_run {
        let mut writer = store.write()?;
        for build in &dropped {
            writer.remove_build(&build.key)?;
        }
        for (sha, _) in &garbage {
            writer.remove_artifact(sha)?;
        }
        writer.commit()?;
        for (sha, _) in &garbage {
            cas.remove(sha)?;
        }
        bytes += cas.remove_stale_temp(STALE_TEMP_AGE)?;
    }
    drop(reader);
    let lock = workspace.lock_file()?;
    let feeds = crate::feeds::gc::collect(
        &workspace.settings.cache_dir.value,
        lock.as_ref(),
        request.keep_days,
        request.dry_run,
    )?;
    bytes += feeds.bytes;
    Ok(GcReport {
        dry_run: request.dry_run,
        removed_blobs: garbage.len(),
        removed_builds: dropped.len(),
        bytes,
        keep_days: request.keep_days,
        feeds,
    })
}

/// One artifact `artifacts export` copied out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedArtifact {
    pub name: String,
    pub kind: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// Copies a profile's current images (the build its fleet pointer names) out of the store
/// into `out` under their upstream names; only those of `kind` when given.
pub fn artifacts_export(
    workspace: &Workspace,
    profile_id: &str,
    kind: Option<&str>,
    out: &std::path::Path,
) -> Result<Vec<ExportedArtifact>> {
    let fleet = workspace.fleet()?;
    if fleet.profile(profile_id).is_none() {
        return Err(super::profiles::not_found(fleet, profile_id));
    }
    let store = workspace.store("imagegen artifacts export")?;
    let selected: Vec<_> = super::apply::current_images(workspace, &store, profile_id)?
        .artifacts
        .into_iter()
        .map(|located| located.artifact)
        .filter(|artifact| kind.is_none_or(|kind| artifact.kind == kind))
        .collect();
    if selected.is_empty() {
        return Err(Error::new(
            ErrorCode::ArtifactNotFound,
            format!(
                "profile `{profile_id}` has no `{}` artifact",
                kind.unwrap_or_default()
            ),
        )
        .with_help(format!(
            "`imagegen artifacts list --profile {profile_id}` shows its artifacts"
        )));
    }
    let cas = Cas::open(&workspace.settings.artifacts_dir.value)?;
    for artifact in &selected {
        if !cas.verify(&artifact.sha256)? {
            return Err(Error::new(
                ErrorCode::InternalError,
                format!("stored artifact `{}` is damaged", artifact.name),
            )
            .with_help("run `imagegen artifacts verify`, then `imagegen apply` to rebuild it"));
        }
    }
    let paths = crate::build::copy_stored(&cas, &selected, out)?;
    Ok(selected
        .into_iter()
        .zip(paths)
        .map(|(artifact, path)| ExportedArtifact {
            name: artifact.name,
            kind: artifact.kind,
            sha256: artifact.sha256,
            path,
        })
        .collect())
}
