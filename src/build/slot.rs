//! Worker slots: a private, cheap working copy of a pristine extracted Image Builder, made
//! once per worker and reset between builds. The pristine tree is only ever read (and
//! hardlinked); nothing here writes below it. What is shared and what is copied is decided
//! by [`super::placement`]; this module makes the slot match that decision.
//!
//! Both a fresh slot and a reset are the same walk over the pristine tree: for each entry,
//! make the slot's counterpart right (skip it if it already is), then delete whatever the
//! slot has that the pristine tree does not (the last build's files). A reset therefore costs
//! two directory walks plus the work of undoing what the last build changed.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::placement::{Placement, SLOT_META_DIR, is_kept_on_reset, placement};
use super::records::{CopyIdentity, FileFacts, Record, RecordKind, read_records, write_records};
use crate::error::{Error, ErrorCode, Result};

const SLOT_FORMAT: u32 = 1;
const STATE_FILE: &str = "slot.json";
const RECORDS_FILE: &str = "records";
/// Present while a build has used the slot and it was not reset since.
const USED_MARKER: &str = "used";
/// The private overlay directory a build passes as `FILES=`.
pub(crate) const FILES_DIR: &str = "files";
/// The file a fetcher writes into a completely unpacked Image Builder.
const PRISTINE_COMPLETE_MARKER: &str = ".imagegen-complete";

/// How a slot's shared files are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotMethod {
    /// Copy-on-write clones (btrfs, XFS, ...): every file is private at no cost.
    Reflink,
    /// Hardlinks for read-only files, real copies for the files the Image Builder writes.
    Hardlink,
    /// Real copies of everything (the slot is on another filesystem than the pristine tree).
    Copy,
}

/// What [`prepare_slot`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotReport {
    pub slot_dir: PathBuf,
    pub method: SlotMethod,
    /// The slot already existed for the same pristine tree and was reset.
    pub reused: bool,
    /// Hardlinks made.
    pub shared: u64,
    /// Private copies (or reflinks) made.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files and symlinks found intact by a reset.
    pub kept: u64,
    /// Slot entries deleted by a reset (the last build's files and replaced entries).
    pub removed: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SlotState {
    format: u32,
    pristine: PathBuf,
    marker: String,
    method: SlotMethod,
}

/// Makes `slot_dir` a private working copy of the pristine Image Builder at `pristine`:
/// fresh when the slot is missing, damaged or made from another tree, otherwise reset.
/// The caller guarantees that no build runs in this slot meanwhile.
pub fn prepare_slot(pristine: &Path, slot_dir: &Path) -> Result<SlotReport> {
    let started = Instant::now();
    let pristine = canonical_pristine(pristine)?;
    let slot_dir = absolute(slot_dir)?;
    if slot_dir.starts_with(&pristine) || pristine.starts_with(&slot_dir) {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "the slot `{}` overlaps the Image Builder `{}`",
                slot_dir.display(),
                pristine.display()
            ),
        ));
    }
    let marker = pristine_marker(&pristine)?;
    let mut report = match reusable_state(&slot_dir, &pristine, &marker) {
        Some(state) => reset_slot(&pristine, &slot_dir, state.method)?,
        None => fresh_slot(&pristine, &slot_dir, &marker)?,
    };
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Checks that no file the slot shares with the pristine tree was written through the
/// hardlink (the defence behind the copy list). Run after every build.
pub fn verify_slot(slot_dir: &Path) -> Result<()> {
    let records = read_records(&slot_dir.join(SLOT_META_DIR).join(RECORDS_FILE))?;
    let mut modified: Vec<PathBuf> = records
        .par_iter()
        .filter(|record| record.kind == RecordKind::Shared)
        .filter_map(|record| {
            let metadata = fs::symlink_metadata(slot_dir.join(&record.path)).ok()?;
            let now = FileFacts::of(&metadata);
            let written_through =
                now.ino == record.pristine.ino && !now.same_state(&record.pristine);
            written_through.then(|| record.path.clone())
        })
        .collect();
    if modified.is_empty() {
        return Ok(());
    }
    modified.sort();
    Err(pristine_modified(&modified))
}

/// Marks the slot as used by a build; refuses a slot that is not prepared or was used
/// since its last reset (its `.config` and run-time files are the last build's).
pub(crate) fn claim_slot(slot_dir: &Path) -> Result<()> {
    let meta = slot_dir.join(SLOT_META_DIR);
    let not_ready = |what: &str| {
        Error::new(
            ErrorCode::Precondition,
            format!("the build slot `{}` {what}", slot_dir.display()),
        )
        .with_help("prepare the slot (`prepare_slot`) before every build")
    };
    if !meta.join(STATE_FILE).is_file() {
        return Err(not_ready("is not prepared"));
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(meta.join(USED_MARKER))
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Err(not_ready("was used by a build and not reset since"))
        }
        Err(error) => Err(Error::io("creating", &meta.join(USED_MARKER), error)),
    }
}

/// The directory (inside the slot's bookkeeping) where a build may stage its private overlay.
pub(crate) fn private_files_dir(slot_dir: &Path) -> PathBuf {
    slot_dir.join(SLOT_META_DIR).join(FILES_DIR)
}

fn fresh_slot(pristine: &Path, slot_dir: &Path, marker: &str) -> Result<SlotReport> {
    if fs::symlink_metadata(slot_dir).is_ok() {
        remove_tree(slot_dir)?;
    }
    let meta = slot_dir.join(SLOT_META_DIR);
    fs::create_dir_all(&meta).map_err(|error| Error::io("creating", &meta, error))?;
    let method = probe_method(pristine, &meta)?;
    let walk = Walk {
        pristine,
        slot: slot_dir,
        method,
        previous: None,
    };
    let outcome = walk.sync_dir(Path::new(""))?;
    finish_dir(slot_dir, &root_metadata(pristine)?)?;
    write_records(&meta.join(RECORDS_FILE), &outcome.records)?;
    let state = SlotState {
        format: SLOT_FORMAT,
        pristine: pristine.to_path_buf(),
        marker: marker.to_string(),
        method,
    };
    write_state(&meta.join(STATE_FILE), &state)?;
    Ok(outcome.report(slot_dir, method, false))
}

fn reset_slot(pristine: &Path, slot_dir: &Path, method: SlotMethod) -> Result<SlotReport> {
    let meta = slot_dir.join(SLOT_META_DIR);
    let previous: HashMap<PathBuf, Record> = read_records(&meta.join(RECORDS_FILE))?
        .into_iter()
        .map(|record| (record.path.clone(), record))
        .collect();
    let files = meta.join(FILES_DIR);
    if fs::symlink_metadata(&files).is_ok() {
        remove_tree(&files)?;
    }
    let walk = Walk {
        pristine,
        slot: slot_dir,
        method,
        previous: Some(&previous),
    };
    let mut outcome = walk.sync_dir(Path::new(""))?;
    finish_dir(slot_dir, &root_metadata(pristine)?)?;
    write_records(&meta.join(RECORDS_FILE), &outcome.records)?;
    if !outcome.modified.is_empty() {
        // The slot now mirrors a damaged tree; forget it so nothing reuses it silently.
        let _ = fs::remove_file(meta.join(STATE_FILE));
        outcome.modified.sort();
        return Err(pristine_modified(&outcome.modified));
    }
    match fs::remove_file(meta.join(USED_MARKER)) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("removing", &meta.join(USED_MARKER), error)),
    }
    Ok(outcome.report(slot_dir, method, true))
}

/// One pass that makes the slot match the pristine tree.
struct Walk<'a> {
    pristine: &'a Path,
    slot: &'a Path,
    method: SlotMethod,
    /// The records of the last pass; `None` for a fresh slot (nothing to compare or delete).
    previous: Option<&'a HashMap<PathBuf, Record>>,
}

#[derive(Default)]
struct Outcome {
    records: Vec<Record>,
    /// Shared pristine files whose content or metadata changed since the last pass.
    modified: Vec<PathBuf>,
    shared: u64,
    copied: u64,
    copied_bytes: u64,
    kept: u64,
    removed: u64,
    directories: u64,
    symlinks: u64,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.records.extend(other.records);
        self.modified.extend(other.modified);
        self.shared += other.shared;
        self.copied += other.copied;
        self.copied_bytes += other.copied_bytes;
        self.kept += other.kept;
        self.removed += other.removed;
        self.directories += other.directories;
        self.symlinks += other.symlinks;
    }

    fn report(self, slot_dir: &Path, method: SlotMethod, reused: bool) -> SlotReport {
        SlotReport {
            slot_dir: slot_dir.to_path_buf(),
            method,
            reused,
            shared: self.shared,
            copied: self.copied,
            copied_bytes: self.copied_bytes,
            kept: self.kept,
            removed: self.removed,
            directories: self.directories,
            symlinks: self.symlinks,
            duration_ms: 0,
        }
    }
}

impl Walk<'_> {
    /// Syncs one directory's entries, then its subdirectories in parallel.
    fn sync_dir(&self, relative: &Path) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut existing = self.slot_entries(relative)?;
        let mut subdirs = Vec::new();
        for (name, metadata) in list_dir(&self.pristine.join(relative))? {
            let child = relative.join(&name);
            let file_type = metadata.file_type();
            let supported = file_type.is_dir() || file_type.is_file() || file_type.is_symlink();
            if !supported || placement(&child, file_type.is_dir()) == Placement::RunTime {
                continue;
            }
            let current = existing.remove(&name);
            if file_type.is_dir() {
                self.ensure_dir(&child, current.as_ref(), &mut outcome)?;
                subdirs.push((child, metadata));
            } else if file_type.is_symlink() {
                self.ensure_symlink(&child, current.as_ref(), &mut outcome)?;
            } else {
                self.ensure_file(&child, &metadata, current.as_ref(), &mut outcome)?;
            }
        }
        for (name, metadata) in existing {
            let child = relative.join(&name);
            if !is_kept_on_reset(&child) {
                remove_entry(&self.slot.join(&child), &metadata)?;
                outcome.removed += 1;
            }
        }
        let children: Vec<Result<Outcome>> = subdirs
            .par_iter()
            .map(|(child, _)| self.sync_dir(child))
            .collect();
        for child in children {
            outcome.merge(child?);
        }
        for (child, metadata) in &subdirs {
            finish_dir(&self.slot.join(child), metadata)?;
        }
        Ok(outcome)
    }

    /// The slot's entries of a directory, when a previous pass may have left some.
    fn slot_entries(&self, relative: &Path) -> Result<HashMap<OsString, fs::Metadata>> {
        if self.previous.is_none() {
            return Ok(HashMap::new());
        }
        Ok(list_dir(&self.slot.join(relative))?.into_iter().collect())
    }

    fn ensure_dir(
        &self,
        relative: &Path,
        current: Option<&fs::Metadata>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let path = self.slot.join(relative);
        if let Some(metadata) = current {
            if metadata.is_dir() {
                // A previous pass may have given it a read-only mode; it must take entries.
                if metadata.mode() & 0o700 != 0o700 {
                    set_mode(&path, metadata.mode() | 0o700)?;
                }
                return Ok(());
            }
            remove_entry(&path, metadata)?;
            outcome.removed += 1;
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|error| Error::io("creating", &path, error))?;
        outcome.directories += 1;
        Ok(())
    }

    fn ensure_symlink(
        &self,
        relative: &Path,
        current: Option<&fs::Metadata>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let source = self.pristine.join(relative);
        let path = self.slot.join(relative);
        let target =
            fs::read_link(&source).map_err(|error| Error::io("reading", &source, error))?;
        if let Some(metadata) = current {
            if metadata.file_type().is_symlink()
                && fs::read_link(&path).ok() == Some(target.clone())
            {
                outcome.kept += 1;
                return Ok(());
            }
            remove_entry(&path, metadata)?;
            outcome.removed += 1;
        }
        std::os::unix::fs::symlink(&target, &path)
            .map_err(|error| Error::io("creating", &path, error))?;
        outcome.symlinks += 1;
        Ok(())
    }

    fn ensure_file(
        &self,
        relative: &Path,
        pristine: &fs::Metadata,
        current: Option<&fs::Metadata>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let facts = FileFacts::of(pristine);
        let previous = self.previous.and_then(|records| records.get(relative));
        let share =
            self.method == SlotMethod::Hardlink && placement(relative, false) == Placement::Share;
        if let Some(record) = previous.filter(|record| record.kind == RecordKind::Shared)
            && record.pristine.ino == facts.ino
            && !record.pristine.same_state(&facts)
        {
            outcome.modified.push(relative.to_path_buf());
        }
        if let Some(metadata) = current {
            if is_intact(share, &facts, pristine, metadata, previous) {
                outcome.kept += 1;
                outcome
                    .records
                    .push(kept_record(share, relative, facts, metadata));
                return Ok(());
            }
            remove_entry(&self.slot.join(relative), metadata)?;
            outcome.removed += 1;
        }
        let (source, target) = (self.pristine.join(relative), self.slot.join(relative));
        if share {
            fs::hard_link(&source, &target)
                .map_err(|error| Error::io("linking", &target, error))?;
            outcome.shared += 1;
            outcome
                .records
                .push(kept_record(true, relative, facts, pristine));
            return Ok(());
        }
        let copy = copy_file(
            &source,
            &target,
            pristine,
            self.method == SlotMethod::Reflink,
        )?;
        outcome.copied += 1;
        outcome.copied_bytes += facts.size;
        outcome
            .records
            .push(kept_record(false, relative, facts, &copy));
        Ok(())
    }
}

/// Whether the slot's entry is still exactly what the last pass put there.
fn is_intact(
    share: bool,
    facts: &FileFacts,
    pristine: &fs::Metadata,
    slot: &fs::Metadata,
    previous: Option<&Record>,
) -> bool {
    if !slot.file_type().is_file() {
        return false;
    }
    if share {
        return slot.ino() == facts.ino && slot.dev() == pristine.dev();
    }
    previous.is_some_and(|record| {
        record.kind == RecordKind::Copied
            && record.copy == CopyIdentity::of(slot)
            && record.pristine.ino == facts.ino
            && record.pristine.same_state(facts)
    })
}

fn kept_record(share: bool, relative: &Path, facts: FileFacts, slot: &fs::Metadata) -> Record {
    Record {
        kind: if share {
            RecordKind::Shared
        } else {
            RecordKind::Copied
        },
        path: relative.to_path_buf(),
        pristine: facts,
        copy: if share {
            CopyIdentity::default()
        } else {
            CopyIdentity::of(slot)
        },
    }
}

/// Copies one file (a reflink when asked and possible), keeping mode and mtime, and
/// returns the copy's metadata.
fn copy_file(
    source: &Path,
    target: &Path,
    metadata: &fs::Metadata,
    reflink: bool,
) -> Result<fs::Metadata> {
    let mut input = File::open(source).map_err(|error| Error::io("reading", source, error))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(|error| Error::io("creating", target, error))?;
    let cloned = reflink && clone_file(&input, &output).is_ok();
    if !cloned {
        io::copy(&mut input, &mut output).map_err(|error| Error::io("copying", source, error))?;
    }
    let modified = metadata
        .modified()
        .map_err(|error| Error::io("reading", source, error))?;
    output
        .set_permissions(fs::Permissions::from_mode(metadata.mode() & 0o7777))
        .and_then(|()| output.set_modified(modified))
        .map_err(|error| Error::io("setting metadata of", target, error))?;
    output
        .metadata()
        .map_err(|error| Error::io("reading", target, error))
}

/// `ioctl(FICLONE)`: share the source's extents copy-on-write.
fn clone_file(source: &File, target: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its integer argument and touches no memory of ours.
    let status = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Picks reflink, hardlink or copy by trying each on the pristine `Makefile`.
fn probe_method(pristine: &Path, meta: &Path) -> Result<SlotMethod> {
    let source = pristine.join("Makefile");
    if !source.is_file() {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "`{}` is not an Image Builder (no `Makefile`)",
                pristine.display()
            ),
        ));
    }
    let probe = meta.join("probe");
    let _ = fs::remove_file(&probe);
    let reflinked = File::open(&source).and_then(|input| {
        let output = File::create(&probe)?;
        clone_file(&input, &output)
    });
    let _ = fs::remove_file(&probe);
    if reflinked.is_ok() {
        return Ok(SlotMethod::Reflink);
    }
    let linked = fs::hard_link(&source, &probe);
    let _ = fs::remove_file(&probe);
    match linked {
        Ok(()) => Ok(SlotMethod::Hardlink),
        Err(error) if error.raw_os_error() == Some(libc::EXDEV) => Ok(SlotMethod::Copy),
        Err(error) => Err(Error::io("linking into", meta, error)),
    }
}

/// Gives a slot directory the pristine directory's mode and mtime (after its entries are in
/// place, since adding entries moves the mtime).
fn finish_dir(path: &Path, pristine: &fs::Metadata) -> Result<()> {
    let current = fs::symlink_metadata(path).map_err(|error| Error::io("reading", path, error))?;
    if current.mode() & 0o7777 != pristine.mode() & 0o7777 {
        set_mode(path, pristine.mode())?;
    }
    if (current.mtime(), current.mtime_nsec()) != (pristine.mtime(), pristine.mtime_nsec()) {
        set_mtime(path, pristine.mtime(), pristine.mtime_nsec())?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|error| Error::io("setting permissions of", path, error))
}

fn set_mtime(path: &Path, seconds: i64, nanoseconds: i64) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::internal(format!("path `{}` contains NUL", path.display())))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanoseconds,
        },
    ];
    // SAFETY: `c_path` is a valid NUL-terminated string and `times` two valid timespecs,
    // both alive for the call.
    let status = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(Error::io(
            "setting the mtime of",
            path,
            io::Error::last_os_error(),
        ))
    }
}

/// Entries of a directory with their `lstat` metadata (via the directory descriptor).
fn list_dir(dir: &Path) -> Result<Vec<(OsString, fs::Metadata)>> {
    let entries = fs::read_dir(dir).map_err(|error| Error::io("listing", dir, error))?;
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("listing", dir, error))?;
        let metadata = entry
            .metadata()
            .map_err(|error| Error::io("reading", &entry.path(), error))?;
        listed.push((entry.file_name(), metadata));
    }
    Ok(listed)
}

fn remove_entry(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    if metadata.is_dir() {
        remove_tree(path)
    } else {
        fs::remove_file(path).map_err(|error| Error::io("removing", path, error))
    }
}

/// `rm -rf`, also for trees a build left with read-only directories (a rootfs has some).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) if error.kind() != io::ErrorKind::PermissionDenied => {
            return Err(Error::io("removing", path, error));
        }
        Err(_) => {}
    }
    make_dirs_writable(path);
    fs::remove_dir_all(path).map_err(|error| Error::io("removing", path, error))
}

fn make_dirs_writable(path: &Path) {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

fn canonical_pristine(pristine: &Path) -> Result<PathBuf> {
    let canonical = fs::canonicalize(pristine).map_err(|error| {
        Error::new(
            ErrorCode::Precondition,
            format!(
                "the Image Builder `{}` is not usable: {error}",
                pristine.display()
            ),
        )
    })?;
    if !canonical.is_dir() {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "the Image Builder `{}` is not a directory",
                pristine.display()
            ),
        ));
    }
    Ok(canonical)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|error| Error::io("resolving", path, error))
}

fn root_metadata(pristine: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(pristine).map_err(|error| Error::io("reading", pristine, error))
}

/// Identifies one extraction of a pristine tree: its root inode (a re-extraction renames a
/// new directory into place) and the fetcher's completion marker.
fn pristine_marker(pristine: &Path) -> Result<String> {
    let root = root_metadata(pristine)?;
    let complete = fs::read(pristine.join(PRISTINE_COMPLETE_MARKER)).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(&complete));
    Ok(format!("{}:{}:{}", root.dev(), root.ino(), &digest[..16]))
}

fn reusable_state(slot_dir: &Path, pristine: &Path, marker: &str) -> Option<SlotState> {
    let meta = slot_dir.join(SLOT_META_DIR);
    let text = fs::read(meta.join(STATE_FILE)).ok()?;
    let state: SlotState = serde_json::from_slice(&text).ok()?;
    let same = state.format == SLOT_FORMAT
        && state.pristine == pristine
        && state.marker == marker
        && meta.join(RECORDS_FILE).is_file();
    same.then_some(state)
}

fn write_state(path: &Path, state: &SlotState) -> Result<()> {
    let text = serde_json::to_vec_pretty(state)
        .map_err(|error| Error::internal(format!("serializing the slot state: {error}")))?;
    let temp = path.with_extension("tmp");
    fs::write(&temp, text).map_err(|error| Error::io("writing", &temp, error))?;
    fs::rename(&temp, path).map_err(|error| Error::io("writing", path, error))
}

fn pristine_modified(paths: &[PathBuf]) -> Error {
    let first = paths
        .first()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let more = match paths.len() {
        0 | 1 => String::new(),
        count => format!(" and {} more", count - 1),
    };
    let listed: HashSet<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let mut listed: Vec<String> = listed.into_iter().collect();
    listed.sort();
    Error::new(
        ErrorCode::ImagebuilderError,
        format!(
            "a build wrote into the pristine Image Builder through a shared file: `{first}`{more}"
        ),
    )
    .with_help(
        "the cached Image Builder is damaged: remove it (`imagegen builders prune`) so it is \
         fetched again; imagegen must copy such files into build slots, please report the path",
    )
    .with_details(serde_json::json!({ "modified_paths": listed }))
}
