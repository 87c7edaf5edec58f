//! The flash operation end to end on regular files (the library allows them when asked):
//! streaming, decompression, wipe, verification and the refusals that need no real disk.
//! Real block devices are exercised by `tests/it/flash.rs` with loop devices.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, ErrorCode};

const MIB: usize = 1024 * 1024;

/// Deterministic image bytes that compress somewhat and are never all one value.
fn image_bytes(length: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..length)
        .map(|index| {
            if index % 3 == 0 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            } else {
                (index / 512) as u8
            }
        })
        .collect()
}

struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A "device": a regular file of `length` bytes filled with 0xee.
    fn device(&self, length: usize) -> PathBuf {
        self.file("device.bin", &vec![0xee; length])
    }
}

fn options(image: &Path, device: &Path) -> FlashOptions {
    FlashOptions {
        image: image.to_path_buf(),
        device: device.to_path_buf(),
        dry_run: false,
        wipe: false,
        verify: VerifyMode::Full,
        allow_regular_file: true,
        cancel: None,
    }
}

/// Confirms everything and records what it saw.
#[derive(Default)]
struct Recorder {
    confirmed: Option<FlashPlan>,
    phases: Vec<FlashPhase>,
    refuse: bool,
    /// Bytes written into the target between the write and the read-back.
    corrupt: Option<(PathBuf, u64)>,
}

impl FlashObserver for Recorder {
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        self.confirmed = Some(plan.clone());
        if self.refuse {
            return Err(Error::new(ErrorCode::FlashNotConfirmed, "not confirmed"));
        }
        Ok(())
    }

    fn progress(&mut self, progress: &FlashProgress) {
        if self.phases.last() != Some(&progress.phase) {
            self.phases.push(progress.phase);
        }
    }

    fn before_verify(&mut self) -> Result<()> {
        if let Some((path, offset)) = &self.corrupt {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"\x00corrupt\x00", *offset).unwrap();
        }
        Ok(())
    }
}

fn run(options: &FlashOptions, recorder: &mut Recorder) -> Result<FlashReport> {
    flash(&Host::real(), options, recorder)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn raw_image_is_written_and_verified_in_full() {
    let scene = Scene::new();
    // Not a multiple of the block size: the tail goes through the page cache.
    let data = image_bytes(9 * MIB + 1000);
    let image = scene.file("image.img", &data);
    let device = scene.device(16 * MIB);
    let mut recorder = Recorder::default();
    let report = run(&options(&image, &device), &mut recorder).unwrap();
    let written = std::fs::read(&device).unwrap();
    assert_eq!(&written[..data.len()], &data[..]);
    assert!(written[data.len()..].iter().all(|byte| *byte == 0xee));
    assert_eq!(report.bytes_written, data.len() as u64);
    let verification = report.verification.unwrap();
    assert_eq!(verification.bytes, data.len() as u64);
    assert_eq!(verification.blocks, 3);
    assert_eq!(
        recorder.phases,
        [
            FlashPhase::Writing,
            FlashPhase::Syncing,
            FlashPhase::Verifying
        ]
    );
    let plan = recorder.confirmed.unwrap();
    assert_eq!(plan.write_bytes, Some(data.len() as u64));
    assert_eq!(plan.image.format, ImageFormat::Raw);
}

#[test]
fn compressed_images_stream_decompressed() {
    let scene = Scene::new();
    let data = image_bytes(5 * MIB + 512);
    let mut gz = gzip(&data);
    // What OpenWrt's fwtool appends: JSON metadata and a trailer after the gzip stream.
    gz.extend_from_slice(b"{\"metadata_version\":\"1.1\",\"supported_devices\":[]}FWx0\0\0\0\x40");
    let xz = {
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap()
    };
    let zst = zstd::bulk::compress(&data, 3).unwrap();
    for (name, bytes, format, known) in [
        ("image.img.gz", gz, ImageFormat::Gzip, false),
        ("image.img.xz", xz, ImageFormat::Xz, true),
        ("image.img.zst", zst, ImageFormat::Zstd, true),
    ] {
        let image = scene.file(name, &bytes);
        let device = scene.device(8 * MIB);
        let mut recorder = Recorder::default();
        let report = run(&options(&image, &device), &mut recorder).unwrap();
        assert_eq!(report.plan.image.format, format, "{name}");
        assert_eq!(report.plan.write_bytes.is_some(), known, "{name}");
        assert_eq!(report.bytes_written, data.len() as u64, "{name}");
        let written = std::fs::read(&device).unwrap();
        assert_eq!(&written[..data.len()], &data[..], "{name}");
        assert_eq!(report.verification.unwrap().bytes, data.len() as u64);
    }
}

#[test]
fn prefix_verification_reads_back_only_the_prefix() {
    let scene = Scene::new();
    let data = image_bytes(6 * MIB);
    let image = scene.file("image.img", &data);
    let device = scene.device(8 * MIB);
    let mut flash_options = options(&image, &device);
    flash_options.verify = "prefix:1".parse().unwrap();
    // Damage beyond the prefix goes unnoticed by design; inside it, it would not.
    let mut recorder = Recorder {
        corrupt: Some((device.clone(), 3 * MIB as u64)),
        ..Recorder::default()
    };
    let report = run(&flash_options, &mut recorder).unwrap();
    let verification = report.verification.unwrap();
    assert_eq!(verification.bytes, MIB as u64);
    assert_eq!(verification.blocks, 1);
    assert_eq!(report.plan.verify_bytes, Some(MIB as u64));
}

#[test]
fn a_changed_device_fails_verification_with_the_offset() {
    let scene = Scene::new();
    let data = image_bytes(10 * MIB);
    let image = scene.file("image.img", &data);
    let device = scene.device(12 * MIB);
    let mut recorder = Recorder {
        corrupt: Some((device.clone(), 5 * MIB as u64)),
        ..Recorder::default()
    };
    let error = run(&options(&image, &device), &mut recorder).unwrap_err();
    assert_eq!(error.code, ErrorCode::FlashHashMismatch);
    assert_eq!(error.details["offset"], 4 * MIB as u64);
}

#[test]
fn wipe_clears_both_ends_of_the_disk() {
    let scene = Scene::new();
    let data = image_bytes(MIB / 2);
    let image = scene.file("image.img", &data);
    let device = scene.device(8 * MIB);
    let mut flash_options = options(&image, &device);
    flash_options.wipe = true;
    let report = run(&flash_options, &mut Recorder::default()).unwrap();
    assert_eq!(report.wiped_bytes, 2 * MIB as u64);
    let written = std::fs::read(&device).unwrap();
    assert_eq!(&written[..data.len()], &data[..]);
    assert!(written[data.len()..MIB].iter().all(|byte| *byte == 0));
    assert!(written[MIB..7 * MIB].iter().all(|byte| *byte == 0xee));
    assert!(written[7 * MIB..].iter().all(|byte| *byte == 0));
}

#[test]
fn images_larger_than_the_device_are_refused() {
    let scene = Scene::new();
    let data = image_bytes(3 * MIB);
    let device = scene.device(2 * MIB);
    // Known size: refused before anything is written.
    let raw = scene.file("image.img", &data);
    let mut recorder = Recorder::default();
    let error = run(&options(&raw, &device), &mut recorder).unwrap_err();
    assert_eq!(error.code, ErrorCode::ImageTooLarge);
    assert!(recorder.confirmed.is_none());
    assert!(
        std::fs::read(&device)
            .unwrap()
            .iter()
            .all(|byte| *byte == 0xee)
    );
    // gzip records no size: a dry run decompresses to find out, a real run stops before
    // writing past the end of the device.
    let gz = scene.file("image.img.gz", &gzip(&data));
    let mut dry = options(&gz, &device);
    dry.dry_run = true;
    assert_eq!(
        run(&dry, &mut Recorder::default()).unwrap_err().code,
        ErrorCode::ImageTooLarge
    );
    let error = run(&options(&gz, &device), &mut Recorder::default()).unwrap_err();
    assert_eq!(error.code, ErrorCode::ImageTooLarge);
    assert_eq!(std::fs::metadata(&device).unwrap().len(), 2 * MIB as u64);
}

#[test]
fn dry_run_and_refused_confirmation_write_nothing() {
    let scene = Scene::new();
    let data = image_bytes(MIB);
    let image = scene.file("image.img.gz", &gzip(&data));
    let device = scene.device(4 * MIB);
    let mut dry = options(&image, &device);
    dry.dry_run = true;
    dry.wipe = true;
    let mut recorder = Recorder::default();
    let report = run(&dry, &mut recorder).unwrap();
    assert!(report.dry_run);
    assert!(recorder.confirmed.is_none(), "a dry run asks nothing");
    assert_eq!(
        report.plan.write_bytes,
        Some(MIB as u64),
        "counted by decompressing"
    );
    assert_eq!(report.bytes_written, 0);
    assert!(
        report
            .plan
            .steps
            .iter()
            .any(|step| step.starts_with("zero the first"))
    );
    let mut refusing = Recorder {
        refuse: true,
        ..Recorder::default()
    };
    let error = run(&options(&image, &device), &mut refusing).unwrap_err();
    assert_eq!(error.code, ErrorCode::FlashNotConfirmed);
    assert!(
        std::fs::read(&device)
            .unwrap()
            .iter()
            .all(|byte| *byte == 0xee)
    );
}

#[test]
fn regular_files_are_not_devices_unless_asked() {
    let scene = Scene::new();
    let image = scene.file("image.img", &image_bytes(1000));
    let device = scene.device(MIB);
    let mut cli_like = options(&image, &device);
    cli_like.allow_regular_file = false;
    let error = run(&cli_like, &mut Recorder::default()).unwrap_err();
    assert_eq!(error.code, ErrorCode::DeviceNotBlock);
    let missing = options(&image, &scene.dir.path().join("sdz"));
    let error = run(&missing, &mut Recorder::default()).unwrap_err();
    assert_eq!(error.code, ErrorCode::DeviceNotFound);
}

#[test]
fn cancel_stops_between_blocks() {
    let scene = Scene::new();
    let image = scene.file("image.img", &image_bytes(8 * MIB));
    let device = scene.device(8 * MIB);
    let mut cancelled = options(&image, &device);
    cancelled.cancel = Some(Arc::new(AtomicBool::new(true)));
    let error = run(&cancelled, &mut Recorder::default()).unwrap_err();
    assert_eq!(error.code, ErrorCode::Interrupted);
}

#[test]
fn verify_modes_parse_and_print() {
    assert_eq!("full".parse::<VerifyMode>().unwrap(), VerifyMode::Full);
    assert_eq!("none".parse::<VerifyMode>().unwrap(), VerifyMode::None);
    let prefix: VerifyMode = "prefix:64".parse().unwrap();
    assert_eq!(prefix, VerifyMode::Prefix(64 * MIB as u64));
    assert_eq!(prefix.to_string(), "prefix:64");
    assert_eq!(serde_json::to_value(prefix).unwrap(), "prefix:64");
    for bad in [
        "prefix:0",
        "prefix:",
        "prefix:x",
        "fast",
        "prefix:99999999999999999",
    ] {
        assert_eq!(
            bad.parse::<VerifyMode>().unwrap_err().code,
            ErrorCode::Validation,
            "{bad}"
        );
    }
}
