//! Apply: turns a [`Plan`] into executor steps (fetch → build → flash → forget), runs them
//! with [`crate::exec`], and records every finished step in the state store from the
//! coordinator thread (one transaction per step). Workers only read the store; a flash step
//! has the coordinator record its attempt before its first byte (a checkpoint).
//!
//! The steps come from the plan's dependency graph ([`PlanGraph`], built and cycle-checked
//! in `plan`), in topological order. One build per key: of the steps that share a build key,
//! the first builds and the others depend on it and reuse its record.
//!
//! A build step reuses a recorded successful build with the same key whose artifacts all
//! re-hash to their names (a cache hit); otherwise it stages the overlay, prepares its worker
//! slot, runs `make image` (logging to a file of its own), keeps the build tree when asked,
//! fetches the release's initramfs image when asked, and stores the artifacts in the CAS
//! before anything is recorded.

mod flash;
mod initramfs;
mod kept;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode, Result};
use crate::exec::{
    self, CheckpointValue, ExecOptions, OutcomeKind, Pool, Reporter, RunReport, StepOutcome,
    StepSpec,
};
use crate::key::BuildInputs;
use crate::lock::LockFile;
use crate::manifest::{BuildDefaults, Fleet};
use crate::plan::{Action, ActionKind, Plan, PlanGraph, Resource};
use crate::settings::Settings;
use crate::state::{ArtifactRef, FlashRecord, Store};
use crate::triple::Triple;

pub use steps::BuildDone;

/// Options of one apply run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub keep_going: bool,
    /// Addresses of unchanged (`no-op`) builds to build again anyway, without reusing a
    /// recorded build (`imagegen build --force`, `rebuild_if_cached` in `imagegen build`).
    pub rebuild: BTreeSet<String>,
    pub cancel: Arc<AtomicBool>,
}

/// What one step does.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Builder(Triple),
    Build(Box<BuildJob>),
    Flash(Box<flash::FlashJob>),
    Forget { profile_id: String },
}

#[derive(Debug, Clone)]
pub(crate) struct BuildJob {
    pub profile_id: String,
    pub key: String,
    pub inputs: BuildInputs,
    /// The step (same key, earlier in the run) whose build this one reuses.
    pub reuse_of: Option<String>,
    /// Never reuse a build recorded before this run (`--force`, `rebuild_if_cached`).
    pub fresh: bool,
    /// Keep the build tree (`keep_build_dir` of any profile with this key).
    pub keep_build_dir: bool,
}

/// What a finished step hands to the coordinator to record.
pub(crate) enum Done {
    Builder(Box<crate::state::BuilderRecord>),
    Build(Box<BuildDone>),
    /// The flash's final record.
    Flash(Box<FlashRecord>),
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
    /// The build tree kept by `build_defaults.keep_build_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kept_build_dir: Option<PathBuf>,
    /// A flash step's record (what was written where, how it was verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash: Option<FlashRecord>,
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
    };
    let specs = to_steps(plan, fleet, &options.rebuild)?;
    let exec_options = ExecOptions {
        jobs: settings.jobs.value.max(1) as usize,
        download_jobs: settings.download_jobs.value.max(1) as usize,
        keep_going: options.keep_going,
        cancel: Arc::clone(&options.cancel),
    };
    let mut summaries: BTreeMap<String, StepSummary> = BTreeMap::new();
    let run = exec::execute_with_checkpoints(
        specs,
        &exec_options,
        |spec, context| steps::run(&shared, spec, context),
        |spec, outcome| {
            let summary = summarize(spec, outcome);
            summaries.insert(spec.address.clone(), summary);
            steps::record(&shared, spec, outcome)
        },
        |spec, request| checkpoint(&shared, spec, request),
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

/// What a running step asked the coordinator to record: only flash steps ask (their attempt,
/// before the first byte and at the end).
fn checkpoint(
    shared: &Shared,
    spec: &StepSpec<Payload>,
    request: CheckpointValue,
) -> Result<CheckpointValue> {
    match (&spec.payload, request.downcast::<flash::FlashCheckpoint>()) {
        (Payload::Flash(_), Ok(checkpoint)) => flash::record_checkpoint(shared, *checkpoint),
        _ => Err(Error::internal(format!(
            "step `{}` asked to record something it cannot",
            spec.address
        ))),
    }
}

/// The plan's changes as steps, in the order of the plan's dependency graph, each depending
/// on what the graph says. A flash is a change only when the plan's flash permission allows
/// it (otherwise the plan shows it as `skip`). Unchanged builds named in `rebuild` run too.
fn to_steps(
    plan: &Plan,
    fleet: &Fleet,
    rebuild: &BTreeSet<String>,
) -> Result<Vec<StepSpec<Payload>>> {
    let graph = PlanGraph::new(plan)?;
    let runs = |action: &Action| {
        action.action.is_change()
            || (action.resource == Resource::Build
                && action.action == ActionKind::NoOp
                && rebuild.contains(&action.address))
    };
    // The build steps of this run that share a key, in graph order: the first one builds.
    let mut by_key: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for action in graph.in_order() {
        if let Some(key) = &action.key
            && runs(action)
            && action.resource == Resource::Build
            && action.action != ActionKind::Remove
        {
            by_key.entry(key.as_str()).or_default().push(action);
        }
    }
    let mut specs = Vec::new();
    for action in graph.in_order().filter(|action| runs(action)) {
        let payload = match (action.resource, action.action) {
            (Resource::Flash, _) => Payload::Flash(Box::new(flash::flash_job(action, fleet)?)),
            (Resource::Builder, _) => {
                Payload::Builder(required(action.builder.clone(), &action.address)?)
            }
            (Resource::Build, ActionKind::Remove) => Payload::Forget {
                profile_id: required(action.profile_id.clone(), &action.address)?,
            },
            (Resource::Build, _) => {
                Payload::Build(Box::new(build_job(action, fleet, rebuild, &by_key)?))
            }
        };
        let mut depends_on: Vec<String> = graph
            .dependencies(&action.address)
            .into_iter()
            .map(str::to_string)
            .collect();
        let pool = match &payload {
            Payload::Build(job) => {
                if let Some(primary) = job.reuse_of.as_ref().filter(|p| !depends_on.contains(p)) {
                    depends_on.push(primary.clone());
                }
                Pool::Build
            }
            Payload::Flash(job) => Pool::Flash(flash::pool_device(job)),
            _ => Pool::Download,
        };
        specs.push(StepSpec {
            address: action.address.clone(),
            pool,
            depends_on,
            payload,
        });
    }
    Ok(specs)
}

/// One build step. Of the steps sharing its key, the first builds; the others reuse it. The
/// build is fresh when one of them is to be rebuilt or any profile with that key sets
/// `rebuild_if_cached`, and keeps its tree when any of them sets `keep_build_dir`.
fn build_job(
    action: &Action,
    fleet: &Fleet,
    rebuild: &BTreeSet<String>,
    by_key: &BTreeMap<&str, Vec<&Action>>,
) -> Result<BuildJob> {
    let key = required(action.key.clone(), &action.address).map_err(|_| {
        Error::new(
            ErrorCode::Precondition,
            format!(
                "the build key of `{}` is not known: its Image Builder is not pinned",
                action.address
            ),
        )
        .with_help("run `imagegen lock` first (apply does this itself unless `--locked`)")
    })?;
    let group: &[&Action] = by_key.get(key.as_str()).map_or(&[], Vec::as_slice);
    let first = group
        .first()
        .map(|first| first.address.as_str())
        .filter(|first| *first != action.address);
    let reuse_of = action
        .same_inputs_as
        .clone()
        .or_else(|| first.map(str::to_string));
    let wants = |flag: fn(&BuildDefaults) -> bool| {
        group.iter().any(|member| {
            member
                .profile_id
                .as_deref()
                .and_then(|id| fleet.profile(id))
                .is_some_and(|loaded| flag(&loaded.profile.build_defaults))
        })
    };
    Ok(BuildJob {
        profile_id: required(action.profile_id.clone(), &action.address)?,
        key,
        inputs: required(action.inputs.clone(), &action.address)?,
        reuse_of,
        fresh: group.iter().any(|member| rebuild.contains(&member.address))
            || wants(|defaults| defaults.rebuild_if_cached),
        keep_build_dir: wants(|defaults| defaults.keep_build_dir),
    })
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
            Payload::Flash(job) => Some(job.profile_id.clone()),
            Payload::Builder(_) => None,
        },
        cache_hit: false,
        artifacts: Vec::new(),
        log_path: None,
        kept_build_dir: None,
        flash: None,
        error: None,
        reason: None,
        duration_ms: 0,
    };
    match outcome {
        StepOutcome::Succeeded(Done::Build(done)) => {
            summary.cache_hit = done.cache_hit;
            summary.artifacts = done.artifacts.clone();
            summary.log_path = done.log_path.clone();
            summary.kept_build_dir = done.kept_build_dir.clone();
        }
        StepOutcome::Succeeded(Done::Flash(record)) => summary.flash = Some((**record).clone()),
        StepOutcome::Failed(error) => {
            summary.log_path = error.log_path.clone();
            summary.kept_build_dir = steps::kept_dir_of(error);
            summary.error = Some(error.clone());
        }
        StepOutcome::Skipped { because } => summary.reason = Some(because.clone()),
        _ => {}
    }
    summary
}
