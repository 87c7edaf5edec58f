//! The state store against real redb files in temp dirs, and its cross-process lock against
//! real processes holding `flock(2)`.

use imagegen::triple::Triple;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use imagegen::ErrorCode;
use imagegen::state::{
    ArtifactRecord, ArtifactRef, BuildRecord, BuildStatus, BuilderRecord, BuilderStatus,
    DeviceIdentity, DevicePointer, DeviceRecord, FlashRecord, FlashStatus, FlashedArtifact,
    ProfilePointer, SCHEMA_VERSION, Store, VerifyResult,
};
use redb::{ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("META");

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested").join("state.redb")
}

fn builder() -> BuilderRecord {
    BuilderRecord {
        triple: Triple::new("23.05.4", "ath79", "generic"),
        archive: "openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz".into(),
        archive_sha256: "ab".repeat(32),
        url: "https://downloads.openwrt.org/releases/23.05.4/targets/ath79/generic/x.tar.xz".into(),
        key_id: Some("b5043e70f9a75cde".into()),
        version_code: Some("r24106-10cc5fcd00".into()),
        status: BuilderStatus::Ready,
        path: Some(PathBuf::from("/cache/builders/23.05.4/ath79/generic")),
        size: 123_456_789,
        first_used: 1_700_000_000,
        last_used: 1_700_000_100,
        error: None,
        tree_digest: Some("cd".repeat(32)),
    }
}

fn artifact_ref(sha: &str) -> ArtifactRef {
    ArtifactRef {
        sha256: sha.into(),
        name: "openwrt-23.05.4-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin".into(),
        kind: "sysupgrade".into(),
        filesystem: Some("squashfs".into()),
        size: 6_000_000,
    }
}

fn inputs() -> imagegen::key::BuildInputs {
    imagegen::key::BuildInputs {
        schema: imagegen::key::ACTION_SCHEMA_VERSION,
        builder: imagegen::key::BuilderPin {
            triple: Triple::new("23.05.4", "ath79", "generic"),
            archive_sha256: Some("ab".repeat(32)),
            version_code: None,
        },
        imagebuilder_profile: "tplink_archer-c7-v2".into(),
        packages: vec!["collectd".into()],
        packages_remove: vec!["ppp".into()],
        overlay: Default::default(),
        options: Default::default(),
        feeds: Vec::new(),
    }
}

fn build(key: &str, started_at: i64) -> BuildRecord {
    BuildRecord {
        key: key.into(),
        profile_id: "home.ap".into(),
        fleet: Some("home".into()),
        inputs: inputs(),
        status: BuildStatus::Succeeded,
        started_at,
        finished_at: started_at + 60,
        log_path: Some(PathBuf::from("/logs/build.log")),
        manifest_path: None,
        artifacts: vec![artifact_ref(&"cd".repeat(32))],
        error: None,
        applied_by: Vec::new(),
        kept_build_dir: None,
    }
}

fn artifact(sha: &str, builds: &[&str]) -> ArtifactRecord {
    ArtifactRecord {
        sha256: sha.into(),
        name: "image.bin".into(),
        kind: "sysupgrade".into(),
        filesystem: Some("squashfs".into()),
        size: 6_000_000,
        builds: builds.iter().map(|build| build.to_string()).collect(),
    }
}

fn flash(device: &str) -> FlashRecord {
    FlashRecord {
        id: 0,
        device_key: imagegen::state::fleet_device_key("home", device),
        fleet: Some("home".into()),
        device_id: Some(device.into()),
        device_path: PathBuf::from("/dev/disk/by-id/usb-Generic_STORAGE_DEVICE-0:0"),
        device_node: PathBuf::from("/dev/sdz"),
        identity: DeviceIdentity {
            model: Some("STORAGE DEVICE".into()),
            serial: None,
            size: 32_000_000_000,
            transport: Some("usb".into()),
        },
        image_path: PathBuf::from("/artifacts/blobs/sha256/cd/cdcd"),
        image_sha256: "cd".repeat(32),
        image_format: "gzip".into(),
        artifact: Some(FlashedArtifact {
            sha256: "cd".repeat(32),
            name: "openwrt-factory.img.gz".into(),
            kind: "factory".into(),
            build_key: Some("k1".into()),
            profile_id: Some("home.ap".into()),
        }),
        image_bytes: Some(6_000_000),
        bytes_written: 6_000_000,
        wipe: true,
        verify_mode: "full".into(),
        verification: Some(VerifyResult {
            bytes: 6_000_000,
            matched: true,
            digest: Some("ef".repeat(32)),
            mismatch_offset: None,
        }),
        started_at: 1_700_000_200,
        finished_at: Some(1_700_000_260),
        status: FlashStatus::Succeeded,
        error: None,
    }
}

#[test]
fn every_record_round_trips_through_a_reopened_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let profile = ProfilePointer {
        build_key: "k1".into(),
        applied_at: 1_700_000_300,
    };
    let device = DevicePointer {
        artifact_sha256: "cd".repeat(32),
        flash_id: 1,
        flashed_at: 1_700_000_260,
    };
    {
        let store = Store::open(&path, "imagegen test").unwrap();
        let mut writer = store.write().unwrap();
        writer.put_builder(&builder()).unwrap();
        writer.put_build(&build("k1", 10)).unwrap();
        writer
            .put_artifact(&artifact(&"cd".repeat(32), &["k1"]))
            .unwrap();
        assert_eq!(writer.add_flash(&flash("lab-sd-1")).unwrap(), 1);
        let flashed = FlashRecord {
            id: 1,
            ..flash("lab-sd-1")
        };
        writer
            .put_device(&DeviceRecord::after_flash(None, &flashed))
            .unwrap();
        writer
            .set_profile_pointer("home", "home.ap", &profile)
            .unwrap();
        writer
            .set_device_pointer("home", "lab-sd-1", &device)
            .unwrap();
        writer
            .put_file_hashes([("/fleet/files/etc/banner".to_string(), vec![1, 2, 3])])
            .unwrap();
        writer.commit().unwrap();
    }
    let store = Store::open(&path, "imagegen test").unwrap();
    let reader = store.read().unwrap();
    assert_eq!(
        reader
            .builder(&Triple::new("23.05.4", "ath79", "generic"))
            .unwrap(),
        Some(builder())
    );
    assert_eq!(reader.builders().unwrap(), [builder()]);
    assert_eq!(reader.build("k1").unwrap(), Some(build("k1", 10)));
    assert_eq!(
        reader.artifact(&"cd".repeat(32)).unwrap(),
        Some(artifact(&"cd".repeat(32), &["k1"]))
    );
    assert_eq!(
        reader.flash(1).unwrap(),
        Some(FlashRecord {
            id: 1,
            ..flash("lab-sd-1")
        })
    );
    let devices = reader.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].key, "fleet:home/lab-sd-1");
    assert_eq!(devices[0].last_status, FlashStatus::Succeeded);
    assert_eq!(devices[0].artifact_sha256, Some("cd".repeat(32)));
    assert_eq!(
        reader.device("fleet:home/lab-sd-1").unwrap().as_ref(),
        devices.first()
    );
    assert_eq!(
        reader.profile_pointer("home", "home.ap").unwrap(),
        Some(profile)
    );
    assert_eq!(
        reader.device_pointer("home", "lab-sd-1").unwrap(),
        Some(device)
    );
    assert_eq!(
        reader.file_hash("/fleet/files/etc/banner").unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(reader.build("missing").unwrap(), None);
    assert_eq!(
        reader
            .builder(&Triple::new("23.05.4", "ath79", "nand"))
            .unwrap(),
        None
    );
}

#[test]
fn lists_are_ordered_and_pointers_stay_in_their_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir), "imagegen test").unwrap();
    let mut writer = store.write().unwrap();
    for (key, started) in [("k-old", 1), ("k-new", 3), ("k-mid", 2)] {
        writer.put_build(&build(key, started)).unwrap();
    }
    assert_eq!(writer.add_flash(&flash("a")).unwrap(), 1);
    assert_eq!(writer.add_flash(&flash("b")).unwrap(), 2);
    let pointer = |key: &str| ProfilePointer {
        build_key: key.into(),
        applied_at: 0,
    };
    writer
        .set_profile_pointer("home", "p1", &pointer("k1"))
        .unwrap();
    writer
        .set_profile_pointer("home", "p2", &pointer("k2"))
        .unwrap();
    writer
        .set_profile_pointer("hom", "p3", &pointer("k3"))
        .unwrap();
    writer
        .set_profile_pointer("home2", "p4", &pointer("k4"))
        .unwrap();
    writer.commit().unwrap();

    let reader = store.read().unwrap();
    let keys: Vec<String> = reader
        .builds()
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(keys, ["k-new", "k-mid", "k-old"]);
    let flashes: Vec<u64> = reader
        .flashes()
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(flashes, [2, 1]);
    let home = reader.profile_pointers("home").unwrap();
    assert_eq!(home.keys().collect::<Vec<_>>(), ["p1", "p2"]);
    assert_eq!(home["p2"].build_key, "k2");
    assert!(reader.profile_pointers("nobody").unwrap().is_empty());
}

#[test]
fn artifacts_merge_the_builds_that_produced_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir), "imagegen test").unwrap();
    let sha = "ef".repeat(32);
    let mut writer = store.write().unwrap();
    writer.put_artifact(&artifact(&sha, &["k1", "k2"])).unwrap();
    let stored = writer.put_artifact(&artifact(&sha, &["k2", "k3"])).unwrap();
    writer.commit().unwrap();
    assert_eq!(stored.builds, ["k1", "k2", "k3"]);
    assert_eq!(store.read().unwrap().artifact(&sha).unwrap(), Some(stored));
}

#[test]
fn removals_and_file_hash_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir), "imagegen test").unwrap();
    let mut writer = store.write().unwrap();
    writer.put_build(&build("k1", 1)).unwrap();
    writer
        .put_file_hashes([
            ("/f/a/x".to_string(), vec![1]),
            ("/f/a/y".to_string(), vec![2]),
            ("/f/ab".to_string(), vec![3]),
            ("/f/b".to_string(), vec![4]),
        ])
        .unwrap();
    writer.commit().unwrap();

    let mut writer = store.write().unwrap();
    assert!(writer.remove_build("k1").unwrap());
    assert!(!writer.remove_build("k1").unwrap());
    assert_eq!(writer.remove_file_hashes(["/f/b", "/f/none"]).unwrap(), 1);
    writer.commit().unwrap();

    let reader = store.read().unwrap();
    assert_eq!(reader.build("k1").unwrap(), None);
    let under_a = reader.file_hashes_with_prefix("/f/a/").unwrap();
    assert_eq!(under_a.keys().collect::<Vec<_>>(), ["/f/a/x", "/f/a/y"]);
    assert_eq!(reader.file_hash("/f/b").unwrap(), None);
}

#[test]
fn a_dropped_writer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db_in(&dir), "imagegen test").unwrap();
    {
        let mut writer = store.write().unwrap();
        writer.put_build(&build("k1", 1)).unwrap();
    }
    assert_eq!(store.read().unwrap().build("k1").unwrap(), None);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(Store::open(&path, "imagegen test").unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let error = Store::open(&path, "imagegen test").unwrap_err();
    assert_eq!(error.code, ErrorCode::Precondition);
    assert_eq!(
        error.message,
        format!(
            "state `{}` was written by a newer imagegen (schema {}); this imagegen understands schema {SCHEMA_VERSION}",
            path.display(),
            SCHEMA_VERSION + 1
        )
    );
    assert_eq!(
        error.help.as_deref(),
        Some("upgrade imagegen, or point OWRT_IMG_DB_URL at another database")
    );
    // Refusing must not have rewritten the version.
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let stored = txn
        .open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .map(|v| v.value());
    assert_eq!(stored, Some(SCHEMA_VERSION + 1));
}

fn stored_schema(path: &Path) -> Option<u64> {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .map(|v| v.value())
}

/// A database written by imagegen at e07c245 (schema 1, tests/data/README.md) is upgraded in
/// place: every record is still there, build inputs are typed, builds list who applied them,
/// and opening again is a no-op.
#[test]
fn a_schema_1_database_from_the_first_release_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-schema1.redb");
    std::fs::copy(&fixture, &path).unwrap();
    assert_eq!(stored_schema(&path), Some(1));
    for _ in 0..2 {
        let store = Store::open(&path, "imagegen test").unwrap();
        let reader = store.read().unwrap();
        let builds = reader.builds().unwrap();
        assert_eq!(builds.len(), 5);
        assert!(
            builds
                .iter()
                .all(|build| build.status == BuildStatus::Succeeded
                    && build.inputs.builder.archive_sha256.is_some()
                    && build.inputs.schema == 1)
        );
        let profiles: Vec<&str> = builds
            .iter()
            .map(|build| build.profile_id.as_str())
            .collect();
        assert!(
            profiles.contains(&"home.ap-livingroom.23.05"),
            "{profiles:?}"
        );
        assert_eq!(reader.builders().unwrap().len(), 5);
        let pointers = reader.profile_pointers("home").unwrap();
        assert_eq!(pointers.len(), 5);
        // Schema 3: every build knows who applied it, from the pointers that name it.
        for (profile, pointer) in &pointers {
            let build = reader
                .build(&pointer.build_key)
                .unwrap()
                .expect("pointed build");
            assert!(
                build
                    .applied_by
                    .iter()
                    .any(|entry| entry.fleet == "home" && &entry.profile_id == profile),
                "{profile}: {:?}",
                build.applied_by
            );
        }
        let artifacts = reader.artifacts().unwrap();
        assert!(
            builds
                .iter()
                .flat_map(|build| &build.artifacts)
                .all(|artifact| artifacts
                    .iter()
                    .any(|record| record.sha256 == artifact.sha256))
        );
        assert!(reader.flashes().unwrap().is_empty());
        assert!(reader.devices().unwrap().is_empty());
        drop(reader);
        drop(store);
        assert_eq!(stored_schema(&path), Some(SCHEMA_VERSION));
    }
}

/// A database written by imagegen at 5ac87e8 (schema 2, tests/data/README.md) holding two
/// flash records of the old shape is upgraded in place: builds and pointers survive, the
/// flashes get their typed shape, and each flashed device its record (the one whose
/// read-back failed is suspect).
#[test]
fn a_schema_2_database_with_flash_records_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-schema2.redb");
    std::fs::copy(&fixture, &path).unwrap();
    assert_eq!(stored_schema(&path), Some(2));
    for _ in 0..2 {
        let store = Store::open(&path, "imagegen test").unwrap();
        let reader = store.read().unwrap();
        assert_eq!(reader.builds().unwrap().len(), 5);
        assert_eq!(reader.profile_pointers("home").unwrap().len(), 5);
        let factory = "84f4a5c0a175412be9297ed343b6b1cdc75e19e584e616e140d7228fa2a2a0e8";
        let pointer = reader.device_pointer("home", "lab-sd-1").unwrap();
        assert_eq!(pointer.map(|p| p.artifact_sha256).as_deref(), Some(factory));

        let flashes = reader.flashes().unwrap();
        let ids: Vec<u64> = flashes.iter().map(|flash| flash.id).collect();
        assert_eq!(ids, [2, 1]);
        let first = &flashes[1];
        assert_eq!(first.device_key, "fleet:home/lab-sd-1");
        assert_eq!(first.fleet.as_deref(), Some("home"));
        assert_eq!(first.status, FlashStatus::Succeeded);
        assert_eq!(first.finished_at, Some(1_764_500_042));
        assert_eq!(first.image_sha256, factory);
        let artifact = first.artifact.as_ref().expect("artifact");
        assert_eq!(
            (artifact.sha256.as_str(), artifact.kind.as_str()),
            (factory, "factory")
        );
        assert!(
            artifact.name.ends_with("factory.img.gz"),
            "{}",
            artifact.name
        );
        assert!(artifact.build_key.is_some());
        assert_eq!(first.verification.as_ref().map(|v| v.matched), Some(true));
        let second = &flashes[0];
        assert_eq!(second.device_key, "node:/dev/sdc");
        assert_eq!(second.status, FlashStatus::VerifyFailed);
        let error = second.error.as_ref().expect("error");
        assert_eq!(error.code, "flash_hash_mismatch");
        assert_eq!(error.message, "read-back mismatch (mismatch at 4194304)");

        let devices = reader.devices().unwrap();
        let keys: Vec<&str> = devices.iter().map(|device| device.key.as_str()).collect();
        assert_eq!(keys, ["fleet:home/lab-sd-1", "node:/dev/sdc"]);
        assert_eq!(devices[0].suspect_since, None);
        assert_eq!(devices[0].artifact_sha256.as_deref(), Some(factory));
        assert_eq!(devices[1].suspect_since, Some(2));
        assert_eq!(devices[1].image_sha256, None);
        drop(reader);
        drop(store);
        assert_eq!(stored_schema(&path), Some(SCHEMA_VERSION));
    }
}

/// An old flash record that does not decode is dropped; the others are upgraded.
#[test]
fn the_upgrade_drops_flash_records_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-schema2.redb");
    std::fs::copy(&fixture, &path).unwrap();
    {
        const FLASHES: TableDefinition<u64, &[u8]> = TableDefinition::new("FLASH_ID_TO_FLASH");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(FLASHES)
            .unwrap()
            .insert(7, br#"{"id": 7, "status": 3}"#.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path, "imagegen test").unwrap();
    let reader = store.read().unwrap();
    let ids: Vec<u64> = reader.flashes().unwrap().iter().map(|f| f.id).collect();
    assert_eq!(ids, [2, 1]);
    assert_eq!(reader.devices().unwrap().len(), 2);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(&path, "this is not a database\n".repeat(100)).unwrap();
    let error = Store::open(&path, "imagegen test").unwrap_err();
    assert_eq!(error.code, ErrorCode::Precondition, "{error:?}");
    assert!(
        error.message.starts_with(&format!(
            "state `{}` is not a redb database",
            path.display()
        )),
        "{}",
        error.message
    );
}

#[test]
fn a_foreign_redb_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let table: TableDefinition<&str, &str> = TableDefinition::new("users");
        txn.open_table(table)
            .unwrap()
            .insert("alice", "admin")
            .unwrap();
        txn.commit().unwrap();
    }
    let error = Store::open(&path, "imagegen test").unwrap_err();
    assert_eq!(error.code, ErrorCode::Precondition);
    assert!(
        error.message.contains("not one imagegen wrote"),
        "{}",
        error.message
    );
}

#[test]
fn a_corrupt_record_names_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(Store::open(&path, "imagegen test").unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let builds: TableDefinition<&str, &[u8]> = TableDefinition::new("BUILD_KEY_TO_BUILD");
        txn.open_table(builds)
            .unwrap()
            .insert("k1", b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path, "imagegen test").unwrap();
    let error = store.read().unwrap().build("k1").unwrap_err();
    assert_eq!(error.code, ErrorCode::InternalError);
    assert!(
        error
            .message
            .starts_with("state table `BUILD_KEY_TO_BUILD`, key \"k1\": cannot decode record"),
        "{}",
        error.message
    );
    assert!(store.read().unwrap().builds().is_err());
}

#[test]
fn a_second_open_in_the_same_process_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let first = Store::open(&path, "imagegen apply").unwrap();
    let error = Store::open(&path, "imagegen plan").unwrap_err();
    assert_eq!(error.code, ErrorCode::StateLocked);
    let expected = format!(
        "state `{}` is locked by another imagegen process (pid {}, `imagegen apply`, since ",
        path.display(),
        std::process::id()
    );
    assert!(error.message.starts_with(&expected), "{}", error.message);
    assert_eq!(error.details["holder"]["command"], "imagegen apply");
    drop(first);
    Store::open(&path, "imagegen plan").unwrap();
}

/// A shell holding `flock(2)` on the lock file, as util-linux `flock` does; it releases the
/// lock when its stdin closes or it is killed.
fn hold_lock_in_child(db: &Path) -> Child {
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 9>>"$1"; flock -x 9; echo ready; read _"#)
        .arg("sh")
        .arg(&lock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

#[test]
fn a_lock_held_by_another_process_is_respected_and_freed_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut child = hold_lock_in_child(&path);
    let error = Store::open(&path, "imagegen apply").unwrap_err();
    assert_eq!(error.code, ErrorCode::StateLocked);
    assert_eq!(
        error.message,
        format!(
            "state `{}` is locked by another imagegen process",
            path.display()
        )
    );
    let error = Store::open_wait(&path, "imagegen apply", Duration::from_millis(200)).unwrap_err();
    assert_eq!(error.code, ErrorCode::StateLocked);
    child.kill().unwrap();
    child.wait().unwrap();
    Store::open(&path, "imagegen apply").unwrap();
}

#[test]
fn open_wait_succeeds_once_the_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut child = hold_lock_in_child(&path);
    let waiter = {
        let path = path.clone();
        std::thread::spawn(move || {
            Store::open_wait(&path, "imagegen apply", Duration::from_secs(60))
        })
    };
    // Give the waiter a chance to find the lock held; the test passes either way.
    std::thread::sleep(Duration::from_millis(300));
    drop(child.stdin.take());
    child.wait().unwrap();
    let store = waiter.join().unwrap().unwrap();
    assert_eq!(store.path(), path);
}

#[test]
fn a_damaged_database_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    {
        let store = Store::open(&path, "imagegen test").unwrap();
        let mut writer = store.write().unwrap();
        for index in 0..200 {
            writer
                .put_build(&build(&format!("k{index}"), index))
                .unwrap();
        }
        writer.commit().unwrap();
    }
    let original = std::fs::read(&path).unwrap();
    let mut damaged_copies = Vec::new();
    for keep in [0, 100, 512, 4096, original.len() / 2, original.len() - 1] {
        damaged_copies.push(original[..keep].to_vec());
    }
    for offset in (0..original.len()).step_by(original.len() / 48) {
        let mut copy = original.clone();
        for byte in &mut copy[offset..(offset + 64).min(original.len())] {
            *byte ^= 0x5a;
        }
        damaged_copies.push(copy);
    }
    for (index, bytes) in damaged_copies.into_iter().enumerate() {
        let path = dir.path().join(format!("damaged-{index}.redb"));
        std::fs::write(&path, bytes).unwrap();
        // Either a clean error or a database that reads, writes and closes: no panic.
        let outcome = std::panic::catch_unwind(|| {
            let store = Store::open(&path, "imagegen test")?;
            store.read()?.builds()?;
            let mut writer = store.write()?;
            writer.put_build(&build("new", 1))?;
            writer.commit()
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("panicked on damaged copy {index}"));
        if let Err(error) = outcome {
            let clean = [ErrorCode::Precondition, ErrorCode::InternalError];
            assert!(clean.contains(&error.code), "{error:?}");
        }
    }
}

/// A schema-1 build record whose free-form inputs are not `BuildInputs` cannot be reused
/// safely: the upgrade drops it (the next plan rebuilds that profile) and keeps the rest.
#[test]
fn the_upgrade_drops_build_records_whose_inputs_cannot_be_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-schema1.redb");
    std::fs::copy(&fixture, &path).unwrap();
    {
        const BUILDS: TableDefinition<&str, &[u8]> = TableDefinition::new("BUILD_KEY_TO_BUILD");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let record = serde_json::json!({
            "key": "ff".repeat(32), "profile_id": "old", "fleet": "home",
            "inputs": {"packages": ["x"]}, "status": "succeeded", "started_at": 1,
            "finished_at": 2, "log_path": null, "manifest_path": null, "artifacts": [], "error": null
        });
        let bytes = serde_json::to_vec(&record).unwrap();
        txn.open_table(BUILDS)
            .unwrap()
            .insert("ff".repeat(32).as_str(), bytes.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path, "imagegen test").unwrap();
    let builds = store.read().unwrap().builds().unwrap();
    assert_eq!(builds.len(), 5);
    assert!(builds.iter().all(|build| build.profile_id != "old"));
}
