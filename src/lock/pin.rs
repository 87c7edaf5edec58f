//! `imagegen lock`: pin every Image Builder the fleet uses from the mirror's signed metadata,
//! with the signed index of each package feed it installs from; keep entries that need no
//! refresh byte for byte (an entry from before feeds were pinned gets its feeds added), and
//! drop entries nothing uses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LockEntry, LockFile};
use crate::error::{Error, ErrorCode, Result};
use crate::feeds::FeedPin;
use crate::imagebuilder::{ProfilesJson, TargetMetadata, cache};
use crate::manifest::Fleet;
use crate::settings::Settings;
use crate::triple::Triple;

/// What `imagegen lock` did to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Updated,
    Unchanged,
    Removed,
}

impl Change {
    /// The one-character marker of the text output (`+`, `~`, `-`, ` `).
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Updated => '~',
            Change::Removed => '-',
            Change::Unchanged => ' ',
        }
    }
}

/// One entry's change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LockChange {
    pub address: String,
    pub change: Change,
    pub archive: String,
    pub archive_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    pub version_code: String,
    pub key_id: Option<String>,
    /// Feeds whose pinned index changed (`openwrt_base 1a2b3c4d5e6f → 7a8b9c0d1e2f`), or were
    /// pinned for the first time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<String>,
}

impl LockChange {
    fn new(entry: &LockEntry, change: Change, previous: Option<&LockEntry>) -> LockChange {
        LockChange {
            address: entry.triple.address(),
            change,
            archive: entry.archive.clone(),
            archive_sha256: entry.archive_sha256.clone(),
            previous_sha256: previous.map(|previous| previous.archive_sha256.clone()),
            version_code: entry.version_code.clone(),
            key_id: entry.key_id.clone(),
            feeds: feed_changes(previous, entry),
        }
    }
}

/// One line per feed whose pin differs between `previous` and `entry`.
fn feed_changes(previous: Option<&LockEntry>, entry: &LockEntry) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    entry
        .feeds
        .iter()
        .filter_map(|feed| {
            let old = previous.feeds.iter().find(|old| old.name == feed.name);
            match old {
                Some(old) if old.sha256 == feed.sha256 => None,
                Some(old) => Some(format!(
                    "{} {} → {}",
                    feed.name,
                    crate::key::short_hash(&old.sha256),
                    crate::key::short_hash(&feed.sha256)
                )),
                None => Some(format!(
                    "{} pinned ({})",
                    feed.name,
                    crate::key::short_hash(&feed.sha256)
                )),
            }
        })
        .collect()
}

/// The result of `imagegen lock`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LockReport {
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub written: bool,
    pub changes: Vec<LockChange>,
}

impl LockReport {
    pub fn count(&self, change: Change) -> usize {
        self.changes
            .iter()
            .filter(|item| item.change == change)
            .count()
    }
}

/// Which entries `lock` refreshes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "upgrade", content = "builders")]
pub enum Upgrade {
    /// Only add what is missing.
    Missing,
    /// Refresh every entry.
    All,
    /// Refresh these Image Builders (and add what is missing).
    Only(Vec<Triple>),
}

/// The lock entry for upstream metadata just fetched.
pub fn entry_for(settings: &Settings, metadata: &TargetMetadata) -> LockEntry {
    LockEntry {
        triple: metadata.triple.clone(),
        archive: metadata.archive.clone(),
        archive_sha256: metadata.archive_sha256.clone(),
        key_id: metadata.key_id.clone(),
        key_fingerprint: metadata.key_fingerprint.clone(),
        version_code: metadata.version_code.clone(),
        profiles_json_sha256: metadata.profiles_json_sha256.clone(),
        mirror: settings.mirror.value.clone(),
        locked_at: now_rfc3339(),
        feeds: Vec::new(),
        feeds_unpinned: None,
    }
}

/// The message a lock entry carries when its feeds are deliberately not pinned.
pub const APK_V3_UNPINNED: &str =
    "apk v3 package indexes are not read yet; builds download their packages themselves";

/// Fetches and verifies the index of every feed the builder installs from (named from its
/// `profiles.json`, reference §1.5) and pins each by sha256. The second value says why no
/// feed is pinned on purpose (an apk v3 builder).
pub fn pin_feeds(
    settings: &Settings,
    triple: &Triple,
    profiles_json: &[u8],
) -> Result<(Vec<FeedPin>, Option<String>)> {
    let profiles = ProfilesJson::parse(profiles_json, &format!("{triple}/profiles.json"))?;
    let sources = crate::feeds::sources(triple, &profiles).ok_or_else(|| {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!(
                "the profiles.json of {triple} names no `arch_packages`: its package feeds cannot be found"
            ),
        )
    })?;
    let client = cache::client(settings)?;
    let keyring = cache::keyring(settings)?;
    let pinned: Result<Vec<FeedPin>> = sources
        .iter()
        .map(|source| {
            crate::feeds::fetch::fetch_index(
                &client,
                &keyring,
                settings.verify_signatures.value,
                source,
                &settings.cache_dir.value,
            )
            .map(|index| index.pin())
        })
        .collect();
    match pinned {
        // Real apk v3 indexes are binary and not read yet (docs/feeds.md, "apk feeds"): the
        // builder stays locked without feeds, as before feeds were pinned, and its builds
        // download their packages themselves.
        Err(error) if crate::feeds::fetch::is_apk_v3_index(&error) => {
            tracing::warn!(%triple, "apk v3 package indexes are not read yet; its feeds are not pinned");
            Ok((Vec::new(), Some(APK_V3_UNPINNED.to_string())))
        }
        pinned => pinned.map(|feeds| (feeds, None)),
    }
}

/// Adds feed pins to an entry written before feeds were pinned, against the `profiles.json`
/// it pins (from the metadata cache, or the mirror when that still has the same one).
fn add_feeds(settings: &Settings, entry: &LockEntry) -> Result<LockEntry> {
    let triple = &entry.triple;
    cache::require_mirror(settings, &format!("pin the package feeds of {triple}"))?;
    let profiles_json = match cache::cached_profiles_json(
        settings,
        triple,
        &entry.profiles_json_sha256,
    ) {
        Some(bytes) => bytes,
        None => {
            let metadata = cache::fetch_metadata(settings, triple)?;
            if metadata.profiles_json_sha256 != entry.profiles_json_sha256 {
                return Err(Error::new(
                    ErrorCode::StalePlan,
                    format!(
                        "imagegen.lock pins {triple} without package feeds, and upstream moved since"
                    ),
                )
                .with_help(format!("run `imagegen lock --upgrade {triple}` and review the change")));
            }
            metadata.profiles_json
        }
    };
    let (feeds, feeds_unpinned) = pin_feeds(settings, triple, &profiles_json)?;
    Ok(LockEntry {
        feeds,
        feeds_unpinned,
        ..entry.clone()
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Pins every Image Builder the fleet uses; drops entries nothing uses.
pub fn lock(fleet: &Fleet, settings: &Settings, upgrade: &Upgrade) -> Result<LockReport> {
    let path = fleet.lock_path();
    let old = LockFile::read(&path)?.unwrap_or_default();
    let triples = fleet.triples();
    if let Upgrade::Only(selected) = upgrade
        && let Some(unknown) = selected.iter().find(|triple| !triples.contains(triple))
    {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("the fleet uses no Image Builder `{unknown}`"),
        ));
    }
    let mut new = LockFile::default();
    let mut changes = Vec::new();
    for triple in &triples {
        let previous = old.get(triple);
        let refresh = match upgrade {
            Upgrade::Missing => previous.is_none(),
            Upgrade::All => true,
            Upgrade::Only(selected) => previous.is_none() || selected.contains(triple),
        };
        let fetched = match previous {
            Some(previous)
                if !refresh && previous.feeds.is_empty() && previous.feeds_unpinned.is_none() =>
            {
                add_feeds(settings, previous)?
            }
            Some(previous) if !refresh => previous.clone(),
            _ => {
                cache::require_mirror(settings, &format!("pin {triple}"))?;
                let metadata = cache::fetch_metadata(settings, triple)?;
                let (feeds, feeds_unpinned) = pin_feeds(settings, triple, &metadata.profiles_json)?;
                LockEntry {
                    feeds,
                    feeds_unpinned,
                    ..entry_for(settings, &metadata)
                }
            }
        };
        let (change, entry) = match previous {
            None => (Change::Added, fetched),
            Some(previous)
                if previous.archive_sha256 != fetched.archive_sha256
                    || previous.version_code != fetched.version_code
                    || previous.feeds != fetched.feeds
                    || previous.feeds_unpinned != fetched.feeds_unpinned =>
            {
                (Change::Updated, fetched)
            }
            // Keep the old timestamp when nothing changed, so the file only moves with upstream.
            Some(previous) => (Change::Unchanged, previous.clone()),
        };
        changes.push(LockChange::new(&entry, change, previous));
        new.insert(entry);
    }
    for (triple, entry) in &old.entries {
        if !new.entries.contains_key(triple) {
            changes.push(LockChange::new(entry, Change::Removed, None));
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
