//! Per-file hashing and the stamp-keyed hash cache. A file whose stamp (size, mtime, ctime,
//! inode, device) is known is not read; a file modified too recently to trust its stamp is
//! hashed but not remembered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A file changed less than this long ago may change again within the same timestamp tick
/// without its stamp changing ("racy clean"), so its hash is not recorded.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Files at least this large are hashed in chunks instead of being read whole.
const STREAM_THRESHOLD: u64 = 1024 * 1024;
/// Read size for large files.
const STREAM_CHUNK: usize = 1024 * 1024;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

impl FileStamp {
    pub fn from_metadata(metadata: &Metadata) -> FileStamp {
        FileStamp {
            size: metadata.size(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}

/// Remembers blake3 hashes of files by path and stamp. Implementations may persist entries
/// (see [`MemoryHashCache::encode_entry`]).
pub trait HashCache {
    /// The hash recorded for `path` if it was recorded with exactly this stamp.
    fn lookup(&self, path: &Path, stamp: &FileStamp) -> Option<[u8; 32]>;
    /// Remembers a hash read from `path` while it had `stamp`.
    fn record(&mut self, path: &Path, stamp: FileStamp, hash: [u8; 32]);
}

/// A cache that remembers nothing: every file is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHashCache;

impl HashCache for NoHashCache {
    fn lookup(&self, _path: &Path, _stamp: &FileStamp) -> Option<[u8; 32]> {
        None
    }

    fn record(&mut self, _path: &Path, _stamp: FileStamp, _hash: [u8; 32]) {}
}

/// An in-memory cache; a persistent store can load and save its entries as opaque bytes.
#[derive(Debug, Clone, Default)]
pub struct MemoryHashCache {
    entries: PathMap<(FileStamp, [u8; 32])>,
}

/// A map keyed by raw path bytes with a fast non-cryptographic hash. `Path`'s own `Hash`
/// walks components, and SipHash showed up in profiles of 20,000-file fleets; the keys are
/// local paths, not attacker-chosen, so flooding resistance buys nothing here.
pub(crate) type PathMap<V> = HashMap<OsString, V, BuildHasherDefault<PathHasher>>;

/// FxHash-style multiply-rotate hashing, 8 bytes at a time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let remainder = chunks.remainder();
        tail[..remainder.len()].copy_from_slice(remainder);
        self.add(u64::from_le_bytes(tail) ^ ((remainder.len() as u64) << 56));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl PathHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Version byte of [`MemoryHashCache::encode_entry`]'s layout.
const ENTRY_VERSION: u8 = 1;
const ENTRY_LENGTH: usize = 1 + 8 + 16 + 16 + 8 + 8 + 32;

impl MemoryHashCache {
    pub fn new() -> MemoryHashCache {
        MemoryHashCache::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every (path, stamp, hash), e.g. to save them.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &FileStamp, &[u8; 32])> {
        self.entries
            .iter()
            .map(|(path, (stamp, hash))| (Path::new(path), stamp, hash))
    }

    /// Adds an entry loaded from a store; returns false (and adds nothing) for bytes that
    /// [`decode_entry`](Self::decode_entry) rejects.
    pub fn insert_encoded(&mut self, path: PathBuf, bytes: &[u8]) -> bool {
        match MemoryHashCache::decode_entry(bytes) {
            Some((stamp, hash)) => {
                self.entries.insert(path.into_os_string(), (stamp, hash));
                true
            }
            None => false,
        }
    }

    /// A stamp and hash as 89 bytes: a version byte, then little-endian size, mtime_ns,
    /// ctime_ns, inode, device, then the 32-byte hash.
    pub fn encode_entry(stamp: &FileStamp, hash: &[u8; 32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ENTRY_LENGTH);
        bytes.push(ENTRY_VERSION);
        bytes.extend_from_slice(&stamp.size.to_le_bytes());
        bytes.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        bytes.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
        bytes.extend_from_slice(&stamp.inode.to_le_bytes());
        bytes.extend_from_slice(&stamp.device.to_le_bytes());
        bytes.extend_from_slice(hash);
        bytes
    }

    /// The inverse of [`encode_entry`](Self::encode_entry); `None` for another version or
    /// length, so a store written by a future layout is treated as a miss.
    pub fn decode_entry(bytes: &[u8]) -> Option<(FileStamp, [u8; 32])> {
        if bytes.len() != ENTRY_LENGTH || bytes.first() != Some(&ENTRY_VERSION) {
            return None;
        }
        let mut cursor = Cursor { bytes, offset: 1 };
        let stamp = FileStamp {
            size: u64::from_le_bytes(cursor.take()?),
            mtime_ns: i128::from_le_bytes(cursor.take()?),
            ctime_ns: i128::from_le_bytes(cursor.take()?),
            inode: u64::from_le_bytes(cursor.take()?),
            device: u64::from_le_bytes(cursor.take()?),
        };
        Some((stamp, cursor.take()?))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let slice = self.bytes.get(self.offset..self.offset + N)?;
        self.offset += N;
        slice.try_into().ok()
    }
}

impl HashCache for MemoryHashCache {
    fn lookup(&self, path: &Path, stamp: &FileStamp) -> Option<[u8; 32]> {
        self.entries
            .get(path.as_os_str())
            .filter(|(recorded, _)| recorded == stamp)
            .map(|(_, hash)| *hash)
    }

    fn record(&mut self, path: &Path, stamp: FileStamp, hash: [u8; 32]) {
        self.entries
            .insert(path.as_os_str().to_os_string(), (stamp, hash));
    }
}

/// The hash and length of one file's contents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileHash {
    pub hash: [u8; 32],
    pub size: u64,
}

pub(crate) struct ReadHash {
    pub file: FileHash,
    /// The file still had the expected stamp after reading, so the hash belongs to it.
    pub stable: bool,
}

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Largest file an overlay may place: far above any file a router image holds, and a bound
/// on what one fleet file makes imagegen read.
pub(crate) const MAX_OVERLAY_FILE_SIZE: u64 = 1024 * 1024 * 1024;

/// Opens an overlay file the walk saw as a regular file: never through a symlink swapped in
/// since (`O_NOFOLLOW`), never blocking on a FIFO swapped in (`O_NONBLOCK`), and only if the
/// opened descriptor is a regular file within [`MAX_OVERLAY_FILE_SIZE`].
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > MAX_OVERLAY_FILE_SIZE {
        return Err(too_large());
    }
    Ok(file)
}

pub(crate) fn too_large() -> std::io::Error {
    std::io::Error::other(format!(
        "larger than the limit of {MAX_OVERLAY_FILE_SIZE} bytes"
    ))
}

/// Reads and hashes a file; `expected` is the stamp seen when the tree was listed.
pub(crate) fn hash_file(path: &Path, expected: &FileStamp) -> std::io::Result<ReadHash> {
    let mut file = open_regular(path)?;
    let (file_hash, after) = READ_BUFFER.with(|buffer| {
        let buffer = &mut buffer.borrow_mut();
        if expected.size >= STREAM_THRESHOLD {
            hash_streamed(&mut file, buffer)
        } else {
            hash_small(&mut file, expected.size, buffer)
        }
    })?;
    let after = FileStamp::from_metadata(&after);
    let stable = after == *expected && file_hash.size == expected.size;
    Ok(ReadHash {
        file: file_hash,
        stable,
    })
}

/// Streams a large file through `buffer` in chunks big enough for blake3's widest SIMD path.
fn hash_streamed(file: &mut File, buffer: &mut Vec<u8>) -> std::io::Result<(FileHash, Metadata)> {
    buffer.clear();
    buffer.resize(STREAM_CHUNK, 0);
    let mut hasher = blake3::Hasher::new();
    loop {
        match file.read(buffer) {
            Ok(0) => break,
            Ok(count) => {
                hasher.update(&buffer[..count]);
                // The file grew past the limit after it was opened.
                if hasher.count() > MAX_OVERLAY_FILE_SIZE {
                    return Err(too_large());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let file_hash = FileHash {
        hash: *hasher.finalize().as_bytes(),
        size: hasher.count(),
    };
    Ok((file_hash, file.metadata()?))
}

/// Reads the whole file into `buffer` and hashes it in one call. The end is proven by `fstat`
/// reporting exactly the bytes read, which saves the extra `read` returning 0 per file.
fn hash_small(
    file: &mut File,
    expected: u64,
    buffer: &mut Vec<u8>,
) -> std::io::Result<(FileHash, Metadata)> {
    buffer.clear();
    buffer.resize(expected as usize + 1, 0);
    let mut filled = 0;
    let metadata = loop {
        if filled == buffer.len() {
            if filled as u64 > MAX_OVERLAY_FILE_SIZE {
                return Err(too_large());
            }
            buffer.resize(buffer.len() * 2, 0);
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break file.metadata()?,
            Ok(count) => {
                filled += count;
                if filled as u64 == expected {
                    let metadata = file.metadata()?;
                    if metadata.len() == expected {
                        break metadata;
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    };
    let contents = &buffer[..filled];
    Ok((
        FileHash {
            hash: *blake3::hash(contents).as_bytes(),
            size: filled as u64,
        },
        metadata,
    ))
}

/// Whether a file's last change is far enough in the past that a later change must show in
/// its stamp. Timestamps in the future never qualify.
pub(crate) fn old_enough_to_cache(stamp: &FileStamp, now: SystemTime) -> bool {
    let Ok(now) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let threshold = now.as_nanos() as i128 - RACY_WINDOW.as_nanos() as i128;
    stamp.mtime_ns.max(stamp.ctime_ns) < threshold
}
