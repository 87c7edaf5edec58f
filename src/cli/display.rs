//! Renderings of run events for people: plain lines (logs, CI without `--json`) and a live
//! terminal display. Both show the same line per finished step.
//!
//! They render only; they must not influence the run.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::report::{Event, JsonLinesReporter, OutcomeKind, Reporter};

/// The reporter for a command-line run: JSON lines on stdout with `--json`, otherwise a live
/// display when stderr is a terminal and plain lines when it is not.
pub(crate) fn reporter_for(json: bool) -> Box<dyn Reporter> {
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
                ..
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
                ..
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::report::test_support::{SharedBuffer, sample_run};

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
