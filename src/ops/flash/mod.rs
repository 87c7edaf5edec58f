//! Flashing as operations: write a local image file or a stored artifact to a whole disk
//! through the flash engine ([`crate::flash::flash`]), recording every attempt in the state
//! store; list those records; list the disks. Design: `docs/flash.md` ("Records").
//!
//! An attempt is recorded `in_progress` after the checks and the confirmation, before the
//! first byte is written, and rewritten with how it ended. The state store stays locked for
//! the whole flash, so a reader that sees `in_progress` sees a flash whose process died.
//! Confirmation stays with the frontend: without `force`, the observer's
//! [`FlashObserver::confirm`] decides (the CLI asks on its terminal).

mod artifact;
mod events;
mod list;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Workspace;
use crate::cas::Cas;
use crate::error::{Error, Result};
use crate::flash::{
    self, DeviceCandidate, FlashLedger, FlashObserver, FlashOptions, FlashReport, Host, Recorder,
    VerifyMode,
};
use crate::state::{FlashRecord, Store};

pub use crate::flash::FlashSource;

pub use artifact::ArtifactSpec;
pub use events::FlashEvents;
pub use list::{FlashEntry, FlashFilter, FlashListing, flash_list};

/// How to flash, whatever the image.
#[derive(Debug, Clone)]
pub struct FlashRequest {
    /// The whole disk: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link.
    pub device: PathBuf,
    /// Check everything and describe the write; write and record nothing.
    pub dry_run: bool,
    /// Write without asking. Without it the observer's `confirm` decides; an observer that
    /// cannot ask must refuse (`flash_not_confirmed`).
    pub force: bool,
    /// Zero both ends of the disk before writing.
    pub wipe: bool,
    pub verify: VerifyMode,
    /// Set to stop between blocks (Ctrl-C, a client's cancellation).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl FlashRequest {
    /// A real, confirmed, fully verified flash of `device` without wipe.
    pub fn new(device: impl Into<PathBuf>) -> FlashRequest {
        FlashRequest {
            device: device.into(),
            dry_run: false,
            force: false,
            wipe: false,
            verify: VerifyMode::Full,
            cancel: None,
        }
    }
}

/// What a flash (or a dry run) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashOutcome {
    pub source: FlashSource,
    /// What identifies the device in the records (`docs/flash.md`, "Which device").
    pub device_key: String,
    /// The fleet device whose `flash.path` is this disk, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_device: Option<String>,
    pub report: FlashReport,
    /// The attempt as recorded; absent for a dry run, which records nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<FlashRecord>,
}

impl FlashOutcome {
    /// The last line of `flash … --json` (and of an HTTP flash job's events):
    /// `{"event": "summary", "source": …, "report": …, "record": …}`.
    pub fn summary_event(&self) -> serde_json::Value {
        let mut line = serde_json::json!({ "event": "summary" });
        if let (Some(line), Ok(serde_json::Value::Object(fields))) =
            (line.as_object_mut(), serde_json::to_value(self))
        {
            line.extend(fields);
        }
        line
    }
}

/// Flashes a local image file (raw, `.gz`, `.xz`, `.zst`) and records the attempt.
pub fn flash_image(
    workspace: &Workspace,
    image: &Path,
    request: &FlashRequest,
    observer: &mut dyn FlashObserver,
) -> Result<FlashOutcome> {
    // A dry run records nothing, so it needs no state (nor its lock).
    let store = match request.dry_run {
        true => None,
        false => Some(workspace.store("imagegen flash")?),
    };
    // The engine's checks of the file first, for their messages; then its identity.
    flash::inspect_image(image)?;
    let path =
        std::fs::canonicalize(image).map_err(|error| Error::io("resolving", image, error))?;
    let (sha256, size) = crate::cas::sha256_file(&path)?;
    let source = FlashSource {
        path,
        sha256,
        size,
        artifact: None,
    };
    let target = Target::real();
    run(
        workspace,
        store.as_ref(),
        source,
        request,
        &target,
        observer,
    )
}

/// Flashes a stored artifact, named by a sha256 prefix (at least 6 hex digits) or as
/// `PROFILE:KIND` (the profile's current build, e.g. `lab.rpi4.sd:factory`), and records the
/// attempt. The blob is re-hashed first: a damaged artifact is never written.
pub fn flash_artifact(
    workspace: &Workspace,
    artifact: &str,
    request: &FlashRequest,
    observer: &mut dyn FlashObserver,
) -> Result<FlashOutcome> {
    let spec: ArtifactSpec = artifact.parse()?;
    let store = workspace.store("imagegen flash")?;
    let cas = Cas::open(&workspace.settings.artifacts_dir.value)?;
    let source = artifact::resolve(workspace, &store, &cas, &spec)?;
    let store = (!request.dry_run).then_some(store);
    let target = Target::real();
    run(
        workspace,
        store.as_ref(),
        source,
        request,
        &target,
        observer,
    )
}

/// Every disk with a medium and the refusal a flash would meet (`imagegen devices`).
pub fn devices() -> Vec<DeviceCandidate> {
    flash::list_devices(&Host::real())
}

/// Where the engine looks: the real system, or (unit tests) regular files as targets.
pub(crate) struct Target {
    host: Host,
    allow_regular_file: bool,
}

impl Target {
    fn real() -> Target {
        Target {
            host: Host::real(),
            allow_regular_file: false,
        }
    }
}

/// The flash itself: engine, recorder and outcome. `store` is `None` for a dry run.
pub(crate) fn run(
    workspace: &Workspace,
    store: Option<&Store>,
    source: FlashSource,
    request: &FlashRequest,
    target: &Target,
    observer: &mut dyn FlashObserver,
) -> Result<FlashOutcome> {
    let options = FlashOptions {
        image: source.path.clone(),
        device: request.device.clone(),
        dry_run: request.dry_run,
        wipe: request.wipe,
        verify: request.verify,
        allow_regular_file: target.allow_regular_file,
        cancel: request.cancel.clone(),
    };
    let fleet_devices = flash::fleet_devices(workspace.fleet.as_ref());
    let Some(store) = store else {
        let report = flash::flash(&target.host, &options, &mut Unconfirmed)?;
        let (device_key, fleet_device) = flash::device_key(&report.plan.device, &fleet_devices);
        return Ok(FlashOutcome {
            source,
            device_key,
            fleet_device: fleet_device.map(|device| device.id),
            report,
            record: None,
        });
    };
    let mut ledger = StoreLedger(store);
    let mut recorder = Recorder::new(
        &mut ledger,
        observer,
        request.force,
        request.verify,
        &source,
        fleet_devices,
    );
    let result = flash::flash(&target.host, &options, &mut recorder);
    let (report, record) = recorder.finish(result)?;
    Ok(FlashOutcome {
        source,
        device_key: record.device_key.clone(),
        fleet_device: record.device_id.clone(),
        report,
        record: Some(record),
    })
}

/// A flash's records, each in a transaction of its own on the store this operation holds.
struct StoreLedger<'a>(&'a Store);

impl FlashLedger for StoreLedger<'_> {
    fn start(&mut self, record: FlashRecord) -> Result<FlashRecord> {
        let mut writer = self.0.write()?;
        let record = writer.start_flash(&record)?;
        writer.commit()?;
        Ok(record)
    }

    fn end(&mut self, record: &FlashRecord) -> Result<()> {
        let mut writer = self.0.write()?;
        writer.end_flash(record)?;
        writer.commit()
    }
}

/// The observer of a dry run, which never reaches the confirmation.
struct Unconfirmed;

impl FlashObserver for Unconfirmed {
    fn confirm(&mut self, _plan: &flash::FlashPlan) -> Result<()> {
        Err(Error::internal("a dry run asked for a confirmation"))
    }
}

#[cfg(test)]
mod tests;
