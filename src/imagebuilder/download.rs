//! Download, verify and unpack one Image Builder archive into the cache, in a single pass.
//!
//! The body flows part file / network → SHA-256 → decompressor → [`super::unpack`] into a
//! staging dir next to its final place. The staging dir becomes
//! `<cache>/<release>/<target>/<subtarget>/<sha256[..16]>/` (atomic rename) only after the hash
//! matched and the unpack finished. The compressed bytes are kept in a `.part` file under
//! `<tmp>/downloads/` so a broken download resumes. Never reads or writes the state store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::metadata::TargetMetadata;
use super::mirror::{MirrorClient, ResumingReader};
use super::{target_dir, unpack, validate_name};
use crate::error::{Error, ErrorCode, Result};

/// The file whose presence marks a cache entry as complete.
pub const COMPLETE_MARKER: &str = ".imagegen-complete";
const STAGING_PREFIX: &str = ".partial-";
const PROGRESS_STEP: u64 = 1024 * 1024;
/// Caps decoder memory (a 16 MiB dictionary for `xz -7e` needs about 17 MiB).
const XZ_MEMORY_LIMIT: u64 = 40 * 1024 * 1024;
/// 2^25 = 32 MiB, the window of `zstd --ultra -20` that OpenWrt uses.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;
const PART_BUFFER: usize = 1024 * 1024;

/// Where a fetch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchPhase {
    /// Compressed bytes flowing (from the part file first, then the network).
    Downloading,
    /// Hash checked; making the unpacked tree durable and renaming it into place.
    Finishing,
    Done,
}

/// A progress report. In the `Downloading` phase `downloaded` counts compressed bytes, the
/// resumed part included; the later phases carry no byte counts (all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FetchProgress {
    pub phase: FetchPhase,
    pub downloaded: u64,
    pub total: Option<u64>,
    /// Bytes reused from an earlier interrupted download.
    pub resumed_from: u64,
}

/// The cache directory that holds (or will hold) this archive unpacked.
pub fn builder_dir(cache_dir: &Path, metadata: &TargetMetadata) -> Result<PathBuf> {
    validate_name("release", &metadata.triple.release)?;
    validate_name("target", &metadata.triple.target)?;
    validate_name("subtarget", &metadata.triple.subtarget)?;
    let sha = &metadata.archive_sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("invalid archive sha256 `{sha}`"),
        ));
    }
    Ok(cache_dir
        .join(&metadata.triple.release)
        .join(&metadata.triple.target)
        .join(&metadata.triple.subtarget)
        .join(&sha[..16]))
}

/// Fetches the Image Builder described by `metadata` unless the cache already holds it, and
/// returns the unpacked top directory (`.../<sha16>/<archive name minus suffix>`).
pub fn fetch_builder(
    client: &MirrorClient,
    metadata: &TargetMetadata,
    cache_dir: &Path,
    tmp_dir: &Path,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<PathBuf> {
    let final_dir = builder_dir(cache_dir, metadata)?;
    let top = unpack::top_dir_name(&metadata.archive)?.to_string();
    if is_complete(&final_dir) {
        return Ok(final_dir.join(top));
    }
    let downloads = tmp_dir.join("downloads");
    create_dirs(&downloads)?;
    let _lock = FileLock::acquire(&downloads.join(format!("{}.lock", metadata.archive_sha256)))?;
    if is_complete(&final_dir) {
        return Ok(final_dir.join(top));
    }
    let parent = final_dir
        .parent()
        .ok_or_else(|| Error::internal("cache directory has no parent"))?;
    create_dirs(parent)?;
    remove_stale_staging(parent, &metadata.archive_sha256[..16]);
    let part = downloads.join(format!("{}.part", metadata.archive_sha256));
    let (staging, tree_digest) = match attempt(client, metadata, parent, &part, &top, progress) {
        Err(Failure::Mismatch {
            error,
            resumed: true,
        }) => {
            // A corrupt part file from an earlier run: start over once from byte zero.
            tracing::warn!(error = %error.message, "discarding the partial download");
            remove_file_if_exists(&part);
            attempt(client, metadata, parent, &part, &top, progress).map_err(Failure::into_error)?
        }
        other => other.map_err(Failure::into_error)?,
    };
    remove_file_if_exists(&part);
    install(staging, &final_dir, metadata, &tree_digest, progress)?;
    Ok(final_dir.join(top))
}

/// The tree digest the completion marker of a cache entry recorded, if any.
pub fn recorded_tree_digest(entry: &Path) -> Option<String> {
    let bytes = fs::read(entry.join(COMPLETE_MARKER)).ok()?;
    let marker: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    marker.get("tree_digest")?.as_str().map(str::to_string)
}

/// True when `dir` holds a complete unpacked Image Builder.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).is_file()
}

enum Failure {
    Mismatch { error: Error, resumed: bool },
    Other(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Mismatch { error, .. } | Failure::Other(error) => error,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Other(error)
    }
}

/// One streaming pass; returns the staging dir holding the verified, unpacked tree.
fn attempt(
    client: &MirrorClient,
    metadata: &TargetMetadata,
    parent: &Path,
    part: &Path,
    top: &str,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<(tempfile::TempDir, String), Failure> {
    let staging = tempfile::Builder::new()
        .prefix(&format!(
            "{STAGING_PREFIX}{}-",
            &metadata.archive_sha256[..16]
        ))
        .tempdir_in(parent)
        .map_err(|error| Error::io("creating a staging directory in", parent, error))?;
    let rel_path = format!("{}/{}", target_dir(&metadata.triple), metadata.archive);
    let limits = client.options().archive_limits;
    let mut source = Source::open(client, &rel_path, part, limits.max_download_bytes, progress)?;
    let resumed = source.resumed_from > 0;
    let unpacked =
        decompress_and_unpack(&mut source, &metadata.archive, staging.path(), top, &limits);
    let over_cap = source.limit_failure.take().or(match &unpacked {
        Err(error) if error.code == ErrorCode::DownloadError => Some(error.clone()),
        _ => None,
    });
    if let Some(error) = over_cap {
        // Over a cap: stop now. The staging dir goes with `staging`, the part file here, so
        // a retry starts from zero instead of resuming into the same cap.
        remove_file_if_exists(part);
        return Err(Failure::Other(Error {
            message: format!("fetching {}: {}", metadata.archive, error.message),
            ..error
        }));
    }
    // Read the compressed rest whatever the unpack did: the hash covers the whole file and
    // tells a corrupt download from a bad archive.
    let drained = io::copy(&mut source, &mut io::sink());
    if let Some(error) = source.failure() {
        return Err(Failure::Other(error));
    }
    if let Err(error) = drained {
        return Err(Failure::Other(Error::io("reading", part, error)));
    }
    let actual = source.finish()?;
    if actual != metadata.archive_sha256 {
        remove_file_if_exists(part);
        let error = Error::new(
            ErrorCode::DownloadError,
            format!(
                "sha256 mismatch for {}: expected {}, got {actual}",
                metadata.archive, metadata.archive_sha256
            ),
        )
        .with_help("the mirror may be mid-sync or corrupt; retry later or use another mirror");
        return Err(Failure::Mismatch { error, resumed });
    }
    let stats = unpacked.map_err(|error| {
        remove_file_if_exists(part);
        Error {
            message: format!("unpacking {}: {}", metadata.archive, error.message),
            ..error
        }
    })?;
    Ok((staging, stats.tree_digest))
}

fn decompress_and_unpack(
    source: &mut Source<'_, '_>,
    archive: &str,
    staging: &Path,
    top: &str,
    limits: &unpack::ArchiveLimits,
) -> Result<unpack::UnpackStats> {
    let mut decoder: Box<dyn Read + '_> = if archive.ends_with(".tar.zst") {
        let mut decoder = zstd::stream::read::Decoder::new(source)
            .map_err(|error| Error::internal(format!("starting zstd: {error}")))?;
        decoder
            .window_log_max(ZSTD_WINDOW_LOG_MAX)
            .map_err(|error| Error::internal(format!("configuring zstd: {error}")))?;
        Box::new(decoder)
    } else {
        let stream = liblzma::stream::Stream::new_stream_decoder(
            XZ_MEMORY_LIMIT,
            liblzma::stream::CONCATENATED,
        )
        .map_err(|error| Error::internal(format!("starting xz: {error}")))?;
        Box::new(liblzma::read::XzDecoder::new_stream(source, stream))
    };
    pipelined_extract(&mut decoder, staging, top, limits)
}

/// Decompressed bytes in flight between the decoding and the extracting thread: 8 chunks
/// of 256 KiB, so memory stays bounded whatever the archive size.
const PIPE_CHUNK: usize = 256 * 1024;
const PIPE_DEPTH: usize = 8;

/// Extracts the tar stream on a second (scoped) thread while this one keeps downloading,
/// hashing and decompressing: file creation, the dominant cost of unpacking 20k files,
/// overlaps with decompression instead of following it. This is the one place outside
/// `exec` that starts a thread; it never outlives the call.
fn pipelined_extract(
    decoder: &mut dyn Read,
    staging: &Path,
    top: &str,
    limits: &unpack::ArchiveLimits,
) -> Result<unpack::UnpackStats> {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let extractor = scope.spawn(move || {
            let mut reader = ChannelReader {
                receiver,
                chunk: Vec::new(),
                position: 0,
            };
            unpack::extract(&mut reader, staging, top, limits)
        });
        // Stop decoding as soon as the extractor stopped (a refused entry, a cap): a
        // decompression bomb must not keep the CPU busy. The caller hashes the compressed rest.
        let decoded = loop {
            let mut chunk = vec![0u8; PIPE_CHUNK];
            match crate::fsutil::read_up_to(decoder, &mut chunk) {
                Ok(0) => break Ok(()),
                Ok(length) => {
                    chunk.truncate(length);
                    if sender.send(chunk).is_err() {
                        break Ok(());
                    }
                }
                Err(error) => break Err(error),
            }
        };
        drop(sender);
        let extracted = extractor
            .join()
            .map_err(|_| Error::internal("the unpacking thread panicked"))?;
        // A cap the download hit (reported by `Source`) surfaces here as a read error.
        let extracted = extracted?;
        decoded.map_err(|error| {
            Error::new(
                ErrorCode::ImagebuilderError,
                format!("decompressing: {error}"),
            )
        })?;
        Ok(extracted)
    })
}

/// The extractor's view of the pipe: a `Read` over the chunks the decoder sends.
struct ChannelReader {
    receiver: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.position == self.chunk.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.position = 0;
                }
                // The sender is gone: the stream ended (or decoding failed, reported above).
                Err(_) => return Ok(0),
            }
        }
        let length = buffer.len().min(self.chunk.len() - self.position);
        buffer[..length].copy_from_slice(&self.chunk[self.position..self.position + length]);
        self.position += length;
        Ok(length)
    }
}

/// The compressed byte stream: the part file's bytes, then the network's (appended to the
/// part file as they arrive), all through one SHA-256.
struct Source<'client, 'progress> {
    existing: Option<File>,
    network: ResumingReader<'client>,
    part_writer: BufWriter<File>,
    part_path: PathBuf,
    hasher: Sha256,
    downloaded: u64,
    resumed_from: u64,
    next_report: u64,
    write_failure: Option<Error>,
    /// Set when the download went past `max_bytes`.
    limit_failure: Option<Error>,
    max_bytes: u64,
    progress: &'progress mut dyn FnMut(FetchProgress),
}

impl<'client, 'progress> Source<'client, 'progress> {
    fn open(
        client: &'client MirrorClient,
        rel_path: &str,
        part: &Path,
        max_bytes: u64,
        progress: &'progress mut dyn FnMut(FetchProgress),
    ) -> Result<Self> {
        let existing = File::open(part).ok();
        let resumed_from = match &existing {
            Some(file) => file
                .metadata()
                .map_err(|error| Error::io("reading", part, error))?
                .len(),
            None => 0,
        };
        let appender = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|error| Error::io("creating", part, error))?;
        Ok(Source {
            existing,
            network: ResumingReader::new(client, rel_path, resumed_from),
            part_writer: BufWriter::with_capacity(PART_BUFFER, appender),
            part_path: part.to_path_buf(),
            hasher: Sha256::new(),
            downloaded: 0,
            resumed_from,
            next_report: 0,
            write_failure: None,
            limit_failure: None,
            max_bytes,
            progress,
        })
    }

    fn failure(&mut self) -> Option<Error> {
        self.write_failure
            .take()
            .or_else(|| self.network.take_failure())
    }

    /// Flushes the part file and returns the hex digest of everything read.
    fn finish(mut self) -> Result<String> {
        self.part_writer
            .flush()
            .map_err(|error| Error::io("writing", &self.part_path, error))?;
        self.report();
        Ok(hex::encode(self.hasher.finalize_reset()))
    }

    fn report(&mut self) {
        (self.progress)(FetchProgress {
            phase: FetchPhase::Downloading,
            downloaded: self.downloaded,
            total: self.network.total_len(),
            resumed_from: self.resumed_from,
        });
    }

    /// Hashes and counts bytes read; past the download cap (or when the server announces a
    /// larger file) the read fails and the cap is the recorded failure.
    fn account(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.downloaded += bytes.len() as u64;
        let announced = self.network.total_len().unwrap_or(0);
        if self.downloaded.max(announced) > self.max_bytes {
            let error = unpack::over_limit(format!(
                "the download has more than {} bytes",
                self.max_bytes
            ));
            let message = error.message.clone();
            self.limit_failure = Some(error);
            return Err(io::Error::other(message));
        }
        if self.downloaded >= self.next_report {
            self.next_report = self.downloaded + PROGRESS_STEP;
            self.report();
        }
        Ok(())
    }
}

impl Read for Source<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(existing) = self.existing.as_mut() {
            // Only network reads append to the part file, and they start once this is drained.
            let read = existing.read(buf)?;
            if read > 0 {
                self.account(&buf[..read])?;
                return Ok(read);
            }
            self.existing = None;
        }
        let read = self.network.read(buf)?;
        if let Err(error) = self.part_writer.write_all(&buf[..read]) {
            let message = error.to_string();
            self.write_failure = Some(Error::io("writing", &self.part_path, error));
            return Err(io::Error::other(message));
        }
        self.account(&buf[..read])?;
        Ok(read)
    }
}

/// Makes the staging tree durable, marks it complete and renames it into place.
fn install(
    staging: tempfile::TempDir,
    final_dir: &Path,
    metadata: &TargetMetadata,
    tree_digest: &str,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<()> {
    progress(FetchProgress {
        phase: FetchPhase::Finishing,
        downloaded: 0,
        total: None,
        resumed_from: 0,
    });
    sync_filesystem(staging.path())?;
    let marker = serde_json::json!({
        "archive": metadata.archive,
        "archive_sha256": metadata.archive_sha256,
        "release": metadata.triple.release,
        "target": metadata.triple.target,
        "subtarget": metadata.triple.subtarget,
        "key_id": metadata.key_id,
        "version_code": metadata.version_code,
        "url": metadata.url_of_archive,
        "tree_digest": tree_digest,
    });
    write_synced(
        &staging.path().join(COMPLETE_MARKER),
        marker.to_string().as_bytes(),
    )?;
    sync_dir(staging.path())?;
    if final_dir.exists() {
        // Not complete (we checked under the lock): leftovers of a foreign or broken copy.
        fs::remove_dir_all(final_dir).map_err(|error| Error::io("removing", final_dir, error))?;
    }
    let staged = staging.keep();
    if let Err(error) = fs::rename(&staged, final_dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(Error::io("renaming into", final_dir, error));
    }
    if let Some(parent) = final_dir.parent() {
        sync_dir(parent)?;
    }
    progress(FetchProgress {
        phase: FetchPhase::Done,
        downloaded: 0,
        total: None,
        resumed_from: 0,
    });
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|error| Error::io("creating", path, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| Error::io("writing", path, error))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| Error::io("syncing", path, error))
}

/// One `syncfs` flushes the whole unpacked tree; fsyncing 20,000 files one by one is slower.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|error| Error::io("opening", path, error))?;
    // SAFETY: syncfs takes a valid open file descriptor, owned by `dir` for this call.
    let status = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if status == 0 {
        Ok(())
    } else {
        Err(Error::io("syncing", path, io::Error::last_os_error()))
    }
}

fn create_dirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|error| Error::io("creating", path, error))
}

fn remove_file_if_exists(path: &Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove");
    }
}

/// Staging dirs left by a killed process (we hold the archive's lock, so none is live).
fn remove_stale_staging(parent: &Path, sha16: &str) {
    let prefix = format!("{STAGING_PREFIX}{sha16}-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// An exclusive `flock` held until drop: one process fetches a given archive at a time.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|error| Error::io("creating", path, error))?;
        loop {
            // SAFETY: flock on a descriptor owned by `file`; released when it is closed.
            let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if status == 0 {
                return Ok(FileLock { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("locking", path, error));
            }
        }
    }
}
