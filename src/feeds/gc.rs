//! Garbage collection of the feed caches below `cache_dir` (part of `imagegen gc`): cached
//! indexes (`feeds/<sha256>/`) that the fleet's lock does not pin, and package files
//! (`packages/`) that no pinned index lists. The caches may be shared with other fleets on
//! the machine (the default `cache_dir` is per user), so only what is also older than
//! `keep_days` goes: another fleet's recent downloads stay, and what goes refills from the
//! mirror when needed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{fetch, prepare, store};
use crate::error::{Error, Result};
use crate::lock::LockFile;

/// What the feed caches gave up (or would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedGc {
    pub removed_indexes: usize,
    pub removed_package_files: usize,
    pub bytes: u64,
    /// Why package files were not collected (no lock, or a pinned index not in the cache,
    /// whose packages cannot be told apart from garbage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages_kept_because: Option<String>,
}

/// Collects the feed caches of `cache_dir` against `lock`. Without a lock nothing is known
/// to be garbage and nothing is removed.
pub fn collect(
    cache_dir: &Path,
    lock: Option<&LockFile>,
    keep_days: u64,
    dry_run: bool,
) -> Result<FeedGc> {
    let Some(lock) = lock else {
        return Ok(FeedGc {
            packages_kept_because: Some("the fleet has no imagegen.lock".to_string()),
            ..FeedGc::default()
        });
    };
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_secs(keep_days.saturating_mul(86_400)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let pins: Vec<_> = lock
        .entries
        .values()
        .flat_map(|entry| entry.feeds.iter())
        .collect();
    let pinned: BTreeSet<&str> = pins.iter().map(|pin| pin.sha256.as_str()).collect();
    let mut report = FeedGc::default();
    collect_indexes(cache_dir, &pinned, cutoff, dry_run, &mut report)?;

    let mut live: BTreeSet<String> = BTreeSet::new();
    for pin in &pins {
        let loaded = prepare::source_of(pin)
            .and_then(|source| fetch::load(cache_dir, source.format, &pin.sha256));
        let Some(packages) = loaded else {
            report.packages_kept_because = Some(format!(
                "the pinned index of feed `{}` is not in the cache",
                pin.name
            ));
            return Ok(report);
        };
        live.extend(
            packages
                .iter()
                .filter_map(|package| package.file().ok())
                .map(|file| file.sha256.to_string()),
        );
    }
    if !cache_dir.join("packages").is_dir() {
        return Ok(report);
    }
    let cas = store::open(cache_dir)?;
    for (sha256, size) in cas.blobs()? {
        if live.contains(&sha256) || !older_than(&cas.blob_path(&sha256), cutoff) {
            continue;
        }
        report.removed_package_files += 1;
        report.bytes += size;
        if !dry_run {
            cas.remove(&sha256)?;
        }
    }
    Ok(report)
}

/// Cached index directories the lock does not pin, older than the cutoff.
fn collect_indexes(
    cache_dir: &Path,
    pinned: &BTreeSet<&str>,
    cutoff: SystemTime,
    dry_run: bool,
    report: &mut FeedGc,
) -> Result<()> {
    let dir = cache_dir.join("feeds");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("reading", &dir, error)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Only what this cache wrote: a directory named by a SHA-256 digest. Anything else
        // (and a link, which is never followed) is left alone.
        let is_index_dir = entry.file_type().is_ok_and(|kind| kind.is_dir())
            && name.len() == 64
            && name.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !is_index_dir || pinned.contains(name) || !older_than(&entry.path(), cutoff) {
            continue;
        }
        report.removed_indexes += 1;
        report.bytes += dir_size(&entry.path());
        if !dry_run {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|error| Error::io("removing", &path, error))?;
        }
    }
    Ok(())
}

fn older_than(path: &Path, cutoff: SystemTime) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|metadata| metadata.modified())
        .is_ok_and(|modified| modified < cutoff)
}

/// Bytes of the regular files directly in `dir` (an index directory holds no others).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.metadata().ok())
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}
