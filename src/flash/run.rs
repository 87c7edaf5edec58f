//! One real flash after the confirmation: wipe, write, fsync, read back; and the progress
//! figures (rate, fraction, time left) every frontend shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::plan::FlashPlan;
use super::source::{self, ImageInfo};
use super::target::DeviceFile;
use super::verify::{self, Verification};
use super::write;
use super::{FlashObserver, FlashOptions, FlashPhase, FlashProgress, FlashReport};
use crate::error::Result;

/// The measured results of a real run.
#[derive(Debug, Default)]
pub(crate) struct Done {
    bytes_written: u64,
    wiped_bytes: u64,
    verification: Option<Verification>,
    write_ms: u64,
    verify_ms: u64,
}

/// Wipes (when asked), writes, flushes and verifies; the device is open and confirmed.
pub(crate) fn execute(
    device: &DeviceFile,
    options: &FlashOptions,
    image: &ImageInfo,
    observer: &mut dyn FlashObserver,
) -> Result<Done> {
    let cancel = options.cancel.clone().unwrap_or_default();
    let mut run = Run {
        device,
        options,
        image,
        observer,
        cancel: &cancel,
        done: Done::default(),
    };
    run.write_and_verify()?;
    Ok(run.done)
}

pub(crate) fn report(plan: FlashPlan, dry_run: bool, done: Done, started: Instant) -> FlashReport {
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
