//! `imagegen flash image` and `imagegen devices`: the confirmation on a terminal, progress
//! (a bar on a terminal, run events as JSON lines with `--json`, plain lines otherwise) and
//! the rendering of reports. The work is `flash::flash` and `flash::list_devices`.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{FlashCommand, FlashImageArgs};
use super::commands::print_json;
use super::context::Context;
use super::display::PlainReporter;
use crate::error::{Error, ErrorCode, Result, exit};
use crate::exec::report::{EVENT_FORMAT_VERSION, ErrorSummary, JsonLinesReporter};
use crate::exec::{Event, OutcomeKind, Reporter};
use crate::flash::{
    self, DeviceCandidate, FlashObserver, FlashOptions, FlashPhase, FlashPlan, FlashProgress,
    FlashReport, Host, format_size,
};

/// Test hook: a shell command run between the write and the read-back, so the integration
/// tests can change the device and prove a mismatch is caught. Not a setting; undocumented
/// outside `docs/flash.md`.
pub(crate) const TEST_HOOK_BEFORE_VERIFY: &str = "IMAGEGEN_TEST_FLASH_BEFORE_VERIFY";
/// JSON progress lines are written at most this often (plus every phase change).
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn flash(context: &Context, command: FlashCommand) -> Result<i32> {
    match command {
        FlashCommand::Image(args) => flash_image(context, &args),
    }
}

fn flash_image(context: &Context, args: &FlashImageArgs) -> Result<i32> {
    // A dry run writes nothing, so Ctrl-C may simply end it (also while it decompresses).
    let cancel = if args.dry_run {
        Arc::new(AtomicBool::new(false))
    } else {
        crate::exec::install_interrupt_handler()?
    };
    let options = FlashOptions {
        image: args.image.clone(),
        device: args.device.clone(),
        dry_run: args.dry_run,
        wipe: args.wipe,
        verify: args.verify,
        allow_regular_file: false,
        cancel: Some(Arc::clone(&cancel)),
    };
    let mut observer = CliObserver {
        json: context.json(),
        force: args.force,
        cancel,
        hook: context.env.get(TEST_HOOK_BEFORE_VERIFY).cloned(),
        display: None,
    };
    let result = flash::flash(&Host::real(), &options, &mut observer);
    observer.finish(result.as_ref().err());
    match result {
        Ok(report) if context.json() => {
            print_line(&Summary {
                event: "summary",
                report: &report,
            });
            Ok(exit::OK)
        }
        Ok(report) => {
            print_report(&report);
            Ok(exit::OK)
        }
        // With --json the output stays one JSON object per line, the error last.
        Err(error) if context.json() => {
            print_line(&serde_json::json!({ "error": error }));
            Ok(error.exit_code())
        }
        Err(error) => Err(error),
    }
}

/// The last line of `--json` output, after the run events (as `apply --json` ends).
#[derive(serde::Serialize)]
struct Summary<'a> {
    event: &'static str,
    report: &'a FlashReport,
}

fn print_line(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// The confirmation, the progress display and the test hook.
struct CliObserver {
    json: bool,
    force: bool,
    /// Ctrl-C: set by the signal handler, also while the question waits for an answer.
    cancel: Arc<AtomicBool>,
    hook: Option<String>,
    display: Option<Display>,
}

/// Progress output once writing started.
struct Display {
    address: String,
    started: Instant,
    reporter: Option<Box<dyn Reporter>>,
    bar: Option<ProgressBar>,
    last_phase: Option<FlashPhase>,
    last_event: Option<Instant>,
}

impl FlashObserver for CliObserver {
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        if !self.force {
            ask(plan, &self.cancel)?;
        }
        self.display = Some(Display::start(plan, self.json));
        Ok(())
    }

    fn progress(&mut self, progress: &FlashProgress) {
        if let Some(display) = &mut self.display {
            display.progress(progress);
        }
    }

    fn before_verify(&mut self) -> Result<()> {
        let Some(command) = &self.hook else {
            return Ok(());
        };
        let status = std::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .map_err(|error| Error::internal(format!("running the test hook: {error}")))?;
        if !status.success() {
            return Err(Error::internal(format!("the test hook failed: {status}")));
        }
        Ok(())
    }
}

impl CliObserver {
    fn finish(&mut self, error: Option<&Error>) {
        if let Some(display) = self.display.take() {
            display.finish(error);
        }
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
fn read_answer(cancel: &AtomicBool) -> Result<Option<String>> {
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
        let address = format!("flash.{}", plan.device.name);
        let terminal = !json && std::io::stderr().is_terminal();
        let reporter: Option<Box<dyn Reporter>> = if json {
            Some(Box::new(JsonLinesReporter::stdout()))
        } else if terminal {
            None
        } else {
            Some(Box::new(PlainReporter::stderr()))
        };
        let display = Display {
            address,
            started: Instant::now(),
            reporter,
            bar: terminal.then(progress_bar),
            last_phase: None,
            last_event: None,
        };
        display.emit(&Event::RunStarted {
            format_version: EVENT_FORMAT_VERSION,
            total: 1,
        });
        display.emit(&Event::StepStarted {
            address: display.address.clone(),
            pool: "flash".to_string(),
            device: Some(plan.device.node.display().to_string()),
            slot: 0,
        });
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
        let phase_changed = self.last_phase != Some(progress.phase);
        let due = self
            .last_event
            .is_none_or(|last| last.elapsed() >= JSON_PROGRESS_INTERVAL);
        if phase_changed || due {
            self.last_phase = Some(progress.phase);
            self.last_event = Some(Instant::now());
            self.emit(&Event::StepProgress {
                address: self.address.clone(),
                message: format!("{} {amounts}", progress.phase.as_str()),
                fraction: progress.fraction,
            });
        }
    }

    fn finish(self, error: Option<&Error>) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let interrupted = error.is_some_and(|error| error.code == ErrorCode::Interrupted);
        let outcome = match error {
            None => OutcomeKind::Succeeded,
            Some(_) if interrupted => OutcomeKind::Cancelled,
            Some(_) => OutcomeKind::Failed,
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        self.emit(&Event::StepFinished {
            address: self.address.clone(),
            outcome,
            duration_ms,
            error: error.map(ErrorSummary::from),
            reason: None,
        });
        let count = |kind| usize::from(outcome == kind);
        self.emit(&Event::RunFinished {
            succeeded: count(OutcomeKind::Succeeded),
            failed: count(OutcomeKind::Failed),
            skipped: 0,
            cancelled: count(OutcomeKind::Cancelled),
            interrupted,
            duration_ms,
            error: None,
        });
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

fn print_report(report: &FlashReport) {
    let plan = &report.plan;
    if report.dry_run {
        println!(
            "Dry run: nothing was written. Flashing `{}` would:",
            plan.device_path.display()
        );
        for (number, step) in plan.steps.iter().enumerate() {
            println!("  {}. {step}", number + 1);
        }
        println!("Run it without `--dry-run` to flash (with `--force` to skip the question).");
        return;
    }
    println!(
        "Flashed `{}` ({}) to `{}`: {}",
        plan.image.path.display(),
        plan.image.format.as_str(),
        plan.device.node.display(),
        plan.device.describe()
    );
    if report.wiped_bytes > 0 {
        println!(
            "  wiped {} at both ends",
            format_size(report.wiped_bytes / 2)
        );
    }
    println!(
        "  wrote {} in {:.1} s",
        format_size(report.bytes_written),
        report.write_ms as f64 / 1000.0
    );
    match &report.verification {
        Some(verification) => println!(
            "  verified {}: the SHA-256 of all {} blocks read back matches ({:.1} s)",
            format_size(verification.bytes),
            verification.blocks,
            report.verify_ms as f64 / 1000.0
        ),
        None => println!("  not verified (`--verify none`)"),
    }
}

pub(crate) fn devices(context: &Context) -> Result<i32> {
    let candidates = flash::list_devices(&Host::real());
    if context.json() {
        print_json(&candidates)?;
        return Ok(exit::OK);
    }
    if candidates.is_empty() {
        println!("No disks with a medium found.");
        return Ok(exit::OK);
    }
    for candidate in &candidates {
        print!("{}", device_text(candidate));
    }
    Ok(exit::OK)
}

fn device_text(candidate: &DeviceCandidate) -> String {
    let device = &candidate.device;
    let mut flags = Vec::new();
    if device.removable {
        flags.push("removable");
    }
    if device.rotational {
        flags.push("rotational");
    }
    if device.read_only {
        flags.push("read-only");
    }
    let mut text = format!(
        "{}  {}  {}",
        device.node.display(),
        format_size(device.size),
        device.transport.as_deref().unwrap_or("-")
    );
    for part in [device.model.as_deref(), device.serial.as_deref()]
        .into_iter()
        .flatten()
    {
        text.push_str(&format!("  {part}"));
    }
    if !flags.is_empty() {
        text.push_str(&format!("  ({})", flags.join(", ")));
    }
    text.push('\n');
    if let Some(file) = &device.backing_file {
        text.push_str(&format!("    backing file: {}\n", file.display()));
    }
    for link in &device.by_id {
        text.push_str(&format!("    {}\n", link.display()));
    }
    for partition in &device.partitions {
        let mounted = if partition.mountpoints.is_empty() {
            String::new()
        } else {
            format!(", mounted on {}", partition.mountpoints.join(", "))
        };
        text.push_str(&format!(
            "    {} {}{mounted}\n",
            partition.name,
            format_size(partition.size)
        ));
    }
    match &candidate.refusal {
        Some(refusal) => text.push_str(&format!(
            "    refused [{}]: {}\n",
            refusal.code, refusal.message
        )),
        None => text.push_str("    can be flashed\n"),
    }
    text
}
