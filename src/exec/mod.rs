//! The apply executor: runs a graph of steps on bounded worker pools and reports progress.
//!
//! [`queue`] is the pure ready-queue; [`coordinator`] is the loop on the calling thread that
//! owns it, starts steps on rayon pools (one per pool kind) and is the only place that calls
//! `on_finished` (which writes the state store); [`report`] holds the events, the `Reporter`
//! trait and the machine reporters (the CLI renders events for people in `cli::display`);
//! [`signal`] turns Ctrl-C into the cancel flag. This is the only module that starts threads
//! or installs signal handlers. It knows nothing about what a step does: the caller passes
//! `run_step`. Design notes: `docs/executor.md`.

pub mod coordinator;
pub mod queue;
pub mod report;
pub mod signal;
mod workers;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use serde::Serialize;
use utoipa::ToSchema;

pub use coordinator::{execute, execute_with_checkpoints};
pub use report::{Event, OutcomeKind, Reporter, Transfer};
pub use signal::install_interrupt_handler;

use crate::error::{Error, ErrorCode};

/// Which bounded pool runs a step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    /// Image Builder downloads (`download_jobs` at a time).
    Download,
    /// Image Builder runs (`jobs` at a time, each in its own slot directory).
    Build,
    /// Writes to one block device: one writer per device path at a time.
    Flash(String),
}

impl Pool {
    /// The pool's name in events: `download`, `build` or `flash`.
    pub fn kind(&self) -> &'static str {
        match self {
            Pool::Download => "download",
            Pool::Build => "build",
            Pool::Flash(_) => "flash",
        }
    }

    pub fn device(&self) -> Option<&str> {
        match self {
            Pool::Flash(device) => Some(device),
            _ => None,
        }
    }
}

/// One step to run: its plan address, its pool, the addresses it depends on, and whatever the
/// caller's `run_step` needs (`payload`).
#[derive(Debug, Clone)]
pub struct StepSpec<P> {
    pub address: String,
    pub pool: Pool,
    /// Addresses of steps that must succeed first. An address that is not among the steps of
    /// this run counts as already done (a no-op action of the plan).
    pub depends_on: Vec<String>,
    pub payload: P,
}

/// How a step ended, with the step's result when it succeeded.
#[derive(Debug)]
pub enum StepOutcome<R> {
    Succeeded(R),
    Failed(Error),
    /// Never started: a dependency failed, or fail-fast stopped the run.
    Skipped {
        because: String,
    },
    /// Interrupted while running, or never started because the run was interrupted.
    Cancelled,
}

impl<R> StepOutcome<R> {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            StepOutcome::Succeeded(_) => OutcomeKind::Succeeded,
            StepOutcome::Failed(_) => OutcomeKind::Failed,
            StepOutcome::Skipped { .. } => OutcomeKind::Skipped,
            StepOutcome::Cancelled => OutcomeKind::Cancelled,
        }
    }
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Build slots: builds that may run at once (at least 1).
    pub jobs: usize,
    /// Downloads that may run at once (at least 1).
    pub download_jobs: usize,
    /// Run everything that does not depend on a failure instead of stopping at the first one.
    pub keep_going: bool,
    /// Set (by the signal handler, or a server's cancel request) to interrupt the run.
    pub cancel: Arc<AtomicBool>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            jobs: 1,
            download_jobs: 2,
            keep_going: false,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A step's progress report, on its own channel so contexts need not know the result type.
pub(crate) struct ProgressMessage {
    pub(crate) step: usize,
    pub(crate) message: String,
    pub(crate) fraction: Option<f64>,
    pub(crate) transfer: Option<Transfer>,
}

/// What a checkpoint carries either way: the caller's own types, which the executor does
/// not know (as it does not know payloads or results).
pub type CheckpointValue = Box<dyn Any + Send>;

/// A running step's request that the coordinator record something *now*, before the step
/// goes on (a flash's `in_progress` record before its first byte), and the way back.
pub(crate) struct CheckpointMessage {
    pub(crate) step: usize,
    pub(crate) request: CheckpointValue,
    pub(crate) reply: Sender<Result<CheckpointValue, Error>>,
}

/// The channels a step attached to a coordinator talks on.
#[derive(Clone)]
pub(crate) struct Channels {
    pub(crate) progress: Sender<ProgressMessage>,
    pub(crate) checkpoint: Sender<CheckpointMessage>,
}

/// What a running step may use: its slot, a progress handle, checkpoints and the cancel flag.
pub struct StepContext {
    step: usize,
    slot: usize,
    cancel: Arc<AtomicBool>,
    channels: Option<Channels>,
}

impl StepContext {
    /// A context that reports progress nowhere, for running a step function outside the
    /// executor (unit tests of build or fetch code).
    pub fn detached(slot: usize, cancel: Arc<AtomicBool>) -> StepContext {
        StepContext {
            step: 0,
            slot,
            cancel,
            channels: None,
        }
    }

    pub(crate) fn attached(
        step: usize,
        slot: usize,
        cancel: Arc<AtomicBool>,
        channels: Channels,
    ) -> StepContext {
        StepContext {
            step,
            slot,
            cancel,
            channels: Some(channels),
        }
    }

    /// The step's slot in its pool, `0..jobs` for builds: no two running steps of one pool
    /// share a slot, so a slot can own a private working directory.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Reports what the step is doing; `fraction` is clamped to 0..=1 and dropped if not finite.
    pub fn progress(&self, message: &str, fraction: Option<f64>) {
        self.send_progress(message, fraction, None);
    }

    /// Like [`StepContext::progress`], with the bytes moved so far (a flash).
    pub fn transfer(&self, message: &str, fraction: Option<f64>, transfer: Transfer) {
        self.send_progress(message, fraction, Some(transfer));
    }

    fn send_progress(&self, message: &str, fraction: Option<f64>, transfer: Option<Transfer>) {
        if let Some(channels) = &self.channels {
            let fraction = fraction
                .filter(|fraction| fraction.is_finite())
                .map(|fraction| fraction.clamp(0.0, 1.0));
            // The coordinator outlives every worker; a failed send means it is gone anyway.
            let _ = channels.progress.send(ProgressMessage {
                step: self.step,
                message: message.to_string(),
                fraction,
                transfer,
            });
        }
    }

    /// Has the coordinator record `request` now (through the run's `on_checkpoint`, on the
    /// coordinator thread, like every other write of the run) and waits for its answer. For
    /// facts that must be durable before the step goes on; a step outside an executor
    /// ([`StepContext::detached`]) cannot record anything and gets an error.
    pub fn checkpoint<T: Any + Send, U: Any>(&self, request: T) -> Result<U, Error> {
        let Some(channels) = &self.channels else {
            return Err(Error::internal("a step outside the executor cannot record"));
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        channels
            .checkpoint
            .send(CheckpointMessage {
                step: self.step,
                request: Box::new(request),
                reply,
            })
            .map_err(|_| Error::internal("the coordinator is gone"))?;
        let value = answer
            .recv()
            .map_err(|_| Error::internal("the coordinator did not answer a checkpoint"))??;
        value
            .downcast::<U>()
            .map(|value| *value)
            .map_err(|_| Error::internal("a checkpoint's answer has the wrong type"))
    }

    /// True once the run is interrupted: stop (kill child processes) and return an error,
    /// ideally [`StepContext::interrupted_error`].
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The cancel flag itself, for code that hands it to a child-process watcher.
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    /// The error a step returns when it stopped because of [`StepContext::cancelled`].
    pub fn interrupted_error(&self) -> Error {
        Error::new(ErrorCode::Interrupted, "interrupted")
    }
}

/// The record of one step in a [`RunReport`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepReport {
    pub address: String,
    pub outcome: OutcomeKind,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// Why a step was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The result of a run: every step in input order, and the counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunReport {
    pub steps: Vec<StepReport>,
    pub interrupted: bool,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub duration_ms: u64,
    /// A failure of the run itself rather than of one step: recording a result failed, or the
    /// step graph was invalid (duplicate address, cycle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

impl RunReport {
    /// True when every step succeeded.
    pub fn is_success(&self) -> bool {
        !self.interrupted && self.error.is_none() && self.succeeded == self.steps.len()
    }

    /// The process exit code for this run (see `error::exit`).
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit;
        if self.interrupted {
            exit::INTERRUPTED
        } else if let Some(error) = &self.error {
            error.exit_code()
        } else if self.failed > 0 || self.skipped > 0 || self.cancelled > 0 {
            exit::FAILED
        } else {
            exit::OK
        }
    }

    pub fn step(&self, address: &str) -> Option<&StepReport> {
        self.steps.iter().find(|step| step.address == address)
    }
}
