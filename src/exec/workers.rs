//! Worker pools: one rayon pool per pool kind, the scopes that let steps borrow from the
//! caller, and the worker side of a step (run it, catch a panic, send the result).
//!
//! Workers never touch the queue, the reporter or the state store; they only send messages
//! to the coordinator.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crossbeam_channel::Sender;
use rayon::{Scope, ThreadPool, ThreadPoolBuilder};

use super::{Channels, ExecOptions, Pool, StepContext, StepSpec};
use crate::error::Error;

/// Index of a pool kind in the per-kind arrays.
pub(crate) const DOWNLOAD: usize = 0;
pub(crate) const BUILD: usize = 1;
pub(crate) const FLASH: usize = 2;
pub(crate) const POOL_KINDS: [&str; 3] = ["download", "build", "flash"];

pub(crate) fn lane(pool: &Pool) -> usize {
    match pool {
        Pool::Download => DOWNLOAD,
        Pool::Build => BUILD,
        Pool::Flash(_) => FLASH,
    }
}

/// A worker's result for one step.
pub(crate) struct Done<R> {
    pub(crate) step: usize,
    pub(crate) result: Result<R, Error>,
    pub(crate) duration_ms: u64,
}

/// Nests one rayon scope per pool so steps can borrow from `execute`'s frame; the body (the
/// coordinator loop) runs on the calling thread and every scope waits for its workers.
pub(crate) fn with_scopes<'scope>(
    pools: &[&ThreadPool],
    acquired: Vec<&Scope<'scope>>,
    body: &mut dyn FnMut(&[&Scope<'scope>]),
) {
    match pools.split_first() {
        None => body(&acquired),
        Some((first, rest)) => first.in_place_scope(|scope| {
            let mut acquired: Vec<&Scope<'scope>> = acquired;
            acquired.push(scope);
            with_scopes(rest, acquired, body);
        }),
    }
}

/// One thread pool per pool kind that has steps, sized to its limit (never more threads than
/// steps of that kind). Flash gets one thread per distinct device.
pub(crate) fn build_pools<P>(
    steps: &[StepSpec<P>],
    options: &ExecOptions,
) -> Result<Vec<(usize, ThreadPool)>, Error> {
    let capacity = lane_capacities(steps, options);
    let mut counts = [0usize; 3];
    for step in steps {
        counts[lane(&step.pool)] += 1;
    }
    let mut pools = Vec::new();
    for lane in [DOWNLOAD, BUILD, FLASH] {
        if counts[lane] == 0 {
            continue;
        }
        let threads = capacity[lane].min(counts[lane]).max(1);
        let kind = POOL_KINDS[lane];
        let pool = ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |index| format!("imagegen-{kind}-{index}"))
            .build()
            .map_err(|error| Error::internal(format!("starting the {kind} workers: {error}")))?;
        pools.push((lane, pool));
    }
    Ok(pools)
}

/// Slots per pool kind: `download_jobs`, `jobs`, and one per flash device (each device is
/// further limited to one writer).
pub(crate) fn lane_capacities<P>(steps: &[StepSpec<P>], options: &ExecOptions) -> [usize; 3] {
    let devices: BTreeSet<&str> = steps.iter().filter_map(|step| step.pool.device()).collect();
    [
        options.download_jobs.max(1),
        options.jobs.max(1),
        devices.len().max(1),
    ]
}

/// What a worker thread needs to run one step and answer.
pub(crate) struct Worker<R> {
    pub(crate) step: usize,
    pub(crate) slot: usize,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) channels: Channels,
    pub(crate) done: Sender<Done<R>>,
}

impl<R> Worker<R> {
    pub(crate) fn run<P>(
        self,
        spec: &StepSpec<P>,
        run_step: &(impl Fn(&StepSpec<P>, &StepContext) -> Result<R, Error> + Sync),
    ) {
        let context = StepContext::attached(self.step, self.slot, self.cancel, self.channels);
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| run_step(spec, &context)))
            .unwrap_or_else(|payload| Err(panic_error(&spec.address, payload.as_ref())));
        let duration_ms = elapsed_ms(started);
        // The coordinator keeps the receiver until every worker answered.
        let _ = self.done.send(Done {
            step: self.step,
            result,
            duration_ms,
        });
    }
}

pub(crate) fn panic_error(address: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    Error::internal(format!("step `{address}` panicked: {message}"))
        .with_help("this is a bug in imagegen; please report it")
}

pub(crate) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
