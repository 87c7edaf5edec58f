//! Safe tar extraction of an Image Builder archive into a fresh staging directory.
//!
//! Refuses anything that could write or point outside the archive's single top directory:
//! absolute paths, `..`, escaping symlinks and hardlinks, entries through symlinks, device
//! nodes, fifos and setuid/setgid bits. Keeps symlinks, mode bits and mtimes; never restores
//! owners. Streams: memory use does not depend on the archive size, and [`ArchiveLimits`]
//! bound the entries and bytes written while the stream's hash is still unknown. Knows
//! nothing of downloads or caches.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use tar::EntryType;

pub use super::limits::ArchiveLimits;
pub(crate) use super::limits::over_limit;
use super::limits::{BudgetReader, METADATA_BUDGET};
use crate::error::{Error, ErrorCode, Result};

const COPY_BUFFER: usize = 256 * 1024;
const MAX_SYMLINK_HOPS: u32 = 64;
/// Longest entry path or link target (Linux `PATH_MAX`).
const MAX_PATH_LEN: usize = 4096;

/// Counts of what was extracted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnpackStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// The content digest of the tree (see [`super::tree`]).
    pub tree_digest: String,
}

/// The archive's expected top directory: its name without `.tar.xz` / `.tar.zst`.
pub fn top_dir_name(archive: &str) -> Result<&str> {
    archive
        .strip_suffix(".tar.xz")
        .or_else(|| archive.strip_suffix(".tar.zst"))
        .filter(|top| !top.is_empty() && !top.contains('/') && *top != "." && *top != "..")
        .ok_or_else(|| {
            Error::new(
                ErrorCode::ImagebuilderError,
                format!("`{archive}` is not a `.tar.xz` or `.tar.zst` archive name"),
            )
        })
}

/// Extracts the tar stream `reader` into `root`, which must be an empty directory; every entry
/// must live under `root/<top>`. Stops at the first entry over `limits`.
pub fn extract(
    reader: impl Read,
    root: &Path,
    top: &str,
    limits: &ArchiveLimits,
) -> Result<UnpackStats> {
    let budget = Rc::new(Cell::new(METADATA_BUDGET));
    let mut extractor = Extractor {
        root: root.to_path_buf(),
        top: OsString::from(top),
        known_dirs: HashSet::new(),
        directories: Vec::new(),
        symlinks: Vec::new(),
        stats: UnpackStats::default(),
        buffer: vec![0u8; COPY_BUFFER],
        limits: *limits,
        budget: Rc::clone(&budget),
        digest: super::tree::TreeDigest::default(),
    };
    let mut archive = tar::Archive::new(BudgetReader {
        inner: reader,
        budget,
    });
    let entries = archive.entries().map_err(|error| tar_error(&error))?;
    let mut count: u64 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|error| tar_error(&error))?;
        count += 1;
        if count > limits.max_entries {
            return Err(over_limit(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        extractor.budget.set(METADATA_BUDGET);
        extractor.add(&mut entry)?;
        extractor.budget.set(METADATA_BUDGET);
    }
    extractor.finish()
}

fn tar_error(error: &io::Error) -> Error {
    Error::new(
        ErrorCode::ImagebuilderError,
        format!("reading the archive: {error}"),
    )
}

fn unsafe_entry(path: &Path, reason: &str) -> Error {
    Error::new(
        ErrorCode::ImagebuilderError,
        format!("unsafe archive entry `{}`: {reason}", path.display()),
    )
    .with_help("the archive is not a genuine Image Builder; nothing was installed")
}

struct Extractor {
    root: PathBuf,
    top: OsString,
    /// Relative paths verified (or created) as real directories, never symlinks.
    known_dirs: HashSet<PathBuf>,
    /// Directories with their mode and mtime, applied last so their children can be written.
    directories: Vec<(PathBuf, u32, u64)>,
    symlinks: Vec<PathBuf>,
    stats: UnpackStats,
    buffer: Vec<u8>,
    limits: ArchiveLimits,
    /// Shared with the [`BudgetReader`] under the tar reader.
    budget: Rc<Cell<u64>>,
    digest: super::tree::TreeDigest,
}

impl Extractor {
    fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry
            .path()
            .map_err(|error| tar_error(&error))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let Some(rel) = self.normalize(&raw_path)? else {
            return Ok(());
        };
        let mode = entry.header().mode().map_err(|error| tar_error(&error))? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        if kind != EntryType::Symlink && mode & 0o6000 != 0 {
            return Err(unsafe_entry(&raw_path, "setuid or setgid bit"));
        }
        match kind {
            EntryType::Directory => self.directory(&raw_path, rel, mode, mtime),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &raw_path, &rel, mode, mtime)
            }
            EntryType::Symlink => {
                let target = link_name(entry, &raw_path)?;
                self.symlink(&raw_path, rel, &target)
            }
            EntryType::Link => {
                let target = link_name(entry, &raw_path)?;
                self.hardlink(&raw_path, &rel, &target)
            }
            EntryType::Char | EntryType::Block => Err(unsafe_entry(&raw_path, "device node")),
            EntryType::Fifo => Err(unsafe_entry(&raw_path, "fifo")),
            _ => Err(unsafe_entry(&raw_path, "unsupported entry type")),
        }
    }

    /// The entry path relative to `root`, starting with the top directory; `None` for `./`.
    fn normalize(&self, raw: &Path) -> Result<Option<PathBuf>> {
        if raw.as_os_str().len() > MAX_PATH_LEN {
            return Err(unsafe_entry(
                Path::new("…"),
                &format!("a path longer than {MAX_PATH_LEN} bytes"),
            ));
        }
        let mut rel = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(name) => rel.push(name),
                Component::CurDir => {}
                Component::ParentDir => return Err(unsafe_entry(raw, "`..` in the path")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_entry(raw, "absolute path"));
                }
            }
        }
        match rel.components().next() {
            None => Ok(None),
            Some(Component::Normal(first)) if first == self.top => Ok(Some(rel)),
            Some(_) => Err(unsafe_entry(
                raw,
                &format!("outside the top directory `{}`", self.top.to_string_lossy()),
            )),
        }
    }

    /// Makes sure every parent of `rel` is a real directory, creating missing ones.
    fn ensure_parents(&mut self, raw: &Path, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if self.known_dirs.contains(&prefix) {
                continue;
            }
            let full = self.root.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(unsafe_entry(
                        raw,
                        &format!(
                            "goes through `{}`, which is not a directory",
                            prefix.display()
                        ),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(|error| Error::io("creating", &full, error))?;
                    self.stats.directories += 1;
                }
                Err(error) => return Err(Error::io("inspecting", &full, error)),
            }
            self.known_dirs.insert(prefix.clone());
        }
        Ok(())
    }

    /// Removes a previous non-directory entry at `rel` (later tar entries win, as in tar).
    fn clear_leaf(&self, raw: &Path, rel: &Path) -> Result<()> {
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => Err(unsafe_entry(raw, "would replace a directory")),
            Ok(_) => fs::remove_file(&full).map_err(|error| Error::io("replacing", &full, error)),
            Err(_) => Ok(()),
        }
    }

    fn directory(&mut self, raw: &Path, rel: PathBuf, mode: u32, mtime: u64) -> Result<()> {
        self.ensure_parents(raw, &rel)?;
        let full = self.root.join(&rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(unsafe_entry(
                    raw,
                    "a directory would replace a file or link",
                ));
            }
            Err(_) => {
                fs::create_dir(&full).map_err(|error| Error::io("creating", &full, error))?;
                self.stats.directories += 1;
            }
        }
        self.known_dirs.insert(rel.clone());
        self.directories.push((rel, mode, mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
        rel: &Path,
        mode: u32,
        mtime: u64,
    ) -> Result<()> {
        let declared = entry.size();
        self.check_sizes(raw, declared, self.stats.bytes.saturating_add(declared))?;
        self.ensure_parents(raw, rel)?;
        self.clear_leaf(raw, rel)?;
        let full = self.root.join(rel);
        // create_new (O_EXCL) never follows a symlink at the leaf.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|error| Error::io("creating", &full, error))?;
        let mut written: u64 = 0;
        let mut content = blake3::Hasher::new();
        loop {
            let read = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(tar_error(&error)),
            };
            self.budget.set(METADATA_BUDGET);
            written += read as u64;
            self.stats.bytes += read as u64;
            // The declared size was checked; a sparse file can still unfold to more.
            self.check_sizes(raw, written, self.stats.bytes)?;
            file.write_all(&self.buffer[..read])
                .map_err(|error| Error::io("writing", &full, error))?;
            content.update(&self.buffer[..read]);
        }
        self.digest.file(rel, mode, &content.finalize());
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|error| Error::io("setting the mode of", &full, error))?;
        let _ = file.set_modified(time_from(mtime));
        self.stats.files += 1;
        Ok(())
    }

    /// Refuses a file of `file_bytes` bytes, or a total of `total_bytes` unpacked.
    fn check_sizes(&self, raw: &Path, file_bytes: u64, total_bytes: u64) -> Result<()> {
        if file_bytes > self.limits.max_file_bytes {
            return Err(over_limit(format!(
                "`{}` has more than {} bytes",
                raw.display(),
                self.limits.max_file_bytes
            )));
        }
        if total_bytes > self.limits.max_unpacked_bytes {
            return Err(over_limit(format!(
                "more than {} bytes unpacked",
                self.limits.max_unpacked_bytes
            )));
        }
        Ok(())
    }

    fn symlink(&mut self, raw: &Path, rel: PathBuf, target: &Path) -> Result<()> {
        if target.as_os_str().is_empty() {
            return Err(unsafe_entry(raw, "symlink with an empty target"));
        }
        if lexical_escape(&rel, target) {
            return Err(unsafe_entry(
                raw,
                &format!(
                    "symlink to `{}` escapes the top directory",
                    target.display()
                ),
            ));
        }
        self.ensure_parents(raw, &rel)?;
        self.clear_leaf(raw, &rel)?;
        let full = self.root.join(&rel);
        std::os::unix::fs::symlink(target, &full)
            .map_err(|error| Error::io("creating the symlink", &full, error))?;
        self.digest.symlink(&rel, target);
        self.symlinks.push(rel);
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, raw: &Path, rel: &Path, target: &Path) -> Result<()> {
        let outside = || {
            unsafe_entry(
                raw,
                &format!("hardlink to `{}` outside the archive", target.display()),
            )
        };
        let target_rel = self
            .normalize(target)
            .map_err(|_| outside())?
            .ok_or_else(outside)?;
        if let Some(parent) = target_rel.parent()
            && parent.components().count() > 0
            && !self.known_dirs.contains(parent)
        {
            return Err(outside());
        }
        let target_full = self.root.join(&target_rel);
        match fs::symlink_metadata(&target_full) {
            Ok(meta) if meta.is_file() => {}
            _ => {
                return Err(unsafe_entry(
                    raw,
                    &format!(
                        "hardlink to `{}`, which is not an extracted regular file",
                        target.display()
                    ),
                ));
            }
        }
        self.ensure_parents(raw, rel)?;
        self.clear_leaf(raw, rel)?;
        let full = self.root.join(rel);
        fs::hard_link(&target_full, &full)
            .map_err(|error| Error::io("creating the hardlink", &full, error))?;
        self.digest.hardlink(rel, &target_rel);
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<UnpackStats> {
        let top = PathBuf::from(&self.top);
        if !self.known_dirs.contains(&top) {
            return Err(Error::new(
                ErrorCode::ImagebuilderError,
                format!(
                    "the archive has no `{}/` top directory",
                    self.top.to_string_lossy()
                ),
            ));
        }
        // A chain of individually harmless links can still escape; check the final tree.
        let top_root = self.root.join(&top);
        for link in &self.symlinks {
            let inside = link.strip_prefix(&top).unwrap_or(link);
            if !resolves_inside(&top_root, inside)? {
                return Err(unsafe_entry(
                    link,
                    "symlink chain escapes the top directory",
                ));
            }
        }
        // Deepest first, so a read-only parent does not block its children's updates.
        self.directories
            .sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
        for (rel, mode, mtime) in &self.directories {
            let full = self.root.join(rel);
            // Owner rwx stays on so the cache can always be cleaned up.
            fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700))
                .map_err(|error| Error::io("setting the mode of", &full, error))?;
            if let Ok(dir) = File::open(&full) {
                let _ = dir.set_modified(time_from(*mtime));
            }
        }
        for rel in &self.known_dirs {
            if !rel.as_os_str().is_empty() {
                self.digest.directory(rel);
            }
        }
        self.stats.tree_digest = self.digest.finish();
        Ok(self.stats)
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &Path) -> Result<PathBuf> {
    entry
        .link_name()
        .map_err(|error| tar_error(&error))?
        .map(|name| name.into_owned())
        .ok_or_else(|| unsafe_entry(raw, "link without a target"))
}

fn time_from(mtime: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(mtime)
}

/// True when `target`, read relative to the directory of `link` (a path starting with the
/// top directory), leaves the top directory.
fn lexical_escape(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count().saturating_sub(2);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(less) => depth = less,
                None => return true,
            },
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Follows the symlink at `link` (relative to `root`) through the real tree, symlinks in the
/// middle included, and tells whether it stays inside `root`. Loops count as inside: they
/// point nowhere.
fn resolves_inside(root: &Path, link: &Path) -> Result<bool> {
    let mut stack: Vec<OsString> = link
        .parent()
        .map(|parent| parent.iter().map(OsString::from).collect())
        .unwrap_or_default();
    let first =
        fs::read_link(root.join(link)).map_err(|error| Error::io("reading", link, error))?;
    let mut pending: VecDeque<OsString> = VecDeque::new();
    if !push_target(&mut pending, &first) {
        return Ok(false);
    }
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if stack.pop().is_none() {
                return Ok(false);
            }
            continue;
        }
        let candidate: PathBuf = stack.iter().chain(std::iter::once(&name)).collect();
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Ok(true);
                }
                let target =
                    fs::read_link(&full).map_err(|error| Error::io("reading", &full, error))?;
                let mut nested = VecDeque::new();
                if !push_target(&mut nested, &target) {
                    return Ok(false);
                }
                nested.extend(pending.drain(..));
                pending = nested;
            }
            _ => stack.push(name),
        }
    }
    Ok(true)
}

/// Queues a link target's components; false for absolute targets.
fn push_target(pending: &mut VecDeque<OsString>, target: &Path) -> bool {
    for component in target.components() {
        match component {
            Component::Normal(name) => pending.push_back(name.to_os_string()),
            Component::ParentDir => pending.push_back(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_dir_is_the_archive_name_without_suffix() {
        assert_eq!(
            top_dir_name("openwrt-imagebuilder-x.tar.zst").unwrap(),
            "openwrt-imagebuilder-x"
        );
        assert_eq!(top_dir_name("a.tar.xz").unwrap(), "a");
        assert!(top_dir_name("a.tar.gz").is_err());
        assert!(top_dir_name(".tar.xz").is_err());
    }

    #[test]
    fn lexical_escape_counts_from_the_link_directory() {
        let link = Path::new("top/a/link");
        assert!(!lexical_escape(link, Path::new("../b")));
        assert!(lexical_escape(link, Path::new("../../b")));
        assert!(lexical_escape(link, Path::new("/etc")));
        assert!(!lexical_escape(link, Path::new("x/../../y")));
        assert!(!lexical_escape(Path::new("top/link"), Path::new("a/./b")));
        assert!(lexical_escape(Path::new("top/link"), Path::new("..")));
    }
}
