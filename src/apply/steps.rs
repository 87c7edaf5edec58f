//! What each step does on a worker ([`run`]) and how its result is recorded on the
//! coordinator ([`record`]).

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{BuildJob, Done, Payload, Shared};
use crate::build::{
    BuildManifest, BuildRequest, SandboxMode, prepare_slot, run_build, verify_slot,
};
use crate::error::{Error, ErrorCode, Result};
use crate::exec::{StepContext, StepOutcome, StepSpec};
use crate::key::BuildKey;
use crate::state::{
    ArtifactRecord, ArtifactRef, BuildRecord, BuildStatus, ProfilePointer, unix_now,
};

/// The key in a failed build's error details that names its kept build tree.
const KEPT_DETAIL: &str = "kept_build_dir";

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
    pub kept_build_dir: Option<PathBuf>,
    pub started_at: i64,
    pub finished_at: i64,
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
        Payload::Flash(job) => super::flash::run(shared, job, context),
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
            if error.code != ErrorCode::Interrupted && job.reuse_of.is_none() =>
        {
            record_failed_build(shared, job, error)
        }
        // Flash steps recorded their attempts through checkpoints already. Cancelled and
        // skipped steps, failed fetches: nothing is a fact worth keeping.
        _ => Ok(()),
    }
}

/// A build (made now or reused) becomes the profile's current build, and the record notes
/// that the profile applied it. A fresh build of a key that was recorded before keeps the
/// list of who applied the old one: they point at the same key.
fn record_build(shared: &Shared, done: &BuildDone) -> Result<()> {
    let mut writer = shared.store.write()?;
    let fleet = &shared.fleet.name;
    let now = unix_now();
    let previous = writer.build(&done.key)?;
    let mut record = match (done.cache_hit, previous) {
        (true, Some(record)) => record,
        (true, None) => {
            return Err(Error::internal(format!(
                "the reused build {} is no longer recorded",
                done.key
            )));
        }
        (false, previous) => {
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
            BuildRecord {
                key: done.key.clone(),
                profile_id: done.profile_id.clone(),
                fleet: Some(fleet.clone()),
                inputs: done.inputs.clone(),
                status: BuildStatus::Succeeded,
                started_at: done.started_at,
                finished_at: done.finished_at,
                log_path: done.log_path.clone(),
                manifest_path: done.manifest_path.clone(),
                artifacts: done.artifacts.clone(),
                error: None,
                applied_by: previous
                    .filter(|old| old.status == BuildStatus::Succeeded)
                    .map(|old| old.applied_by)
                    .unwrap_or_default(),
                kept_build_dir: done.kept_build_dir.clone(),
            }
        }
    };
    record.note_applied(fleet, &done.profile_id, now);
    writer.put_build(&record)?;
    writer.set_profile_pointer(
        fleet,
        &done.profile_id,
        &ProfilePointer {
            build_key: done.key.clone(),
            applied_at: now,
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
        applied_by: Vec::new(),
        kept_build_dir: kept_dir_of(error),
    })?;
    writer.commit()
}

/// The build tree a failed build kept, as its error's details name it.
pub(crate) fn kept_dir_of(error: &Error) -> Option<PathBuf> {
    error
        .details
        .get(KEPT_DETAIL)
        .and_then(|value| value.as_str())
        .map(PathBuf::from)
}

/// A recorded successful build of `key` whose artifacts all re-hash to their names. A blob
/// that does not is removed (it can never be trusted again) and the build counts as missing,
/// so it is made again.
fn cached_build(shared: &Shared, key: &str) -> Result<Option<BuildRecord>> {
    let Some(record) = shared.store.read()?.build(key)? else {
        return Ok(None);
    };
    if record.status != BuildStatus::Succeeded {
        return Ok(None);
    }
    for artifact in &record.artifacts {
        if !shared.cas.contains(&artifact.sha256) {
            return Ok(None);
        }
        if !shared.cas.verify(&artifact.sha256)? {
            tracing::warn!(sha256 = %artifact.sha256, build = %key, "removing a corrupted artifact; the build is made again");
            shared.cas.remove(&artifact.sha256)?;
            return Ok(None);
        }
    }
    Ok(Some(record))
}

fn build(shared: &Shared, job: &BuildJob, context: &StepContext) -> Result<BuildDone> {
    let loaded = shared.fleet.profile(&job.profile_id).ok_or_else(|| {
        Error::new(
            ErrorCode::StalePlan,
            format!("profile `{}` is no longer in the fleet", job.profile_id),
        )
    })?;
    let reused = match &job.reuse_of {
        Some(primary) => Some(cached_build(shared, &job.key)?.ok_or_else(|| {
            Error::internal(format!(
                "`{}` has the same inputs as `{primary}`, but no intact build {} is recorded",
                job.profile_id, job.key
            ))
        })?),
        None if job.fresh => None,
        None => cached_build(shared, &job.key)?,
    };
    if let Some(record) = reused {
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
            kept_build_dir: record.kept_build_dir,
            started_at: record.started_at,
            finished_at: record.finished_at,
        });
    }
    make_image(shared, job, loaded, context)
}

/// The private directories of one build in its worker slot.
struct Workdirs {
    stage: PathBuf,
    slot: PathBuf,
    output: PathBuf,
    /// Local copies of the pinned feeds the build installs from (`None`: the Image
    /// Builder's own repository list).
    feeds: Option<crate::feeds::SlotFeeds>,
    /// Removes `stage` and `output` when the build step is done with them.
    _cleanup: Scratch,
}

/// Runs `make image` for a build that could not be reused.
fn make_image(
    shared: &Shared,
    job: &BuildJob,
    loaded: &crate::manifest::LoadedProfile,
    context: &StepContext,
) -> Result<BuildDone> {
    let started_at = unix_now();
    let dirs = prepare_workdirs(shared, job, loaded, context)?;
    let logs = shared.settings.artifacts_dir.value.join("logs");
    let log_path = new_log(&logs, &job.key, started_at)?;
    let provenance = job.inputs.provenance(&BuildKey(job.key.clone()));
    context.progress("make image", None);
    let built = run_build(&BuildRequest {
        inputs: &job.inputs,
        build_key: &job.key,
        slot_dir: &dirs.slot,
        files_dir: Some(&dirs.stage),
        provenance: job.inputs.options.provenance.then_some(&provenance),
        output_dir: &dirs.output,
        log_path: &log_path,
        timeout: std::time::Duration::from_secs(shared.settings.build_timeout.value),
        cancel: context.cancel_flag(),
        sandbox: sandbox_mode(shared)?,
        feeds: dirs.feeds.as_ref(),
    })
    .and_then(|output| verify_slot(&dirs.slot).map(|()| output));
    // The slot is this step's until it returns; the next build in it resets it, so the
    // tree is kept now, after a failure too (that is when it helps most).
    let kept = match (&built, job.keep_build_dir) {
        (Err(error), _) if error.code == ErrorCode::Interrupted => None,
        (_, true) => {
            context.progress("keeping the build tree", None);
            let root = shared.settings.tmp_dir.value.join("kept");
            match super::kept::keep_tree(&dirs.slot, &root, &job.key) {
                Ok(path) => Some(path),
                // A failed build's own error says more than failing to keep its tree.
                Err(error) if built.is_err() => {
                    tracing::warn!(error = %error.message, "could not keep the build tree");
                    None
                }
                Err(error) => return Err(error),
            }
        }
        (_, false) => None,
    };
    let output = built.map_err(|error| match &kept {
        Some(path) => with_kept_dir(error, path),
        None => error,
    })?;
    let artifacts = store_outputs(shared, job, loaded, &output, &dirs.output, context)?;
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
    drop(dirs);
    Ok(BuildDone {
        key: job.key.clone(),
        profile_id: job.profile_id.clone(),
        inputs: job.inputs.clone(),
        cache_hit: false,
        artifacts,
        log_path: Some(log_path),
        manifest_path: Some(manifest_path),
        kept_build_dir: kept,
        started_at,
        finished_at: unix_now(),
    })
}

/// Stages the overlay (checking it is still what the plan hashed), prepares the worker
/// slot from the pristine Image Builder and empties the output directory.
fn prepare_workdirs(
    shared: &Shared,
    job: &BuildJob,
    loaded: &crate::manifest::LoadedProfile,
    context: &StepContext,
) -> Result<Workdirs> {
    let triple = loaded.profile.triple();
    let pristine = crate::imagebuilder::cache::ready_path(
        shared.store,
        shared.pinned(&triple),
        &triple,
        shared.settings.verify_signatures.value,
    )?
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
    let stage = fresh_dir(&work.join("stage").join(format!("slot-{slot}")))?;
    // Removed however this build ends: staged overlay files (setuid bits included) and the
    // Image Builder's output never outlive the step.
    let mut cleanup = Scratch(vec![stage.clone()]);
    context.progress("staging overlay", None);
    let digest = crate::overlay::stage(&crate::plan::overlay_input(shared.fleet, loaded), &stage)?;
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
    let output = fresh_dir(&work.join("out").join(format!("slot-{slot}")))?;
    cleanup.0.push(output.clone());
    Ok(Workdirs {
        stage,
        slot: slot_dir,
        output,
        feeds,
        _cleanup: cleanup,
    })
}

/// Stores the build's outputs in the CAS, plus the release's initramfs image when the
/// inputs name one.
fn store_outputs(
    shared: &Shared,
    job: &BuildJob,
    loaded: &crate::manifest::LoadedProfile,
    output: &crate::build::BuildOutput,
    output_dir: &Path,
    context: &StepContext,
) -> Result<Vec<ArtifactRef>> {
    context.progress("storing artifacts", None);
    let mut artifacts = Vec::with_capacity(output.artifacts.len() + 1);
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
    if let Some(image) = &job.inputs.options.initramfs {
        context.progress("fetching the initramfs image", None);
        artifacts.push(super::initramfs::fetch(
            shared.settings,
            &shared.cas,
            &loaded.profile.triple(),
            image,
            output_dir,
        )?);
    }
    Ok(artifacts)
}

/// A failed build's error, also naming the build tree kept for it.
fn with_kept_dir(error: Error, kept: &Path) -> Error {
    let mut details = match error.details.clone() {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("details".to_string(), other)]),
    };
    details.insert(KEPT_DETAIL.to_string(), json!(kept.display().to_string()));
    let help = match &error.help {
        Some(help) => format!("{help}; the build tree is kept in `{}`", kept.display()),
        None => format!("the build tree is kept in `{}`", kept.display()),
    };
    error
        .with_details(serde_json::Value::Object(details))
        .with_help(help)
}

/// A log file of its own for one build attempt, created here so that no two attempts (two
/// runs in the same second, a retry) ever write to one file.
fn new_log(logs: &Path, key: &str, started_at: i64) -> Result<PathBuf> {
    std::fs::create_dir_all(logs).map_err(|error| Error::io("creating", logs, error))?;
    for attempt in 1..=1000 {
        let path = logs.join(format!("{key}-{started_at}-{attempt}.log"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok(path),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(Error::io("creating", &path, error)),
        }
    }
    Err(Error::internal(format!(
        "1000 build logs of {key} started at {started_at} already exist in `{}`",
        logs.display()
    )))
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
