//! Worker slots: a private, cheap working copy of a pristine extracted Image Builder, made
//! once per worker and reset between builds. The pristine tree is only ever read (and
//! hardlinked); nothing here writes below it. What is shared and what is copied is decided
//! by [`super::placement`]; this module makes the slot match that decision.
//!
//! A fresh slot walks the pristine tree and creates each entry's counterpart, remembering
//! what it made in a record file. A reset walks only the slot: `readdir` inode numbers
//! compared with the records tell intact entries from ones the last build replaced; extras
//! are deleted, replaced or missing entries recreated from the pristine tree. A reset thus
//! costs one directory walk plus undoing what the last build changed.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fsops::{DirFd, EntryKind, RawEntry, c_path};
use super::placement::{Placement, SLOT_META_DIR, is_kept_on_reset, placement};
use super::records::{CopyIdentity, FileFacts, Record, RecordKind, read_records, write_records};
use super::sandbox::{build_owner, stop_stale_sandboxes};
use crate::error::{Error, ErrorCode, Result};

/// 2: directories and private copies belong to the build user when imagegen is root.
const SLOT_FORMAT: u32 = 2;
const STATE_FILE: &str = "slot.json";
const RECORDS_FILE: &str = "records";
/// Present while a build has used the slot and it was not reset since.
const USED_MARKER: &str = "used";
/// Present when the build that used the slot passed [`verify_slot`].
const VERIFIED_MARKER: &str = "verified";
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
    /// Owner of the slot's directories and private copies (`None`: left to imagegen's user).
    #[serde(default)]
    owner: Option<(u32, u32)>,
}

/// Makes `slot_dir` a private working copy of the pristine Image Builder at `pristine`:
/// fresh when the slot is missing, damaged or made from another tree, otherwise reset.
/// The caller guarantees that no build runs in this slot meanwhile; what is left of a
/// sandbox whose imagegen was killed is stopped first.
pub fn prepare_slot(pristine: &Path, slot_dir: &Path) -> Result<SlotReport> {
    let started = Instant::now();
    let pristine = canonical_pristine(pristine)?;
    let slot_dir = absolute(slot_dir)?;
    stop_stale_sandboxes(&slot_dir);
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
    let owner = build_owner();
    let mut report = match reusable_state(&slot_dir, &pristine, &marker, owner) {
        Some(state) => reset_slot(&pristine, &slot_dir, state.method, owner)?,
        None => fresh_slot(&pristine, &slot_dir, &marker, owner)?,
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

/// The slot's bookkeeping directory (records, state, markers, private overlay).
pub(crate) fn meta_dir(slot_dir: &Path) -> PathBuf {
    slot_dir.join(SLOT_META_DIR)
}

/// Removes what a finished build made from the fleet's overlay: the private overlay copy and
/// the staged root filesystems (`build_dir/*/root-*`, `root.orig-*`), which carry the
/// overlay's modes (setuid files, world-writable directories). The rest of the slot waits
/// for the next reset; nothing left in it comes from the overlay.
///
/// The build may have replaced any directory of the slot with a symlink to a host path; only
/// real directories are entered (nothing of the build runs any more to swap them meanwhile).
pub(crate) fn scrub_after_build(slot_dir: &Path) -> Result<()> {
    remove_tree(&private_files_dir(slot_dir))?;
    let build_dir = slot_dir.join("build_dir");
    if !fs::symlink_metadata(&build_dir).is_ok_and(|metadata| metadata.is_dir()) {
        return Ok(());
    }
    let Ok(targets) = fs::read_dir(&build_dir) else {
        return Ok(());
    };
    for target in targets.flatten() {
        if !target.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let Ok(entries) = fs::read_dir(target.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("root-") || name.starts_with("root.orig-") {
                let path = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => remove_tree(&path)?,
                    _ => fs::remove_file(&path)
                        .map_err(|error| Error::io("removing", &path, error))?,
                }
            }
        }
    }
    Ok(())
}

/// The directory (inside the slot's bookkeeping) where a build may stage its private overlay.
pub(crate) fn private_files_dir(slot_dir: &Path) -> PathBuf {
    slot_dir.join(SLOT_META_DIR).join(FILES_DIR)
}

/// Marks a claimed slot's build as checked by [`verify_slot`], so the next reset can skip
/// re-checking every shared file.
pub(crate) fn mark_verified(slot_dir: &Path) -> Result<()> {
    let path = slot_dir.join(SLOT_META_DIR).join(VERIFIED_MARKER);
    File::create(&path)
        .map(drop)
        .map_err(|error| Error::io("creating", &path, error))
}

fn fresh_slot(
    pristine: &Path,
    slot_dir: &Path,
    marker: &str,
    owner: Option<(u32, u32)>,
) -> Result<SlotReport> {
    if fs::symlink_metadata(slot_dir).is_ok() {
        remove_tree(slot_dir)?;
    }
    let meta = slot_dir.join(SLOT_META_DIR);
    fs::create_dir_all(&meta).map_err(|error| Error::io("creating", &meta, error))?;
    if let Some((uid, gid)) = owner {
        // The bookkeeping in `meta` stays imagegen's: a build must not rewrite it.
        std::os::unix::fs::lchown(slot_dir, Some(uid), Some(gid))
            .map_err(|error| Error::io("changing the owner of", slot_dir, error))?;
    }
    let method = probe_method(pristine, &meta)?;
    let walk = Walk {
        pristine,
        slot: slot_dir,
        method,
        owner,
        expected: HashMap::new(),
    };
    let outcome = walk.fresh_dir(Path::new(""))?;
    finish_dir(slot_dir, &root_stat(pristine)?)?;
    write_records(&meta.join(RECORDS_FILE), &outcome.records)?;
    let state = SlotState {
        format: SLOT_FORMAT,
        pristine: pristine.to_path_buf(),
        marker: marker.to_string(),
        method,
        owner,
    };
    write_state(&meta.join(STATE_FILE), &state)?;
    Ok(outcome.report(slot_dir, method, false))
}

fn reset_slot(
    pristine: &Path,
    slot_dir: &Path,
    method: SlotMethod,
    owner: Option<(u32, u32)>,
) -> Result<SlotReport> {
    let meta = slot_dir.join(SLOT_META_DIR);
    let used = meta.join(USED_MARKER).exists();
    if used && !meta.join(VERIFIED_MARKER).exists() {
        // The last build never reached its integrity check (crash, kill): do it now.
        if let Err(error) = verify_slot(slot_dir) {
            let _ = fs::remove_file(meta.join(STATE_FILE));
            return Err(error);
        }
    }
    let records = read_records(&meta.join(RECORDS_FILE))?;
    let files = meta.join(FILES_DIR);
    if fs::symlink_metadata(&files).is_ok() {
        remove_tree(&files)?;
    }
    let walk = Walk {
        pristine,
        slot: slot_dir,
        method,
        owner,
        expected: group_by_parent(records),
    };
    let mut outcome = walk.reset_dir(Path::new(""))?;
    finish_dir(slot_dir, &root_stat(pristine)?)?;
    write_records(&meta.join(RECORDS_FILE), &outcome.records)?;
    if !outcome.modified.is_empty() {
        // The slot now mirrors a damaged tree; forget it so nothing reuses it silently.
        let _ = fs::remove_file(meta.join(STATE_FILE));
        outcome.modified.sort();
        return Err(pristine_modified(&outcome.modified));
    }
    for marker in [USED_MARKER, VERIFIED_MARKER] {
        match fs::remove_file(meta.join(marker)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io("removing", &meta.join(marker), error)),
        }
    }
    Ok(outcome.report(slot_dir, method, true))
}

/// Records grouped by their parent directory, keyed by entry name.
type Expected = HashMap<PathBuf, HashMap<OsString, Record>>;

fn group_by_parent(records: Vec<Record>) -> Expected {
    let mut expected: Expected = HashMap::new();
    for record in records {
        let parent = record.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let Some(name) = record.path.file_name().map(OsStr::to_os_string) else {
            continue;
        };
        expected.entry(parent).or_default().insert(name, record);
    }
    expected
}

/// One pass that makes the slot match the pristine tree.
struct Walk<'a> {
    pristine: &'a Path,
    slot: &'a Path,
    method: SlotMethod,
    /// Who gets the directories and private copies this pass creates.
    owner: Option<(u32, u32)>,
    /// The last pass's records by directory; empty for a fresh slot.
    expected: Expected,
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

/// Both directories of one level: pristine and slot.
struct Level {
    pristine: DirFd,
    slot: DirFd,
}

impl Walk<'_> {
    fn open_level(&self, relative: &Path) -> Result<Level> {
        let (pristine, slot) = (self.pristine.join(relative), self.slot.join(relative));
        Ok(Level {
            pristine: DirFd::open(&pristine)
                .map_err(|error| Error::io("opening", &pristine, error))?,
            slot: DirFd::open(&slot).map_err(|error| Error::io("opening", &slot, error))?,
        })
    }

    /// Populates an empty slot directory from the pristine one, then its subdirectories in
    /// parallel (descriptors are closed before recursing, so depth does not pile them up).
    fn fresh_dir(&self, relative: &Path) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut subdirs = Vec::new();
        {
            let level = self.open_level(relative)?;
            let entries = level
                .pristine
                .entries()
                .map_err(|error| Error::io("listing", &self.pristine.join(relative), error))?;
            for entry in entries {
                let child = relative.join(entry.os_name());
                if let Some(stat) =
                    self.create(&level, &entry.name, entry.kind, &child, &mut outcome)?
                {
                    subdirs.push((child, stat));
                }
            }
        }
        self.descend(subdirs, Vec::new(), outcome)
    }

    /// Recurses into fresh and reset subdirectories, then restores their mode and mtime.
    fn descend(
        &self,
        fresh: Vec<(PathBuf, libc::stat)>,
        reset: Vec<(PathBuf, libc::stat)>,
        mut outcome: Outcome,
    ) -> Result<Outcome> {
        let jobs: Vec<(&PathBuf, bool)> = fresh
            .iter()
            .map(|(child, _)| (child, true))
            .chain(reset.iter().map(|(child, _)| (child, false)))
            .collect();
        let children: Vec<Result<Outcome>> = jobs
            .par_iter()
            .map(|(child, is_fresh)| {
                if *is_fresh {
                    self.fresh_dir(child)
                } else {
                    self.reset_dir(child)
                }
            })
            .collect();
        for child in children {
            outcome.merge(child?);
        }
        for (child, stat) in fresh.iter().chain(&reset) {
            finish_dir(&self.slot.join(child), stat)?;
        }
        Ok(outcome)
    }

    /// Creates the slot counterpart of one pristine entry. Returns the pristine `stat` of a
    /// directory that still needs filling.
    fn create(
        &self,
        level: &Level,
        name: &CStr,
        kind: EntryKind,
        child: &Path,
        outcome: &mut Outcome,
    ) -> Result<Option<libc::stat>> {
        let is_dir = kind == EntryKind::Directory;
        if kind == EntryKind::Other || placement(child, is_dir) == Placement::RunTime {
            return Ok(None);
        }
        let io_error = |what: &str, error| Error::io(what, &self.slot.join(child), error);
        let stat = level
            .pristine
            .stat_at(name)
            .map_err(|error| io_error("reading", error))?;
        match kind {
            EntryKind::Directory => {
                level
                    .slot
                    .mkdir_at(name, 0o755)
                    .map_err(|error| io_error("creating", error))?;
                if let Some(owner) = self.owner {
                    level
                        .slot
                        .chown_at(name, owner)
                        .map_err(|error| io_error("changing the owner of", error))?;
                }
                outcome.directories += 1;
                outcome.records.push(record(
                    RecordKind::Dir,
                    child,
                    &stat,
                    CopyIdentity::default(),
                ));
                Ok(Some(stat))
            }
            EntryKind::Symlink => {
                let target = level
                    .pristine
                    .read_link_at(name)
                    .map_err(|error| io_error("reading", error))?;
                level
                    .slot
                    .symlink_at(&target, name)
                    .map_err(|error| io_error("creating", error))?;
                level
                    .slot
                    .set_mtime_at(name, stat.st_mtime, stat.st_mtime_nsec)
                    .map_err(|error| io_error("setting the mtime of", error))?;
                let link = level
                    .slot
                    .stat_at(name)
                    .map_err(|error| io_error("reading", error))?;
                outcome.symlinks += 1;
                outcome.records.push(record(
                    RecordKind::Symlink,
                    child,
                    &stat,
                    CopyIdentity::of_stat(&link),
                ));
                Ok(None)
            }
            _ => {
                self.create_file(level, name, child, &stat, outcome)?;
                Ok(None)
            }
        }
    }

    fn create_file(
        &self,
        level: &Level,
        name: &CStr,
        child: &Path,
        stat: &libc::stat,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let share =
            self.method == SlotMethod::Hardlink && placement(child, false) == Placement::Share;
        if share {
            level
                .pristine
                .link_at(name, &level.slot, name)
                .map_err(|error| Error::io("linking", &self.slot.join(child), error))?;
            outcome.shared += 1;
            outcome.records.push(record(
                RecordKind::Shared,
                child,
                stat,
                CopyIdentity::default(),
            ));
            return Ok(());
        }
        let identity = copy_file(
            level,
            name,
            stat,
            self.method == SlotMethod::Reflink,
            self.owner,
        )
        .map_err(|error| Error::io("copying", &self.slot.join(child), error))?;
        outcome.copied += 1;
        outcome.copied_bytes += stat.st_size as u64;
        outcome
            .records
            .push(record(RecordKind::Copied, child, stat, identity));
        Ok(())
    }

    /// Brings a used slot directory back to its recorded state: keeps intact entries,
    /// deletes what the last build added, recreates what it replaced or removed. Walks the
    /// slot only; `readdir`'s inode numbers tell intact entries from replaced ones.
    fn reset_dir(&self, relative: &Path) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut fresh = Vec::new();
        let mut reset = Vec::new();
        {
            let level = self.open_level(relative)?;
            let slot_path = self.slot.join(relative);
            let own = level
                .slot
                .stat()
                .map_err(|error| Error::io("reading", &slot_path, error))?;
            if own.st_mode & 0o700 != 0o700 {
                level
                    .slot
                    .chmod(own.st_mode | 0o700)
                    .map_err(|error| Error::io("setting permissions of", &slot_path, error))?;
            }
            let empty = HashMap::new();
            let expected = self.expected.get(relative).unwrap_or(&empty);
            let mut seen: HashSet<&OsStr> = HashSet::new();
            for entry in level
                .slot
                .entries()
                .map_err(|error| Error::io("listing", &slot_path, error))?
            {
                let child = relative.join(entry.os_name());
                let Some((name, record)) = expected.get_key_value(entry.os_name()) else {
                    if !is_kept_on_reset(&child) {
                        remove_child(&level.slot, &entry, &self.slot.join(&child))?;
                        outcome.removed += 1;
                    }
                    continue;
                };
                seen.insert(name.as_os_str());
                if self.is_intact(&level, &entry, record)? {
                    outcome.kept += u64::from(record.kind != RecordKind::Dir);
                    outcome.records.push(record.clone());
                    if record.kind == RecordKind::Dir {
                        reset.push((child, dir_stat(record)));
                    }
                    continue;
                }
                remove_child(&level.slot, &entry, &self.slot.join(&child))?;
                outcome.removed += 1;
                seen.remove(name.as_os_str());
            }
            for (name, record) in expected
                .iter()
                .filter(|(name, _)| !seen.contains(name.as_os_str()))
            {
                self.restore(&level, name, record, &mut outcome, &mut fresh)?;
            }
        }
        self.descend(fresh, reset, outcome)
    }

    /// Whether a slot entry is still exactly what the last pass put there.
    fn is_intact(&self, level: &Level, entry: &RawEntry, record: &Record) -> Result<bool> {
        Ok(match record.kind {
            RecordKind::Dir => entry.kind == EntryKind::Directory,
            RecordKind::Shared => entry.kind == EntryKind::File && entry.ino == record.pristine.ino,
            RecordKind::Symlink => entry.kind == EntryKind::Symlink && entry.ino == record.copy.ino,
            RecordKind::Copied => {
                if entry.kind != EntryKind::File || entry.ino != record.copy.ino {
                    return Ok(false);
                }
                let stat = level
                    .slot
                    .stat_at(&entry.name)
                    .map_err(|error| Error::io("reading", &self.slot.join(&record.path), error))?;
                CopyIdentity::of_stat(&stat) == record.copy
            }
        })
    }

    /// Recreates a recorded entry the last build removed or replaced.
    fn restore(
        &self,
        level: &Level,
        name: &OsStr,
        record: &Record,
        outcome: &mut Outcome,
        fresh: &mut Vec<(PathBuf, libc::stat)>,
    ) -> Result<()> {
        let c_name = CString::new(name.as_bytes())
            .map_err(|_| Error::internal(format!("a slot entry name contains NUL: {name:?}")))?;
        let kind = match record.kind {
            RecordKind::Dir => EntryKind::Directory,
            RecordKind::Symlink => EntryKind::Symlink,
            RecordKind::Shared | RecordKind::Copied => EntryKind::File,
        };
        let created = self.create(level, &c_name, kind, &record.path, outcome)?;
        if let Some(stat) = created {
            fresh.push((record.path.clone(), stat));
        }
        let recreated = outcome.records.last().filter(|new| new.path == record.path);
        if let Some(new) = recreated
            && record.kind == RecordKind::Shared
            && new.pristine.ino == record.pristine.ino
            && !new.pristine.same_state(&record.pristine)
        {
            outcome.modified.push(record.path.clone());
        }
        Ok(())
    }
}

fn record(kind: RecordKind, path: &Path, stat: &libc::stat, copy: CopyIdentity) -> Record {
    Record {
        kind,
        path: path.to_path_buf(),
        pristine: FileFacts::of_stat(stat),
        copy,
    }
}

/// The pristine mode and mtime a directory record carries, as a `stat` for [`finish_dir`].
fn dir_stat(record: &Record) -> libc::stat {
    // SAFETY: stat is plain data; only the fields set below are read.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    stat.st_mode = record.pristine.mode;
    stat.st_mtime = record.pristine.mtime_ns.div_euclid(1_000_000_000);
    stat.st_mtime_nsec = record.pristine.mtime_ns.rem_euclid(1_000_000_000);
    stat
}

fn remove_child(dir: &DirFd, entry: &RawEntry, path: &Path) -> Result<()> {
    if entry.kind == EntryKind::Directory {
        remove_tree(path)
    } else {
        dir.unlink_at(&entry.name)
            .map_err(|error| Error::io("removing", path, error))
    }
}

/// Copies one file (a reflink when asked and possible), keeping mode and mtime, and
/// returns the copy's identity.
fn copy_file(
    level: &Level,
    name: &CStr,
    stat: &libc::stat,
    reflink: bool,
    owner: Option<(u32, u32)>,
) -> io::Result<CopyIdentity> {
    let mut input = level.pristine.open_file_at(name)?;
    let mut output = level.slot.create_file_at(name)?;
    let cloned = reflink && clone_file(&input, &output).is_ok();
    if !cloned {
        io::copy(&mut input, &mut output)?;
    }
    if let Some((uid, gid)) = owner {
        // Before the mode: a change of owner clears setuid and setgid bits.
        std::os::unix::fs::fchown(&output, Some(uid), Some(gid))?;
    }
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            stat.st_mtime.max(0) as u64,
            stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    output.set_permissions(fs::Permissions::from_mode(stat.st_mode & 0o7777))?;
    output.set_modified(modified)?;
    let metadata = output.metadata()?;
    Ok(CopyIdentity::of(&metadata))
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
fn finish_dir(path: &Path, pristine: &libc::stat) -> Result<()> {
    let current = fs::symlink_metadata(path).map_err(|error| Error::io("reading", path, error))?;
    if current.mode() & 0o7777 != pristine.st_mode & 0o7777 {
        set_mode(path, pristine.st_mode)?;
    }
    if (current.mtime(), current.mtime_nsec()) != (pristine.st_mtime, pristine.st_mtime_nsec) {
        set_mtime(path, pristine.st_mtime, pristine.st_mtime_nsec)?;
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

fn root_stat(pristine: &Path) -> Result<libc::stat> {
    let path = c_path(pristine).map_err(|error| Error::io("reading", pristine, error))?;
    // SAFETY: stat is plain data, filled by lstat on success.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::lstat(path.as_ptr(), &mut stat) } != 0 {
        return Err(Error::io("reading", pristine, io::Error::last_os_error()));
    }
    Ok(stat)
}

/// Identifies one extraction of a pristine tree: its root inode (a re-extraction renames a
/// new directory into place) and the fetcher's completion marker.
fn pristine_marker(pristine: &Path) -> Result<String> {
    let root =
        fs::symlink_metadata(pristine).map_err(|error| Error::io("reading", pristine, error))?;
    let complete = fs::read(pristine.join(PRISTINE_COMPLETE_MARKER)).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(&complete));
    Ok(format!("{}:{}:{}", root.dev(), root.ino(), &digest[..16]))
}

fn reusable_state(
    slot_dir: &Path,
    pristine: &Path,
    marker: &str,
    owner: Option<(u32, u32)>,
) -> Option<SlotState> {
    let meta = slot_dir.join(SLOT_META_DIR);
    let text = fs::read(meta.join(STATE_FILE)).ok()?;
    let state: SlotState = serde_json::from_slice(&text).ok()?;
    let same = state.format == SLOT_FORMAT
        && state.pristine == pristine
        && state.marker == marker
        && state.owner == owner
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
