//! The cross-process lock on a state database: an exclusive `flock(2)` on `<db>.lock`, held
//! for the life of a `Store`. It only locks; it never opens the database.
//!
//! The lock file is never deleted: removing a flock'ed file lets a second process lock a new
//! inode under the same name while the first still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// Who holds the lock; written into the lock file by the holder right after locking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    /// What the holder is doing, e.g. `imagegen apply`.
    pub command: String,
    /// RFC 3339, UTC.
    pub since: String,
}

/// A held lock; released when dropped (and by the kernel when the process dies).
#[derive(Debug)]
pub(crate) struct StateLock {
    file: File,
}

/// `<db>.lock` next to the database.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateLock {
    /// Takes the lock or fails at once with `state_locked`, naming the holder when known.
    pub(crate) fn try_acquire(db: &Path, command: &str) -> Result<StateLock> {
        let path = lock_path(db);
        // No truncate: the file may hold the current holder's details, which we report.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| Error::io("opening state lock", &path, error))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(locked_error(db, read_holder(&path))),
            Err(TryLockError::Error(error)) => {
                return Err(Error::io("locking state", &path, error));
            }
        }
        let mut lock = StateLock { file };
        lock.write_holder(command)
            .map_err(|error| Error::io("writing state lock", &path, error))?;
        Ok(lock)
    }

    fn write_holder(&mut self, command: &str) -> std::io::Result<()> {
        let holder = LockHolder {
            pid: std::process::id(),
            command: command.to_string(),
            since: now_rfc3339(),
        };
        let text = serde_json::to_string(&holder).map_err(std::io::Error::other)?;
        self.file.set_len(0)?;
        self.file.write_all(text.as_bytes())?;
        self.file.flush()
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Clear our details first so nobody reports a holder that has gone. Failures here
        // cannot be reported and do not matter: closing the file releases the lock anyway.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The holder's details, if the lock file has them (it may be empty for an instant after
/// the holder locked it).
pub(crate) fn read_holder(path: &Path) -> Option<LockHolder> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn locked_error(db: &Path, holder: Option<LockHolder>) -> Error {
    let by = match &holder {
        Some(holder) => format!(
            " (pid {}, `{}`, since {})",
            holder.pid, holder.command, holder.since
        ),
        None => String::new(),
    };
    let message = format!(
        "state `{}` is locked by another imagegen process{by}",
        db.display()
    );
    let details = serde_json::json!({ "path": db, "holder": holder });
    Error::new(ErrorCode::StateLocked, message)
        .with_help("wait for it to finish, or point OWRT_IMG_DB_URL at another database")
        .with_details(details)
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_next_to_the_database() {
        assert_eq!(
            lock_path(Path::new("/data/state.redb")),
            Path::new("/data/state.redb.lock")
        );
    }

    #[test]
    fn the_locked_error_names_the_holder_when_known() {
        let holder = LockHolder {
            pid: 42,
            command: "imagegen apply".to_string(),
            since: "2026-11-25T18:00:00Z".to_string(),
        };
        let error = locked_error(Path::new("/s/state.redb"), Some(holder));
        assert_eq!(error.code, ErrorCode::StateLocked);
        assert_eq!(
            error.message,
            "state `/s/state.redb` is locked by another imagegen process (pid 42, `imagegen apply`, since 2026-11-25T18:00:00Z)"
        );
        let error = locked_error(Path::new("/s/state.redb"), None);
        assert_eq!(
            error.message,
            "state `/s/state.redb` is locked by another imagegen process"
        );
    }

    #[test]
    fn the_holder_writes_its_details_and_clears_them_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.redb");
        let lock = StateLock::try_acquire(&db, "imagegen apply").unwrap();
        let holder = read_holder(&lock_path(&db)).unwrap();
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.command, "imagegen apply");
        drop(lock);
        assert_eq!(read_holder(&lock_path(&db)), None);
        assert!(lock_path(&db).exists(), "the lock file is never deleted");
    }
}
