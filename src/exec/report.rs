//! Progress events of a run, the [`Reporter`] trait, and the reporters for machines: JSON
//! lines for CI and an in-memory log (the ones for people are the CLI's, in `cli::display`).
//!
//! The executor calls [`Reporter::event`] from its coordinator thread only, in order. Reporters
//! render; they must not decide anything about the run, and a reporter that cannot write (a
//! closed pipe) drops the output rather than failing the run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode};

/// Version of the event stream (`--json` on `apply`). Bump on incompatible changes.
pub const EVENT_FORMAT_VERSION: u32 = 1;

/// How a step ended, as it appears in events and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Skipped => "skipped",
            OutcomeKind::Cancelled => "cancelled",
        }
    }
}

/// The part of an [`Error`] a progress consumer needs; the full error is in the run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorSummary {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub log_path: Option<PathBuf>,
}

impl From<&Error> for ErrorSummary {
    fn from(error: &Error) -> Self {
        ErrorSummary {
            code: error.code,
            message: error.message.clone(),
            help: error.help.clone(),
            log_path: error.log_path.clone(),
        }
    }
}

/// How far a step that moves bytes is (a flash: wiping, writing, reading back).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    /// Bytes done in the current phase.
    pub bytes: u64,
    /// Bytes the phase will move, when known (a gzip image's size is known only at its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The phase's average rate so far.
    pub bytes_per_second: f64,
    /// Seconds left, when the total is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

/// One thing that happened during a run. Serialized as one JSON object per line, tagged by
/// `event`; the schema is documented in `docs/executor.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        format_version: u32,
        total: usize,
    },
    StepStarted {
        address: String,
        /// `download`, `build` or `flash`.
        pool: String,
        /// The block device of a flash step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// The worker slot (private working directory) of the step within its pool.
        slot: usize,
    },
    StepProgress {
        address: String,
        message: String,
        /// Between 0 and 1 when the step knows how far it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f64>,
        /// Bytes moved so far, of how many, how fast (flash steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<Transfer>,
    },
    StepFinished {
        address: String,
        outcome: OutcomeKind,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorSummary>,
        /// Why a step was skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    RunFinished {
        succeeded: usize,
        failed: usize,
        skipped: usize,
        cancelled: usize,
        interrupted: bool,
        duration_ms: u64,
        /// A failure of the run itself (recording a result failed, invalid step graph).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorSummary>,
    },
}

/// Receives the events of a run. Implementations: terminal, plain lines, JSON lines, memory;
/// the web API and the MCP server add their own.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// One JSON object per line, flushed after each, for CI and scripts.
pub struct JsonLinesReporter {
    writer: Mutex<Box<dyn Write + Send>>,
}

impl JsonLinesReporter {
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    pub fn to_writer(writer: Box<dyn Write + Send>) -> Self {
        JsonLinesReporter {
            writer: Mutex::new(writer),
        }
    }
}

impl Reporter for JsonLinesReporter {
    fn event(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // A reader that went away (closed pipe) must not fail the builds.
        let _ = writer.write_all(&line).and_then(|()| writer.flush());
    }
}

/// Keeps every event in memory, for tests and for frontends that poll (the web API).
#[derive(Default)]
pub struct MemoryReporter {
    events: Mutex<Vec<Event>>,
}

impl MemoryReporter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl Reporter for MemoryReporter {
    fn event(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(event.clone());
    }
}

/// A writer and a sample run shared by the reporter tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::error::{Error, ErrorCode};
    use std::sync::Arc;

    /// A writer whose bytes the test can read after the reporter is done.
    #[derive(Clone, Default)]
    pub(crate) struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuffer {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    pub(crate) fn sample_run() -> Vec<Event> {
        let failure = Error::new(ErrorCode::BuildFailed, "`make image` exited with status 2")
            .with_log("/state/logs/b.log");
        vec![
            Event::RunStarted {
                format_version: EVENT_FORMAT_VERSION,
                total: 3,
            },
            Event::StepStarted {
                address: "build.a".into(),
                pool: "build".into(),
                device: None,
                slot: 0,
            },
            Event::StepProgress {
                address: "build.a".into(),
                message: "make image".into(),
                fraction: Some(0.5),
                transfer: None,
            },
            Event::StepFinished {
                address: "build.a".into(),
                outcome: OutcomeKind::Succeeded,
                duration_ms: 2100,
                error: None,
                reason: None,
            },
            Event::StepFinished {
                address: "build.b".into(),
                outcome: OutcomeKind::Failed,
                duration_ms: 300,
                error: Some(ErrorSummary::from(&failure)),
                reason: None,
            },
            Event::StepFinished {
                address: "flash.c".into(),
                outcome: OutcomeKind::Skipped,
                duration_ms: 0,
                error: None,
                reason: Some("`build.b` failed".into()),
            },
            Event::RunFinished {
                succeeded: 1,
                failed: 1,
                skipped: 1,
                cancelled: 0,
                interrupted: false,
                duration_ms: 125_000,
                error: None,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{SharedBuffer, sample_run};
    use super::*;

    #[test]
    fn json_lines_read_back_into_events() {
        let buffer = SharedBuffer::default();
        let reporter = JsonLinesReporter::to_writer(Box::new(buffer.clone()));
        let events = sample_run();
        for event in &events {
            reporter.event(event);
        }
        let text = buffer.text();
        let parsed: Vec<Event> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed, events);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"event": "run_started", "format_version": 1, "total": 3})
        );
    }
}
