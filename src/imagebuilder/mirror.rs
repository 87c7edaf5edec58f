//! A download-server client: one API over `http(s)://` mirrors and local `file://` copies.
//!
//! It fetches bytes by path relative to the mirror root, with timeouts, retries with
//! exponential backoff and HTTP `Range` resume. It never interprets what it fetches. It uses
//! reqwest's *blocking* client, which runs its own runtime thread: never create or call a
//! `MirrorClient` from inside an async runtime (hand the work to a blocking thread instead).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use crate::error::{Error, ErrorCode, Result};

/// The most `get` reads into memory; large files go through `open`.
pub const SMALL_FILE_CAP: u64 = 64 * 1024 * 1024;
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Network behaviour knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    pub connect_timeout: Duration,
    /// Longest wait for any single read (or for response headers).
    pub read_timeout: Duration,
    /// Extra attempts after the first one for connect errors, timeouts and HTTP 5xx.
    pub retries: u32,
    /// Delay before the first retry; doubles each time (capped at 30 s).
    pub backoff_initial: Duration,
    /// Refuse every network request; `file://` mirrors stay usable.
    pub offline: bool,
    /// Caps on an Image Builder archive, enforced while it streams in.
    pub archive_limits: super::unpack::ArchiveLimits,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            retries: 4,
            backoff_initial: Duration::from_millis(500),
            offline: false,
            archive_limits: super::unpack::ArchiveLimits::default(),
        }
    }
}

/// An open response body, positioned at `offset` of the remote file.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// Where the body starts in the remote file (the resume point).
    pub offset: u64,
    /// The remote file's full length, when the server said.
    pub total_len: Option<u64>,
}

enum Base {
    Http(Option<reqwest::blocking::Client>),
    File(PathBuf),
}

/// Whether a failed attempt may be retried.
pub(crate) enum Attempt {
    Retry(Error),
    Fatal(Error),
}

/// A client for one mirror root (`https://downloads.openwrt.org`, `file:///srv/openwrt`).
pub struct MirrorClient {
    base: Base,
    base_url: String,
    options: FetchOptions,
}

impl MirrorClient {
    pub fn new(base_url: &str, options: FetchOptions) -> Result<MirrorClient> {
        let trimmed = base_url.trim_end_matches('/');
        let base = if let Some(rest) = trimmed.strip_prefix("file://") {
            Base::File(file_url_path(rest, base_url)?)
        } else if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            // No client in offline mode: it would start a runtime thread for nothing.
            let client = if options.offline {
                None
            } else {
                Some(http_client(&options)?)
            };
            Base::Http(client)
        } else {
            return Err(Error::new(
                ErrorCode::Validation,
                format!("unsupported mirror URL `{base_url}`"),
            )
            .with_help("use `https://...`, `http://...` or `file:///absolute/path`"));
        };
        Ok(MirrorClient {
            base,
            base_url: trimmed.to_string(),
            options,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// The full URL of a path relative to the mirror root.
    pub fn url_of(&self, rel_path: &str) -> String {
        format!("{}/{}", self.base_url, rel_path)
    }

    /// Fetches a small file (at most [`SMALL_FILE_CAP`] bytes) whole.
    pub fn get(&self, rel_path: &str) -> Result<Vec<u8>> {
        check_rel_path(rel_path)?;
        let url = self.url_of(rel_path);
        self.with_retries(&url, || {
            let body = self.open_once(rel_path, 0)?;
            read_small(body, &url)
        })
    }

    /// Like [`MirrorClient::get`], but a missing file is `Ok(None)`.
    pub fn get_optional(&self, rel_path: &str) -> Result<Option<Vec<u8>>> {
        match self.get(rel_path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Opens a file for streaming, starting at byte `resume_from` (HTTP `Range: bytes=N-`).
    pub fn open(&self, rel_path: &str, resume_from: u64) -> Result<Body> {
        check_rel_path(rel_path)?;
        let url = self.url_of(rel_path);
        self.with_retries(&url, || self.open_once(rel_path, resume_from))
    }

    /// Downloads a file to `dest`, resuming from `dest` + `.part` when a previous run left one.
    /// Returns the file's length.
    pub fn download(&self, rel_path: &str, dest: &Path) -> Result<u64> {
        let part = part_path(dest);
        let already = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|error| Error::io("creating", &part, error))?;
        let mut reader = ResumingReader::new(self, rel_path, already);
        let copied = io::copy(&mut reader, &mut file);
        if let Some(error) = reader.take_failure() {
            return Err(error);
        }
        copied.map_err(|error| Error::io("writing", &part, error))?;
        file.sync_all()
            .map_err(|error| Error::io("syncing", &part, error))?;
        std::fs::rename(&part, dest).map_err(|error| Error::io("renaming", &part, error))?;
        Ok(reader.position())
    }

    fn open_once(&self, rel_path: &str, resume_from: u64) -> Result<Body, Attempt> {
        match &self.base {
            Base::File(root) => {
                open_file(&root.join(rel_path), &self.url_of(rel_path), resume_from)
            }
            Base::Http(client) => {
                let url = self.url_of(rel_path);
                let Some(client) = client else {
                    return Err(Attempt::Fatal(offline_error(&url)));
                };
                open_http(client, &url, resume_from)
            }
        }
    }

    pub(crate) fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<T, Attempt>,
    ) -> Result<T> {
        let mut delay = self.options.backoff_initial;
        let mut failures = 0u32;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry(error)) if failures >= self.options.retries => {
                    let tries = failures + 1;
                    let noun = if tries == 1 { "attempt" } else { "attempts" };
                    return Err(Error {
                        message: format!("{} (gave up after {tries} {noun})", error.message),
                        ..error
                    });
                }
                Err(Attempt::Retry(error)) => {
                    failures += 1;
                    tracing::warn!(%url, error = %error.message, retry_in = ?delay, "retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// True for the error a missing remote file produces.
pub fn is_not_found(error: &Error) -> bool {
    error.code == ErrorCode::DownloadError
        && error.details.get("not_found").and_then(|v| v.as_bool()) == Some(true)
}

pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn offline_error(url: &str) -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!("offline: would fetch `{url}`"),
    )
    .with_help("turn offline mode off, or point `mirror` at a local `file://` copy")
    .with_details(serde_json::json!({ "would_fetch": url }))
}

fn not_found_error(url: &str, what: &str) -> Error {
    Error::new(
        ErrorCode::DownloadError,
        format!("`{url}` not found ({what})"),
    )
    .with_help("check the release, target and subtarget, and the mirror URL")
    .with_details(serde_json::json!({ "url": url, "not_found": true }))
}

fn download_error(message: String) -> Error {
    Error::new(ErrorCode::DownloadError, message)
}

fn http_client(options: &FetchOptions) -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .connect_timeout(options.connect_timeout)
        // The blocking client applies this to each wait (headers, every body read), so it
        // is a read timeout, not a cap on a whole large download.
        .timeout(options.read_timeout)
        .user_agent(concat!("imagegen/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| Error::internal(format!("creating the HTTP client: {error}")))
}

fn file_url_path(rest: &str, base_url: &str) -> Result<PathBuf> {
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let decoded = percent_decode(rest);
    let path = PathBuf::from(decoded);
    if !path.is_absolute() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("mirror URL `{base_url}` must name an absolute path"),
        )
        .with_help("write `file:///srv/openwrt-mirror` (three slashes)"));
    }
    Ok(path)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mirror paths are built from release, target and file names: keep them inside the root.
fn check_rel_path(rel_path: &str) -> Result<()> {
    let path = Path::new(rel_path);
    let clean = !rel_path.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if clean {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Validation,
            format!("invalid mirror path `{rel_path}`"),
        ))
    }
}

fn read_small(body: Body, url: &str) -> Result<Vec<u8>, Attempt> {
    if body.total_len.is_some_and(|len| len > SMALL_FILE_CAP) {
        return Err(Attempt::Fatal(too_big(url)));
    }
    let mut bytes = Vec::new();
    body.reader
        .take(SMALL_FILE_CAP + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Attempt::Retry(download_error(format!("reading `{url}`: {error}"))))?;
    if bytes.len() as u64 > SMALL_FILE_CAP {
        return Err(Attempt::Fatal(too_big(url)));
    }
    if body.total_len.is_some_and(|len| len != bytes.len() as u64) {
        return Err(Attempt::Retry(download_error(format!(
            "`{url}`: connection closed early"
        ))));
    }
    Ok(bytes)
}

fn too_big(url: &str) -> Error {
    download_error(format!(
        "`{url}` is larger than {} MiB",
        SMALL_FILE_CAP / (1024 * 1024)
    ))
}

fn open_file(path: &Path, url: &str, resume_from: u64) -> Result<Body, Attempt> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(Attempt::Fatal(not_found_error(url, "no such file")));
        }
        Err(error) => return Err(Attempt::Fatal(Error::io("opening", path, error))),
    };
    let total_len = file
        .metadata()
        .map_err(|error| Attempt::Fatal(Error::io("reading", path, error)))?
        .len();
    file.seek(SeekFrom::Start(resume_from.min(total_len)))
        .map_err(|error| Attempt::Fatal(Error::io("reading", path, error)))?;
    Ok(Body {
        reader: Box::new(file),
        offset: resume_from,
        total_len: Some(total_len),
    })
}

fn open_http(
    client: &reqwest::blocking::Client,
    url: &str,
    resume_from: u64,
) -> Result<Body, Attempt> {
    let mut request = client.get(url);
    if resume_from > 0 {
        request = request.header(RANGE, format!("bytes={resume_from}-"));
    }
    let response = request.send().map_err(|error| {
        let message = download_error(format!("fetching `{url}`: {}", error_chain(&error)));
        if is_unreachable(&error) {
            // Nothing answers at that name or port: retrying only makes the user wait.
            Attempt::Fatal(message.with_help(UNREACHABLE_HINT))
        } else if error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
        {
            Attempt::Retry(message)
        } else {
            Attempt::Fatal(message)
        }
    })?;
    let status = response.status();
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let range = content_range(&response);
            if range.map(|(start, _)| start) != Some(resume_from) {
                return Err(Attempt::Fatal(download_error(format!(
                    "`{url}`: the server answered a range request with the wrong range"
                ))));
            }
            Ok(Body {
                total_len: range.and_then(|(_, total)| total),
                offset: resume_from,
                reader: Box::new(response),
            })
        }
        StatusCode::OK => {
            let total_len = response.content_length();
            let mut reader: Box<dyn Read + Send> = Box::new(response);
            if resume_from > 0 {
                // The server ignored Range: skip what we already have.
                skip_bytes(&mut reader, resume_from, url)?;
            }
            Ok(Body {
                reader,
                offset: resume_from,
                total_len,
            })
        }
        StatusCode::RANGE_NOT_SATISFIABLE if resume_from > 0 => Ok(Body {
            // We already hold the whole file (or more); the caller's hash check decides.
            total_len: content_range(&response).and_then(|(_, total)| total),
            reader: Box::new(io::empty()),
            offset: resume_from,
        }),
        StatusCode::NOT_FOUND => Err(Attempt::Fatal(not_found_error(url, "HTTP 404"))),
        status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => Err(
            Attempt::Retry(download_error(format!("fetching `{url}`: HTTP {status}"))),
        ),
        status => Err(Attempt::Fatal(download_error(format!(
            "fetching `{url}`: HTTP {status}"
        )))),
    }
}

fn skip_bytes(reader: &mut Box<dyn Read + Send>, count: u64, url: &str) -> Result<(), Attempt> {
    let skipped = io::copy(&mut reader.take(count), &mut io::sink())
        .map_err(|error| Attempt::Retry(download_error(format!("reading `{url}`: {error}"))))?;
    if skipped < count {
        return Err(Attempt::Fatal(download_error(format!(
            "`{url}` is shorter than the part already downloaded"
        ))));
    }
    Ok(())
}

/// `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) → (START, TOTAL).
fn content_range(response: &reqwest::blocking::Response) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let total = total.trim().parse::<u64>().ok();
    let start = match range.split_once('-') {
        Some((start, _)) => start.trim().parse::<u64>().ok()?,
        None => 0,
    };
    Some((start, total))
}

const UNREACHABLE_HINT: &str = "check the `mirror` setting (`imagegen config` shows it), use a `file://` mirror, or pass `--offline` to work from imagegen.lock and the local caches";

/// True when the mirror's name does not resolve or its port refuses connections: errors a
/// retry does not fix, unlike a timeout or a reset connection.
fn is_unreachable(error: &reqwest::Error) -> bool {
    if !error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        let text = cause.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return true;
        }
        source = cause.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Reads a remote file from `start`, reconnecting with `Range` when the connection breaks
/// or ends before the announced length. Opens lazily, on the first read.
pub struct ResumingReader<'client> {
    client: &'client MirrorClient,
    rel_path: String,
    body: Option<Box<dyn Read + Send>>,
    position: u64,
    total_len: Option<u64>,
    stalls: u32,
    resumes: Vec<u64>,
    failure: Option<Error>,
}

impl<'client> ResumingReader<'client> {
    pub fn new(client: &'client MirrorClient, rel_path: &str, start: u64) -> Self {
        ResumingReader {
            client,
            rel_path: rel_path.to_string(),
            body: None,
            position: start,
            total_len: None,
            stalls: 0,
            resumes: Vec::new(),
            failure: None,
        }
    }

    /// The offset of the next byte to read.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn total_len(&self) -> Option<u64> {
        self.total_len
    }

    /// Offsets at which a broken connection was resumed.
    pub fn resumes(&self) -> &[u64] {
        &self.resumes
    }

    /// The download error behind a failed `read`, if one happened.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    fn connect(&mut self) -> io::Result<()> {
        let body = self
            .client
            .open(&self.rel_path, self.position)
            .map_err(|error| self.fail(error))?;
        if let (Some(known), Some(now)) = (self.total_len, body.total_len)
            && known != now
        {
            let url = self.client.url_of(&self.rel_path);
            return Err(self.fail(download_error(format!(
                "`{url}` changed size during the download ({known} then {now} bytes)"
            ))));
        }
        self.total_len = self.total_len.or(body.total_len);
        self.body = Some(body.reader);
        Ok(())
    }

    fn fail(&mut self, error: Error) -> io::Error {
        let io_error = io::Error::other(error.message.clone());
        self.failure = Some(error);
        io_error
    }

    fn stalled(&mut self, cause: String) -> io::Result<()> {
        self.body = None;
        self.stalls += 1;
        if self.stalls > self.client.options.retries {
            let url = self.client.url_of(&self.rel_path);
            return Err(self.fail(download_error(format!(
                "downloading `{url}`: {cause} at byte {} (gave up after {} reconnects)",
                self.position, self.client.options.retries
            ))));
        }
        tracing::warn!(path = %self.rel_path, position = self.position, %cause, "resuming download");
        self.resumes.push(self.position);
        Ok(())
    }
}

impl Read for ResumingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = &self.failure {
            return Err(io::Error::other(error.message.clone()));
        }
        loop {
            if self.body.is_none() {
                self.connect()?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(buf) {
                Ok(0) if buf.is_empty() => return Ok(0),
                Ok(0) => match self.total_len {
                    Some(total) if self.position < total => {
                        self.stalled("connection closed early".to_string())?;
                    }
                    _ => return Ok(0),
                },
                Ok(read) => {
                    self.position += read as u64;
                    self.stalls = 0;
                    return Ok(read);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => self.stalled(error_chain(&error))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_and_offline() {
        let client = MirrorClient::new(
            "file:///srv/my%20mirror/",
            FetchOptions {
                offline: true,
                ..FetchOptions::default()
            },
        )
        .unwrap();
        assert_eq!(client.url_of("a/b"), "file:///srv/my%20mirror/a/b");
        let Base::File(root) = &client.base else {
            panic!("file base")
        };
        assert_eq!(root, Path::new("/srv/my mirror"));
        assert!(MirrorClient::new("file://relative", FetchOptions::default()).is_err());
        assert!(MirrorClient::new("ftp://x", FetchOptions::default()).is_err());
    }

    #[test]
    fn offline_http_names_the_url() {
        let options = FetchOptions {
            offline: true,
            ..FetchOptions::default()
        };
        let client = MirrorClient::new("https://downloads.openwrt.org", options).unwrap();
        let error = client
            .get("releases/23.05.4/targets/x86/64/sha256sums")
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Precondition);
        assert_eq!(
            error.message,
            "offline: would fetch `https://downloads.openwrt.org/releases/23.05.4/targets/x86/64/sha256sums`"
        );
    }

    #[test]
    fn rel_paths_stay_inside_the_mirror() {
        for bad in ["", "/etc/passwd", "a/../b", "./a"] {
            assert!(check_rel_path(bad).is_err(), "{bad}");
        }
        assert!(check_rel_path("releases/23.05.4/targets/x86/64/sha256sums").is_ok());
    }

    #[test]
    fn file_not_found_is_a_download_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let client = MirrorClient::new(&url, FetchOptions::default()).unwrap();
        let error = client.get("missing").unwrap_err();
        assert!(is_not_found(&error));
        assert_eq!(client.get_optional("missing").unwrap(), None);
    }
}
