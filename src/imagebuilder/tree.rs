//! The content digest of an unpacked Image Builder: every directory, every file's mode and
//! content hash, every symlink's target, sorted by path and hashed with blake3. Computed
//! while unpacking (the bytes pass through anyway), kept in the cache's completion marker and
//! the builder record, and recomputed by `imagegen builders verify` to notice a cached tree
//! that changed after it was verified.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Accumulates the entries of one tree.
#[derive(Debug, Default)]
pub struct TreeDigest {
    entries: BTreeMap<PathBuf, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Directory,
    File { mode: u32, content: String },
    Symlink { target: PathBuf },
}

impl TreeDigest {
    pub fn directory(&mut self, rel: &Path) {
        self.entries.insert(rel.to_path_buf(), Entry::Directory);
    }

    pub fn file(&mut self, rel: &Path, mode: u32, content: &blake3::Hash) {
        let content = content.to_hex().to_string();
        self.entries
            .insert(rel.to_path_buf(), Entry::File { mode, content });
    }

    pub fn symlink(&mut self, rel: &Path, target: &Path) {
        let target = target.to_path_buf();
        self.entries
            .insert(rel.to_path_buf(), Entry::Symlink { target });
    }

    /// A hardlink is a second name for the file at `target`: same mode and content.
    pub fn hardlink(&mut self, rel: &Path, target: &Path) {
        if let Some(entry) = self.entries.get(target).cloned() {
            self.entries.insert(rel.to_path_buf(), entry);
        }
    }

    /// The digest: blake3 over one line per entry, in path order.
    pub fn finish(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"imagegen-tree-v1\n");
        for (path, entry) in &self.entries {
            let path = path.as_os_str().as_encoded_bytes();
            let line = match entry {
                Entry::Directory => "d".to_string(),
                Entry::File { mode, content } => format!("f {mode:o} {content}"),
                Entry::Symlink { target } => format!("l {}", target.display()),
            };
            hasher.update(line.as_bytes());
            hasher.update(b" ");
            hasher.update(path);
            hasher.update(b"\n");
        }
        hasher.finalize().to_hex().to_string()
    }
}

/// Recomputes the digest of the tree under `root` (the cache entry holding the top
/// directory), reading every file; `skip` names root-level files that are not part of it.
pub fn digest_tree(root: &Path, skip: &[&str]) -> Result<String> {
    let mut digest = TreeDigest::default();
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    let mut buffer = vec![0u8; 256 * 1024];
    while let Some(dir) = pending.pop() {
        let full = root.join(&dir);
        let entries =
            std::fs::read_dir(&full).map_err(|error| Error::io("reading", &full, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| Error::io("reading", &full, error))?;
            let rel = dir.join(entry.file_name());
            if dir.as_os_str().is_empty() && skip.iter().any(|name| entry.file_name() == **name) {
                continue;
            }
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path)
                .map_err(|error| Error::io("reading", &path, error))?;
            if metadata.is_dir() {
                digest.directory(&rel);
                pending.push(rel);
            } else if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .map_err(|error| Error::io("reading", &path, error))?;
                digest.symlink(&rel, &target);
            } else if metadata.is_file() {
                let content = hash_file(&path, &mut buffer)?;
                digest.file(&rel, metadata.permissions().mode() & 0o7777, &content);
            } else {
                // A device node or FIFO was never unpacked: its line changes the digest.
                digest.symlink(&rel, Path::new("\0special"));
            }
        }
    }
    Ok(digest.finish())
}

fn hash_file(path: &Path, buffer: &mut [u8]) -> Result<blake3::Hash> {
    let mut file = File::open(path).map_err(|error| Error::io("reading", path, error))?;
    let mut hasher = blake3::Hasher::new();
    loop {
        let read = file
            .read(buffer)
            .map_err(|error| Error::io("reading", path, error))?;
        if read == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_agrees_with_the_recorded_entries_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("ib/bin")).unwrap();
        std::fs::write(root.join("ib/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("ib/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("tool", root.join("ib/bin/alias")).unwrap();
        std::fs::write(root.join(".marker"), b"not part of it").unwrap();
        let mut expected = TreeDigest::default();
        expected.directory(Path::new("ib"));
        expected.directory(Path::new("ib/bin"));
        expected.file(
            Path::new("ib/bin/tool"),
            0o755,
            &blake3::hash(b"#!/bin/sh\n"),
        );
        expected.symlink(Path::new("ib/bin/alias"), Path::new("tool"));
        let recorded = expected.finish();
        assert_eq!(digest_tree(root, &[".marker"]).unwrap(), recorded);
        std::fs::write(root.join("ib/bin/tool"), b"#!/bin/xx\n").unwrap();
        assert_ne!(digest_tree(root, &[".marker"]).unwrap(), recorded);
    }
}
