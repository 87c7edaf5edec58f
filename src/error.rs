//! Errors with stable codes, and the problems (diagnostics) that point into files we read.
//!
//! Every failure that reaches a user is an [`Error`]: a stable [`ErrorCode`], a one-line
//! message, optional details, and zero or more [`Problem`]s. A problem is one finding in an
//! input file (or about one input) with an optional [`Location`] (file, line, column and the
//! byte span used for the miette rendering). Parsing and validation collect *all* problems of
//! one run before failing. This module renders nothing; frontends do (the CLI in `cli::report`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable error codes (the seed taxonomy). Their snake_case names are part of the JSON
/// interface and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Validation,
    ProfileNotFound,
    BuildNotFound,
    ArtifactNotFound,
    Precondition,
    DownloadError,
    SignatureError,
    ImagebuilderError,
    BuildFailed,
    FlashError,
    FlashHashMismatch,
    DeviceError,
    /// The device path does not exist (or has no medium).
    DeviceNotFound,
    /// The path is not a block device.
    DeviceNotBlock,
    /// A partition was given where a whole disk is needed.
    DeviceIsPartition,
    /// The disk or one of its partitions is mounted.
    DeviceMounted,
    /// Something holds the disk: device-mapper, md, LVM, or another exclusive opener.
    DeviceBusy,
    /// The disk backs `/`, `/boot`, `/boot/efi` or active swap.
    DeviceSystemDisk,
    DeviceReadOnly,
    /// The image does not fit on the device.
    ImageTooLarge,
    /// A flash was neither confirmed on a terminal nor forced.
    FlashNotConfirmed,
    PermissionError,
    StateLocked,
    StalePlan,
    Interrupted,
    InternalError,
    /// A malformed request to the HTTP API (body not JSON, unknown query parameter); the
    /// CLI's usage errors come from clap and exit 64 without an `Error`.
    Usage,
    /// The HTTP API needs a bearer token and the request had none, or a wrong one.
    Unauthorized,
    /// No background job with that id (HTTP API).
    JobNotFound,
    /// No Image Builder with that address is recorded or locked.
    BuilderNotFound,
}

/// Process exit codes. Documented in README.md ("Exit codes"); keep both in sync.
pub mod exit {
    /// Success; for `plan --detailed-exitcode`: success and no changes.
    pub const OK: i32 = 0;
    /// A step failed (download, signature, Image Builder, build, flash).
    pub const FAILED: i32 = 1;
    /// `plan --detailed-exitcode`: success, and changes are pending.
    pub const CHANGES: i32 = 2;
    /// Invalid input: manifest, profile, lock or command-line values.
    pub const INVALID: i32 = 3;
    /// A saved plan or the lock file is stale (`--locked`, `apply PLANFILE`).
    pub const STALE: i32 = 4;
    /// The state store is locked by another imagegen process.
    pub const LOCKED: i32 = 5;
    /// Command-line usage error (unknown flag, missing argument).
    pub const USAGE: i32 = 64;
    /// Internal error: a bug, or the environment broke an assumption (disk full, ...).
    pub const INTERNAL: i32 = 70;
    /// Interrupted by Ctrl-C / SIGINT / SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "validation",
            ErrorCode::ProfileNotFound => "profile_not_found",
            ErrorCode::BuildNotFound => "build_not_found",
            ErrorCode::ArtifactNotFound => "artifact_not_found",
            ErrorCode::Precondition => "precondition",
            ErrorCode::DownloadError => "download_error",
            ErrorCode::SignatureError => "signature_error",
            ErrorCode::ImagebuilderError => "imagebuilder_error",
            ErrorCode::BuildFailed => "build_failed",
            ErrorCode::FlashError => "flash_error",
            ErrorCode::FlashHashMismatch => "flash_hash_mismatch",
            ErrorCode::DeviceError => "device_error",
            ErrorCode::DeviceNotFound => "device_not_found",
            ErrorCode::DeviceNotBlock => "device_not_block",
            ErrorCode::DeviceIsPartition => "device_is_partition",
            ErrorCode::DeviceMounted => "device_mounted",
            ErrorCode::DeviceBusy => "device_busy",
            ErrorCode::DeviceSystemDisk => "device_system_disk",
            ErrorCode::DeviceReadOnly => "device_read_only",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::FlashNotConfirmed => "flash_not_confirmed",
            ErrorCode::PermissionError => "permission_error",
            ErrorCode::StateLocked => "state_locked",
            ErrorCode::StalePlan => "stale_plan",
            ErrorCode::Interrupted => "interrupted",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Usage => "usage",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::JobNotFound => "job_not_found",
            ErrorCode::BuilderNotFound => "builder_not_found",
        }
    }

    /// The process exit code for a command that fails with this error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Validation
            | ErrorCode::ProfileNotFound
            | ErrorCode::BuildNotFound
            | ErrorCode::ArtifactNotFound
            | ErrorCode::Precondition => exit::INVALID,
            ErrorCode::DownloadError
            | ErrorCode::SignatureError
            | ErrorCode::ImagebuilderError
            | ErrorCode::BuildFailed
            | ErrorCode::FlashError
            | ErrorCode::FlashHashMismatch
            | ErrorCode::DeviceError
            | ErrorCode::DeviceNotFound
            | ErrorCode::DeviceNotBlock
            | ErrorCode::DeviceIsPartition
            | ErrorCode::DeviceMounted
            | ErrorCode::DeviceBusy
            | ErrorCode::DeviceSystemDisk
            | ErrorCode::DeviceReadOnly
            | ErrorCode::ImageTooLarge
            | ErrorCode::FlashNotConfirmed
            | ErrorCode::PermissionError => exit::FAILED,
            ErrorCode::StalePlan => exit::STALE,
            ErrorCode::StateLocked => exit::LOCKED,
            ErrorCode::Interrupted => exit::INTERRUPTED,
            ErrorCode::InternalError => exit::INTERNAL,
            ErrorCode::Usage => exit::USAGE,
            ErrorCode::Unauthorized | ErrorCode::JobNotFound | ErrorCode::BuilderNotFound => {
                exit::INVALID
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of a file a problem points into, as renderers need it (implemented by
/// `source::SourceFile`; errors know nothing else about how files are read).
pub trait SourceText: fmt::Debug + Send + Sync {
    /// The file as the user should read it.
    fn display_name(&self) -> &str;
    fn text(&self) -> &str;
    /// The 1-based line and column of a byte offset.
    fn line_column(&self, offset: usize) -> (usize, usize);
}

/// Where a problem is: a file, a 1-based line and column, and the byte span for rendering.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Location {
    /// The file as the user should read it (relative to the fleet root when inside it).
    pub file: String,
    pub line: usize,
    pub column: usize,
    #[serde(skip)]
    pub span: Range<usize>,
    #[serde(skip)]
    pub source: Option<Arc<dyn SourceText>>,
}

impl Location {
    /// A location for a byte span of a source file.
    pub fn at<S: SourceText + 'static>(source: &Arc<S>, span: Range<usize>) -> Location {
        let (line, column) = source.line_column(span.start);
        let source: Arc<dyn SourceText> = Arc::clone(source) as Arc<dyn SourceText>;
        Location {
            file: source.display_name().to_string(),
            line,
            column,
            span,
            source: Some(source),
        }
    }

    /// A location naming a whole file (no span), e.g. a file that could not be read.
    pub fn file(path: impl Into<String>) -> Location {
        Location {
            file: path.into(),
            line: 0,
            column: 0,
            span: 0..0,
            source: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// Most problems one error carries; the rest are counted in a last "and N more problems"
/// entry. A file of 100,000 unknown keys must not produce 100,000 reports.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// One finding about the user's input.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// A short label shown at the span ("expected a string").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What to do next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// For the "and N more problems" entry: how many problems it stands for; 0 otherwise.
    #[serde(skip)]
    pub(crate) omitted: usize,
}

impl Problem {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            location: None,
            label: None,
            help: None,
            omitted: 0,
        }
    }

    /// The last entry of a capped list: stands for `count` problems not shown.
    fn omitted(code: ErrorCode, count: usize) -> Problem {
        let noun = if count == 1 { "problem" } else { "problems" };
        Problem {
            omitted: count,
            ..Problem::new(code, format!("and {count} more {noun}"))
        }
        .with_help("fix the problems above and run again to see the rest")
    }

    /// True for the "and N more problems" entry.
    pub fn is_omitted_summary(&self) -> bool {
        self.omitted > 0
    }

    pub fn validation(message: impl Into<String>) -> Problem {
        Problem::new(ErrorCode::Validation, message)
    }

    pub fn at(mut self, location: Location) -> Problem {
        self.location = Some(location);
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Problem {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The error every library operation returns.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub log_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            problems: Vec::new(),
            help: None,
            log_path: None,
            details: serde_json::Value::Null,
        }
    }

    /// An error that carries the problems found (at most [`MAX_REPORTED_PROBLEMS`], then
    /// one "and N more problems" entry). The code is `validation` when any problem is one (a
    /// broken file explains its consequences), else the first problem's code.
    pub fn from_problems(message: impl Into<String>, problems: Vec<Problem>) -> Error {
        let any_invalid = problems
            .iter()
            .any(|problem| problem.code == ErrorCode::Validation);
        let code = match any_invalid {
            true => ErrorCode::Validation,
            false => problems
                .first()
                .map_or(ErrorCode::Validation, |problem| problem.code),
        };
        let mut capped = Problems::new();
        capped.extend(problems);
        Error {
            problems: capped.into_vec(),
            ..Error::new(code, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InternalError, message)
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    pub fn with_log(mut self, log_path: impl Into<PathBuf>) -> Error {
        self.log_path = Some(log_path.into());
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Error {
        self.details = details;
        self
    }

    /// An I/O failure on `path` while doing `what` ("reading", "creating"), for paths that
    /// imagegen chose (state, cache, staging): anything but a permission problem there is
    /// internal. For a path the user named, use [`Error::io_user_path`].
    pub fn io(what: &str, path: &std::path::Path, error: std::io::Error) -> Error {
        let code = match error.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionError,
            _ => ErrorCode::InternalError,
        };
        Error::new(code, format!("{what} `{}`: {error}", path.display()))
    }

    /// An I/O failure on a path the user named (a saved plan, a file to import): a missing
    /// file or directory, or a path through a non-directory, is the user's `precondition`
    /// (exit 3), not an internal error; other failures are classified like [`Error::io`].
    pub fn io_user_path(what: &str, path: &std::path::Path, error: std::io::Error) -> Error {
        let user_mistake = matches!(
            error.kind(),
            std::io::ErrorKind::NotFound
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::IsADirectory
        );
        if user_mistake {
            Error::new(
                ErrorCode::Precondition,
                format!("{what} `{}`: {error}", path.display()),
            )
            .with_help("check the path")
        } else {
            Error::io(what, path, error)
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.code.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Collects problems during one pass (parsing, validation) so all are reported together.
/// Keeps at most [`MAX_REPORTED_PROBLEMS`] and counts the rest.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<Problem>,
    /// Problems found but not kept.
    omitted: usize,
    /// The code of the first omitted problem, for the summary entry.
    omitted_code: Option<ErrorCode>,
}

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    pub fn push(&mut self, problem: Problem) {
        if problem.omitted > 0 {
            self.omit(problem.code, problem.omitted);
        } else if self.items.len() < MAX_REPORTED_PROBLEMS {
            self.items.push(problem);
        } else {
            self.omit(problem.code, 1);
        }
    }

    /// True once no further problem will be kept: callers in hot loops can then
    /// [`Problems::count`] one instead of building it.
    pub fn is_full(&self) -> bool {
        self.items.len() >= MAX_REPORTED_PROBLEMS
    }

    /// Counts one problem of `code` that is not kept (see [`Problems::is_full`]).
    pub fn count(&mut self, code: ErrorCode) {
        self.omit(code, 1);
    }

    fn omit(&mut self, code: ErrorCode, count: usize) {
        self.omitted += count;
        self.omitted_code.get_or_insert(code);
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = Problem>) {
        for problem in problems {
            self.push(problem);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.omitted == 0
    }

    /// Every problem found, the omitted ones included.
    pub fn len(&self) -> usize {
        self.items.len() + self.omitted
    }

    /// The problems kept.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter()
    }

    /// The problems kept, then one "and N more problems" entry when some were not.
    pub fn into_vec(mut self) -> Vec<Problem> {
        if self.omitted > 0 {
            let code = self.omitted_code.unwrap_or(ErrorCode::Validation);
            self.items.push(Problem::omitted(code, self.omitted));
        }
        self.items
    }

    /// The problems in document order (file, then position), whatever order the checks
    /// ran in; an "and N more problems" entry stays last.
    pub fn into_sorted(self) -> Vec<Problem> {
        let mut problems = self.into_vec();
        problems.sort_by_cached_key(|problem| {
            let position = problem
                .location
                .as_ref()
                .map(|location| (location.file.clone(), location.span.start));
            (problem.is_omitted_summary(), position)
        });
        problems
    }

    /// `Ok(value)` when nothing was found, otherwise an error carrying every problem.
    pub fn finish<T>(self, value: T, message: &str) -> Result<T> {
        if self.is_empty() {
            Ok(value)
        } else {
            let count = self.len();
            let noun = if count == 1 { "problem" } else { "problems" };
            Err(Error::from_problems(
                format!("{message}: {count} {noun}"),
                self.into_vec(),
            ))
        }
    }
}

/// `text` with every control character (ESC, BEL, CR, DEL, C1 controls …) written as an
/// escape such as `\u{1b}`, so that a value from a profile or a mirror cannot move the
/// cursor, retitle the window or hide text when printed on a terminal. Tabs and newlines are
/// kept. Use it on every human output of user- or network-provided text.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_capped_with_a_count_of_the_rest() {
        let mut problems = Problems::new();
        for index in 0..MAX_REPORTED_PROBLEMS + 250 {
            problems.push(Problem::validation(format!("p{index}")));
        }
        assert_eq!(problems.len(), MAX_REPORTED_PROBLEMS + 250);
        let error = match problems.finish((), "bad") {
            Ok(()) => panic!("problems were found"),
            Err(error) => error,
        };
        assert_eq!(
            error.message,
            format!("bad: {} problems", MAX_REPORTED_PROBLEMS + 250)
        );
        assert_eq!(error.problems.len(), MAX_REPORTED_PROBLEMS + 1);
        let last = &error.problems[MAX_REPORTED_PROBLEMS];
        assert_eq!(last.message, "and 250 more problems");
        // Merging capped lists keeps an exact count.
        let mut merged = Problems::new();
        merged.extend(error.problems.clone());
        merged.extend(error.problems);
        assert_eq!(merged.len(), 2 * (MAX_REPORTED_PROBLEMS + 250));
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(
            printable("plain ✓ text\twith\nlines"),
            "plain ✓ text\twith\nlines"
        );
        assert_eq!(
            printable("a\u{1b}]0;owned\u{7}b\r\u{9b}2J\u{7f}"),
            "a\\u{1b}]0;owned\\u{7}b\\u{d}\\u{9b}2J\\u{7f}"
        );
    }
}
