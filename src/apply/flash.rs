//! A fleet flash step: writes a device's image (the artifact its profile's current build has
//! of the device's `flash.image` kind, chosen like `flash write PROFILE:KIND`) to its
//! `flash.path`, through the same engine, checks and records as `imagegen flash write`.
//!
//! The step runs in `Pool::Flash(device)` (one writer per device). The run's flash
//! permission is the user's consent (the CLI asks first on a terminal), so the engine's
//! confirmation is not asked again. The records are written by the executor's coordinator
//! through checkpoints: `in_progress` after the checks and before the first byte, then how
//! the flash ended — so a step killed mid-write leaves `in_progress`, and the next plan
//! wants the device flashed again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Done, Shared};
use crate::error::{Error, ErrorCode, Result};
use crate::exec::StepContext;
use crate::flash::{
    self, FlashLedger, FlashObserver, FlashOptions, FlashPhase, FlashPlan, FlashProgress,
    FlashSource, Host, Recorder, VerifyMode, format_size,
};
use crate::manifest::Fleet;
use crate::plan::{Action, choose_image};
use crate::state::{FlashRecord, FlashedArtifact, fleet_device_key};

/// `verify = "prefix"` in a device's `flash` entry reads back this much.
pub(crate) const FLEET_PREFIX_BYTES: u64 = 64 * 1024 * 1024;

/// Progress events of a flash step are sent at most this often (and at each phase change).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What a flash step writes where.
#[derive(Debug, Clone)]
pub(crate) struct FlashJob {
    pub device_id: String,
    pub profile_id: String,
    /// The device's `flash.path`, as the manifest gives it.
    pub path: PathBuf,
    /// The image kind (`factory`, `sdcard`, ...).
    pub image: String,
    /// The profile's `policies.filesystem`, choosing among several images of one kind.
    pub filesystem: Option<String>,
    pub verify: crate::manifest::VerifyMode,
    pub wipe: bool,
    /// The artifact the plan chose, when its build was already applied.
    pub planned: Option<String>,
}

/// What a flash step asks the coordinator to record.
pub(crate) enum FlashCheckpoint {
    Started(FlashRecord),
    Ended(FlashRecord),
}

/// The job of a plan's flash action, from the fleet's device entry.
pub(crate) fn flash_job(action: &Action, fleet: &Fleet) -> Result<FlashJob> {
    let device_id = action.device_id.clone().unwrap_or_default();
    let device = fleet.devices.iter().find(|device| device.id == device_id);
    let Some((device, target)) = device.and_then(|device| Some((device, device.flash.as_ref()?)))
    else {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!("device `{device_id}` has no `flash` entry in the fleet any more"),
        )
        .with_help("run `imagegen plan` again"));
    };
    let filesystem = fleet
        .profile(&device.profile)
        .and_then(|loaded| loaded.profile.policies.filesystem)
        .map(|filesystem| filesystem.as_str().to_string());
    Ok(FlashJob {
        device_id,
        profile_id: device.profile.clone(),
        path: target.path.clone(),
        image: target.image.clone(),
        filesystem,
        verify: target.verify,
        wipe: target.wipe,
        planned: action.key.clone(),
    })
}

/// The pool key of a device: its node when the path resolves (two paths to one disk share a
/// writer), else the path as given.
pub(crate) fn pool_device(job: &FlashJob) -> String {
    std::fs::canonicalize(&job.path)
        .unwrap_or_else(|_| job.path.clone())
        .display()
        .to_string()
}

/// Runs one flash step on its worker.
pub(crate) fn run(shared: &Shared, job: &FlashJob, context: &StepContext) -> Result<Done> {
    if std::fs::metadata(&job.path).is_err() {
        return Err(Error::new(
            ErrorCode::DeviceNotFound,
            format!(
                "`{}` (fleet device `{}`) does not exist",
                job.path.display(),
                job.device_id
            ),
        )
        .with_help(
            "insert the card (or reader); `imagegen devices` lists the disks this machine sees",
        ));
    }
    context.progress("checking the image", None);
    let source = source(shared, job)?;
    let verify = verify_mode(shared, job)?;
    let options = FlashOptions {
        image: source.path.clone(),
        device: job.path.clone(),
        dry_run: false,
        wipe: job.wipe,
        verify,
        allow_regular_file: false,
        cancel: Some(Arc::clone(context.cancel_flag())),
    };
    let mut ledger = CoordinatorLedger(context);
    let mut observer = StepObserver {
        context,
        last_phase: None,
        last_sent: None,
    };
    let fleet_devices = flash::fleet_devices(Some(shared.fleet));
    let mut recorder = Recorder::new(
        &mut ledger,
        &mut observer,
        true,
        verify,
        &source,
        fleet_devices,
    );
    let result = flash::flash(&Host::real(), &options, &mut recorder);
    let (_, record) = recorder.finish(result)?;
    Ok(Done::Flash(Box::new(record)))
}

/// The artifact to write: the one the profile's current build has of the device's kind.
fn source(shared: &Shared, job: &FlashJob) -> Result<FlashSource> {
    let reader = shared.store.read()?;
    let build = match reader.profile_pointer(&shared.fleet.name, &job.profile_id)? {
        Some(pointer) => reader.build(&pointer.build_key)?,
        None => None,
    };
    let Some(build) = build else {
        return Err(Error::new(
            ErrorCode::BuildNotFound,
            format!("profile `{}` has no applied build", job.profile_id),
        )
        .with_help("run `imagegen apply` without `--target flash.…` to build it first"));
    };
    let chosen = choose_image(&build.artifacts, &job.image, job.filesystem.as_deref())?;
    if let Some(planned) = job.planned.as_ref().filter(|sha| **sha != chosen.sha256) {
        return Err(Error::new(
            ErrorCode::StalePlan,
            format!(
                "the plan wanted {} on `{}`, but profile `{}` now has {}",
                short(planned),
                job.device_id,
                job.profile_id,
                short(&chosen.sha256)
            ),
        )
        .with_help("run `imagegen plan` again"));
    }
    let artifact = FlashedArtifact {
        sha256: chosen.sha256.clone(),
        name: chosen.name.clone(),
        kind: chosen.kind.clone(),
        build_key: Some(build.key.clone()),
        profile_id: Some(job.profile_id.clone()),
    };
    FlashSource::stored(&shared.cas, artifact)
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// The device's `verify`, except that a suspect device is always read back in full: only a
/// fully verified flash clears the suspicion (`docs/flash.md`).
fn verify_mode(shared: &Shared, job: &FlashJob) -> Result<VerifyMode> {
    let key = fleet_device_key(&shared.fleet.name, &job.device_id);
    let suspect = shared
        .store
        .read()?
        .device(&key)?
        .is_some_and(|device| device.suspect_since.is_some());
    Ok(match (job.verify, suspect) {
        (_, true) | (crate::manifest::VerifyMode::Full, _) => VerifyMode::Full,
        (crate::manifest::VerifyMode::Prefix, false) => VerifyMode::Prefix(FLEET_PREFIX_BYTES),
        (crate::manifest::VerifyMode::None, false) => VerifyMode::None,
    })
}

/// The records go to the coordinator, the run's only writer, and the step waits until they
/// are committed.
struct CoordinatorLedger<'a>(&'a StepContext);

impl FlashLedger for CoordinatorLedger<'_> {
    fn start(&mut self, record: FlashRecord) -> Result<FlashRecord> {
        self.0.checkpoint(FlashCheckpoint::Started(record))
    }

    fn end(&mut self, record: &FlashRecord) -> Result<()> {
        self.0.checkpoint(FlashCheckpoint::Ended(record.clone()))
    }
}

/// The engine's progress as step progress events (bytes, rate, fraction).
struct StepObserver<'a> {
    context: &'a StepContext,
    last_phase: Option<FlashPhase>,
    last_sent: Option<Instant>,
}

impl FlashObserver for StepObserver<'_> {
    /// Never asked: the run's flash permission is the consent (the step writes with `force`).
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        Err(Error::internal(format!(
            "a fleet flash of `{}` asked for a confirmation",
            plan.device.node.display()
        )))
    }

    fn progress(&mut self, progress: &FlashProgress) {
        let phase_changed = self.last_phase != Some(progress.phase);
        let due = self
            .last_sent
            .is_none_or(|last| last.elapsed() >= PROGRESS_INTERVAL);
        if !(phase_changed || due) {
            return;
        }
        self.last_phase = Some(progress.phase);
        self.last_sent = Some(Instant::now());
        let mut message = format!(
            "{} {}",
            progress.phase.as_str(),
            format_size(progress.bytes)
        );
        if let Some(total) = progress.total {
            message.push_str(&format!(" of {}", format_size(total)));
        }
        if progress.bytes_per_second > 0.0 {
            message.push_str(&format!(
                ", {}/s",
                format_size(progress.bytes_per_second as u64)
            ));
        }
        self.context
            .transfer(&message, progress.fraction, progress.transfer());
    }
}

/// Records what a flash step asked for (coordinator thread only): one transaction each.
pub(crate) fn record_checkpoint(
    shared: &Shared,
    checkpoint: FlashCheckpoint,
) -> Result<crate::exec::CheckpointValue> {
    let mut writer = shared.store.write()?;
    match checkpoint {
        FlashCheckpoint::Started(record) => {
            let record = writer.start_flash(&record)?;
            writer.commit()?;
            Ok(Box::new(record))
        }
        FlashCheckpoint::Ended(record) => {
            writer.end_flash(&record)?;
            writer.commit()?;
            Ok(Box::new(()))
        }
    }
}
