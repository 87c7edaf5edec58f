//! Content-addressed artifact store: blobs named by their SHA-256, written once through a
//! temp file (hash while copying, fsync, rename) and never modified. It knows nothing about
//! builds or the database; which blobs are still referenced is the caller's business.
//!
//! Layout under the root (the artifacts directory):
//!
//! ```text
//! VERSION                      "1": the on-disk format, checked on open
//! blobs/sha256/<ab>/<hex>      one read-only file per distinct content (<ab> = first 2 hex)
//! tmp/                         temp files of puts in progress (same filesystem as blobs/)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

/// The on-disk format this code reads and writes.
pub const CAS_FORMAT_VERSION: u32 = 1;

/// Read and hash in chunks this big: large enough that syscalls do not show, small enough
/// to stay in L2.
const CHUNK: usize = 1 << 20;

/// A content-addressed store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
}

impl Cas {
    /// Opens (creating when missing) the store at `root`; refuses a newer format.
    pub fn open(root: &Path) -> Result<Cas> {
        let cas = Cas {
            root: root.to_path_buf(),
        };
        for dir in [cas.root.join("blobs").join("sha256"), cas.temp_dir()] {
            fs::create_dir_all(&dir).map_err(|error| Error::io("creating", &dir, error))?;
        }
        cas.check_version()?;
        Ok(cas)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        let prefix = sha256.get(..2).unwrap_or("__");
        self.root
            .join("blobs")
            .join("sha256")
            .join(prefix)
            .join(sha256)
    }

    /// Stores the contents of `source`, returning its SHA-256 (lowercase hex) and size.
    /// Storing content that is already present costs one read of `source` and no write to
    /// the existing blob.
    pub fn put_file(&self, source: &Path) -> Result<(String, u64)> {
        let mut input = File::open(source).map_err(|error| Error::io("reading", source, error))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".put-")
            .tempfile_in(self.temp_dir())
            .map_err(|error| Error::io("creating a temp file in", &self.temp_dir(), error))?;
        let (sha256, size) = copy_hashing(&mut input, temp.as_file_mut())
            .map_err(|error| Error::io("copying into the artifact store", source, error))?;
        let blob = self.blob_path(&sha256);
        if let Ok(existing) = fs::symlink_metadata(&blob) {
            if existing.is_file() && existing.len() == size {
                return Ok((sha256, size));
            }
            tracing::warn!(blob = %blob.display(), "replacing a stored blob whose size is wrong");
        }
        let file = temp.as_file();
        file.sync_all()
            .map_err(|error| Error::io("syncing", temp.path(), error))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|error| Error::io("setting permissions of", temp.path(), error))?;
        let parent = blob.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(|error| Error::io("creating", &parent, error))?;
        temp.persist(&blob)
            .map_err(|error| Error::io("storing", &blob, error.error))?;
        sync_dir(&parent)?;
        Ok((sha256, size))
    }

    /// Whether a blob with this hash is stored (without checking its content).
    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256_hex(sha256) && self.blob_path(sha256).is_file()
    }

    /// Re-hashes a stored blob: `Ok(false)` when its content no longer matches its name.
    pub fn verify(&self, sha256: &str) -> Result<bool> {
        let path = self.existing_blob(sha256)?;
        let mut file = File::open(&path).map_err(|error| Error::io("reading", &path, error))?;
        let (actual, _) = copy_hashing(&mut file, &mut io::sink())
            .map_err(|error| Error::io("reading", &path, error))?;
        Ok(actual == sha256)
    }

    /// Deletes a blob (for garbage collection); returns the bytes freed, 0 when absent.
    pub fn remove(&self, sha256: &str) -> Result<u64> {
        if !is_sha256_hex(sha256) {
            return Err(invalid_hash(sha256));
        }
        let path = self.blob_path(sha256);
        let size = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(Error::io("reading", &path, error)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(Error::io("removing", &path, error)),
        }
    }

    /// Every stored blob with its size, sorted by hash. Stray files are ignored.
    pub fn blobs(&self) -> Result<Vec<(String, u64)>> {
        let base = self.root.join("blobs").join("sha256");
        let mut found = Vec::new();
        for prefix in read_dir_sorted(&base)? {
            let Some(prefix_name) = prefix.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            if prefix_name.len() != 2 || !prefix.is_dir() {
                continue;
            }
            for blob in read_dir_sorted(&prefix)? {
                let Some(name) = blob.file_name().and_then(|name| name.to_str()) else {
                    continue;
                };
                if !is_sha256_hex(name) || !name.starts_with(prefix_name) {
                    continue;
                }
                let metadata = fs::symlink_metadata(&blob)
                    .map_err(|error| Error::io("reading", &blob, error))?;
                if metadata.is_file() {
                    found.push((name.to_string(), metadata.len()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes temp files left by interrupted puts that are older than `older_than` (younger
    /// ones may belong to a put in progress). Returns the bytes freed.
    pub fn remove_stale_temp(&self, older_than: Duration) -> Result<u64> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut freed = 0;
        for path in read_dir_sorted(&self.temp_dir())? {
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if metadata.is_file() && modified < cutoff && fs::remove_file(&path).is_ok() {
                freed += metadata.len();
            }
        }
        Ok(freed)
    }

    fn temp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn existing_blob(&self, sha256: &str) -> Result<PathBuf> {
        if !is_sha256_hex(sha256) {
            return Err(invalid_hash(sha256));
        }
        let path = self.blob_path(sha256);
        if !path.is_file() {
            return Err(Error::new(
                ErrorCode::ArtifactNotFound,
                format!("artifact `{sha256}` is not in the artifact store"),
            ));
        }
        Ok(path)
    }

    fn check_version(&self) -> Result<()> {
        let path = self.root.join("VERSION");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return write_version_file(&path);
            }
            Err(error) => return Err(Error::io("reading", &path, error)),
        };
        match text.trim().parse::<u32>() {
            Ok(version) if version <= CAS_FORMAT_VERSION => Ok(()),
            Ok(version) => Err(Error::new(
                ErrorCode::Precondition,
                format!(
                    "the artifact store `{}` has format version {version}; this imagegen \
                     understands up to {CAS_FORMAT_VERSION}",
                    self.root.display()
                ),
            )
            .with_help("use a newer imagegen, or point `OWRT_IMG_ARTIFACTS_DIR` elsewhere")),
            Err(_) => Err(Error::new(
                ErrorCode::Precondition,
                format!("`{}` does not hold a format version", path.display()),
            )),
        }
    }
}

/// Whether `text` is 64 lowercase hex digits (the only blob names the store creates).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// SHA-256 (lowercase hex) and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(|error| Error::io("reading", path, error))?;
    copy_hashing(&mut file, &mut io::sink()).map_err(|error| Error::io("reading", path, error))
}

/// Copies `input` to `output`, hashing on the way.
fn copy_hashing(input: &mut impl Read, output: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let read = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        output.write_all(&buffer[..read])?;
        size += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn write_version_file(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".VERSION-")
        .tempfile_in(parent)
        .map_err(|error| Error::io("creating a temp file in", parent, error))?;
    temp.write_all(format!("{CAS_FORMAT_VERSION}\n").as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|error| Error::io("writing", path, error))?;
    temp.persist(path)
        .map_err(|error| Error::io("writing", path, error.error))?;
    Ok(())
}

/// Makes a rename durable by syncing the directory that holds it.
fn sync_dir(dir: &Path) -> Result<()> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|error| Error::io("opening", dir, error))?;
    handle
        .sync_all()
        .map_err(|error| Error::io("syncing", dir, error))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io("listing", dir, error)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("listing", dir, error))?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

fn invalid_hash(text: &str) -> Error {
    Error::new(
        ErrorCode::Validation,
        format!("`{text}` is not a sha256 (64 lowercase hex digits)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let source = dir.path().join("a");
        fs::write(&source, b"").unwrap();
        let (sha, size) = cas.put_file(&source).unwrap();
        assert_eq!((sha.as_str(), size), (EMPTY_SHA256, 0));
        let again = cas.put_file(&source).unwrap();
        assert_eq!(again.0, sha);
        assert!(cas.contains(&sha));
        assert_eq!(cas.blobs().unwrap(), vec![(sha.clone(), 0)]);
        let mode = fs::metadata(cas.blob_path(&sha))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(fs::read_dir(cas.temp_dir()).unwrap().next().is_none());
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Cas::open(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("VERSION")).unwrap(),
            "1\n"
        );
        fs::write(dir.path().join("VERSION"), "2\n").unwrap();
        let error = Cas::open(dir.path()).unwrap_err();
        assert_eq!(error.code, ErrorCode::Precondition);
    }

    #[test]
    fn hashes_are_checked_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        assert!(!cas.contains("../../etc/passwd"));
        assert_eq!(cas.remove("xyz").unwrap_err().code, ErrorCode::Validation);
        assert_eq!(
            cas.verify(EMPTY_SHA256).unwrap_err().code,
            ErrorCode::ArtifactNotFound
        );
        assert_eq!(cas.remove(EMPTY_SHA256).unwrap(), 0);
    }
}
