//! The `FILES` overlay of a profile: resolves `overlay_dir` and `files` into one tree, hashes
//! it (with a per-file hash cache) into a versioned tree hash, and stages it into a directory
//! for the Image Builder. It never follows a symlink inside an overlay, never reads outside the
//! fleet root, and knows nothing about build keys, state or the Image Builder itself.
//!
//! The rules (override order, security, canonical format, cache) are in `docs/overlay.md`.

mod canonical;
mod hash;
mod owner;
mod resolve;
mod sources;
mod stage;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Location, Problem};

pub use canonical::FORMAT_HEADER;
pub use hash::{FileStamp, HashCache, MemoryHashCache, NoHashCache};
pub use stage::stage;

use hash::{FileHash, PathMap};
use resolve::{Layout, NodeKind};

/// A path as the profile wrote it, with where it was written (for problems).
#[derive(Debug, Clone)]
pub struct OverlaySource {
    pub text: String,
    pub location: Option<Location>,
}

/// One `files` entry of a profile.
#[derive(Debug, Clone)]
pub struct FileInput {
    pub source: OverlaySource,
    /// Absolute path in the image.
    pub destination: String,
    /// Permission bits for the destination entry; the source's own bits when absent.
    pub mode: Option<u32>,
    /// `user[:group]`, names or numbers, applied to everything this entry places.
    pub owner: Option<String>,
}

/// Everything one profile puts into its image.
#[derive(Debug, Clone)]
pub struct OverlayInput {
    /// The fleet repository; every source is relative to it and must stay inside it.
    pub fleet_root: PathBuf,
    /// Copied as the image root; applied first.
    pub overlay_dir: Option<OverlaySource>,
    /// Applied in order after `overlay_dir`, each overriding what is already there.
    pub files: Vec<FileInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

/// One path of the overlay tree as the image will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayEntry {
    /// Absolute path in the image, e.g. `/etc/banner`; the overlay root is `/`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`); always `0o777` for symlinks.
    pub mode: u32,
    pub owner: Option<String>,
    /// Content length for files, target length for symlinks, 0 for directories.
    pub size: u64,
    /// blake3 hex of the contents for files, the link target for symlinks, "" for directories.
    pub digest: String,
}

/// The tree hash of an overlay and the entries it covers, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayDigest {
    pub tree_hash: String,
    pub entries: Vec<OverlayEntry>,
}

impl OverlayDigest {
    pub(crate) fn from_entries(entries: Vec<OverlayEntry>) -> OverlayDigest {
        OverlayDigest {
            tree_hash: canonical::tree_hash(&entries),
            entries,
        }
    }

    /// The entry at an image path, if any.
    pub fn entry(&self, path: &str) -> Option<&OverlayEntry> {
        self.entries
            .binary_search_by(|entry| entry.path.as_str().cmp(path))
            .ok()
            .and_then(|index| self.entries.get(index))
    }
}

/// Hashes one profile's overlay. Files whose stamp the cache knows are not read.
pub fn digest(
    input: &OverlayInput,
    cache: &mut dyn HashCache,
) -> Result<OverlayDigest, Vec<Problem>> {
    digest_many(&[input], cache).pop().unwrap_or_else(|| {
        Err(vec![Problem::new(
            crate::ErrorCode::InternalError,
            "no digest computed",
        )])
    })
}

/// Hashes many profiles' overlays at once: every distinct source file is read at most once,
/// and the reads run in parallel. The result has one element per input, in order.
pub fn digest_many(
    inputs: &[&OverlayInput],
    cache: &mut dyn HashCache,
) -> Vec<Result<OverlayDigest, Vec<Problem>>> {
    digest_many_at(inputs, cache, SystemTime::now())
}

/// [`digest_many`] with the clock passed in, so tests can make files look old enough to cache.
pub(crate) fn digest_many_at(
    inputs: &[&OverlayInput],
    cache: &mut dyn HashCache,
    now: SystemTime,
) -> Vec<Result<OverlayDigest, Vec<Problem>>> {
    let resolver = resolve::Resolver::default();
    let layouts: Vec<Result<Layout, Vec<Problem>>> = inputs
        .par_iter()
        .map(|input| resolver.resolve(input))
        .collect();
    let hashes = hash_distinct_files(&layouts, cache, now);
    layouts
        .into_par_iter()
        .zip(inputs.par_iter())
        .map(|(layout, input)| assemble(layout?, input, &hashes))
        .collect()
}

/// Hash results by source path. Keyed by the raw bytes: `Path`'s own `Hash` walks components
/// and shows up in profiles of large fleets.
type FileHashes = PathMap<Option<std::io::Result<FileHash>>>;

/// Looks every distinct source file up in the cache, hashes the misses in parallel and
/// records the results that are safe to remember.
fn hash_distinct_files(
    layouts: &[Result<Layout, Vec<Problem>>],
    cache: &mut dyn HashCache,
    now: SystemTime,
) -> FileHashes {
    let mut results = FileHashes::default();
    let mut misses: Vec<(&Path, FileStamp)> = Vec::new();
    for node in layouts.iter().flatten().flat_map(|layout| layout.values()) {
        let NodeKind::File { source, stamp } = &node.kind else {
            continue;
        };
        if results.contains_key(source.as_os_str()) {
            continue;
        }
        // `None` marks a queued miss, so a file shared by several profiles is read once.
        let outcome = cache.lookup(source, stamp).map(|hash| {
            Ok(FileHash {
                hash,
                size: stamp.size,
            })
        });
        if outcome.is_none() {
            misses.push((source, *stamp));
        }
        results.insert(source.as_os_str().to_os_string(), outcome);
    }
    let hashed: Vec<_> = misses
        .par_iter()
        .map(|(path, stamp)| hash::hash_file(path, stamp))
        .collect();
    for ((path, stamp), outcome) in misses.into_iter().zip(hashed) {
        let outcome = outcome.map(|read| {
            if read.stable && hash::old_enough_to_cache(&stamp, now) {
                cache.record(path, stamp, read.file.hash);
            }
            read.file
        });
        if let Some(slot) = results.get_mut(path.as_os_str()) {
            *slot = Some(outcome);
        }
    }
    results
}

fn assemble(
    layout: Layout,
    input: &OverlayInput,
    hashes: &FileHashes,
) -> Result<OverlayDigest, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut entries = Vec::with_capacity(layout.len());
    for (path, node) in layout {
        let (kind, size, digest) = match &node.kind {
            NodeKind::Directory => (EntryKind::Directory, 0, String::new()),
            NodeKind::Symlink { target } => {
                (EntryKind::Symlink, target.len() as u64, target.clone())
            }
            NodeKind::File { source, .. } => match hashes.get(source.as_os_str()) {
                Some(Some(Ok(file))) => (EntryKind::File, file.size, hex::encode(file.hash)),
                Some(Some(Err(error))) => {
                    problems.push(sources::read_problem(input, node.origin, source, error));
                    continue;
                }
                Some(None) | None => {
                    problems.push(Problem::new(
                        crate::ErrorCode::InternalError,
                        format!("`{}` was not hashed", source.display()),
                    ));
                    continue;
                }
            },
        };
        entries.push(OverlayEntry {
            path,
            kind,
            mode: node.mode,
            owner: node.owner,
            size,
            digest,
        });
    }
    if problems.is_empty() {
        Ok(OverlayDigest::from_entries(entries))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;
