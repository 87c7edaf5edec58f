//! Flashing: write an image to a whole disk, safely, and prove it was written (DESIGN §9,
//! `docs/flash.md`).
//!
//! One operation, [`flash`], for every frontend (CLI, HTTP API, MCP): typed
//! [`FlashOptions`] in, a [`FlashObserver`] for the confirmation and progress, a
//! `Serialize` [`FlashReport`] out. In stage order: `preflight` resolves the path and
//! refuses unsafe disks (facts from `device` and `mounts`); `source` recognises and streams
//! the image (`size` reads recorded sizes); `plan` describes what will happen; `target`
//! opens the disk exclusively for direct I/O; `run` drives `write` (wipe, write) and
//! `verify` (read back, compare). This module never touches the state store and never
//! unmounts anything: `recording` builds the records of an attempt around the engine and
//! hands them to a [`FlashLedger`] (the flash operations in `ops::flash` write them to the
//! store, `apply` through the executor's coordinator).

mod device;
mod mounts;
mod plan;
mod preflight;
mod recording;
mod run;
mod size;
mod source;
mod target;
mod verify;
mod verify_mode;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use device::{DeviceInfo, Host, PartitionInfo, format_size};
pub use plan::FlashPlan;
#[cfg(test)]
pub(crate) use recording::ended_record;
pub use recording::{FlashLedger, FlashSource};
pub(crate) use recording::{Recorder, device_key, fleet_devices};
pub use source::{ImageFormat, ImageInfo};
pub use verify::Verification;
pub use verify_mode::VerifyMode;

use crate::error::Result;
use crate::exec::Transfer;
use crate::exec::report::ErrorSummary;
use preflight::Target;
use target::DeviceFile;

/// What to flash where, and how.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    pub image: PathBuf,
    /// The device as the user gave it (links such as `/dev/disk/by-id/...` are resolved).
    pub device: PathBuf,
    /// Check everything and describe the write, but write nothing.
    pub dry_run: bool,
    /// Zero both ends of the disk before writing.
    pub wipe: bool,
    pub verify: VerifyMode,
    /// Accept a regular file as the target. For tests and benchmarks only: the CLI never
    /// sets it.
    pub allow_regular_file: bool,
    /// Set (by a signal handler) to stop between blocks.
    pub cancel: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlashPhase {
    Wiping,
    Writing,
    Syncing,
    Verifying,
}

impl FlashPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FlashPhase::Wiping => "wiping",
            FlashPhase::Writing => "writing",
            FlashPhase::Syncing => "syncing",
            FlashPhase::Verifying => "verifying",
        }
    }
}

/// Where a flash is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashProgress {
    pub phase: FlashPhase,
    /// Bytes done in this phase.
    pub bytes: u64,
    /// Bytes this phase will take, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// 0..1; for a gzip image of unknown size, how much of the file was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    pub bytes_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

impl FlashProgress {
    /// The amounts as a run event carries them.
    pub fn transfer(&self) -> Transfer {
        Transfer {
            bytes: self.bytes,
            total: self.total,
            bytes_per_second: self.bytes_per_second,
            eta_seconds: self.eta_seconds,
        }
    }
}

/// The result of a flash (or of a dry run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashReport {
    pub plan: FlashPlan,
    pub dry_run: bool,
    pub bytes_written: u64,
    /// Bytes zeroed by `--wipe`.
    pub wiped_bytes: u64,
    /// The passed read-back; absent with `--verify none` and in a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    pub write_ms: u64,
    pub verify_ms: u64,
    pub duration_ms: u64,
}

/// The caller's part of a flash.
pub trait FlashObserver {
    /// Called once everything is checked and the device is open exclusively, before the
    /// first byte is written. An error aborts the flash with nothing written.
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()>;

    /// Called once after a successful [`FlashObserver::confirm`], right before the first
    /// byte is written (progress displays start here).
    fn started(&mut self, _plan: &FlashPlan) {}

    /// Called after every block and at each phase change, on the calling thread.
    fn progress(&mut self, _progress: &FlashProgress) {}

    /// Called after the write is flushed and before the read-back. A test hook (the
    /// integration tests change the device here to prove a mismatch is caught).
    fn before_verify(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A disk `imagegen devices` lists, with the reason a flash would refuse it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceCandidate {
    #[serde(flatten)]
    pub device: DeviceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<ErrorSummary>,
}

/// Every whole disk with a medium, and whether a flash would accept it.
pub fn list_devices(host: &Host) -> Vec<DeviceCandidate> {
    let usage = mounts::Usage::read(host);
    device::list_disks(host, &usage)
        .into_iter()
        .map(|device| DeviceCandidate {
            refusal: preflight::refusal(&device).map(|error| ErrorSummary::from(&error)),
            device,
        })
        .collect()
}

/// What a flash would find out about an image file before writing: its format and, when
/// recorded, its decompressed size. Refuses files a flash would refuse (missing, not a
/// regular file, empty, an unsupported compression).
pub fn inspect_image(path: &std::path::Path) -> Result<ImageInfo> {
    source::inspect(path)
}

/// Flashes `options.image` onto `options.device`: pre-flight checks, confirmation, optional
/// wipe, streamed write, fsync, read-back verification.
pub fn flash(
    host: &Host,
    options: &FlashOptions,
    observer: &mut dyn FlashObserver,
) -> Result<FlashReport> {
    let started = Instant::now();
    let mut target = preflight::resolve(host, &options.device, options.allow_regular_file)?;
    if let Some(refusal) = preflight::refusal(&target.info) {
        return Err(refusal);
    }
    let mut image = source::inspect(&options.image)?;
    check_size(&image, &target)?;
    let device = DeviceFile::open(&target, !options.dry_run)?;
    // The kernel's size now, rather than sysfs's when we looked.
    target.info.size = device.size;
    if options.dry_run {
        if image.size.is_none() {
            image.size = Some(source::count_decompressed(&image)?);
        }
        check_size(&image, &target)?;
        let plan = plan::describe(options, &target, &image);
        return Ok(run::report(plan, true, run::Done::default(), started));
    }
    check_size(&image, &target)?;
    let plan = plan::describe(options, &target, &image);
    observer.confirm(&plan)?;
    observer.started(&plan);
    let done = run::execute(&device, options, &image, observer)?;
    device.reread_partitions();
    Ok(run::report(plan, false, done, started))
}

fn check_size(image: &ImageInfo, target: &Target) -> Result<()> {
    match image.size {
        Some(size) if size > target.info.size => {
            Err(preflight::image_too_large(&image.path, size, &target.info))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
