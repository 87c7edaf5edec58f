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
}

impl Problem {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            location: None,
            label: None,
            help: None,
        }
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

    /// An error that carries every problem found; the code is the first problem's code.
    pub fn from_problems(message: impl Into<String>, problems: Vec<Problem>) -> Error {
        let code = problems
            .first()
            .map(|problem| problem.code)
            .unwrap_or(ErrorCode::Validation);
        Error {
            problems,
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

    /// An I/O failure on `path` while doing `what` ("reading", "creating").
    pub fn io(what: &str, path: &std::path::Path, error: std::io::Error) -> Error {
        let code = match error.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionError,
            _ => ErrorCode::InternalError,
        };
        Error::new(code, format!("{what} `{}`: {error}", path.display()))
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
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    pub fn push(&mut self, problem: Problem) {
        self.items.push(problem);
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.items.extend(problems);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.items
    }

    /// The problems in document order (file, then position), whatever order the checks
    /// ran in.
    pub fn into_sorted(self) -> Vec<Problem> {
        let mut problems = self.items;
        problems.sort_by(|left, right| {
            let key = |problem: &Problem| {
                problem
                    .location
                    .as_ref()
                    .map(|location| (location.file.clone(), location.span.start))
            };
            key(left).cmp(&key(right))
        });
        problems
    }

    /// `Ok(value)` when nothing was found, otherwise an error carrying every problem.
    pub fn finish<T>(self, value: T, message: &str) -> Result<T> {
        if self.items.is_empty() {
            Ok(value)
        } else {
            let count = self.items.len();
            let noun = if count == 1 { "problem" } else { "problems" };
            Err(Error::from_problems(
                format!("{message}: {count} {noun}"),
                self.items,
            ))
        }
    }
}
