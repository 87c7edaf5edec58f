//! A flash as run events: a run of one step `flash.<kernel name>` in the pool `flash`, the
//! same events `apply` emits, so `flash … --json`, the HTTP job's server-sent events and
//! MCP progress read like any run. Frontends only choose where the events go and how often
//! progress may be sent.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode};
use crate::exec::report::{EVENT_FORMAT_VERSION, ErrorSummary};
use crate::exec::{Event, OutcomeKind};
use crate::flash::{FlashPhase, FlashPlan, FlashProgress};

/// The events of one flash, from the moment writing starts.
pub struct FlashEvents {
    address: String,
    started: Instant,
    /// Progress more often than this is dropped, except at each phase change.
    interval: Duration,
    last_phase: Option<FlashPhase>,
    last_sent: Option<Instant>,
}

impl FlashEvents {
    /// The run and its step start: the events to send first.
    pub fn start(plan: &FlashPlan, interval: Duration) -> (FlashEvents, [Event; 2]) {
        let events = FlashEvents {
            address: format!("flash.{}", plan.device.name),
            started: Instant::now(),
            interval,
            last_phase: None,
            last_sent: None,
        };
        let first = [
            Event::RunStarted {
                format_version: EVENT_FORMAT_VERSION,
                total: 1,
            },
            Event::StepStarted {
                address: events.address.clone(),
                pool: "flash".to_string(),
                device: Some(plan.device.node.display().to_string()),
                slot: 0,
            },
        ];
        (events, first)
    }

    /// A `step_progress` event (message: the phase, then `detail`), unless one was sent less
    /// than the interval ago in the same phase.
    pub fn progress(&mut self, progress: &FlashProgress, detail: &str) -> Option<Event> {
        let phase_changed = self.last_phase != Some(progress.phase);
        let due = self
            .last_sent
            .is_none_or(|last| last.elapsed() >= self.interval);
        if !(phase_changed || due) {
            return None;
        }
        self.last_phase = Some(progress.phase);
        self.last_sent = Some(Instant::now());
        Some(Event::StepProgress {
            address: self.address.clone(),
            message: format!("{} {detail}", progress.phase.as_str()),
            fraction: progress.fraction,
            transfer: Some(progress.transfer()),
        })
    }

    /// The step and the run end, with how the flash ended (`Interrupted` is a cancel).
    pub fn finish(&self, error: Option<&Error>) -> [Event; 2] {
        let interrupted = error.is_some_and(|error| error.code == ErrorCode::Interrupted);
        let outcome = match error {
            None => OutcomeKind::Succeeded,
            Some(_) if interrupted => OutcomeKind::Cancelled,
            Some(_) => OutcomeKind::Failed,
        };
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let count = |kind| usize::from(outcome == kind);
        [
            Event::StepFinished {
                address: self.address.clone(),
                outcome,
                duration_ms,
                error: error.map(ErrorSummary::from),
                reason: None,
            },
            Event::RunFinished {
                succeeded: count(OutcomeKind::Succeeded),
                failed: count(OutcomeKind::Failed),
                skipped: 0,
                cancelled: count(OutcomeKind::Cancelled),
                interrupted,
                duration_ms,
                error: None,
            },
        ]
    }
}
