//! The coordinator: the loop on the calling thread that starts ready steps on worker pools,
//! receives their results, calls `on_finished` and reports progress.
//!
//! It owns the [`DependencyQueue`], the slot bookkeeping and the only call to `on_finished`
//! (the state-store writer). Workers run `run_step` and send messages back; they never touch
//! the queue, the reporter or the store. The loop does not return while any step runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use rayon::ThreadPool;

use super::queue::{DependencyQueue, Outcome};
use super::report::{EVENT_FORMAT_VERSION, ErrorSummary, Event, OutcomeKind, Reporter};
use super::workers::{Done, Worker, build_pools, elapsed_ms, lane, lane_capacities, with_scopes};
use super::{
    Channels, CheckpointMessage, CheckpointValue, ExecOptions, ProgressMessage, RunReport,
    StepContext, StepOutcome, StepReport, StepSpec,
};
use crate::error::{Error, ErrorCode};

/// How often the coordinator wakes without messages, to notice the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Why the coordinator stopped starting steps.
enum Stop {
    FailFast(String),
    RecordFailed(String),
    Interrupted,
    Invalid(String),
}

impl Stop {
    /// What a step that never started is told.
    fn unstarted_outcome<R>(&self) -> StepOutcome<R> {
        let because = match self {
            Stop::Interrupted => return StepOutcome::Cancelled,
            Stop::FailFast(address) => {
                format!("not started: `{address}` failed and the run stops at the first failure")
            }
            Stop::RecordFailed(address) => {
                format!("not started: recording the result of `{address}` failed")
            }
            Stop::Invalid(message) => format!("not started: {message}"),
        };
        StepOutcome::Skipped { because }
    }
}

/// Runs `steps` respecting dependencies and pool limits; see `docs/executor.md`.
///
/// `run_step` runs on a worker thread; `on_finished` runs on the calling thread, exactly once
/// per step (also for skipped and cancelled ones), in the order steps end; it is the place to
/// write the state store. Returns when every step has an outcome and no worker runs.
pub fn execute<P: Sync + Send, R: Send>(
    steps: Vec<StepSpec<P>>,
    options: &ExecOptions,
    run_step: impl Fn(&StepSpec<P>, &StepContext) -> Result<R, Error> + Sync,
    on_finished: impl FnMut(&StepSpec<P>, &StepOutcome<R>) -> Result<(), Error>,
    reporter: &dyn Reporter,
) -> RunReport {
    let refuse = |spec: &StepSpec<P>, _: CheckpointValue| {
        Err(Error::internal(format!(
            "step `{}` asked to record something, but this run records only finished steps",
            spec.address
        )))
    };
    execute_with_checkpoints(steps, options, run_step, on_finished, refuse, reporter)
}

/// [`execute`], where a running step may also have the coordinator record something before
/// it goes on ([`StepContext::checkpoint`]): `on_checkpoint` runs on the calling thread,
/// like `on_finished`, and its answer goes back to the waiting step. So every write of a
/// run still happens on one thread, also the ones a step needs mid-way (a flash records
/// `in_progress` between its checks and its first byte).
pub fn execute_with_checkpoints<P: Sync + Send, R: Send>(
    steps: Vec<StepSpec<P>>,
    options: &ExecOptions,
    run_step: impl Fn(&StepSpec<P>, &StepContext) -> Result<R, Error> + Sync,
    on_finished: impl FnMut(&StepSpec<P>, &StepOutcome<R>) -> Result<(), Error>,
    on_checkpoint: impl FnMut(&StepSpec<P>, CheckpointValue) -> Result<CheckpointValue, Error>,
    reporter: &dyn Reporter,
) -> RunReport {
    let started = Instant::now();
    reporter.event(&Event::RunStarted {
        format_version: EVENT_FORMAT_VERSION,
        total: steps.len(),
    });
    let mut coordinator = Coordinator::new(&steps, options, reporter, on_finished, on_checkpoint);
    let pools = match coordinator
        .validate()
        .and_then(|()| build_pools(&steps, options))
    {
        Ok(pools) => pools,
        Err(error) => {
            coordinator.give_up_on_all(error);
            Vec::new()
        }
    };
    let (done_sender, done_receiver) = crossbeam_channel::unbounded::<Done<R>>();
    let (progress_sender, progress_receiver) = crossbeam_channel::unbounded::<ProgressMessage>();
    let (checkpoint_sender, checkpoint_receiver) =
        crossbeam_channel::unbounded::<CheckpointMessage>();
    let channels = Channels {
        progress: progress_sender,
        checkpoint: checkpoint_sender,
    };
    let run_step = &run_step;
    let pool_refs: Vec<&ThreadPool> = pools.iter().map(|(_, pool)| pool).collect();
    let lanes: Vec<usize> = pools.iter().map(|(lane, _)| *lane).collect();
    with_scopes(&pool_refs, Vec::new(), &mut |scopes| {
        let spawn = |step: usize, slot: usize| {
            let spec = &steps[step];
            let Some(position) = lanes
                .iter()
                .position(|lane| *lane == self::lane(&spec.pool))
            else {
                return false;
            };
            let worker = Worker {
                step,
                slot,
                cancel: Arc::clone(&options.cancel),
                channels: channels.clone(),
                done: done_sender.clone(),
            };
            scopes[position].spawn(move |_| worker.run(spec, run_step));
            true
        };
        let receivers = Receivers {
            done: &done_receiver,
            progress: &progress_receiver,
            checkpoint: &checkpoint_receiver,
        };
        coordinator.run(&spawn, &receivers);
    });
    coordinator.into_report(started)
}

/// What the coordinator listens to.
struct Receivers<'a, R> {
    done: &'a Receiver<Done<R>>,
    progress: &'a Receiver<ProgressMessage>,
    checkpoint: &'a Receiver<CheckpointMessage>,
}

/// The state of one run, owned by the calling thread.
struct Coordinator<'run, P, R, F, C> {
    steps: &'run [StepSpec<P>],
    options: &'run ExecOptions,
    reporter: &'run dyn Reporter,
    on_finished: F,
    on_checkpoint: C,
    queue: DependencyQueue<usize>,
    free_slots: [BTreeSet<usize>; 3],
    busy_devices: BTreeSet<String>,
    /// Running steps and their slots.
    running: BTreeMap<usize, usize>,
    reports: Vec<Option<StepReport>>,
    stop: Option<Stop>,
    interrupted: bool,
    /// Set when `on_finished` failed; scheduling stops at the next chance.
    record_failed: Option<String>,
    run_error: Option<Error>,
    _result: std::marker::PhantomData<fn() -> R>,
}

impl<'run, P, R, F, C> Coordinator<'run, P, R, F, C>
where
    F: FnMut(&StepSpec<P>, &StepOutcome<R>) -> Result<(), Error>,
    C: FnMut(&StepSpec<P>, CheckpointValue) -> Result<CheckpointValue, Error>,
{
    fn new(
        steps: &'run [StepSpec<P>],
        options: &'run ExecOptions,
        reporter: &'run dyn Reporter,
        on_finished: F,
        on_checkpoint: C,
    ) -> Self {
        let capacity = lane_capacities(steps, options);
        Coordinator {
            steps,
            options,
            reporter,
            on_finished,
            on_checkpoint,
            queue: DependencyQueue::new(),
            free_slots: capacity.map(|slots| (0..slots).collect()),
            busy_devices: BTreeSet::new(),
            running: BTreeMap::new(),
            reports: steps.iter().map(|_| None).collect(),
            stop: None,
            interrupted: false,
            record_failed: None,
            run_error: None,
            _result: std::marker::PhantomData,
        }
    }

    /// Fills the queue; a duplicate address or a dependency cycle is a bug in the caller.
    fn validate(&mut self) -> Result<(), Error> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (position, step) in self.steps.iter().enumerate() {
            if index.insert(&step.address, position).is_some() {
                return Err(Error::internal(format!(
                    "the step `{}` appears twice in the run",
                    step.address
                )));
            }
        }
        for (position, step) in self.steps.iter().enumerate() {
            let dependencies = step
                .depends_on
                .iter()
                .filter_map(|address| index.get(address.as_str()).copied());
            self.queue
                .add(position, dependencies)
                .map_err(|error| Error::internal(error.to_string()))?;
        }
        self.queue.check_acyclic().map_err(|cycle| {
            let mut names: Vec<&str> = cycle.iter().map(|step| self.address(*step)).collect();
            names.push(names[0]);
            Error::internal(format!("the steps form a cycle: {}", names.join(" → ")))
        })
    }

    fn address(&self, step: usize) -> &'run str {
        &self.steps[step].address
    }

    /// The run cannot start: every step is skipped with the reason.
    fn give_up_on_all(&mut self, error: Error) {
        let stop = Stop::Invalid(error.message.clone());
        self.run_error = Some(error);
        for step in 0..self.steps.len() {
            self.record(step, stop.unstarted_outcome(), 0);
        }
        self.queue.abandon_pending();
        self.stop = Some(stop);
    }

    fn run(&mut self, spawn: &dyn Fn(usize, usize) -> bool, receivers: &Receivers<R>) {
        loop {
            self.enforce_stops();
            if self.stop.is_none() {
                self.dispatch(spawn);
            }
            if self.running.is_empty() {
                break;
            }
            select! {
                recv(receivers.done) -> message => if let Ok(message) = message {
                    self.finish_step(message);
                },
                recv(receivers.progress) -> message => if let Ok(message) = message {
                    self.report_progress(message);
                },
                recv(receivers.checkpoint) -> message => if let Ok(message) = message {
                    self.checkpoint(message);
                },
                default(CANCEL_POLL) => {}
            }
        }
        self.settle_stranded();
    }

    /// Starts every ready step its pool has room for.
    fn dispatch(&mut self, spawn: &dyn Fn(usize, usize) -> bool) {
        loop {
            let (steps, free_slots, busy_devices) =
                (self.steps, &self.free_slots, &self.busy_devices);
            let has_room = |step: &usize| {
                let pool = &steps[*step].pool;
                !free_slots[lane(pool)].is_empty()
                    && pool
                        .device()
                        .is_none_or(|device| !busy_devices.contains(device))
            };
            let Some(step) = self.queue.pop_ready(has_room) else {
                return;
            };
            let pool = &self.steps[step].pool;
            let Some(slot) = self.free_slots[lane(pool)].pop_first() else {
                return;
            };
            if let Some(device) = pool.device() {
                self.busy_devices.insert(device.to_string());
            }
            self.running.insert(step, slot);
            self.reporter.event(&Event::StepStarted {
                address: self.address(step).to_string(),
                pool: pool.kind().to_string(),
                device: pool.device().map(str::to_string),
                slot,
            });
            if !spawn(step, slot) {
                let error = Error::internal(format!("no worker pool for `{}`", self.address(step)));
                self.finish_step(Done {
                    step,
                    result: Err(error),
                    duration_ms: 0,
                });
            }
        }
    }

    fn report_progress(&mut self, message: ProgressMessage) {
        // Progress that arrives after the step's result is stale.
        if self.running.contains_key(&message.step) {
            self.reporter.event(&Event::StepProgress {
                address: self.address(message.step).to_string(),
                message: message.message,
                fraction: message.fraction,
                transfer: message.transfer,
            });
        }
    }

    /// Records what a running step asked for and answers it (the step waits). A failed
    /// recording is the step's to handle: it gets the error and decides (a flash then
    /// writes nothing).
    fn checkpoint(&mut self, message: CheckpointMessage) {
        let spec = &self.steps[message.step];
        let answer = (self.on_checkpoint)(spec, message.request);
        // The step waits for the answer; it is gone only if its worker panicked meanwhile.
        let _ = message.reply.send(answer);
    }

    /// Notices the cancel flag and failed recordings, and stops scheduling for them.
    fn enforce_stops(&mut self) {
        if self.options.cancel.load(Ordering::SeqCst) && !self.interrupted {
            self.interrupted = true;
            if self.stop.is_none() {
                self.stop_scheduling(Stop::Interrupted);
            }
        }
        if let Some(address) = self.record_failed.take()
            && self.stop.is_none()
        {
            self.stop_scheduling(Stop::RecordFailed(address));
        }
    }

    fn stop_scheduling(&mut self, stop: Stop) {
        for step in self.queue.abandon_pending() {
            self.record(step, stop.unstarted_outcome(), 0);
        }
        self.stop = Some(stop);
    }

    fn finish_step(&mut self, done: Done<R>) {
        self.enforce_stops();
        let Some(slot) = self.running.remove(&done.step) else {
            return;
        };
        let pool = &self.steps[done.step].pool;
        self.free_slots[lane(pool)].insert(slot);
        if let Some(device) = pool.device() {
            self.busy_devices.remove(device);
        }
        let outcome = match done.result {
            Ok(result) => StepOutcome::Succeeded(result),
            Err(error) if error.code == ErrorCode::Interrupted || self.interrupted => {
                StepOutcome::Cancelled
            }
            Err(error) => StepOutcome::Failed(error),
        };
        let kind = self.record(done.step, outcome, done.duration_ms);
        let queue_outcome = match kind {
            OutcomeKind::Succeeded => Outcome::Succeeded,
            _ => Outcome::Failed,
        };
        let Ok(finished) = self.queue.finish(&done.step, queue_outcome) else {
            return;
        };
        for (dependent, cause) in finished.skipped {
            let verb = match self.reports[cause].as_ref().map(|report| report.outcome) {
                Some(OutcomeKind::Cancelled) => "was cancelled",
                _ => "failed",
            };
            let because = format!("`{}` {verb}", self.address(cause));
            self.record(dependent, StepOutcome::Skipped { because }, 0);
        }
        if kind == OutcomeKind::Failed && !self.options.keep_going && self.stop.is_none() {
            self.stop_scheduling(Stop::FailFast(self.address(done.step).to_string()));
        }
        self.enforce_stops();
    }

    /// Calls `on_finished`, reports the step and keeps its report; returns the final kind
    /// (a success whose recording failed counts as a failure: nothing false is claimed).
    fn record(&mut self, step: usize, outcome: StepOutcome<R>, duration_ms: u64) -> OutcomeKind {
        let spec = &self.steps[step];
        let recorded = (self.on_finished)(spec, &outcome);
        let mut kind = outcome.kind();
        let (mut error, reason) = match outcome {
            StepOutcome::Failed(error) => (Some(error), None),
            StepOutcome::Skipped { because } => (None, Some(because)),
            StepOutcome::Succeeded(_) | StepOutcome::Cancelled => (None, None),
        };
        if let Err(record_error) = recorded {
            let record_error = Error {
                message: format!(
                    "recording the result of `{}`: {}",
                    spec.address, record_error.message
                ),
                ..record_error
            };
            if kind == OutcomeKind::Succeeded {
                kind = OutcomeKind::Failed;
                error = Some(record_error.clone());
            }
            self.run_error.get_or_insert(record_error);
            self.record_failed
                .get_or_insert_with(|| spec.address.clone());
        }
        self.reporter.event(&Event::StepFinished {
            address: spec.address.clone(),
            outcome: kind,
            duration_ms,
            error: error.as_ref().map(ErrorSummary::from),
            reason: reason.clone(),
        });
        self.reports[step] = Some(StepReport {
            address: spec.address.clone(),
            outcome: kind,
            duration_ms,
            error,
            reason,
        });
        kind
    }

    /// Nothing runs but some steps never got an outcome: only a bug can cause this, and it
    /// must end in a report rather than a hang.
    fn settle_stranded(&mut self) {
        let stranded: Vec<usize> = (0..self.steps.len())
            .filter(|step| self.reports[*step].is_none())
            .collect();
        if stranded.is_empty() {
            return;
        }
        let error = Error::internal("some steps never became ready");
        self.run_error.get_or_insert(error);
        let stop = Stop::Invalid("it never became ready (internal error)".to_string());
        for step in stranded {
            self.record(step, stop.unstarted_outcome(), 0);
        }
    }

    fn into_report(self, started: Instant) -> RunReport {
        let steps: Vec<StepReport> = self.reports.into_iter().flatten().collect();
        let count = |kind: OutcomeKind| steps.iter().filter(|step| step.outcome == kind).count();
        let report = RunReport {
            interrupted: self.interrupted,
            succeeded: count(OutcomeKind::Succeeded),
            failed: count(OutcomeKind::Failed),
            skipped: count(OutcomeKind::Skipped),
            cancelled: count(OutcomeKind::Cancelled),
            duration_ms: elapsed_ms(started),
            error: self.run_error,
            steps,
        };
        self.reporter.event(&Event::RunFinished {
            succeeded: report.succeeded,
            failed: report.failed,
            skipped: report.skipped,
            cancelled: report.cancelled,
            interrupted: report.interrupted,
            duration_ms: report.duration_ms,
            error: report.error.as_ref().map(ErrorSummary::from),
        });
        report
    }
}
