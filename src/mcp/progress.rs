//! MCP progress notifications from a run's events: an [`exec::Reporter`](Reporter) that
//! forwards to the progress token the client sent with its tool call.
//!
//! The executor calls the reporter on its coordinator thread (inside the blocking task), so
//! the reporter only queues updates; an async task sends them. The tool awaits that task
//! before it returns, so every notification reaches the client before the result.
//!
//! MCP requires `progress` to increase with every notification. It counts finished steps
//! (plus the finished fraction of running steps that report one), out of the run's `total`
//! steps; an event that does not move it (a step starting, a new phase) still advances it
//! by a thousandth of a step, so the client sees every message. Download progress within a
//! step is forwarded in 5 % increments, not per chunk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::exec::{Event, Reporter};
use crate::imagebuilder::FetchProgress;
use crate::triple::Triple;

/// The smallest advance of a notification that would otherwise not move the progress.
const NUDGE: f64 = 0.001;
/// Forward a step's own fraction only when it moved this much since the last one forwarded.
const FRACTION_STEP: f64 = 0.05;
/// Forward download progress of `ensure_builder` every this many bytes.
const FETCH_STEP_BYTES: u64 = 4 * 1024 * 1024;

/// One notification to send.
#[derive(Debug, Clone, PartialEq)]
struct Update {
    progress: f64,
    total: Option<f64>,
    message: String,
}

/// Forwards one tool call's progress; does nothing when the call carried no progress token.
pub(crate) struct ProgressForwarder {
    sender: Option<UnboundedSender<Update>>,
    tally: Mutex<Tally>,
}

/// The task sending a forwarder's notifications; it ends once the forwarder is dropped.
pub(crate) struct ProgressTask(Option<JoinHandle<()>>);

impl ProgressTask {
    /// Waits until every queued notification was sent.
    pub(crate) async fn finish(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }
}

impl ProgressForwarder {
    /// A forwarder for the tool call of `context`, and the task that sends for it.
    pub(crate) fn start(context: &RequestContext<RoleServer>) -> (ProgressForwarder, ProgressTask) {
        let Some(token) = context.meta.get_progress_token() else {
            return (ProgressForwarder::silent(), ProgressTask(None));
        };
        let (sender, mut receiver) = unbounded_channel::<Update>();
        let peer = context.peer.clone();
        let task = tokio::spawn(async move {
            while let Some(update) = receiver.recv().await {
                if let Err(error) = peer.notify_progress(notification(&token, update)).await {
                    tracing::debug!("progress notification not sent: {error}");
                }
            }
        });
        let forwarder = ProgressForwarder {
            sender: Some(sender),
            tally: Mutex::new(Tally::default()),
        };
        (forwarder, ProgressTask(Some(task)))
    }

    fn silent() -> ProgressForwarder {
        ProgressForwarder {
            sender: None,
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Download progress of `ensure_builder` (not an executor run).
    pub(crate) fn fetch(&self, triple: &Triple, progress: &FetchProgress) {
        let update = self.tally().fetched(triple, progress);
        self.send(update);
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn send(&self, update: Option<Update>) {
        if let (Some(sender), Some(update)) = (&self.sender, update) {
            // The receiver lives until this sender is dropped; a failure means the client left.
            let _ = sender.send(update);
        }
    }
}

impl Reporter for ProgressForwarder {
    fn event(&self, event: &Event) {
        if self.sender.is_none() {
            return;
        }
        let update = self.tally().observe(event);
        self.send(update);
    }
}

fn notification(token: &ProgressToken, update: Update) -> ProgressNotificationParam {
    let notification =
        ProgressNotificationParam::new(token.clone(), update.progress).with_message(update.message);
    match update.total {
        Some(total) => notification.with_total(total),
        None => notification,
    }
}

/// What a run has done so far, in steps.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    finished: usize,
    /// Running steps and the fraction each last reported.
    running: BTreeMap<String, f64>,
    /// Bytes downloaded per Image Builder (`ensure_builder`).
    fetched: BTreeMap<String, u64>,
    last_fetch_report: u64,
    last: Option<f64>,
}

impl Tally {
    /// The notification for one event, if it is worth one.
    fn observe(&mut self, event: &Event) -> Option<Update> {
        let message = match event {
            Event::RunStarted { total, .. } => {
                self.total = *total;
                format!("running {total} steps")
            }
            Event::StepStarted { address, pool, .. } => {
                self.running.insert(address.clone(), 0.0);
                format!("{address}: started ({pool})")
            }
            Event::StepProgress {
                address,
                message,
                fraction,
                ..
            } => {
                let before = self.running.get(address).copied().unwrap_or(0.0);
                if let Some(fraction) = fraction {
                    if *fraction < 1.0 && fraction - before < FRACTION_STEP {
                        return None;
                    }
                    self.running.insert(address.clone(), *fraction);
                }
                format!("{address}: {message}")
            }
            Event::StepFinished {
                address,
                outcome,
                error,
                ..
            } => {
                self.running.remove(address);
                self.finished += 1;
                match error {
                    Some(error) => format!("{address}: {} ({})", outcome.as_str(), error.message),
                    None => format!("{address}: {}", outcome.as_str()),
                }
            }
            Event::RunFinished {
                succeeded,
                failed,
                skipped,
                cancelled,
                ..
            } => {
                self.finished = self.total;
                self.running.clear();
                format!(
                    "finished: {succeeded} succeeded, {failed} failed, {skipped} skipped, {cancelled} cancelled"
                )
            }
        };
        let done = self.finished as f64 + self.running.values().sum::<f64>();
        let total = (self.total > 0).then_some(self.total as f64);
        Some(self.advance(done, total, message))
    }

    fn fetched(&mut self, triple: &Triple, progress: &FetchProgress) -> Option<Update> {
        let first = !self.fetched.contains_key(&triple.to_string());
        self.fetched.insert(triple.to_string(), progress.downloaded);
        let bytes: u64 = self.fetched.values().sum();
        if !first && bytes < self.last_fetch_report + FETCH_STEP_BYTES {
            return None;
        }
        self.last_fetch_report = bytes;
        let of = progress
            .total
            .map(|total| format!(" of {:.1} MB", total as f64 / 1e6))
            .unwrap_or_default();
        let message = format!("{triple}: {:.1} MB{of}", progress.downloaded as f64 / 1e6);
        Some(self.advance(bytes as f64 / 1e6, None, message))
    }

    /// An update at `done`, or just past the last one when `done` would not increase.
    fn advance(&mut self, done: f64, total: Option<f64>, message: String) -> Update {
        let progress = match self.last {
            Some(last) if done <= last => last + NUDGE,
            _ => done,
        };
        self.last = Some(progress);
        Update {
            progress,
            total,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::OutcomeKind;

    fn run_events() -> Vec<Event> {
        let step = |address: &str| Event::StepStarted {
            address: address.into(),
            pool: "build".into(),
            device: None,
            slot: 0,
        };
        let progress = |address: &str, fraction: Option<f64>| Event::StepProgress {
            address: address.into(),
            message: "working".into(),
            fraction,
            transfer: None,
        };
        let finished = |address: &str| Event::StepFinished {
            address: address.into(),
            outcome: OutcomeKind::Succeeded,
            duration_ms: 1,
            error: None,
            reason: None,
        };
        vec![
            Event::RunStarted {
                format_version: 1,
                total: 2,
            },
            step("a"),
            progress("a", Some(0.5)),
            progress("a", Some(0.51)),
            step("b"),
            progress("b", None),
            finished("a"),
            finished("b"),
            Event::RunFinished {
                succeeded: 2,
                failed: 0,
                skipped: 0,
                cancelled: 0,
                interrupted: false,
                duration_ms: 2,
                error: None,
            },
        ]
    }

    #[test]
    fn progress_strictly_increases_and_ends_at_the_total() {
        let mut tally = Tally::default();
        let updates: Vec<Update> = run_events()
            .iter()
            .filter_map(|event| tally.observe(event))
            .collect();
        // The 1 % move of step `a` is not worth a notification; every other event is.
        assert_eq!(updates.len(), 8);
        for pair in updates.windows(2) {
            assert!(pair[1].progress > pair[0].progress, "{pair:?}");
        }
        assert!(updates.iter().all(|update| update.total == Some(2.0)));
        assert_eq!(updates[2].progress, 0.5);
        assert_eq!(updates[2].message, "a: working");
        let last = updates.last().map(|update| update.progress);
        assert!(
            last.is_some_and(|last| (2.0..2.01).contains(&last)),
            "{last:?}"
        );
    }

    #[test]
    fn downloads_are_reported_in_steps_not_per_chunk() {
        let mut tally = Tally::default();
        let triple = Triple::new("23.05.4", "x86", "64");
        let sent = (0..100u64)
            .filter_map(|chunk| {
                tally.fetched(
                    &triple,
                    &FetchProgress {
                        phase: crate::imagebuilder::FetchPhase::Downloading,
                        downloaded: chunk * 256 * 1024,
                        total: Some(100 * 256 * 1024),
                        resumed_from: 0,
                    },
                )
            })
            .count();
        // 25 MiB in 256 KiB chunks: the first chunk, then every 4 MiB.
        assert_eq!(sent, 7);
    }
}
