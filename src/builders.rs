//! Image Builder operations over the fleet: pin upstream facts into `imagegen.lock`, check
//! profiles against upstream `profiles.json`, notice when upstream moved, and ensure /
//! list / prune cached builders with their state records. Network access goes through
//! [`crate::imagebuilder`]; in offline mode only `file://` mirrors and the local metadata
//! cache are used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, ErrorCode, Problem, Problems, Result};
use crate::imagebuilder::{self, FetchOptions, MirrorClient, ProfilesJson, TargetMetadata};
use crate::manifest::{Fleet, LoadedProfile, LockEntry, LockFile};
use crate::settings::Settings;
use crate::state::{BuilderRecord, BuilderStatus, Store};

/// One (release, target, subtarget) the fleet uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Triple {
    pub release: String,
    pub target: String,
    pub subtarget: String,
}

impl Triple {
    pub fn of(profile: &crate::manifest::Profile) -> Triple {
        Triple {
            release: profile.openwrt_release.clone(),
            target: profile.target.clone(),
            subtarget: profile.subtarget.clone(),
        }
    }

    /// `23.05.4/ath79/generic`, the lock key and the builder address suffix.
    pub fn key(&self) -> String {
        LockFile::key(&self.release, &self.target, &self.subtarget)
    }

    /// Parses `23.05.4/ath79/generic` or `builder.23.05.4/ath79/generic`.
    pub fn parse(text: &str) -> Result<Triple> {
        let text = text.strip_prefix("builder.").unwrap_or(text);
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [release, target, subtarget] if parts.iter().all(|part| !part.is_empty()) => {
                Ok(Triple {
                    release: release.to_string(),
                    target: target.to_string(),
                    subtarget: subtarget.to_string(),
                })
            }
            _ => Err(Error::new(
                ErrorCode::Validation,
                format!("`{text}` is not an Image Builder address"),
            )
            .with_help("write it as RELEASE/TARGET/SUBTARGET, e.g. `23.05.4/ath79/generic`")),
        }
    }
}

/// Every triple the fleet's profiles use, sorted.
pub fn fleet_triples(fleet: &Fleet) -> Vec<Triple> {
    let set: BTreeSet<Triple> = fleet
        .profiles
        .iter()
        .map(|loaded| Triple::of(&loaded.profile))
        .collect();
    set.into_iter().collect()
}

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
pub fn keyring(settings: &Settings) -> Result<imagebuilder::Keyring> {
    let mut keyring = imagebuilder::Keyring::official();
    for path in &settings.trusted_keys.value {
        keyring.add_file(path)?;
    }
    Ok(keyring)
}

/// True when the configured mirror may be read in this run.
pub fn mirror_reachable(settings: &Settings) -> bool {
    !settings.offline.value || settings.mirror.value.starts_with("file://")
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

fn save_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomically(path, bytes)
}

/// Fetches one target's signed metadata and keeps its `profiles.json` in the cache.
pub fn fetch_metadata(settings: &Settings, triple: &Triple) -> Result<TargetMetadata> {
    fetch_metadata_with(&client(settings)?, settings, triple)
}

fn fetch_metadata_with(
    client: &MirrorClient,
    settings: &Settings,
    triple: &Triple,
) -> Result<TargetMetadata> {
    let metadata = imagebuilder::fetch_target(
        client,
        &keyring(settings)?,
        settings.verify_signatures.value,
        &triple.release,
        &triple.target,
        &triple.subtarget,
    )?;
    save_file(
        &cached_profiles_path(settings, triple, &metadata.profiles_json_sha256),
        &metadata.profiles_json,
    )?;
    Ok(metadata)
}

fn lock_entry(settings: &Settings, metadata: &TargetMetadata) -> LockEntry {
    LockEntry {
        release: metadata.release.clone(),
        target: metadata.target.clone(),
        subtarget: metadata.subtarget.clone(),
        archive: metadata.archive.clone(),
        archive_sha256: metadata.archive_sha256.clone(),
        key_id: metadata.key_id.clone(),
        version_code: metadata.version_code.clone(),
        profiles_json_sha256: metadata.profiles_json_sha256.clone(),
        mirror: settings.mirror.value.clone(),
        locked_at: now_rfc3339(),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What `imagegen lock` did per builder.
#[derive(Debug, Clone, Serialize)]
pub struct LockChange {
    pub address: String,
    /// `added`, `updated`, `unchanged`, `removed`.
    pub change: String,
    pub archive: String,
    pub archive_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    pub version_code: String,
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub path: PathBuf,
    pub written: bool,
    pub changes: Vec<LockChange>,
}

/// Which entries `lock` refreshes.
#[derive(Debug, Clone)]
pub enum Upgrade {
    /// Only add what is missing.
    Missing,
    /// Refresh every entry.
    All,
    /// Refresh these addresses.
    Only(Vec<Triple>),
}

/// `imagegen lock`: pins every builder the fleet uses; drops entries nothing uses.
pub fn lock(fleet: &Fleet, settings: &Settings, upgrade: &Upgrade) -> Result<LockReport> {
    let path = crate::plan::lock_path(fleet);
    let old = LockFile::read(&path)?.unwrap_or_default();
    let triples = fleet_triples(fleet);
    if let Upgrade::Only(selected) = upgrade
        && let Some(unknown) = selected.iter().find(|triple| !triples.contains(triple))
    {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("the fleet uses no Image Builder `{}`", unknown.key()),
        ));
    }
    let mut new = LockFile::default();
    let mut changes = Vec::new();
    for triple in &triples {
        let previous = old.entries.get(&triple.key());
        let refresh = match upgrade {
            Upgrade::Missing => previous.is_none(),
            Upgrade::All => true,
            Upgrade::Only(selected) => previous.is_none() || selected.contains(triple),
        };
        let entry = match previous {
            Some(previous) if !refresh => previous.clone(),
            _ => {
                if !mirror_reachable(settings) {
                    return Err(offline_error(&format!("pin {}", triple.key())));
                }
                lock_entry(settings, &fetch_metadata(settings, triple)?)
            }
        };
        let change = match previous {
            None => "added",
            Some(previous)
                if previous.archive_sha256 != entry.archive_sha256
                    || previous.version_code != entry.version_code =>
            {
                "updated"
            }
            Some(_) => "unchanged",
        };
        // Keep the old timestamp when nothing changed, so the file only moves with upstream.
        let entry = match previous {
            Some(previous) if change == "unchanged" => previous.clone(),
            _ => entry,
        };
        changes.push(LockChange {
            address: format!("builder.{}", triple.key()),
            change: change.to_string(),
            archive: entry.archive.clone(),
            archive_sha256: entry.archive_sha256.clone(),
            previous_sha256: previous.map(|previous| previous.archive_sha256.clone()),
            version_code: entry.version_code.clone(),
            key_id: entry.key_id.clone(),
        });
        new.insert(entry);
    }
    for (key, entry) in &old.entries {
        if !new.entries.contains_key(key) {
            changes.push(LockChange {
                address: format!("builder.{key}"),
                change: "removed".to_string(),
                archive: entry.archive.clone(),
                archive_sha256: entry.archive_sha256.clone(),
                previous_sha256: None,
                version_code: entry.version_code.clone(),
                key_id: entry.key_id.clone(),
            });
        }
    }
    let written = new.to_text() != old.to_text() || !path.exists();
    if written {
        new.write(&path)?;
    }
    Ok(LockReport {
        path,
        written,
        changes,
    })
}

fn offline_error(what: &str) -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!("offline: cannot {what} without the network"),
    )
    .with_help("drop `--offline` / `OWRT_IMG_OFFLINE`, or use a `file://` mirror")
}

/// What `validate`/`plan` learned from upstream metadata.
#[derive(Debug, Default)]
pub struct UpstreamCheck {
    /// Profiles that ask for something upstream does not offer.
    pub problems: Vec<Problem>,
    /// Lock entries that no longer match upstream.
    pub moved: Vec<String>,
    /// Triples whose `profiles.json` could not be consulted (offline and not cached).
    pub unchecked: Vec<String>,
    /// Why the mirror could not be read, when it was tried and failed.
    pub unreachable: Option<String>,
}

/// Checks every profile's `imagebuilder_profile` against its target's `profiles.json`
/// (from the metadata cache via the lock, or fetched when the mirror is reachable), and
/// notices lock entries that upstream has moved away from.
pub fn check_upstream(
    fleet: &Fleet,
    lock: Option<&LockFile>,
    settings: &Settings,
) -> Result<UpstreamCheck> {
    let mut check = UpstreamCheck::default();
    let mut online = mirror_reachable(settings);
    // Planning should not hang on a dead network: one quick retry, then plan from the lock.
    let quick = MirrorClient::new(
        &settings.mirror.value,
        FetchOptions {
            offline: settings.offline.value,
            retries: 1,
            connect_timeout: std::time::Duration::from_secs(5),
            ..FetchOptions::default()
        },
    )?;
    let mut overview: Option<Option<Overview>> = None;
    for triple in fleet_triples(fleet) {
        let entry = lock.and_then(|lock| lock.entries.get(&triple.key()));
        let mut profiles_json = entry.and_then(|entry| {
            std::fs::read(cached_profiles_path(
                settings,
                &triple,
                &entry.profiles_json_sha256,
            ))
            .ok()
        });
        if online {
            match fetch_metadata_with(&quick, settings, &triple) {
                Ok(metadata) => {
                    if let Some(entry) = entry
                        && (entry.archive_sha256 != metadata.archive_sha256
                            || entry.version_code != metadata.version_code)
                    {
                        check.moved.push(format!(
                            "{}: upstream now has {} ({}), imagegen.lock pins {} ({}); run `imagegen lock --upgrade {}`",
                            triple.key(),
                            crate::key::short_hash(&metadata.archive_sha256),
                            metadata.version_code,
                            crate::key::short_hash(&entry.archive_sha256),
                            entry.version_code,
                            triple.key()
                        ));
                    }
                    if profiles_json.is_none() {
                        profiles_json = Some(metadata.profiles_json);
                    }
                }
                Err(error)
                    if error.code == ErrorCode::DownloadError
                        && imagebuilder::mirror::is_not_found(&error) =>
                {
                    check
                        .problems
                        .extend(missing_target_problems(fleet, &triple, &error));
                    continue;
                }
                Err(error) if error.code == ErrorCode::SignatureError => return Err(error),
                Err(error) => {
                    // The lock still describes what to build; keep planning from it and
                    // say why upstream was not consulted (no retry storm per target).
                    check.unreachable = Some(error.message.clone());
                    online = false;
                }
            }
        }
        let Some(bytes) = profiles_json else {
            check.unchecked.push(triple.key());
            continue;
        };
        let parsed = ProfilesJson::parse(&bytes, &format!("{}/profiles.json", triple.key()))?;
        let users = fleet
            .profiles
            .iter()
            .filter(|loaded| Triple::of(&loaded.profile) == triple);
        for loaded in users {
            if offers(&parsed, &loaded.profile.imagebuilder_profile) {
                continue;
            }
            let overview = overview
                .get_or_insert_with(|| load_overview(settings, &triple.release))
                .as_ref();
            check
                .problems
                .push(unknown_profile_problem(loaded, &triple, &parsed, overview));
        }
    }
    Ok(check)
}

/// A profile id is offered when it is a key of `profiles`, or (as ASU accepts) one of a
/// device's `supported_devices` with `,` written as `_`.
fn offers(profiles: &ProfilesJson, id: &str) -> bool {
    profiles.profiles.contains_key(id)
        || profiles.profiles.values().any(|info| {
            info.supported_devices
                .iter()
                .any(|board| board.replace(',', "_") == id)
        })
}

fn missing_target_problems(fleet: &Fleet, triple: &Triple, error: &Error) -> Vec<Problem> {
    fleet
        .profiles
        .iter()
        .filter(|loaded| Triple::of(&loaded.profile) == *triple)
        .map(|loaded| {
            Problem::validation(format!(
                "OpenWrt {} has no target `{}/{}` on the mirror",
                triple.release, triple.target, triple.subtarget
            ))
            .at(loaded.location("target"))
            .with_label("not on the mirror")
            .with_help(error.message.clone())
        })
        .collect()
}

fn unknown_profile_problem(
    loaded: &LoadedProfile,
    triple: &Triple,
    profiles: &ProfilesJson,
    overview: Option<&Overview>,
) -> Problem {
    let wanted = &loaded.profile.imagebuilder_profile;
    let mut scored: Vec<(f64, &str)> = profiles
        .profiles
        .keys()
        .map(|id| (strsim::jaro_winkler(wanted, id), id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let closest: Vec<String> = scored
        .iter()
        .take(3)
        .map(|(_, id)| format!("`{id}`"))
        .collect();
    let mut help = format!(
        "closest Image Builder profiles in {}/{}: {}",
        triple.target,
        triple.subtarget,
        closest.join(", ")
    );
    if let Some(elsewhere) = overview.and_then(|overview| overview.targets_of(wanted)) {
        help = format!(
            "`{wanted}` exists in OpenWrt {} under target `{elsewhere}`; set `target`/`subtarget` to that, or use one of the {}",
            triple.release, help
        );
    }
    Problem::validation(format!(
        "OpenWrt {} {}/{} offers no Image Builder profile `{wanted}`",
        triple.release, triple.target, triple.subtarget
    ))
    .at(loaded.location("imagebuilder_profile"))
    .with_label("not in the target's profiles.json")
    .with_help(help)
}

/// The release's `.overview.json`: device id → target.
struct Overview {
    targets: BTreeMap<String, String>,
}

impl Overview {
    fn parse(bytes: &[u8]) -> Option<Overview> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let targets = value
            .get("profiles")?
            .as_array()?
            .iter()
            .filter_map(|profile| {
                Some((
                    profile.get("id")?.as_str()?.to_string(),
                    profile.get("target")?.as_str()?.to_string(),
                ))
            })
            .collect();
        Some(Overview { targets })
    }

    fn targets_of(&self, id: &str) -> Option<&str> {
        self.targets.get(id).map(String::as_str)
    }
}

fn load_overview(settings: &Settings, release: &str) -> Option<Overview> {
    let cached = metadata_dir(settings).join(release).join("overview.json");
    if let Ok(bytes) = std::fs::read(&cached) {
        return Overview::parse(&bytes);
    }
    if !mirror_reachable(settings) {
        return None;
    }
    let bytes = imagebuilder::fetch_overview(&client(settings).ok()?, release).ok()?;
    let _ = save_file(&cached, &bytes);
    Overview::parse(&bytes)
}

/// Outcome of ensuring one builder.
#[derive(Debug, Clone, Serialize)]
pub struct Ensured {
    pub address: String,
    pub path: PathBuf,
    pub archive_sha256: String,
    /// False when the cache already held it.
    pub fetched: bool,
}

/// Makes sure the Image Builder pinned for `triple` is unpacked in the cache and recorded
/// as ready. A failure records nothing: a transient download error is never a fact.
pub fn ensure(
    store: &Store,
    settings: &Settings,
    lock: Option<&LockFile>,
    triple: &Triple,
    progress: &mut dyn FnMut(imagebuilder::FetchProgress),
) -> Result<Ensured> {
    let address = format!("builder.{}", triple.key());
    if let Some(path) = ready_path(store, lock, triple)? {
        let archive_sha256 = lock
            .and_then(|lock| lock.entries.get(&triple.key()))
            .map(|entry| entry.archive_sha256.clone())
            .unwrap_or_default();
        return Ok(Ensured {
            address,
            path,
            archive_sha256,
            fetched: false,
        });
    }
    let existing = store
        .read()?
        .builder(&triple.release, &triple.target, &triple.subtarget)?;
    let record = fetch_pinned(settings, lock, triple, existing.as_ref(), progress)?;
    put_builder(store, &record)?;
    Ok(Ensured {
        address,
        path: record.path.clone().unwrap_or_default(),
        archive_sha256: record.archive_sha256,
        fetched: true,
    })
}

/// The unpacked tree of a recorded, ready builder matching the lock pin, if there is one.
pub fn ready_path(
    store: &Store,
    lock: Option<&LockFile>,
    triple: &Triple,
) -> Result<Option<PathBuf>> {
    let entry = lock.and_then(|lock| lock.entries.get(&triple.key()));
    let record = store
        .read()?
        .builder(&triple.release, &triple.target, &triple.subtarget)?;
    Ok(record.and_then(|record| {
        let pinned = entry.is_none_or(|entry| entry.archive_sha256 == record.archive_sha256);
        let path = record.path.filter(|path| path.is_dir())?;
        (record.status == BuilderStatus::Ready && pinned).then_some(path)
    }))
}

/// Fetches, verifies and unpacks the builder the lock pins for `triple` (the live upstream
/// one when unpinned) and returns the record to store. Touches no database.
pub fn fetch_pinned(
    settings: &Settings,
    lock: Option<&LockFile>,
    triple: &Triple,
    previous: Option<&BuilderRecord>,
    progress: &mut dyn FnMut(imagebuilder::FetchProgress),
) -> Result<BuilderRecord> {
    if !mirror_reachable(settings) {
        return Err(offline_error(&format!(
            "fetch Image Builder {}",
            triple.key()
        )));
    }
    let metadata = fetch_metadata(settings, triple)?;
    if let Some(entry) = lock.and_then(|lock| lock.entries.get(&triple.key()))
        && entry.archive_sha256 != metadata.archive_sha256
    {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "imagegen.lock pins {} for {} but the mirror now has {}",
                crate::key::short_hash(&entry.archive_sha256),
                triple.key(),
                crate::key::short_hash(&metadata.archive_sha256)
            ),
        )
        .with_help(format!(
            "run `imagegen lock --upgrade {}` and review the change",
            triple.key()
        )));
    }
    let client = client(settings)?;
    crate::fsutil::ensure_private_dir(&settings.tmp_dir.value)?;
    let path = imagebuilder::fetch_builder(
        &client,
        &metadata,
        &settings.cache_dir.value,
        &settings.tmp_dir.value,
        progress,
    )?;
    let now = crate::state::unix_now();
    Ok(BuilderRecord {
        release: triple.release.clone(),
        target: triple.target.clone(),
        subtarget: triple.subtarget.clone(),
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
    })
}

fn put_builder(store: &Store, record: &BuilderRecord) -> Result<()> {
    let mut writer = store.write()?;
    writer.put_builder(record)?;
    writer.commit()
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

/// One builder `prune` removed or kept.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub address: String,
    pub archive_sha256: String,
    pub bytes: u64,
    pub removed: bool,
    pub reason: String,
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
        .filter_map(|build| {
            build
                .inputs
                .get("builder")?
                .get("archive_sha256")?
                .as_str()
                .map(String::from)
        })
        .collect();
    let mut result = Vec::new();
    for record in reader.builders()? {
        let address = format!(
            "builder.{}/{}/{}",
            record.release, record.target, record.subtarget
        );
        let used = referenced.contains(&record.archive_sha256);
        if used && !force {
            result.push(Pruned {
                address,
                archive_sha256: record.archive_sha256,
                bytes: record.size,
                removed: false,
                reason: "recorded builds use it (pass --force to remove anyway)".into(),
            });
            continue;
        }
        if !dry_run {
            if let Some(path) = &record.path
                && let Some(dir) = path
                    .parent()
                    .filter(|dir| dir.starts_with(&settings.cache_dir.value))
            {
                remove_tree(dir)?;
            }
            let mut writer = store.write()?;
            writer.remove_builder(&record.release, &record.target, &record.subtarget)?;
            writer.commit()?;
        }
        result.push(Pruned {
            address,
            archive_sha256: record.archive_sha256,
            bytes: record.size,
            removed: !dry_run,
            reason: if used {
                "forced".into()
            } else {
                "no recorded build uses it".into()
            },
        });
    }
    Ok(result)
}

/// Removes a cache entry so that no half-removed tree looks complete: the completion
/// marker goes first.
fn remove_tree(dir: &Path) -> Result<()> {
    let marker = dir.join(imagebuilder::download::COMPLETE_MARKER);
    match std::fs::remove_file(&marker) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("removing", &marker, error));
        }
        _ => {}
    }
    std::fs::remove_dir_all(dir).map_err(|error| Error::io("removing", dir, error))
}

/// Collects upstream problems into a `validation` error, if any.
pub fn upstream_problems_to_result(check: &UpstreamCheck) -> Result<()> {
    let mut problems = Problems::new();
    problems.extend(check.problems.iter().cloned());
    problems.finish((), "profiles ask for what upstream does not offer")
}
