//! Progress events of a run and the reporters that show them: a live terminal display, plain
//! lines for logs, and JSON lines for CI.
//!
//! The executor calls [`Reporter::event`] from its coordinator thread only, in order. Reporters
//! render; they must not decide anything about the run, and a reporter that cannot write (a
//! closed pipe) drops the output rather than failing the run.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Version of the event stream (`--json` on `apply`). Bump on incompatible changes.
pub const EVENT_FORMAT_VERSION: u32 = 1;

/// How a step ended, as it appears in events and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// One thing that happened during a run. Serialized as one JSON object per line, tagged by
/// `event`; the schema is documented in `docs/executor.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The reporter for a command-line run: JSON lines on stdout with `--json`, otherwise a live
/// display when stderr is a terminal and plain lines when it is not.
pub fn reporter_for(json: bool) -> Box<dyn Reporter> {
    if json {
        Box::new(JsonLinesReporter::stdout())
    } else if std::io::stderr().is_terminal() {
        Box::new(TerminalReporter::new())
    } else {
        Box::new(PlainReporter::stderr())
    }
}

/// `2.1 s`, `3 min 05 s`.
pub fn format_duration(duration_ms: u64) -> String {
    let duration = Duration::from_millis(duration_ms);
    if duration < Duration::from_secs(60) {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        let seconds = duration.as_secs();
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    }
}

/// The line for a finished step: `[3/8] build.home.ap … ok (2.1 s)`.
fn finished_line(position: usize, total: usize, event: &Event) -> Option<String> {
    let Event::StepFinished {
        address,
        outcome,
        duration_ms,
        error,
        reason,
    } = event
    else {
        return None;
    };
    let took = format_duration(*duration_ms);
    let mut line = format!("[{position}/{total}] {address} … ");
    match outcome {
        OutcomeKind::Succeeded => line.push_str(&format!("ok ({took})")),
        OutcomeKind::Cancelled => line.push_str(&format!("cancelled ({took})")),
        OutcomeKind::Skipped => {
            line.push_str("skipped");
            if let Some(reason) = reason {
                line.push_str(&format!(": {reason}"));
            }
        }
        OutcomeKind::Failed => {
            line.push_str(&format!("FAILED ({took})"));
            if let Some(error) = error {
                line.push_str(&format!(": {}", error.message));
                if let Some(log_path) = &error.log_path {
                    line.push_str(&format!("\n      log: {}", log_path.display()));
                }
            }
        }
    }
    Some(line)
}

fn summary_line(event: &Event) -> Option<String> {
    let Event::RunFinished {
        succeeded,
        failed,
        skipped,
        cancelled,
        interrupted,
        duration_ms,
        error,
    } = event
    else {
        return None;
    };
    let mut line = format!(
        "{succeeded} succeeded, {failed} failed, {skipped} skipped, {cancelled} cancelled ({})",
        format_duration(*duration_ms)
    );
    if *interrupted {
        line.push_str("; interrupted");
    }
    if let Some(error) = error {
        line.push_str(&format!("\nerror: {}", error.message));
    }
    Some(line)
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or_else(String::new, |fraction| {
        format!(" ({:.0}%)", fraction * 100.0)
    })
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

/// Progress lines written less often than this per step, so logs stay readable.
const PLAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

struct PlainState {
    writer: Box<dyn Write + Send>,
    total: usize,
    finished: usize,
    last_progress: HashMap<String, Instant>,
}

/// Plain lines on stderr, for logs and terminals that are not interactive.
pub struct PlainReporter {
    state: Mutex<PlainState>,
}

impl PlainReporter {
    pub fn stderr() -> Self {
        Self::to_writer(Box::new(std::io::stderr()))
    }

    pub fn to_writer(writer: Box<dyn Write + Send>) -> Self {
        PlainReporter {
            state: Mutex::new(PlainState {
                writer,
                total: 0,
                finished: 0,
                last_progress: HashMap::new(),
            }),
        }
    }
}

impl Reporter for PlainReporter {
    fn event(&self, event: &Event) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let line = match event {
            Event::RunStarted { total, .. } => {
                state.total = *total;
                None
            }
            Event::StepStarted { address, pool, .. } => Some(format!("start {address} ({pool})")),
            Event::StepProgress {
                address,
                message,
                fraction,
            } => {
                let now = Instant::now();
                let due = state
                    .last_progress
                    .get(address)
                    .is_none_or(|last| now.duration_since(*last) >= PLAIN_PROGRESS_INTERVAL);
                due.then(|| {
                    state.last_progress.insert(address.clone(), now);
                    format!("  {address}: {message}{}", percent(*fraction))
                })
            }
            Event::StepFinished { .. } => {
                state.finished += 1;
                finished_line(state.finished, state.total, event)
            }
            Event::RunFinished { .. } => summary_line(event),
        };
        if let Some(line) = line {
            let _ = writeln!(state.writer, "{line}");
        }
    }
}

struct TerminalState {
    overall: Option<ProgressBar>,
    running: HashMap<String, ProgressBar>,
    total: usize,
    finished: usize,
}

/// A live display on stderr: one line per running step with its latest progress message,
/// and an overall bar; finished steps scroll above it as plain lines.
pub struct TerminalReporter {
    multi: MultiProgress,
    state: Mutex<TerminalState>,
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalReporter {
    pub fn new() -> Self {
        Self::with_draw_target(ProgressDrawTarget::stderr())
    }

    pub(crate) fn with_draw_target(target: ProgressDrawTarget) -> Self {
        TerminalReporter {
            multi: MultiProgress::with_draw_target(target),
            state: Mutex::new(TerminalState {
                overall: None,
                running: HashMap::new(),
                total: 0,
                finished: 0,
            }),
        }
    }

    fn overall_bar(&self, total: usize) -> ProgressBar {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed:>5} [{bar:30}] {pos}/{len} steps {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        self.multi.add(bar)
    }

    fn step_spinner(&self, address: &str, overall: Option<&ProgressBar>) -> ProgressBar {
        let spinner = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {wide_msg}") {
            spinner.set_style(style);
        }
        spinner.set_prefix(address.to_string());
        let spinner = match overall {
            Some(overall) => self.multi.insert_before(overall, spinner),
            None => self.multi.add(spinner),
        };
        // indicatif redraws from its own ticker thread so a quiet build still shows life.
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    }
}

impl Reporter for TerminalReporter {
    fn event(&self, event: &Event) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match event {
            Event::RunStarted { total, .. } => {
                state.total = *total;
                state.overall = Some(self.overall_bar(*total));
            }
            Event::StepStarted { address, .. } => {
                let spinner = self.step_spinner(address, state.overall.as_ref());
                state.running.insert(address.clone(), spinner);
            }
            Event::StepProgress {
                address,
                message,
                fraction,
            } => {
                if let Some(spinner) = state.running.get(address) {
                    spinner.set_message(format!("{message}{}", percent(*fraction)));
                }
            }
            Event::StepFinished { address, .. } => {
                if let Some(spinner) = state.running.remove(address) {
                    spinner.finish_and_clear();
                    self.multi.remove(&spinner);
                }
                state.finished += 1;
                if let Some(overall) = &state.overall {
                    overall.inc(1);
                }
                if let Some(line) = finished_line(state.finished, state.total, event) {
                    let _ = self.multi.println(line);
                }
            }
            Event::RunFinished { .. } => {
                if let Some(overall) = state.overall.take() {
                    overall.finish_and_clear();
                }
                if let Some(line) = summary_line(event) {
                    let _ = self.multi.println(line);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test can read after the reporter is done.
    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

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
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn sample_run() -> Vec<Event> {
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

    #[test]
    fn plain_lines_count_finished_steps() {
        let buffer = SharedBuffer::default();
        let reporter = PlainReporter::to_writer(Box::new(buffer.clone()));
        for event in sample_run() {
            reporter.event(&event);
        }
        assert_eq!(
            buffer.text(),
            "start build.a (build)\n\
             \x20 build.a: make image (50%)\n\
             [1/3] build.a … ok (2.1 s)\n\
             [2/3] build.b … FAILED (0.3 s): `make image` exited with status 2\n\
             \x20     log: /state/logs/b.log\n\
             [3/3] flash.c … skipped: `build.b` failed\n\
             1 succeeded, 1 failed, 1 skipped, 0 cancelled (2 min 05 s)\n"
        );
    }

    #[test]
    fn terminal_display_follows_running_steps() {
        let reporter = TerminalReporter::with_draw_target(ProgressDrawTarget::hidden());
        for event in sample_run() {
            reporter.event(&event);
            let state = reporter.state.lock().unwrap();
            let running: Vec<&String> = state.running.keys().collect();
            match &event {
                Event::StepStarted { .. } | Event::StepProgress { .. } => {
                    assert_eq!(running, ["build.a"])
                }
                _ => assert!(running.is_empty()),
            }
        }
        let state = reporter.state.lock().unwrap();
        assert_eq!((state.finished, state.total), (3, 3));
        assert!(state.overall.is_none());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(0), "0.0 s");
        assert_eq!(format_duration(59_949), "59.9 s");
        assert_eq!(format_duration(61_000), "1 min 01 s");
    }
}
