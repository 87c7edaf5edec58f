//! What each step does on a worker ([`run`]) and how its result is recorded on the
//! coordinator ([`record`]).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{BuildJob, Done, Payload, Shared};
use crate::build::{
    BuildManifest, BuildRequest, SandboxMode, prepare_slot, run_build, verify_slot,
};
use crate::error::{Error, ErrorCode, Result};
use crate::exec::{StepContext, StepOutcome, StepSpec};
use crate::state::{
    ArtifactRecord, ArtifactRef, BuildRecord, BuildStatus, ProfilePointer, unix_now,
};

/// A build step's result.
#[derive(Debug, Clone)]
pub struct BuildDone {
    pub key: String,
    pub profile_id: String,
    pub inputs: crate::key::BuildInputs,
    pub cache_hit: bool,
    pub artifacts: Vec<ArtifactRef>,
    pub log_path: Option<PathBuf>,
    pub manifest_path: Option<PathBuf>,
    pub started_at: i64,
    pub finished_at: i64,
}

/// The fleet repository's commit, for provenance (none outside git).
pub(crate) fn fleet_commit(root: &Path) -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs one step on a worker thread. Reads the store, never writes it.
pub(crate) fn run(
    shared: &Shared,
    spec: &StepSpec<Payload>,
    context: &StepContext,
) -> Result<Done> {
    match &spec.payload {
        Payload::Builder(triple) => {
            let previous = shared.store.read()?.builder(triple)?;
            let record = crate::imagebuilder::cache::fetch_pinned(
                shared.settings,
                shared.pinned(triple),
                triple,
                previous.as_ref(),
                &mut |progress| {
                    let fraction = progress
                        .total
                        .map(|total| progress.downloaded as f64 / total.max(1) as f64);
                    context.progress(
                        &format!("{:.1} MB", progress.downloaded as f64 / 1e6),
                        fraction,
                    );
                },
            )?;
            Ok(Done::Builder(Box::new(record)))
        }
        Payload::Build(job) => build(shared, job, context).map(|done| Done::Build(Box::new(done))),
        Payload::Forget { .. } => Ok(Done::Forgot),
    }
}

/// Records one finished step (coordinator thread only): one transaction per step.
pub(crate) fn record(
    shared: &Shared,
    spec: &StepSpec<Payload>,
    outcome: &StepOutcome<Done>,
) -> Result<()> {
    match (outcome, &spec.payload) {
        (StepOutcome::Succeeded(Done::Builder(record)), _) => {
            let mut writer = shared.store.write()?;
            writer.put_builder(record)?;
            writer.commit()
        }
        (StepOutcome::Succeeded(Done::Build(done)), _) => record_build(shared, done),
        (StepOutcome::Succeeded(Done::Forgot), Payload::Forget { profile_id }) => {
            let mut writer = shared.store.write()?;
            writer.remove_profile_pointer(&shared.fleet.name, profile_id)?;
            writer.commit()
        }
        (StepOutcome::Failed(error), Payload::Build(job))
            if error.code != ErrorCode::Interrupted =>
        {
            record_failed_build(shared, job, error)
        }
        // Cancelled and skipped steps, failed fetches: nothing is a fact worth keeping.
        _ => Ok(()),
    }
}

fn record_build(shared: &Shared, done: &BuildDone) -> Result<()> {
    let mut writer = shared.store.write()?;
    if !done.cache_hit {
        writer.put_build(&BuildRecord {
            key: done.key.clone(),
            profile_id: done.profile_id.clone(),
            fleet: Some(shared.fleet.name.clone()),
            inputs: done.inputs.clone(),
            status: BuildStatus::Succeeded,
            started_at: done.started_at,
            finished_at: done.finished_at,
            log_path: done.log_path.clone(),
            manifest_path: done.manifest_path.clone(),
            artifacts: done.artifacts.clone(),
            error: None,
        })?;
        for artifact in &done.artifacts {
            writer.put_artifact(&ArtifactRecord {
                sha256: artifact.sha256.clone(),
                name: artifact.name.clone(),
                kind: artifact.kind.clone(),
                filesystem: artifact.filesystem.clone(),
                size: artifact.size,
                builds: vec![done.key.clone()],
            })?;
        }
    }
    writer.set_profile_pointer(
        &shared.fleet.name,
        &done.profile_id,
        &ProfilePointer {
            build_key: done.key.clone(),
            applied_at: unix_now(),
        },
    )?;
    writer.commit()
}

/// A failed build is kept for `builds list`, but never over a successful record of the same
/// key, and never as something to reuse.
fn record_failed_build(shared: &Shared, job: &BuildJob, error: &Error) -> Result<()> {
    let mut writer = shared.store.write()?;
    if writer
        .build(&job.key)?
        .is_some_and(|record| record.status == BuildStatus::Succeeded)
    {
        return Ok(());
    }
    let now = unix_now();
    writer.put_build(&BuildRecord {
        key: job.key.clone(),
        profile_id: job.profile_id.clone(),
        fleet: Some(shared.fleet.name.clone()),
        inputs: job.inputs.clone(),
        status: BuildStatus::Failed,
        started_at: now,
        finished_at: now,
        log_path: error.log_path.clone(),
        manifest_path: None,
        artifacts: Vec::new(),
        error: Some(error.message.clone()),
    })?;
    writer.commit()
}

/// A recorded successful build of this key whose artifacts are all in the CAS.
fn cached_build(shared: &Shared, job: &BuildJob) -> Result<Option<BuildRecord>> {
    if shared.force {
        return Ok(None);
    }
    let record = shared.store.read()?.build(&job.key)?;
    Ok(record.filter(|record| {
        record.status == BuildStatus::Succeeded
            && record
                .artifacts
                .iter()
                .all(|artifact| shared.cas.contains(&artifact.sha256))
    }))
}

fn build(shared: &Shared, job: &BuildJob, context: &StepContext) -> Result<BuildDone> {
    let loaded = shared.fleet.profile(&job.profile_id).ok_or_else(|| {
        Error::new(
            ErrorCode::StalePlan,
            format!("profile `{}` is no longer in the fleet", job.profile_id),
        )
    })?;
    if let Some(record) = cached_build(shared, job)? {
        context.progress("cache hit", Some(1.0));
        copy_to_bin_dir(shared, loaded, &record.artifacts)?;
        return Ok(BuildDone {
            key: job.key.clone(),
            profile_id: job.profile_id.clone(),
            inputs: job.inputs.clone(),
            cache_hit: true,
            artifacts: record.artifacts,
            log_path: record.log_path,
            manifest_path: record.manifest_path,
            started_at: record.started_at,
            finished_at: record.finished_at,
        });
    }
    let started_at = unix_now();
    let triple = loaded.profile.triple();
    let pristine =
        crate::imagebuilder::cache::ready_path(shared.store, shared.pinned(&triple), &triple)?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Precondition,
                    format!("Image Builder {triple} is not in the cache"),
                )
                .with_help(format!("run `imagegen builders ensure {triple}`"))
            })?;
    let work = &shared.settings.tmp_dir.value;
    crate::fsutil::ensure_private_dir(work)?;
    context.progress("package files", None);
    let lock_entry = shared.lock.and_then(|lock| lock.get(&triple));
    let feeds = crate::feeds::prepare::for_build(shared.settings, lock_entry, &job.inputs)?;
    let slot = context.slot();
    let stage_dir = fresh_dir(&work.join("stage").join(format!("slot-{slot}")))?;
    let mut scratch = Scratch(vec![stage_dir.clone()]);
    context.progress("staging overlay", None);
    let digest = crate::overlay::stage(
        &crate::plan::overlay_input(shared.fleet, loaded),
        &stage_dir,
    )?;
    if digest.tree_hash != job.inputs.overlay.tree_hash {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "the overlay files of `{}` changed since the plan",
                job.profile_id
            ),
        )
        .with_help("run `imagegen plan` again"));
    }
    context.progress("preparing worker slot", None);
    let slot_dir = work.join("slots").join(format!("slot-{slot}"));
    prepare_slot(&pristine, &slot_dir)?;
    let output_dir = fresh_dir(&work.join("out").join(format!("slot-{slot}")))?;
    scratch.0.push(output_dir.clone());
    let logs = shared.settings.artifacts_dir.value.join("logs");
    std::fs::create_dir_all(&logs).map_err(|error| Error::io("creating", &logs, error))?;
    let log_path = logs.join(format!("{}-{}.log", job.key, started_at));
    let provenance = json!({
        "profile_id": job.profile_id,
        "device_id": job.device_id,
        "build_key": job.key,
        "fleet": shared.fleet.name,
        "fleet_commit": shared.fleet_commit,
        "imagegen_version": env!("CARGO_PKG_VERSION"),
    });
    context.progress("make image", None);
    let output = run_build(&BuildRequest {
        inputs: &job.inputs,
        build_key: &job.key,
        slot_dir: &slot_dir,
        files_dir: Some(&stage_dir),
        provenance: job.inputs.options.provenance.then_some(&provenance),
        output_dir: &output_dir,
        log_path: &log_path,
        timeout: std::time::Duration::from_secs(shared.settings.build_timeout.value),
        cancel: context.cancel_flag(),
        sandbox: sandbox_mode(shared)?,
        feeds: feeds.as_ref(),
    })?;
    verify_slot(&slot_dir)?;
    context.progress("storing artifacts", None);
    let mut artifacts = Vec::with_capacity(output.artifacts.len());
    for artifact in &output.artifacts {
        let (sha256, size) = shared.cas.put_file(&artifact.path)?;
        artifacts.push(ArtifactRef {
            sha256,
            name: artifact.name.clone(),
            kind: artifact.kind.clone(),
            filesystem: artifact.filesystem.clone(),
            size,
        });
    }
    let manifest = BuildManifest::new(&job.profile_id, &job.key, &job.inputs, &output);
    let manifest_path = shared
        .settings
        .artifacts_dir
        .value
        .join("manifests")
        .join(format!("{}.json", job.key));
    if let Some(parent) = manifest_path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| Error::io("creating", parent, error))?;
    }
    manifest.write_to(&manifest_path)?;
    copy_to_bin_dir(shared, loaded, &artifacts)?;
    drop(scratch);
    Ok(BuildDone {
        key: job.key.clone(),
        profile_id: job.profile_id.clone(),
        inputs: job.inputs.clone(),
        cache_hit: false,
        artifacts,
        log_path: Some(log_path),
        manifest_path: Some(manifest_path),
        started_at,
        finished_at: unix_now(),
    })
}

fn sandbox_mode(shared: &Shared) -> Result<SandboxMode> {
    SandboxMode::parse(&shared.settings.sandbox.value)
}

/// A profile's `bin_dir` (relative to the fleet root) gets a copy of its artifacts, from the
/// CAS, each file written atomically.
fn copy_to_bin_dir(
    shared: &Shared,
    loaded: &crate::manifest::LoadedProfile,
    artifacts: &[ArtifactRef],
) -> Result<()> {
    let Some(bin_dir) = &loaded.profile.bin_dir else {
        return Ok(());
    };
    let target = crate::plan::resolve_bin_dir(shared.fleet, shared.settings, bin_dir)
        .map_err(|why| crate::plan::bin_dir_error(&loaded.profile.profile_id, why))?;
    crate::build::copy_stored(&shared.cas, artifacts, &target)?;
    Ok(())
}

/// An empty directory at `path` (whatever a previous, interrupted run left there is removed).
/// A build's staged overlay and output directory, removed however the step ends: the overlay
/// may hold setuid files and secrets that must not outlive the build.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn fresh_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|error| Error::io("removing", path, error))?;
    }
    std::fs::create_dir_all(path).map_err(|error| Error::io("creating", path, error))?;
    Ok(path.to_path_buf())
}
