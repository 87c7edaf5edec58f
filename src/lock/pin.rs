//! `imagegen lock`: pin every Image Builder the fleet uses from the mirror's signed metadata,
//! keep entries that need no refresh byte for byte, and drop entries nothing uses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LockEntry, LockFile};
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::{TargetMetadata, cache};
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
        }
    }
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
    }
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
            Some(previous) if !refresh => previous.clone(),
            _ => {
                cache::require_mirror(settings, &format!("pin {triple}"))?;
                entry_for(settings, &cache::fetch_metadata(settings, triple)?)
            }
        };
        let (change, entry) = match previous {
            None => (Change::Added, fetched),
            Some(previous)
                if previous.archive_sha256 != fetched.archive_sha256
                    || previous.version_code != fetched.version_code =>
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
