//! Flashing: write an image to a whole disk, safely, and prove it was written (DESIGN §9,
//! `docs/flash.md`).
//!
//! One operation, [`flash`], for every frontend (CLI, HTTP API, MCP): typed
//! [`FlashOptions`] in, a [`FlashObserver`] for the confirmation and progress, a
//! `Serialize` [`FlashReport`] out. In stage order: [`preflight`] resolves the path and
//! refuses unsafe disks (facts from [`device`] and [`mounts`]); [`source`] recognises and
//! streams the image ([`size`] reads recorded sizes); [`target`] opens the disk exclusively
//! for direct I/O; [`write`] wipes and writes; [`verify`] reads back and compares.
//! This module never touches the state store and never unmounts anything.

mod device;
mod mounts;
mod preflight;
mod size;
mod source;
mod target;
mod verify;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use device::{DeviceInfo, Host, PartitionInfo, format_size};
pub use source::{ImageFormat, ImageInfo};
pub use verify::Verification;

use crate::error::{Error, ErrorCode, Result};
use crate::exec::report::ErrorSummary;
use preflight::Target;
use target::DeviceFile;

/// How much of what was written is read back and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum VerifyMode {
    /// Every byte written.
    Full,
    /// The first this-many bytes (or all, when the image is shorter).
    Prefix(u64),
    None,
}

impl VerifyMode {
    /// Bytes to hash while writing; `u64::MAX` for everything.
    fn hash_limit(self) -> u64 {
        match self {
            VerifyMode::Full => u64::MAX,
            VerifyMode::Prefix(bytes) => bytes,
            VerifyMode::None => 0,
        }
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = Error;

    /// `full`, `none` or `prefix:<MiB>`.
    fn from_str(text: &str) -> Result<VerifyMode> {
        let invalid = || {
            Error::new(
                ErrorCode::Validation,
                format!("invalid verification mode `{text}`"),
            )
            .with_help("use `full`, `none` or `prefix:<MiB>` (such as `prefix:64`)")
        };
        match text {
            "full" => Ok(VerifyMode::Full),
            "none" => Ok(VerifyMode::None),
            _ => {
                let mebibytes: u64 = text
                    .strip_prefix("prefix:")
                    .and_then(|value| value.parse().ok())
                    .filter(|value| *value > 0)
                    .ok_or_else(invalid)?;
                let bytes = mebibytes.checked_mul(1024 * 1024).ok_or_else(invalid)?;
                Ok(VerifyMode::Prefix(bytes))
            }
        }
    }
}

impl std::fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyMode::Full => f.write_str("full"),
            VerifyMode::None => f.write_str("none"),
            VerifyMode::Prefix(bytes) => write!(f, "prefix:{}", bytes / (1024 * 1024)),
        }
    }
}

impl From<VerifyMode> for String {
    fn from(mode: VerifyMode) -> String {
        mode.to_string()
    }
}

impl TryFrom<String> for VerifyMode {
    type Error = Error;
    fn try_from(text: String) -> Result<VerifyMode> {
        text.parse()
    }
}

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

/// What a flash will do, shown before the confirmation and by `--dry-run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlashPlan {
    /// The device path as given.
    pub device_path: PathBuf,
    /// The disk it resolved to; everything on it is destroyed.
    pub device: DeviceInfo,
    pub image: ImageInfo,
    pub wipe: bool,
    pub verify: VerifyMode,
    /// Bytes that will be written, when known before writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<u64>,
    /// Bytes that will be read back and compared, when known before writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_bytes: Option<u64>,
    /// The actions in order, in words.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The result of a flash (or of a dry run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// Called after every block and at each phase change, on the calling thread.
    fn progress(&mut self, _progress: &FlashProgress) {}

    /// Called after the write is flushed and before the read-back. A test hook (the
    /// integration tests change the device here to prove a mismatch is caught).
    fn before_verify(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A disk `imagegen devices` lists, with the reason a flash would refuse it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        let plan = describe(options, &target, &image);
        return Ok(finish(plan, true, Default::default(), started));
    }
    check_size(&image, &target)?;
    let plan = describe(options, &target, &image);
    observer.confirm(&plan)?;
    let cancel = options.cancel.clone().unwrap_or_default();
    let mut run = Run {
        device: &device,
        options,
        image: &image,
        observer,
        cancel: &cancel,
        done: Done::default(),
    };
    run.write_and_verify()?;
    device.reread_partitions();
    let done = run.done;
    Ok(finish(plan, false, done, started))
}

fn check_size(image: &ImageInfo, target: &Target) -> Result<()> {
    match image.size {
        Some(size) if size > target.info.size => {
            Err(preflight::image_too_large(&image.path, size, &target.info))
        }
        _ => Ok(()),
    }
}

/// The measured results of a real run.
#[derive(Debug, Default)]
struct Done {
    bytes_written: u64,
    wiped_bytes: u64,
    verification: Option<Verification>,
    write_ms: u64,
    verify_ms: u64,
}

fn finish(plan: FlashPlan, dry_run: bool, done: Done, started: Instant) -> FlashReport {
    FlashReport {
        plan,
        dry_run,
        bytes_written: done.bytes_written,
        wiped_bytes: done.wiped_bytes,
        verification: done.verification,
        write_ms: done.write_ms,
        verify_ms: done.verify_ms,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// One real flash after the confirmation.
struct Run<'a> {
    device: &'a DeviceFile,
    options: &'a FlashOptions,
    image: &'a ImageInfo,
    observer: &'a mut dyn FlashObserver,
    cancel: &'a AtomicBool,
    done: Done,
}

impl Run<'_> {
    fn write_and_verify(&mut self) -> Result<()> {
        let writing = Instant::now();
        if self.options.wipe {
            self.report(FlashPhase::Wiping, 0, None, None, writing);
            self.done.wiped_bytes = write::wipe(self.device)?;
        }
        let consumed = Arc::new(AtomicU64::new(0));
        let mut stream = source::open_stream(self.image, Arc::clone(&consumed))?;
        let hash_limit = self.options.verify.hash_limit();
        let job = write::WriteJob {
            device: self.device,
            image: &self.image.path,
            hash_limit,
            cancel: self.cancel,
        };
        let phase_start = Instant::now();
        let (total, file_size) = (self.image.size, self.image.file_size);
        let observer = &mut *self.observer;
        let outcome = write::write_stream(&job, &mut stream, &mut |bytes| {
            let read = consumed.load(Ordering::Relaxed);
            let fraction = fraction(bytes, total, read, file_size);
            observer.progress(&progress(
                FlashPhase::Writing,
                bytes,
                total,
                fraction,
                phase_start,
            ));
        })?;
        self.report(
            FlashPhase::Syncing,
            outcome.bytes,
            Some(outcome.bytes),
            None,
            phase_start,
        );
        self.device.sync()?;
        self.done.bytes_written = outcome.bytes;
        self.done.write_ms = writing.elapsed().as_millis() as u64;
        if hash_limit == 0 {
            return Ok(());
        }
        self.observer.before_verify()?;
        let verifying = Instant::now();
        let bytes = outcome.bytes.min(hash_limit);
        let observer = &mut *self.observer;
        let verification = verify::verify(
            self.device,
            &outcome.digests,
            bytes,
            self.cancel,
            &mut |done| {
                let fraction = fraction(done, Some(bytes), 0, 0);
                observer.progress(&progress(
                    FlashPhase::Verifying,
                    done,
                    Some(bytes),
                    fraction,
                    verifying,
                ));
            },
        )?;
        self.done.verify_ms = verifying.elapsed().as_millis() as u64;
        self.done.verification = Some(verification);
        Ok(())
    }

    fn report(
        &mut self,
        phase: FlashPhase,
        bytes: u64,
        total: Option<u64>,
        fraction: Option<f64>,
        since: Instant,
    ) {
        self.observer
            .progress(&progress(phase, bytes, total, fraction, since));
    }
}

fn fraction(bytes: u64, total: Option<u64>, read: u64, file_size: u64) -> Option<f64> {
    match total {
        Some(total) if total > 0 => Some(bytes as f64 / total as f64),
        _ if file_size > 0 => Some(read as f64 / file_size as f64),
        _ => None,
    }
}

fn progress(
    phase: FlashPhase,
    bytes: u64,
    total: Option<u64>,
    fraction: Option<f64>,
    since: Instant,
) -> FlashProgress {
    let elapsed = since.elapsed().as_secs_f64();
    let fraction = fraction.map(|fraction| fraction.clamp(0.0, 1.0));
    FlashProgress {
        phase,
        bytes,
        total,
        fraction,
        bytes_per_second: if elapsed > 0.0 {
            bytes as f64 / elapsed
        } else {
            0.0
        },
        // Too early, the estimate is noise.
        eta_seconds: fraction
            .filter(|fraction| *fraction > 0.01 && elapsed >= 1.0)
            .map(|fraction| elapsed * (1.0 - fraction) / fraction),
    }
}

/// The plan in words.
fn describe(options: &FlashOptions, target: &Target, image: &ImageInfo) -> FlashPlan {
    let info = &target.info;
    let node = info.node.display();
    let write_bytes = image.size;
    let verify_bytes = match options.verify {
        VerifyMode::None => Some(0),
        mode => write_bytes.map(|bytes| bytes.min(mode.hash_limit())),
    };
    let mut steps = vec![format!(
        "destroy everything on `{node}`: {}{}",
        info.describe(),
        partitions_text(info)
    )];
    if options.wipe {
        steps.push(format!(
            "zero the first and last {} of `{node}` (MBR, primary and backup GPT)",
            format_size(write::WIPE_BYTES.min(info.size))
        ));
    }
    let amount = write_bytes.map_or_else(
        || "the decompressed image (size known after decompressing)".to_string(),
        |bytes| format!("{} ({bytes} bytes)", format_size(bytes)),
    );
    let from = match image.format {
        ImageFormat::Raw => format!("from `{}`", image.path.display()),
        format => format!(
            "decompressed from the {} file `{}`",
            format.as_str(),
            image.path.display()
        ),
    };
    steps.push(format!(
        "write {amount} at the start of `{node}`, {from}, in 4 MiB direct writes"
    ));
    steps.push(format!("flush `{node}` (fsync)"));
    steps.push(match (options.verify, verify_bytes) {
        (VerifyMode::None, _) => "no read-back verification (`--verify none`)".to_string(),
        (_, Some(bytes)) => format!(
            "read back the first {} ({bytes} bytes) with O_DIRECT and compare the SHA-256 of every 4 MiB block",
            format_size(bytes)
        ),
        (mode, None) => format!(
            "read back {} with O_DIRECT and compare the SHA-256 of every 4 MiB block",
            match mode {
                VerifyMode::Prefix(bytes) => format!("the first {}", format_size(bytes)),
                _ => "everything written".to_string(),
            }
        ),
    });
    FlashPlan {
        device_path: options.device.clone(),
        device: info.clone(),
        image: image.clone(),
        wipe: options.wipe,
        verify: options.verify,
        write_bytes,
        verify_bytes,
        steps,
    }
}

fn partitions_text(info: &DeviceInfo) -> String {
    if info.partitions.is_empty() {
        return String::new();
    }
    let list: Vec<String> = info
        .partitions
        .iter()
        .map(|partition| format!("{} {}", partition.name, format_size(partition.size)))
        .collect();
    format!("; partitions {}", list.join(", "))
}

#[cfg(test)]
mod tests;
