//! The records of one flash attempt: which device it is, the `in_progress` record made
//! after the checks and the confirmation and before the first byte, and the record of how it
//! ended. The [`Recorder`] sits between the engine and the frontend's observer and hands the
//! records to a [`FlashLedger`], which makes them durable: the flash operations write them
//! to the state store in a transaction of their own, `apply` has the executor's coordinator
//! write them. The engine itself never touches the store, and neither does this module.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    DeviceInfo, FlashObserver, FlashPhase, FlashPlan, FlashProgress, FlashReport, VerifyMode,
};
use crate::cas::Cas;
use crate::error::{Error, ErrorCode, Result};
use crate::manifest::Fleet;
use crate::state::{
    DeviceIdentity, FlashRecord, FlashStatus, FlashedArtifact, RecordedError, VerifyResult,
    disk_device_key, fleet_device_key, unix_now,
};

/// The file a flash reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashSource {
    /// The artifact's blob in the store, or the image file given.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// SHA-256 of the file (compressed, when it is), taken before writing.
    pub sha256: String,
    /// Bytes of the file.
    pub size: u64,
    /// Set when the image is a stored artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<FlashedArtifact>,
}

impl FlashSource {
    /// A stored artifact's blob, re-hashed first: a missing blob is `artifact_not_found`, a
    /// damaged one (its bytes no longer hash to its name) is never written to a device.
    pub fn stored(cas: &Cas, artifact: FlashedArtifact) -> Result<FlashSource> {
        let short = artifact.sha256.get(..12).unwrap_or(&artifact.sha256);
        let path = cas.blob_path(&artifact.sha256);
        if !cas.contains(&artifact.sha256) {
            return Err(Error::new(
                ErrorCode::ArtifactNotFound,
                format!(
                    "artifact `{}` ({short}) is missing from the store",
                    artifact.name
                ),
            )
            .with_help("run `imagegen artifacts verify`, then `imagegen apply` to rebuild it"));
        }
        let (sha256, size) = crate::cas::sha256_file(&path)?;
        if sha256 != artifact.sha256 {
            return Err(Error::new(
                ErrorCode::InternalError,
                format!(
                    "stored artifact `{}` is damaged: its bytes no longer hash to {short}",
                    artifact.name
                ),
            )
            .with_help("run `imagegen artifacts verify`, then `imagegen apply` to rebuild it"));
        }
        Ok(FlashSource {
            path,
            sha256,
            size,
            artifact: Some(artifact),
        })
    }
}

/// Makes a flash's records durable. Both calls must have committed when they return: the
/// engine writes the first byte only after [`FlashLedger::start`] returned.
pub trait FlashLedger {
    /// Stores the attempt about to write (assigning its id) and returns it as stored.
    fn start(&mut self, record: FlashRecord) -> Result<FlashRecord>;
    /// Stores how the attempt ended.
    fn end(&mut self, record: &FlashRecord) -> Result<()>;
}

/// A fleet device with a `flash.path` that exists on this machine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FleetDevice {
    pub fleet: String,
    pub id: String,
    /// Its `flash.path`, resolved (`/dev/disk/by-id/...` → `/dev/sdb`).
    pub node: PathBuf,
}

/// The fleet's devices whose `flash.path` resolves here (none without a fleet). A path that
/// does not exist names a card that is not inserted: no disk here is that device.
pub(crate) fn fleet_devices(fleet: Option<&Fleet>) -> Vec<FleetDevice> {
    let Some(fleet) = fleet else {
        return Vec::new();
    };
    fleet
        .devices
        .iter()
        .filter_map(|device| {
            let target = device.flash.as_ref()?;
            let node = std::fs::canonicalize(&target.path).ok()?;
            Some(FleetDevice {
                fleet: fleet.name.clone(),
                id: device.id.clone(),
                node,
            })
        })
        .collect()
}

/// The device key of a disk (`docs/flash.md`, "Which device"), and the fleet device it is
/// when a fleet device's `flash.path` resolves to it (the first by manifest order).
pub(crate) fn device_key(
    info: &DeviceInfo,
    fleet_devices: &[FleetDevice],
) -> (String, Option<FleetDevice>) {
    match fleet_devices.iter().find(|device| device.node == info.node) {
        Some(device) => (
            fleet_device_key(&device.fleet, &device.id),
            Some(device.clone()),
        ),
        None => (
            disk_device_key(
                &identity(info),
                info.by_id.first().map(PathBuf::as_path),
                info.backing_file.as_deref(),
                &info.node,
            ),
            None,
        ),
    }
}

fn identity(info: &DeviceInfo) -> DeviceIdentity {
    DeviceIdentity {
        model: info.model.clone(),
        serial: info.serial.clone(),
        size: info.size,
        transport: info.transport.clone(),
    }
}

/// The attempt as recorded before its first byte is written (its id is assigned when it
/// is stored).
pub(crate) fn started_record(
    plan: &FlashPlan,
    source: &FlashSource,
    fleet_devices: &[FleetDevice],
    now: i64,
) -> FlashRecord {
    let (device_key, fleet_device) = device_key(&plan.device, fleet_devices);
    FlashRecord {
        id: 0,
        device_key,
        fleet: fleet_device.as_ref().map(|device| device.fleet.clone()),
        device_id: fleet_device.map(|device| device.id),
        device_path: plan.device_path.clone(),
        device_node: plan.device.node.clone(),
        identity: identity(&plan.device),
        image_path: source.path.clone(),
        image_sha256: source.sha256.clone(),
        image_format: plan.image.format.as_str().to_string(),
        artifact: source.artifact.clone(),
        image_bytes: plan.write_bytes,
        bytes_written: 0,
        wipe: plan.wipe,
        verify_mode: plan.verify.to_string(),
        verification: None,
        started_at: now,
        finished_at: None,
        status: FlashStatus::InProgress,
        error: None,
    }
}

/// The attempt after the engine returned. `bytes_seen` is how far the write got by the
/// progress reports (the engine's error does not say).
pub(crate) fn ended_record(
    started: FlashRecord,
    result: &Result<FlashReport>,
    verify: VerifyMode,
    bytes_seen: u64,
    now: i64,
) -> FlashRecord {
    let mut record = FlashRecord {
        finished_at: Some(now),
        ..started
    };
    match result {
        Ok(report) => {
            record.status = FlashStatus::Succeeded;
            record.bytes_written = report.bytes_written;
            record.image_bytes = Some(report.bytes_written);
            record.verification = report.verification.as_ref().map(|passed| VerifyResult {
                bytes: passed.bytes,
                matched: true,
                digest: Some(passed.digest.clone()),
                mismatch_offset: None,
            });
        }
        Err(error) => {
            record.bytes_written = bytes_seen;
            record.status = match error.code {
                ErrorCode::FlashHashMismatch => FlashStatus::VerifyFailed,
                ErrorCode::Interrupted => FlashStatus::Interrupted,
                _ => FlashStatus::Failed,
            };
            if record.status == FlashStatus::VerifyFailed {
                record.verification = Some(VerifyResult {
                    bytes: bytes_seen.min(verify.hash_limit()),
                    matched: false,
                    digest: None,
                    mismatch_offset: error.details["offset"].as_u64(),
                });
            }
            record.error = Some(RecordedError {
                code: error.code.as_str().to_string(),
                message: error.message.clone(),
            });
        }
    }
    record
}

/// Records the attempt around the engine, and passes everything else on to the frontend's
/// observer.
pub(crate) struct Recorder<'a> {
    ledger: &'a mut dyn FlashLedger,
    inner: &'a mut dyn FlashObserver,
    force: bool,
    verify: VerifyMode,
    source: FlashSource,
    fleet_devices: Vec<FleetDevice>,
    record: Option<FlashRecord>,
    bytes_seen: u64,
}

impl<'a> Recorder<'a> {
    /// `force`: write without calling the inner observer's `confirm` (the caller has the
    /// user's consent already).
    pub(crate) fn new(
        ledger: &'a mut dyn FlashLedger,
        inner: &'a mut dyn FlashObserver,
        force: bool,
        verify: VerifyMode,
        source: &FlashSource,
        fleet_devices: Vec<FleetDevice>,
    ) -> Recorder<'a> {
        Recorder {
            ledger,
            inner,
            force,
            verify,
            source: source.clone(),
            fleet_devices,
            record: None,
            bytes_seen: 0,
        }
    }

    /// Records how the flash ended (when it got as far as being recorded) and returns the
    /// report with the final record, or the flash's error with `flash_id` in its details.
    pub(crate) fn finish(self, result: Result<FlashReport>) -> Result<(FlashReport, FlashRecord)> {
        let Some(started) = self.record else {
            // Refused or not confirmed: nothing was written, so nothing is recorded.
            return match result {
                Ok(_) => Err(Error::internal("a flash ran without being recorded")),
                Err(error) => Err(error),
            };
        };
        let ended = ended_record(started, &result, self.verify, self.bytes_seen, unix_now());
        let recorded = self.ledger.end(&ended);
        match (result, recorded) {
            (Ok(report), Ok(())) => Ok((report, ended)),
            (Ok(_), Err(error)) => Err(Error::new(
                error.code,
                format!(
                    "`{}` was flashed, but recording how flash #{} ended failed: {}",
                    ended.device_node.display(),
                    ended.id,
                    error.message
                ),
            )
            .with_help(
                "`imagegen flash list` shows it as not completed; flash again to record it",
            )),
            (Err(error), recorded) => {
                if let Err(failure) = recorded {
                    tracing::warn!(flash = ended.id, error = %failure, "could not record the end of the flash");
                }
                Err(with_flash_id(error, ended.id))
            }
        }
    }
}

impl FlashObserver for Recorder<'_> {
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        if !self.force {
            self.inner.confirm(plan)?;
        }
        let record = started_record(plan, &self.source, &self.fleet_devices, unix_now());
        self.record = Some(self.ledger.start(record)?);
        Ok(())
    }

    fn started(&mut self, plan: &FlashPlan) {
        self.inner.started(plan);
    }

    fn progress(&mut self, progress: &FlashProgress) {
        if matches!(progress.phase, FlashPhase::Writing | FlashPhase::Syncing) {
            self.bytes_seen = self.bytes_seen.max(progress.bytes);
        }
        self.inner.progress(progress);
    }

    fn before_verify(&mut self) -> Result<()> {
        self.inner.before_verify()
    }
}

/// The error with `flash_id` added to its details, so a frontend can point at the record.
fn with_flash_id(mut error: Error, id: u64) -> Error {
    match &mut error.details {
        serde_json::Value::Object(details) => {
            details.insert("flash_id".to_string(), id.into());
        }
        serde_json::Value::Null => error.details = serde_json::json!({ "flash_id": id }),
        _ => {}
    }
    error
}
