//! Background jobs (`POST /apply`, `POST /builds`, `POST /flash`): at most one runs at a time, since it
//! holds the state store for its whole run. Each job keeps every event line it produced, so
//! a subscriber that comes late still gets the whole stream from the start.
//!
//! The lines are exactly those of `apply --json` / `build --json`: the executor's events,
//! then one last line, the summary (or `{"error": ...}` when the operation failed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode, Result};
use crate::exec::{Event, Reporter};
use crate::ops::{ApplyOutcome, BuildOutcome, FlashOutcome};

/// Finished jobs kept for `GET /jobs`; older ones are forgotten.
const KEEP_FINISHED: usize = 20;

/// What a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobKind {
    Apply,
    Build,
    /// `POST /flash` with `force: true`.
    Flash,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobStatus {
    Running,
    /// The operation finished and every step succeeded (or nothing had to run).
    Succeeded,
    /// The operation failed, or some step did.
    Failed,
    /// Cancelled (`POST /jobs/{id}/cancel`); finished steps are recorded.
    Cancelled,
}

/// The final report of a job: what `apply --json` or `build --json` summarises.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum JobResult {
    Apply(Box<ApplyOutcome>),
    Build(Box<BuildOutcome>),
    Flash(Box<FlashOutcome>),
}

/// A job as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct JobView {
    pub id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Event lines so far (`GET /jobs/{id}/events` replays them all).
    pub events: usize,
    /// The operation's report, once it finished.
    pub result: Option<JobResult>,
    /// Why the operation failed before or instead of running.
    pub error: Option<Error>,
}

struct JobState {
    status: JobStatus,
    finished_at: Option<i64>,
    result: Option<JobResult>,
    error: Option<Error>,
}

/// One job: its status, its cancel flag and its event log.
pub(crate) struct Job {
    pub id: String,
    pub kind: JobKind,
    pub started_at: i64,
    pub cancel: Arc<AtomicBool>,
    pub events: Arc<EventLog>,
    state: Mutex<JobState>,
}

impl Job {
    pub(crate) fn view(&self) -> JobView {
        let state = lock(&self.state);
        JobView {
            id: self.id.clone(),
            kind: self.kind,
            status: state.status,
            started_at: self.started_at,
            finished_at: state.finished_at,
            events: self.events.len(),
            result: state.result.clone(),
            error: state.error.clone(),
        }
    }

    /// The job's event lines from `from` on, live until the job finishes.
    pub(crate) fn events_from(&self, from: usize) -> impl Stream<Item = (usize, Arc<str>)> + use<> {
        self.events.subscribe(from)
    }

    /// Asks a running job to stop; finished steps stay recorded.
    pub(crate) fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_running(&self) -> bool {
        lock(&self.state).status == JobStatus::Running
    }

    /// Records the operation's result and closes the event stream with its last line.
    pub(crate) fn finish(&self, outcome: Result<JobResult>) {
        let (status, result, error, last) = match outcome {
            Ok(result) => {
                let (success, interrupted, line) = match &result {
                    JobResult::Apply(outcome) => (
                        outcome.is_success(),
                        interrupted(outcome.report.as_ref()),
                        outcome.summary_event(),
                    ),
                    JobResult::Build(outcome) => (
                        outcome.is_success(),
                        interrupted(outcome.report.as_ref()),
                        outcome.summary_event(),
                    ),
                    // A flash that did not succeed is an error, not a result.
                    JobResult::Flash(outcome) => (true, false, outcome.summary_event()),
                };
                let status = match (success, interrupted) {
                    (_, true) => JobStatus::Cancelled,
                    (true, false) => JobStatus::Succeeded,
                    (false, false) => JobStatus::Failed,
                };
                (status, Some(result), None, line)
            }
            Err(error) => {
                let status = match error.code {
                    ErrorCode::Interrupted => JobStatus::Cancelled,
                    _ => JobStatus::Failed,
                };
                let line = serde_json::json!({ "error": &error });
                (status, None, Some(error), line)
            }
        };
        {
            let mut state = lock(&self.state);
            if state.status != JobStatus::Running {
                return;
            }
            *state = JobState {
                status,
                finished_at: Some(crate::state::unix_now()),
                result,
                error,
            };
        }
        self.events.close(last.to_string());
    }
}

fn interrupted(report: Option<&crate::apply::ApplyReport>) -> bool {
    report.is_some_and(|report| report.run.interrupted)
}

/// Finishes a job as failed if its thread ends without finishing it (a panic), so the
/// server never believes a job runs forever.
pub(crate) struct FinishGuard(pub Arc<Job>, pub Arc<Jobs>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.0
            .finish(Err(Error::internal("the job stopped unexpectedly")));
        self.1.release(&self.0);
    }
}

/// Every job of this server process, and the one that runs.
#[derive(Default)]
pub(crate) struct Jobs {
    inner: Mutex<JobsInner>,
}

#[derive(Default)]
struct JobsInner {
    jobs: VecDeque<Arc<Job>>,
    running: Option<Arc<Job>>,
    next_id: u64,
}

impl Jobs {
    /// Registers a new running job, or `state_locked` naming the one that runs.
    pub(crate) fn begin(&self, kind: JobKind) -> Result<Arc<Job>> {
        let mut inner = lock(&self.inner);
        if let Some(running) = &inner.running {
            return Err(busy(running));
        }
        inner.next_id += 1;
        let job = Arc::new(Job {
            id: format!("{}-{}", crate::state::unix_now(), inner.next_id),
            kind,
            started_at: crate::state::unix_now(),
            cancel: Arc::new(AtomicBool::new(false)),
            events: Arc::new(EventLog::default()),
            state: Mutex::new(JobState {
                status: JobStatus::Running,
                finished_at: None,
                result: None,
                error: None,
            }),
        });
        inner.running = Some(Arc::clone(&job));
        inner.jobs.push_back(Arc::clone(&job));
        while inner.jobs.len() > KEEP_FINISHED
            && inner.jobs.front().is_some_and(|job| !job.is_running())
        {
            inner.jobs.pop_front();
        }
        Ok(job)
    }

    /// The job no longer holds the store.
    pub(crate) fn release(&self, job: &Job) {
        let mut inner = lock(&self.inner);
        if inner
            .running
            .as_ref()
            .is_some_and(|running| running.id == job.id)
        {
            inner.running = None;
        }
    }

    /// Forgets a job that never started (its start failed and the request said so).
    pub(crate) fn abandon(&self, job: &Job) {
        self.release(job);
        lock(&self.inner).jobs.retain(|kept| kept.id != job.id);
    }

    pub(crate) fn running_id(&self) -> Option<String> {
        lock(&self.inner).running.as_ref().map(|job| job.id.clone())
    }

    /// Cancels the running job, if any (the server is shutting down).
    pub(crate) fn cancel_running(&self) {
        if let Some(job) = &lock(&self.inner).running {
            job.request_cancel();
        }
    }

    /// `state_locked` while a job holds the store.
    pub(crate) fn check_idle(&self) -> Result<()> {
        match &lock(&self.inner).running {
            Some(running) => Err(busy(running)),
            None => Ok(()),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<Job>> {
        lock(&self.inner)
            .jobs
            .iter()
            .find(|job| job.id == id)
            .cloned()
            .ok_or_else(|| {
                Error::new(ErrorCode::JobNotFound, format!("no job `{id}`"))
                    .with_help("`GET /jobs` lists this server's recent jobs")
            })
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<JobView> {
        lock(&self.inner)
            .jobs
            .iter()
            .rev()
            .map(|job| job.view())
            .collect()
    }
}

fn busy(running: &Job) -> Error {
    Error::new(
        ErrorCode::StateLocked,
        format!(
            "the state store is held by {} job `{}`",
            serde_json::to_value(running.kind)
                .ok()
                .and_then(|kind| kind.as_str().map(str::to_string))
                .unwrap_or_default(),
            running.id
        ),
    )
    .with_details(serde_json::json!({ "job": running.id }))
    .with_help(format!(
        "wait for it (`GET /jobs/{}/events` follows it), then try again",
        running.id
    ))
}

/// The event lines of one job, for any number of subscribers, late ones included. It is the
/// job's [`Reporter`]: the executor's coordinator thread appends, subscribers read.
#[derive(Default)]
pub(crate) struct EventLog {
    lines: Mutex<Vec<Arc<str>>>,
    /// The number of lines, and whether the log is closed; subscribers wait on changes.
    progress: watch::Sender<(usize, bool)>,
}

impl EventLog {
    fn push(&self, line: String, close: bool) {
        let count = {
            let mut lines = lock(&self.lines);
            lines.push(Arc::from(line));
            lines.len()
        };
        self.progress.send_replace((count, close));
    }

    fn close(&self, last: String) {
        self.push(last, true);
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.lines).len()
    }

    /// Every line from `from` on (0-based), then the ones still to come, until the log is
    /// closed.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        from: usize,
    ) -> impl Stream<Item = (usize, Arc<str>)> + use<> {
        let receiver = self.progress.subscribe();
        futures_util::stream::unfold(
            (Arc::clone(self), receiver, from),
            |(log, mut receiver, next)| async move {
                loop {
                    let line = lock(&log.lines).get(next).cloned();
                    if let Some(line) = line {
                        return Some(((next, line), (log, receiver, next + 1)));
                    }
                    let (count, closed) = *receiver.borrow_and_update();
                    if closed && count <= next {
                        return None;
                    }
                    if count > next {
                        continue;
                    }
                    receiver.changed().await.ok()?;
                }
            },
        )
    }
}

impl Reporter for EventLog {
    fn event(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            self.push(line, false);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn late_subscribers_get_the_whole_stream() {
        let log = Arc::new(EventLog::default());
        log.event(&Event::RunStarted {
            format_version: 1,
            total: 1,
        });
        let early = log.subscribe(0);
        log.close("{\"event\":\"summary\"}".to_string());
        let late: Vec<_> = log.subscribe(0).collect().await;
        let early: Vec<_> = early.collect().await;
        assert_eq!(late, early);
        assert_eq!(late.len(), 2);
        assert_eq!(&*late[1].1, "{\"event\":\"summary\"}");
        let resumed: Vec<_> = log.subscribe(1).collect().await;
        assert_eq!(resumed.len(), 1);
    }

    #[test]
    fn one_job_at_a_time() {
        let jobs = Jobs::default();
        let first = jobs.begin(JobKind::Apply).unwrap();
        let error = jobs.begin(JobKind::Build).err().unwrap();
        assert_eq!(error.code, ErrorCode::StateLocked);
        assert!(error.message.contains(&first.id), "{}", error.message);
        jobs.release(&first);
        assert!(jobs.begin(JobKind::Build).is_ok());
    }
}
