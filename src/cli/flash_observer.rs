//! The terminal side of a flash: the confirmation (the device name typed back), progress
//! (a bar on a terminal, run events as JSON lines with `--json`, plain lines otherwise) and
//! the test hook. The flash operations call it through [`FlashObserver`].

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::display::PlainReporter;
use crate::error::{Error, ErrorCode, Result};
use crate::exec::report::JsonLinesReporter;
use crate::exec::{Event, Reporter};
use crate::flash::{FlashObserver, FlashPlan, FlashProgress, format_size};
use crate::ops::FlashEvents;
use crate::settings::env_vars;

/// JSON progress lines are written at most this often (plus every phase change).
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The confirmation, the progress display and the test hook.
pub(crate) struct CliObserver {
    json: bool,
    /// Ctrl-C: set by the signal handler, also while the question waits for an answer.
    cancel: Arc<AtomicBool>,
    /// The test hook's command (`IMAGEGEN_TEST_FLASH_BEFORE_VERIFY`), if set.
    hook: Option<String>,
    /// Whether the disk being written is a loop device: the only kind the hook may touch.
    loop_device: bool,
    display: Option<Display>,
}

/// Progress output once writing started.
struct Display {
    events: FlashEvents,
    reporter: Option<Box<dyn Reporter>>,
    bar: Option<ProgressBar>,
}

impl CliObserver {
    pub(crate) fn new(json: bool, cancel: Arc<AtomicBool>, hook: Option<String>) -> CliObserver {
        CliObserver {
            json,
            cancel,
            hook,
            loop_device: false,
            display: None,
        }
    }

    /// Ends the progress display (with the run's last events) once the flash returned.
    pub(crate) fn finish(&mut self, error: Option<&Error>) {
        if let Some(display) = self.display.take() {
            display.finish(error);
        }
    }
}

impl FlashObserver for CliObserver {
    /// Asked only without `--force` (the operation decides).
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        ask(plan, &self.cancel)
    }

    fn started(&mut self, plan: &FlashPlan) {
        self.loop_device = plan.device.transport.as_deref() == Some("loop");
        self.display = Some(Display::start(plan, self.json));
    }

    fn progress(&mut self, progress: &FlashProgress) {
        if let Some(display) = &mut self.display {
            display.progress(progress);
        }
    }

    /// The test hook: runs only for a loop device, so a stray variable in someone's
    /// environment can never touch a real card's verification.
    fn before_verify(&mut self) -> Result<()> {
        let Some(command) = &self.hook else {
            return Ok(());
        };
        let name = env_vars::IMAGEGEN_TEST_FLASH_BEFORE_VERIFY;
        if !self.loop_device {
            tracing::warn!("ignoring the test hook {name}: the target is not a loop device");
            return Ok(());
        }
        tracing::warn!("running the test hook {name} before the read-back");
        let status = std::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .map_err(|error| Error::internal(format!("running the test hook {name}: {error}")))?;
        if !status.success() {
            return Err(Error::internal(format!(
                "the test hook {name} failed: {status}"
            )));
        }
        Ok(())
    }
}

/// Shows what will be destroyed and asks for the device name typed back; refuses without
/// a terminal to ask on.
fn ask(plan: &FlashPlan, cancel: &AtomicBool) -> Result<()> {
    let device = &plan.device;
    let node = device.node.display();
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::new(
            ErrorCode::FlashNotConfirmed,
            format!("refusing to overwrite `{node}` without a confirmation: no terminal to ask on"),
        )
        .with_help(format!(
            "check with `--dry-run` first, then pass `--force` to write `{node}` without asking"
        )));
    }
    let mut text = format!("\nThis DESTROYS everything on `{node}`:\n");
    text.push_str(&format!("  {}\n", device.describe()));
    for link in &device.by_id {
        text.push_str(&format!("  {}\n", link.display()));
    }
    for partition in &device.partitions {
        text.push_str(&format!(
            "  partition {} ({})\n",
            partition.name,
            format_size(partition.size)
        ));
    }
    text.push_str("Steps:\n");
    for (number, step) in plan.steps.iter().enumerate() {
        text.push_str(&format!("  {}. {step}\n", number + 1));
    }
    text.push_str(&format!(
        "Type `{}` to overwrite it, anything else to stop: ",
        device.name
    ));
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let Some(answer) = read_answer(cancel)? else {
        eprintln!();
        return Err(Error::new(
            ErrorCode::Interrupted,
            format!("interrupted: `{node}` was left untouched"),
        ));
    };
    let answer = answer.trim();
    if answer == device.name || answer == node.to_string() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::FlashNotConfirmed,
        format!("not confirmed: `{node}` was left untouched"),
    ))
}

/// Reads one line from stdin, or `None` when Ctrl-C comes first. The signal handler only
/// sets a flag (reads restart after it), so stdin is polled with a short timeout.
pub(crate) fn read_answer(cancel: &AtomicBool) -> Result<Option<String>> {
    let mut stdin = libc::pollfd {
        fd: std::io::stdin().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut stdin, 1, 100) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::internal(format!(
                "waiting for the confirmation: {error}"
            )));
        }
        if ready > 0 {
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map_err(|error| Error::internal(format!("reading the confirmation: {error}")))?;
            return Ok(Some(answer));
        }
    }
}

impl Display {
    fn start(plan: &FlashPlan, json: bool) -> Display {
        let terminal = !json && std::io::stderr().is_terminal();
        let reporter: Option<Box<dyn Reporter>> = if json {
            Some(Box::new(JsonLinesReporter::stdout()))
        } else if terminal {
            None
        } else {
            Some(Box::new(PlainReporter::stderr()))
        };
        let (events, first) = FlashEvents::start(plan, JSON_PROGRESS_INTERVAL);
        let display = Display {
            events,
            reporter,
            bar: terminal.then(progress_bar),
        };
        for event in &first {
            display.emit(event);
        }
        display
    }

    fn emit(&self, event: &Event) {
        if let Some(reporter) = &self.reporter {
            reporter.event(event);
        }
    }

    fn progress(&mut self, progress: &FlashProgress) {
        let amounts = progress_amounts(progress);
        if let Some(bar) = &self.bar {
            bar.set_prefix(progress.phase.as_str());
            if let Some(fraction) = progress.fraction {
                bar.set_position((fraction * 1000.0) as u64);
            }
            bar.set_message(amounts.clone());
        }
        if let Some(event) = self.events.progress(progress, &amounts) {
            self.emit(&event);
        }
    }

    fn finish(self, error: Option<&Error>) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        for event in &self.events.finish(error) {
            self.emit(event);
        }
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {percent:>3}% {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `128.0 MiB of 512.0 MiB, 350.2 MiB/s, 1 s left`.
fn progress_amounts(progress: &FlashProgress) -> String {
    let mut message = format_size(progress.bytes);
    if let Some(total) = progress.total {
        message.push_str(&format!(" of {}", format_size(total)));
    }
    if progress.bytes_per_second > 0.0 {
        message.push_str(&format!(
            ", {}/s",
            format_size(progress.bytes_per_second as u64)
        ));
    }
    if let Some(eta) = progress.eta_seconds {
        message.push_str(&format!(", {eta:.0} s left"));
    }
    message
}
