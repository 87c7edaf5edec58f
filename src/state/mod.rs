//! The state store: one redb database of Image Builders, builds, artifacts, flashes and
//! per-fleet pointers, behind typed wrappers whose methods are domain queries.
//!
//! A [`Store`] holds an exclusive cross-process lock on the database for its whole life, so
//! two imagegen processes never share one state. [`Store::read`] gives a consistent snapshot
//! ([`Reader`]); [`Store::write`] gives one transaction ([`Writer`]) that is durable once
//! [`Writer::commit`] returns and vanishes if dropped. This module knows nothing about plans,
//! builds or devices beyond the records it stores; it never touches the artifact files.
//! The schema lives in [`tables`]; the design in `docs/state.md`.

mod lock;
mod migrate;
mod reader;
mod records;
mod tables;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, StorageError, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode, Result};
use lock::StateLock;
use tables::{META, SCHEMA_VERSION_KEY};

pub use lock::LockHolder;
pub use reader::Reader;
pub use records::{
    AppliedBy, ArtifactRecord, ArtifactRef, BuildRecord, BuildStatus, BuilderRecord, BuilderStatus,
    DeviceIdentity, DevicePointer, DeviceRecord, FlashRecord, FlashStatus, FlashedArtifact,
    ProfilePointer, RecordedError, VerifyResult, disk_device_key, fleet_device_key,
};
pub use tables::SCHEMA_VERSION;
pub use writer::Writer;

/// How often [`Store::open_wait`] retries a held lock.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// An open, locked state database.
pub struct Store {
    /// Always `Some` until dropped; taken by `Drop` to close it before the lock is released.
    db: Option<Database>,
    path: PathBuf,
    _lock: StateLock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, failing at once with
    /// `state_locked` if another process holds it. `holder` says what this process is doing
    /// (`imagegen apply`); others see it in their error.
    pub fn open(path: &Path, holder: &str) -> Result<Store> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::io("creating state directory", parent, error))?;
        }
        let lock = StateLock::try_acquire(path, holder)?;
        let db = open_database(path)?;
        Ok(Store {
            db: Some(db),
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Like [`Store::open`], but while another process holds the lock, retries until
    /// `timeout` has passed.
    pub fn open_wait(path: &Path, holder: &str, timeout: Duration) -> Result<Store> {
        let deadline = Instant::now() + timeout;
        loop {
            match Store::open(path, holder) {
                Err(error) if error.code == ErrorCode::StateLocked => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(error);
                    }
                    std::thread::sleep(LOCK_RETRY.min(deadline - now));
                }
                result => return result,
            }
        }
    }

    fn db(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::internal("state: the database is closed"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent snapshot; writes committed later are not visible through it.
    pub fn read(&self) -> Result<Reader> {
        guarded("starting a read", || {
            let txn = self.db()?.begin_read();
            txn.map(Reader::new)
                .map_err(|error| database_error("starting a read", error))
        })
    }

    /// One write transaction. Only one is open at a time; a second call waits for it.
    pub fn write(&self) -> Result<Writer> {
        guarded("starting a write", || {
            let txn = self.db()?.begin_write();
            txn.map(Writer::new)
                .map_err(|error| database_error("starting a write", error))
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // redb writes its allocator state when closed and can panic there on a damaged file;
        // a failed close loses nothing committed, so the panic is contained and ignored.
        if let Some(db) = self.db.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Seconds since the Unix epoch: the time unit of every record.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Opens the database and checks its schema. redb 4 asserts (panics) on some damaged files,
/// e.g. one shorter than its header says; such a panic becomes an error about the file.
fn open_database(path: &Path) -> Result<Database> {
    let open = || {
        let db = Database::create(path).map_err(|error| open_error(path, error))?;
        check_schema(&db, path)?;
        Ok(db)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
        .unwrap_or_else(|payload| Err(not_a_database(path, &panic_reason(payload.as_ref()))))
}

/// Runs one redb operation, turning a redb panic (it asserts on some damaged pages) into an
/// internal error instead of taking the process down.
pub(crate) fn guarded<T>(what: &str, operation: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation)).unwrap_or_else(|payload| {
        let reason = panic_reason(payload.as_ref());
        Err(database_error(what, format!("redb failed: {reason}"))
            .with_help("the state database is damaged; move it aside to start with empty state"))
    })
}

fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

fn open_error(path: &Path, error: DatabaseError) -> Error {
    let shown = path.display();
    match error {
        DatabaseError::DatabaseAlreadyOpen => lock::locked_error(path, None),
        DatabaseError::UpgradeRequired(format) => Error::new(
            ErrorCode::Precondition,
            format!("state `{shown}` uses the old redb file format {format}"),
        )
        .with_help("point OWRT_IMG_DB_URL at another database"),
        DatabaseError::Storage(StorageError::Corrupted(reason)) => not_a_database(path, &reason),
        // redb reports a file without its magic number as invalid data.
        DatabaseError::Storage(StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            not_a_database(path, &io.to_string())
        }
        DatabaseError::Storage(StorageError::Io(io)) => {
            let code = match io.kind() {
                std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionError,
                _ => ErrorCode::Precondition,
            };
            Error::new(code, format!("opening state `{shown}`: {io}"))
        }
        other => Error::internal(format!("opening state `{shown}`: {other}")),
    }
}

/// Initialises a new database, accepts the current schema, refuses anything else.
fn check_schema(db: &Database, path: &Path) -> Result<()> {
    match stored_schema(db, path)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) if found > SCHEMA_VERSION => Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "state `{}` was written by a newer imagegen (schema {found}); this imagegen understands schema {SCHEMA_VERSION}",
                path.display()
            ),
        )
        .with_help("upgrade imagegen, or point OWRT_IMG_DB_URL at another database")),
        Some(found) if found >= 1 => migrate::upgrade(db, found),
        Some(found) => Err(Error::new(
            ErrorCode::Precondition,
            format!(
                "state `{}` has schema {found}, which this imagegen cannot read (it understands schema {SCHEMA_VERSION})",
                path.display()
            ),
        )
        .with_help("point OWRT_IMG_DB_URL at another database")),
        None => writer::initialise(db),
    }
}

/// The stored schema version; `None` for a new, empty database. A redb database that holds
/// other tables but no version belongs to something else.
fn stored_schema(db: &Database, path: &Path) -> Result<Option<u64>> {
    let txn = db
        .begin_read()
        .map_err(|error| database_error("starting a read", error))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => Some(meta),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(TableError::Storage(error)) => return Err(database_error("reading META", error)),
        Err(_) => return Err(not_imagegen(path)),
    };
    let version = match meta {
        Some(meta) => meta
            .get(SCHEMA_VERSION_KEY)
            .map_err(|error| database_error("reading META", error))?
            .map(|guard| guard.value()),
        None => None,
    };
    if version.is_none() {
        let mut tables = txn
            .list_tables()
            .map_err(|error| database_error("listing tables", error))?;
        if tables.any(|table| redb::TableHandle::name(&table) != "META") {
            return Err(not_imagegen(path));
        }
    }
    Ok(version)
}

fn not_a_database(path: &Path, reason: &str) -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!(
            "state `{}` is not a redb database or is damaged: {reason}",
            path.display()
        ),
    )
    .with_help(
        "move the file aside to start with empty state, or point OWRT_IMG_DB_URL at another database",
    )
}

fn not_imagegen(path: &Path) -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!(
            "state `{}` is a redb database, but not one imagegen wrote",
            path.display()
        ),
    )
    .with_help("point OWRT_IMG_DB_URL at another database")
}

/// A failure of redb itself (I/O, a broken page) while doing `what`.
pub(crate) fn database_error(what: &str, error: impl fmt::Display) -> Error {
    Error::internal(format!("state: {what}: {error}"))
}

/// A record's bytes → the record; a failure names the table and key instead of panicking.
/// `key` is the key as `{:?}` shows it.
pub(crate) fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| {
        Error::internal(format!(
            "state table `{table}`, key {key}: cannot decode record: {error}"
        ))
        .with_help("the database is damaged or was written by an incompatible imagegen")
    })
}

pub(crate) fn encode<T: Serialize>(table: &str, record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|error| Error::internal(format!("state table `{table}`: cannot encode: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync>() {}

    #[test]
    fn a_store_can_be_shared_between_threads() {
        shareable::<Store>();
        shareable::<Reader>();
    }

    #[test]
    fn a_new_database_records_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path, "imagegen test").unwrap();
        let db = store.db().unwrap();
        assert_eq!(stored_schema(db, &path).unwrap(), Some(SCHEMA_VERSION));
    }
}
