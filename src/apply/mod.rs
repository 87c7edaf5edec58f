//! Apply: turns a [`Plan`] into executor steps (fetch → build → forget), runs them with
//! [`crate::exec`], and records every finished step in the state store from the
//! coordinator thread (one transaction per step). Workers only read the store.
//!
//! A build step reuses a recorded successful build with the same key whose artifacts are
//! all in the CAS (a cache hit); otherwise it stages the overlay, prepares its worker slot,
//! runs `make image`, and stores the artifacts in the CAS before anything is recorded.

mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode, Result};
use crate::exec::{
    self, ExecOptions, OutcomeKind, Pool, Reporter, RunReport, StepOutcome, StepSpec,
};
use crate::key::BuildInputs;
use crate::lock::LockFile;
use crate::manifest::Fleet;
use crate::plan::{ActionKind, Plan, Resource};
use crate::settings::Settings;
use crate::state::{ArtifactRef, Store};
use crate::triple::Triple;

pub use steps::BuildDone;

/// Options of one apply run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub keep_going: bool,
    /// Rebuild even when a recorded build with the same key exists.
    pub force: bool,
    pub cancel: Arc<AtomicBool>,
}

/// What one step does.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Builder(Triple),
    Build(Box<BuildJob>),
    Forget { profile_id: String },
}

#[derive(Debug, Clone)]
pub(crate) struct BuildJob {
    pub profile_id: String,
    pub device_id: String,
    pub key: String,
    pub inputs: BuildInputs,
}

/// What a finished step hands to the coordinator to record.
pub(crate) enum Done {
    Builder(Box<crate::state::BuilderRecord>),
    Build(Box<BuildDone>),
    Forgot,
}

/// Per-step line of the final summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepSummary {
    pub address: String,
    pub outcome: OutcomeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    pub cache_hit: bool,
    pub artifacts: Vec<ArtifactRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub log_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}

/// The result of `imagegen apply`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplyReport {
    pub fleet: String,
    pub steps: Vec<StepSummary>,
    pub run: RunReport,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.run.is_success()
    }
}

/// Everything a worker needs, shared read-only across threads.
pub(crate) struct Shared<'a> {
    pub fleet: &'a Fleet,
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub lock: Option<&'a LockFile>,
    pub cas: crate::cas::Cas,
    pub force: bool,
    pub fleet_commit: Option<String>,
}

impl Shared<'_> {
    /// The archive sha256 `imagegen.lock` pins for `triple`, if any.
    pub(crate) fn pinned(&self, triple: &Triple) -> Option<&str> {
        self.lock
            .and_then(|lock| lock.get(triple))
            .map(|entry| entry.archive_sha256.as_str())
    }
}

/// Applies `plan` (already checked to be current) to the fleet.
pub fn apply(
    fleet: &Fleet,
    settings: &Settings,
    store: &Store,
    plan: &Plan,
    options: &ApplyOptions,
    reporter: &dyn Reporter,
) -> Result<ApplyReport> {
    let lock = LockFile::read(&fleet.lock_path())?;
    let shared = Shared {
        fleet,
        settings,
        store,
        lock: lock.as_ref(),
        cas: crate::cas::Cas::open(&settings.artifacts_dir.value)?,
        force: options.force,
        fleet_commit: steps::fleet_commit(&fleet.root),
    };
    let specs = to_steps(plan, options.force)?;
    let exec_options = ExecOptions {
        jobs: settings.jobs.value.max(1) as usize,
        download_jobs: settings.download_jobs.value.max(1) as usize,
        keep_going: options.keep_going,
        cancel: Arc::clone(&options.cancel),
    };
    let mut summaries: BTreeMap<String, StepSummary> = BTreeMap::new();
    let run = exec::execute(
        specs,
        &exec_options,
        |spec, context| steps::run(&shared, spec, context),
        |spec, outcome| {
            let summary = summarize(spec, outcome);
            summaries.insert(spec.address.clone(), summary);
            steps::record(&shared, spec, outcome)
        },
        reporter,
    );
    let steps = run
        .steps
        .iter()
        .filter_map(|report| {
            let mut summary = summaries.remove(&report.address)?;
            summary.outcome = report.outcome;
            summary.duration_ms = report.duration_ms;
            if summary.error.is_none() {
                summary.error = report.error.clone();
            }
            Some(summary)
        })
        .collect();
    Ok(ApplyReport {
        fleet: fleet.name.clone(),
        steps,
        run,
    })
}

/// The plan's changes as steps. Flashes are never part of apply: the plan shows them as
/// `skip` (writing devices is a separate, explicit operation; docs/decisions.md §5).
fn to_steps(plan: &Plan, force: bool) -> Result<Vec<StepSpec<Payload>>> {
    let mut specs = Vec::new();
    for action in &plan.actions {
        let wanted = action.action.is_change()
            || (force && action.resource == Resource::Build && action.action == ActionKind::NoOp);
        if !wanted {
            continue;
        }
        let payload = match (action.resource, action.action) {
            (Resource::Flash, _) => continue,
            (Resource::Builder, _) => {
                Payload::Builder(required(action.builder.clone(), &action.address)?)
            }
            (Resource::Build, ActionKind::Remove) => Payload::Forget {
                profile_id: required(action.profile_id.clone(), &action.address)?,
            },
            (Resource::Build, _) => Payload::Build(Box::new(BuildJob {
                profile_id: required(action.profile_id.clone(), &action.address)?,
                device_id: action.device_id.clone().unwrap_or_default(),
                key: required(action.key.clone(), &action.address).map_err(|_| {
                    Error::new(
                        ErrorCode::Precondition,
                        format!(
                            "the build key of `{}` is not known: its Image Builder is not pinned",
                            action.address
                        ),
                    )
                    .with_help(
                        "run `imagegen lock` first (apply does this itself unless `--locked`)",
                    )
                })?,
                inputs: required(action.inputs.clone(), &action.address)?,
            })),
        };
        let pool = match payload {
            Payload::Build(_) => Pool::Build,
            _ => Pool::Download,
        };
        specs.push(StepSpec {
            address: action.address.clone(),
            pool,
            depends_on: action.depends_on.clone(),
            payload,
        });
    }
    Ok(specs)
}

fn required<T>(value: Option<T>, address: &str) -> Result<T> {
    value.ok_or_else(|| Error::internal(format!("plan action `{address}` lacks a required field")))
}

fn summarize(spec: &StepSpec<Payload>, outcome: &StepOutcome<Done>) -> StepSummary {
    let mut summary = StepSummary {
        address: spec.address.clone(),
        outcome: outcome.kind(),
        profile_id: match &spec.payload {
            Payload::Build(job) => Some(job.profile_id.clone()),
            Payload::Forget { profile_id } => Some(profile_id.clone()),
            Payload::Builder(_) => None,
        },
        cache_hit: false,
        artifacts: Vec::new(),
        log_path: None,
        error: None,
        reason: None,
        duration_ms: 0,
    };
    match outcome {
        StepOutcome::Succeeded(Done::Build(done)) => {
            summary.cache_hit = done.cache_hit;
            summary.artifacts = done.artifacts.clone();
            summary.log_path = done.log_path.clone();
        }
        StepOutcome::Failed(error) => {
            summary.log_path = error.log_path.clone();
            summary.error = Some(error.clone());
        }
        StepOutcome::Skipped { because } => summary.reason = Some(because.clone()),
        _ => {}
    }
    summary
}
