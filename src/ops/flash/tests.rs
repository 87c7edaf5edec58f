//! The flash operations' records on regular files as targets (the engine accepts them when
//! asked; frontends never ask): when the `in_progress` record is written, how each ending
//! is recorded, fleet devices and their pointers, and the listing. Real block devices and
//! the real binary are `tests/it/flash.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::list::listing;
use super::*;
use crate::error::ErrorCode;
use crate::flash::{FlashPhase, FlashPlan, FlashProgress};
use crate::ops::{FleetNeed, WorkspaceOptions};
use crate::state::{FlashStatus, fleet_device_key};

const MIB: usize = 1024 * 1024;

struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        Scene {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A fleet whose device `sd-1` is flashed at `disk.bin`.
    fn fleet(&self) {
        let disk = self.path("disk.bin");
        self.write(
            "fleet/imagegen.toml",
            format!(
                "[fleet]\nname = \"lab\"\n\n[[device]]\nid = \"sd-1\"\nprofile = \"pi\"\nflash = {{ path = \"{}\", image = \"factory\" }}\n",
                disk.display()
            )
            .as_bytes(),
        );
        self.write(
            "fleet/profiles/pi.yaml",
            b"profile_id: pi\nname: Pi\ndevice_id: rpi-4\nopenwrt_release: 23.05.4\ntarget: bcm27xx\nsubtarget: bcm2711\nimagebuilder_profile: rpi-4\n",
        );
    }

    fn workspace(&self) -> Workspace {
        let env: BTreeMap<String, String> = [
            ("HOME", "home"),
            ("OWRT_IMG_DB_URL", "state.redb"),
            ("OWRT_IMG_ARTIFACTS_DIR", "artifacts"),
            ("OWRT_IMG_CACHE_DIR", "cache"),
        ]
        .into_iter()
        .map(|(name, relative)| (name.to_string(), self.path(relative).display().to_string()))
        .collect();
        let options = WorkspaceOptions {
            manifest: None,
            search_from: Some(self.path("fleet")),
            flags: Default::default(),
            env,
        };
        std::fs::create_dir_all(self.path("fleet")).unwrap();
        Workspace::load(&options, FleetNeed::Optional).unwrap()
    }

    /// An 8 MiB "disk" of 0xee and a 5 MiB + 100 image (two blocks).
    fn disk_and_image(&self) -> (PathBuf, PathBuf, Vec<u8>) {
        let disk = self.write("disk.bin", &vec![0xee; 8 * MIB]);
        let data: Vec<u8> = (0..5 * MIB + 100).map(|i| (i % 251) as u8).collect();
        let image = self.write("image.img", &data);
        (disk, image, data)
    }
}

/// What the frontend's observer saw, and a chance to act at each point.
#[derive(Default)]
struct Seen<'a> {
    store: Option<&'a Store>,
    disk: PathBuf,
    refuse: bool,
    /// At `started`: the records, and whether the disk was still untouched.
    at_start: Option<(Vec<FlashRecord>, bool)>,
    pointer_at_start: Option<Option<crate::state::DevicePointer>>,
    corrupt_at: Option<u64>,
    cancel_after_first_block: Option<Arc<AtomicBool>>,
    confirmations: usize,
}

impl FlashObserver for Seen<'_> {
    fn confirm(&mut self, _plan: &FlashPlan) -> Result<()> {
        self.confirmations += 1;
        match self.refuse {
            true => Err(Error::new(ErrorCode::FlashNotConfirmed, "not confirmed")),
            false => Ok(()),
        }
    }

    fn started(&mut self, _plan: &FlashPlan) {
        if let Some(store) = self.store {
            let reader = store.read().unwrap();
            let untouched = std::fs::read(&self.disk)
                .unwrap()
                .iter()
                .all(|b| *b == 0xee);
            self.at_start = Some((reader.flashes().unwrap(), untouched));
            self.pointer_at_start = Some(reader.device_pointer("lab", "sd-1").unwrap());
        }
    }

    fn progress(&mut self, progress: &FlashProgress) {
        if let Some(cancel) = &self.cancel_after_first_block
            && progress.phase == FlashPhase::Writing
            && progress.bytes > 0
        {
            cancel.store(true, Ordering::SeqCst);
        }
    }

    fn before_verify(&mut self) -> Result<()> {
        if let Some(offset) = self.corrupt_at {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.disk)
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"\x00bad\x00", offset).unwrap();
        }
        Ok(())
    }
}

fn files() -> Target {
    Target {
        host: Host::real(),
        allow_regular_file: true,
    }
}

fn flash_file(
    workspace: &Workspace,
    store: &Store,
    image: &Path,
    request: &FlashRequest,
    observer: &mut Seen,
) -> Result<FlashOutcome> {
    let (sha256, size) = crate::cas::sha256_file(image).unwrap();
    let source = FlashSource {
        path: image.to_path_buf(),
        sha256,
        size,
        artifact: None,
    };
    run(workspace, Some(store), source, request, &files(), observer)
}

fn forced(disk: &Path) -> FlashRequest {
    FlashRequest {
        force: true,
        ..FlashRequest::new(disk)
    }
}

#[test]
fn the_attempt_is_recorded_in_progress_before_the_first_byte_then_its_end() {
    let scene = Scene::new();
    let (disk, image, data) = scene.disk_and_image();
    let workspace = scene.workspace();
    let store = workspace.store("test").unwrap();
    let mut seen = Seen {
        store: Some(&store),
        disk: disk.clone(),
        ..Seen::default()
    };
    let request = FlashRequest::new(&disk);
    let outcome = flash_file(&workspace, &store, &image, &request, &mut seen).unwrap();
    assert_eq!(seen.confirmations, 1, "without force the observer confirms");
    let (records, untouched) = seen.at_start.expect("started");
    assert!(untouched, "recorded before anything was written");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, FlashStatus::InProgress);
    assert_eq!(records[0].finished_at, None);
    assert_eq!(records[0].image_bytes, Some(data.len() as u64));

    let record = outcome.record.expect("recorded");
    assert_eq!(record.id, 1);
    assert_eq!(record.status, FlashStatus::Succeeded);
    assert_eq!(record.bytes_written, data.len() as u64);
    assert_eq!(record.device_key, format!("node:{}", disk.display()));
    assert_eq!(record.image_sha256, outcome.source.sha256);
    let verification = record.verification.as_ref().expect("verified");
    assert!(verification.matched);
    assert_eq!(
        verification.digest.as_deref(),
        outcome
            .report
            .verification
            .as_ref()
            .map(|v| v.digest.as_str())
    );
    let reader = store.read().unwrap();
    assert_eq!(reader.flash(1).unwrap().as_ref(), Some(&record));
    let device = reader.device(&record.device_key).unwrap().expect("device");
    assert_eq!(device.last_status, FlashStatus::Succeeded);
    assert_eq!(
        device.image_sha256.as_deref(),
        Some(record.image_sha256.as_str())
    );
}

#[test]
fn force_skips_the_confirmation_and_a_refusal_records_nothing() {
    let scene = Scene::new();
    let (disk, image, _) = scene.disk_and_image();
    let workspace = scene.workspace();
    let store = workspace.store("test").unwrap();
    let mut refusing = Seen {
        refuse: true,
        disk: disk.clone(),
        ..Seen::default()
    };
    let error = flash_file(
        &workspace,
        &store,
        &image,
        &FlashRequest::new(&disk),
        &mut refusing,
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::FlashNotConfirmed);
    assert!(store.read().unwrap().flashes().unwrap().is_empty());
    assert!(std::fs::read(&disk).unwrap().iter().all(|b| *b == 0xee));
    let outcome = flash_file(&workspace, &store, &image, &forced(&disk), &mut refusing).unwrap();
    assert_eq!(refusing.confirmations, 1, "force does not ask");
    assert_eq!(
        outcome.record.map(|r| r.status),
        Some(FlashStatus::Succeeded)
    );
}

#[test]
fn a_mismatch_is_recorded_and_makes_the_device_suspect() {
    let scene = Scene::new();
    let (disk, image, data) = scene.disk_and_image();
    let workspace = scene.workspace();
    let store = workspace.store("test").unwrap();
    let mut seen = Seen {
        disk: disk.clone(),
        corrupt_at: Some(4 * MIB as u64 + 10),
        ..Seen::default()
    };
    let error = flash_file(&workspace, &store, &image, &forced(&disk), &mut seen).unwrap_err();
    assert_eq!(error.code, ErrorCode::FlashHashMismatch);
    assert_eq!(error.details["flash_id"], 1);
    assert_eq!(error.details["offset"], 4 * MIB);
    let reader = store.read().unwrap();
    let record = reader.flash(1).unwrap().expect("recorded");
    assert_eq!(record.status, FlashStatus::VerifyFailed);
    assert_eq!(record.bytes_written, data.len() as u64);
    let verification = record.verification.expect("read back");
    assert!(!verification.matched);
    assert_eq!(verification.mismatch_offset, Some(4 * MIB as u64));
    assert_eq!(verification.bytes, data.len() as u64);
    assert_eq!(
        record.error.map(|error| error.code),
        Some("flash_hash_mismatch".to_string())
    );
    let device = reader.device(&record.device_key).unwrap().expect("device");
    assert_eq!(device.suspect_since, Some(1));
    assert_eq!(device.image_sha256, None);
}

#[test]
fn an_interrupted_write_is_recorded_with_how_far_it_got() {
    let scene = Scene::new();
    let disk = scene.write("disk.bin", &vec![0xee; 48 * MIB]);
    // Ten blocks: the four buffers in flight make sure some are written before the last
    // one is read, so the cancellation lands mid-write.
    let image = scene.write("image.img", &vec![0x5a; 40 * MIB]);
    let workspace = scene.workspace();
    let store = workspace.store("test").unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut seen = Seen {
        disk: disk.clone(),
        cancel_after_first_block: Some(Arc::clone(&cancel)),
        ..Seen::default()
    };
    let request = FlashRequest {
        cancel: Some(cancel),
        ..forced(&disk)
    };
    let error = flash_file(&workspace, &store, &image, &request, &mut seen).unwrap_err();
    assert_eq!(error.code, ErrorCode::Interrupted);
    let record = store.read().unwrap().flash(1).unwrap().expect("recorded");
    assert_eq!(record.status, FlashStatus::Interrupted);
    assert!(
        record.bytes_written > 0 && record.bytes_written < 40 * MIB as u64,
        "{}",
        record.bytes_written
    );
    assert_eq!(record.verification, None);
}

#[test]
fn a_fleet_device_loses_its_pointer_while_flashed_and_gets_it_back_after() {
    let scene = Scene::new();
    let (disk, image, _) = scene.disk_and_image();
    scene.fleet();
    let workspace = scene.workspace();
    let store = workspace.store("test").unwrap();
    let old = crate::state::DevicePointer {
        artifact_sha256: "ab".repeat(32),
        flash_id: 0,
        flashed_at: 1,
    };
    let mut writer = store.write().unwrap();
    writer.set_device_pointer("lab", "sd-1", &old).unwrap();
    writer.commit().unwrap();
    let mut seen = Seen {
        store: Some(&store),
        disk: disk.clone(),
        ..Seen::default()
    };
    let outcome = flash_file(&workspace, &store, &image, &forced(&disk), &mut seen).unwrap();
    assert_eq!(
        seen.pointer_at_start,
        Some(None),
        "the old image is being destroyed"
    );
    assert_eq!(outcome.device_key, fleet_device_key("lab", "sd-1"));
    assert_eq!(outcome.fleet_device.as_deref(), Some("sd-1"));
    let record = outcome.record.expect("recorded");
    assert_eq!(record.fleet.as_deref(), Some("lab"));
    let pointer = store
        .read()
        .unwrap()
        .device_pointer("lab", "sd-1")
        .unwrap()
        .expect("pointer");
    assert_eq!(pointer.artifact_sha256, outcome.source.sha256);
    assert_eq!(pointer.flash_id, record.id);
}

#[test]
fn a_dry_run_records_nothing() {
    let scene = Scene::new();
    let (disk, image, data) = scene.disk_and_image();
    let workspace = scene.workspace();
    let source = FlashSource {
        path: image.clone(),
        sha256: String::new(),
        size: data.len() as u64,
        artifact: None,
    };
    let request = FlashRequest {
        dry_run: true,
        ..FlashRequest::new(&disk)
    };
    let mut seen = Seen::default();
    let outcome = run(&workspace, None, source, &request, &files(), &mut seen).unwrap();
    assert!(outcome.report.dry_run);
    assert_eq!(outcome.record, None);
    assert_eq!(seen.confirmations, 0);
    let store = workspace.store("test").unwrap();
    assert!(store.read().unwrap().flashes().unwrap().is_empty());
}

fn record(id: u64, key: &str, status: FlashStatus) -> FlashRecord {
    FlashRecord {
        id,
        device_key: key.to_string(),
        fleet: None,
        device_id: (key == "fleet:lab/sd-1").then(|| "sd-1".to_string()),
        device_path: PathBuf::from(format!("/dev/disk/by-id/{key}")),
        device_node: PathBuf::from(if key.ends_with('1') {
            "/dev/sdb"
        } else {
            "/dev/sdc"
        }),
        identity: crate::state::DeviceIdentity {
            model: None,
            serial: Some(format!("serial-{key}")),
            size: 1,
            transport: None,
        },
        image_path: PathBuf::from("/images/x.img"),
        image_sha256: "ab".repeat(32),
        image_format: "raw".into(),
        artifact: None,
        image_bytes: None,
        bytes_written: 0,
        wipe: false,
        verify_mode: "full".into(),
        verification: None,
        started_at: id as i64,
        finished_at: None,
        status,
        error: None,
    }
}

#[test]
fn the_listing_marks_unfinished_and_superseded_attempts_and_filters_by_device() {
    use FlashStatus::*;
    // Newest first, as the store returns them.
    let flashes = vec![
        record(5, "fleet:lab/sd-1", Succeeded),
        record(4, "other-2", InProgress),
        record(3, "fleet:lab/sd-1", Failed),
        record(2, "fleet:lab/sd-1", Succeeded),
        record(1, "fleet:lab/sd-1", InProgress),
    ];
    let all = listing(flashes.clone(), Vec::new(), &FlashFilter::default());
    let summary: Vec<(u64, bool, Option<u64>)> = all
        .flashes
        .iter()
        .map(|entry| (entry.record.id, entry.completed, entry.superseded_by))
        .collect();
    assert_eq!(
        summary,
        [
            (5, true, None),
            (4, false, None),
            (3, true, Some(5)),
            (2, true, Some(5)),
            (1, false, Some(2)),
        ]
    );
    for query in [
        "sd-1",
        "fleet:lab/sd-1",
        "/dev/sdb",
        "serial-fleet:lab/sd-1",
    ] {
        let filter = FlashFilter {
            device: Some(query.to_string()),
            limit: Some(2),
        };
        let ids: Vec<u64> = listing(flashes.clone(), Vec::new(), &filter)
            .flashes
            .iter()
            .map(|entry| entry.record.id)
            .collect();
        assert_eq!(ids, [5, 3], "{query}");
    }
}

#[test]
fn ended_records_say_how_the_flash_ended() {
    let started = record(7, "k", FlashStatus::InProgress);
    let error = Error::new(ErrorCode::DeviceError, "I/O error writing `/dev/sdb`");
    let ended = crate::flash::ended_record(started.clone(), &Err(error), VerifyMode::Full, 3, 99);
    assert_eq!(ended.status, FlashStatus::Failed);
    assert_eq!(ended.bytes_written, 3);
    assert_eq!(ended.finished_at, Some(99));
    assert_eq!(ended.verification, None);
    let error = ended.error.expect("error");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("device_error", "I/O error writing `/dev/sdb`")
    );
    let mismatch = Error::new(ErrorCode::FlashHashMismatch, "differs")
        .with_details(serde_json::json!({ "offset": 8_388_608 }));
    let prefix = VerifyMode::Prefix(4 * MIB as u64);
    let ended = crate::flash::ended_record(started, &Err(mismatch), prefix, 10 * MIB as u64, 99);
    assert_eq!(ended.status, FlashStatus::VerifyFailed);
    let verification = ended.verification.expect("verification");
    assert_eq!(
        verification.bytes,
        4 * MIB as u64,
        "only the prefix is compared"
    );
    assert_eq!(verification.mismatch_offset, Some(8_388_608));
}

#[test]
fn artifacts_are_named_by_prefix_or_profile_and_kind() {
    assert_eq!(
        "84F4A5c0".parse::<ArtifactSpec>().unwrap(),
        ArtifactSpec::Sha256Prefix("84f4a5c0".into())
    );
    assert_eq!(
        "lab.rpi4.sd:factory".parse::<ArtifactSpec>().unwrap(),
        ArtifactSpec::ProfileKind {
            profile_id: "lab.rpi4.sd".into(),
            kind: "factory".into()
        }
    );
    for bad in [
        "84f4a",
        "lab.rpi4.sd",
        ":factory",
        "gw:",
        "a:b:c",
        "zzzzzzzz",
    ] {
        let error = bad.parse::<ArtifactSpec>().unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation, "{bad}");
        assert_eq!(error.message, format!("`{bad}` names no artifact"));
    }
}

#[test]
fn several_images_of_a_kind_are_told_apart_by_the_filesystem_policy_or_refused() {
    let artifact = |name: &str, kind: &str, filesystem: &str| crate::state::ArtifactRef {
        sha256: format!("{:0<64}", name.len()),
        name: name.to_string(),
        kind: kind.to_string(),
        filesystem: Some(filesystem.to_string()),
        size: 1,
    };
    let built = [
        artifact("ext4-factory.img.gz", "factory", "ext4"),
        artifact("squashfs-factory.img.gz", "factory", "squashfs"),
        artifact("squashfs-sysupgrade.img.gz", "sysupgrade", "squashfs"),
    ];
    let select = crate::plan::choose_image;
    assert_eq!(
        select(&built, "sysupgrade", None).unwrap().name,
        "squashfs-sysupgrade.img.gz"
    );
    assert_eq!(
        select(&built, "factory", Some("ext4")).unwrap().name,
        "ext4-factory.img.gz"
    );
    let error = select(&built, "factory", None).unwrap_err();
    assert_eq!(error.code, ErrorCode::Validation);
    assert!(
        error
            .message
            .starts_with("the build has 2 `factory` images"),
        "{}",
        error.message
    );
    let error = select(&built, "factory", Some("jffs2")).unwrap_err();
    assert_eq!(error.code, ErrorCode::Validation);
    let error = select(&built, "combined", None).unwrap_err();
    assert_eq!(error.code, ErrorCode::ArtifactNotFound);
    assert_eq!(
        error.message,
        "the build has no `combined` image (it has: factory, sysupgrade)"
    );
}
