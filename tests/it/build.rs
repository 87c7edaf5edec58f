//! Isolated Image Builder runs with real `make`: a small fixture Image Builder whose
//! `image` target behaves like the real one where it matters to the runner (writes into
//! BIN_DIR, build_dir/, tmp/, rewrites `packages/Packages` in place with `>`, reports
//! unknown profiles and packages with the real texts), built in worker slots.

use imagegen::triple::Triple;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imagegen::ErrorCode;
use imagegen::build::{
    BuildOutput, BuildRequest, SandboxMode, SlotMethod, prepare_slot, run_build,
};
use imagegen::cas::Cas;
use imagegen::key::{BuildInputs, BuilderPin, ImageOptions, OverlayInputs};
use sha2::{Digest, Sha256};

const MAKEFILE: &str = r##"# Fixture Image Builder: the command-line surface of the real `make image`, tiny outputs.
include .config
include .profiles.mk

KDIR := build_dir/target-test/linux-test_sub
TARGET_DIR := build_dir/target-test/root-test
BIN_DIR ?= $(CURDIR)/bin/targets/test/sub
ifeq ($(CONFIG_TARGET_ROOTFS_EXT4FS),y)
FS := ext4
else
FS := squashfs
endif
PREFIX := openwrt-fixture$(if $(EXTRA_IMAGE_NAME),-$(EXTRA_IMAGE_NAME))-test-sub
DEVICE := $(patsubst DEVICE_%,%,$(PROFILE))
IMAGE := $(PREFIX)-$(DEVICE)-$(FS)-sysupgrade.bin

image:
>@if [ -z "$(filter DEVICE_$(DEVICE),$(PROFILE_NAMES))" ]; then echo 'Profile "$(PROFILE)" does not exist!'; echo 'Use "make info" to get a list of available profile names.'; exit 1; fi
>echo "Building images for test - $(DEVICE)"
>mkdir -p tmp dl $(TARGET_DIR) $(KDIR)/tmp $(BIN_DIR)
>printf 'PROFILE_NAMES = DEVICE_alpha DEVICE_beta\n# regenerated\n' > .profiles.mk
>{ printf 'Package: %s\n' base-files busybox dropbear luci collectd; echo "# reindexed by $$$$"; } > packages/Packages
>@for p in $(PACKAGES); do case $$p in -*) continue;; esac; grep -qx "Package: $$p" packages/Packages || { echo "Collected errors:" >&2; echo " * opkg_install_cmd: Cannot install package $$p." >&2; exit 1; }; done
>echo "$(DEVICE)" > tmp/build-$(DEVICE).txt
>if [ "$(ADD_LOCAL_KEY)" = 1 ]; then test -f key-build || echo secret > key-build; fi
>for s in $(DISABLED_SERVICES); do echo "Disabling $$s"; done
>if [ -d "$(FILES)" ]; then cp -fpR "$(FILES)/." $(TARGET_DIR)/; fi
>if [ -f $(TARGET_DIR)/hazard ]; then echo '# written through a hardlink' >> include/readonly.mk; fi
>if [ -f $(TARGET_DIR)/sleep ]; then sleep 1000 & echo "$$! $$(cut -d' ' -f5 /proc/$$$$/stat)" > $(CURDIR)/sleeper.pid; wait; fi
>tar -C $(TARGET_DIR) -cf $(KDIR)/root.$(FS) .
>cat $(KDIR)/vmlinux $(KDIR)/root.$(FS) > $(KDIR)/tmp/$(IMAGE)
>@if [ -f $(TARGET_DIR)/toobig ]; then echo "    WARNING: Image file $(KDIR)/tmp/$(IMAGE) is too big: 2 > 1" >&2; else cp $(KDIR)/tmp/$(IMAGE) $(BIN_DIR)/$(IMAGE); fi
>cp $(KDIR)/vmlinux $(BIN_DIR)/$(PREFIX)-$(DEVICE)-kernel.bin
>for p in $(PACKAGES); do echo "$$p - 1.0"; done > $(BIN_DIR)/$(PREFIX)-$(DEVICE).manifest
>if [ -f $(BIN_DIR)/$(IMAGE) ]; then sum=$$(sha256sum $(BIN_DIR)/$(IMAGE) | cut -d' ' -f1); printf '{"metadata_version":1,"target":"test/sub","version_code":"r1-fixture","profiles":{"%s":{"images":[{"name":"%s","type":"sysupgrade","filesystem":"%s","sha256":"%s"}]}}}' $(DEVICE) $(IMAGE) $(FS) $$sum > $(BIN_DIR)/profiles.json; else printf '{"metadata_version":1,"version_code":"r1-fixture","profiles":{}}' > $(BIN_DIR)/profiles.json; fi
>cd $(BIN_DIR) && sha256sum * | sed 's/  / */' > sha256sums
"##;

const CONFIG: &str = "CONFIG_TARGET_test=y\n\
CONFIG_TARGET_BOARD=\"test\"\n\
CONFIG_TARGET_ROOTFS_SQUASHFS=y\n\
# CONFIG_TARGET_ROOTFS_EXT4FS is not set\n\
CONFIG_TARGET_ROOTFS_TARGZ=y\n";

const PRISTINE_INDEX: &str = "Package: base-files\nPackage: busybox\nPackage: dropbear\nPackage: luci\nPackage: collectd\n# pristine index\n";

/// Writes the fixture Image Builder into `root`.
fn write_fixture(root: &Path) {
    let files: &[(&str, &str)] = &[
        ("Makefile", &MAKEFILE.replace("\n>", "\n\t")),
        (".config", CONFIG),
        (".profiles.mk", "PROFILE_NAMES = DEVICE_alpha DEVICE_beta\n"),
        (".targetinfo", "Target: test\n"),
        (".imagegen-complete", "sha256=fixture\n"),
        ("repositories.conf", "src imagebuilder file:packages\n"),
        ("include/readonly.mk", "# read by make, never written\n"),
        ("include/version.mk", "REVISION:=r1-fixture\n"),
        ("packages/Packages", PRISTINE_INDEX),
        ("packages/base-files_1.0_all.ipk", "ipk bytes"),
        (
            "keys/b5043e70f9a75cde",
            "untrusted comment: test key\nRWS...\n",
        ),
        (
            "build_dir/target-test/linux-test_sub/vmlinux",
            "KERNEL-BYTES\n",
        ),
        (
            "build_dir/target-test/linux-test_sub/linux-6.6/.config",
            "CONFIG_X=y\n",
        ),
        ("staging_dir/host/bin/mkhash", "#!/bin/sh\necho tool\n"),
        ("target/linux/test/image/Makefile", "# image recipes\n"),
    ];
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
    }
    fs::set_permissions(
        root.join("staging_dir/host/bin/mkhash"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("mkhash", root.join("staging_dir/host/bin/mkhash-link")).unwrap();
    std::os::unix::fs::symlink("../include", root.join("target/include-link")).unwrap();
}

/// A digest of everything a build could change in a tree: paths, types, modes, sizes,
/// mtimes, contents and link targets (not ctimes: hardlinking moves those).
pub(crate) fn tree_digest(root: &Path) -> String {
    hex::encode(Sha256::digest(format!("{:?}", tree_entries(root))))
}

fn tree_entries(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|name| name == ".imagegen-slot")
            {
                continue;
            }
            let metadata = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let mut line = format!(
                "{:o} {} {}.{}",
                metadata.mode(),
                metadata.size(),
                metadata.mtime(),
                metadata.mtime_nsec()
            );
            if metadata.file_type().is_symlink() {
                line += &format!(" -> {}", fs::read_link(&path).unwrap().display());
            } else if metadata.is_file() {
                line += &format!(" {}", hex::encode(Sha256::digest(fs::read(&path).unwrap())));
            } else if metadata.is_dir() {
                walk(&path, root, out);
            }
            out.insert(relative, line);
        }
    }
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries);
    entries
}

fn inputs(profile: &str, packages: &[&str], options: ImageOptions) -> BuildInputs {
    BuildInputs {
        schema: 1,
        builder: BuilderPin {
            triple: Triple::new("23.05.4", "test", "sub"),
            archive_sha256: Some("ab".repeat(32)),
            version_code: Some("r1-fixture".into()),
        },
        imagebuilder_profile: profile.into(),
        packages: packages.iter().map(|name| name.to_string()).collect(),
        packages_remove: vec!["dropbear".into()],
        overlay: OverlayInputs::default(),
        options,
        feeds: Vec::new(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    pristine: PathBuf,
    sandbox: SandboxMode,
}

impl Fixture {
    /// Builds run as in production: sandboxed where the sandbox works.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pristine = dir.path().join("openwrt-imagebuilder-fixture");
        write_fixture(&pristine);
        Fixture {
            dir,
            pristine,
            sandbox: SandboxMode::Auto,
        }
    }

    /// Builds run without the sandbox: for what the sandbox would hide or prevent (writes
    /// through shared files, process ids of the host's PID namespace).
    fn unsandboxed() -> Fixture {
        Fixture {
            sandbox: SandboxMode::None,
            ..Fixture::new()
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An overlay directory holding the given marker files.
    fn overlay(&self, name: &str, markers: &[&str]) -> PathBuf {
        let overlay = self.path(name);
        fs::create_dir_all(overlay.join("etc")).unwrap();
        fs::write(overlay.join("etc/banner"), "fleet banner\n").unwrap();
        for marker in markers {
            fs::write(overlay.join(marker), "").unwrap();
        }
        overlay
    }
}

/// Runs one build; output and log go to fresh paths named after `tag`.
#[allow(clippy::too_many_arguments)]
fn build(
    fixture: &Fixture,
    slot: &Path,
    inputs: &BuildInputs,
    files: Option<&Path>,
    provenance: Option<&serde_json::Value>,
    tag: &str,
    timeout: Duration,
    cancel: &AtomicBool,
) -> imagegen::Result<BuildOutput> {
    let output_dir = fixture.path(&format!("out-{tag}"));
    let log_path = fixture.path(&format!("logs/{tag}.log"));
    run_build(&BuildRequest {
        inputs,
        build_key: tag,
        slot_dir: slot,
        files_dir: files,
        provenance,
        output_dir: &output_dir,
        log_path: &log_path,
        timeout,
        cancel,
        sandbox: fixture.sandbox,
        feeds: None,
    })
}

fn quick(
    fixture: &Fixture,
    slot: &Path,
    inputs: &BuildInputs,
    files: Option<&Path>,
    tag: &str,
) -> imagegen::Result<BuildOutput> {
    build(
        fixture,
        slot,
        inputs,
        files,
        None,
        tag,
        Duration::from_secs(120),
        &AtomicBool::new(false),
    )
}

#[test]
fn parallel_builds_in_two_slots_leave_the_pristine_untouched() {
    let fixture = Fixture::new();
    let before = tree_digest(&fixture.pristine);
    let overlay = fixture.overlay("overlay", &[]);
    let alpha = inputs("alpha", &["luci"], ImageOptions::default());
    let beta = inputs(
        "DEVICE_beta",
        &["collectd"],
        ImageOptions {
            filesystem: Some("ext4".into()),
            extra_image_name: Some("fleet".into()),
            ..ImageOptions::default()
        },
    );
    let provenance = serde_json::json!({ "profile_id": "lab.beta", "build_key": "k-beta" });
    let slots = [fixture.path("slots/0"), fixture.path("slots/1")];
    for round in 0..3 {
        for slot in &slots {
            let report = prepare_slot(&fixture.pristine, slot).unwrap();
            assert_eq!(report.method, SlotMethod::Hardlink);
            assert_eq!(report.reused, round > 0);
        }
        let cancel = AtomicBool::new(false);
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                build(
                    &fixture,
                    &slots[0],
                    &alpha,
                    Some(&overlay),
                    None,
                    &format!("a{round}"),
                    Duration::from_secs(120),
                    &cancel,
                )
            });
            let b = scope.spawn(|| {
                build(
                    &fixture,
                    &slots[1],
                    &beta,
                    Some(&overlay),
                    Some(&provenance),
                    &format!("b{round}"),
                    Duration::from_secs(120),
                    &cancel,
                )
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        let kinds = |output: &BuildOutput| -> Vec<(String, Option<String>)> {
            output
                .artifacts
                .iter()
                .map(|a| (a.kind.clone(), a.filesystem.clone()))
                .collect()
        };
        assert_eq!(
            kinds(&a),
            [
                ("kernel".into(), None),
                ("sysupgrade".into(), Some("squashfs".into())),
                ("manifest".into(), None),
                ("metadata".into(), None),
                ("metadata".into(), None),
            ]
        );
        assert!(kinds(&b).contains(&("sysupgrade".into(), Some("ext4".into()))));
        for artifact in a.artifacts.iter().chain(&b.artifacts) {
            let bytes = fs::read(&artifact.path).unwrap();
            assert_eq!(artifact.sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(artifact.size, bytes.len() as u64);
        }
        let image = b.artifacts.iter().find(|a| a.kind == "sysupgrade").unwrap();
        assert_eq!(
            image.name,
            "openwrt-fixture-fleet-test-sub-beta-ext4-sysupgrade.bin"
        );
        let image_bytes = fs::read(&image.path).unwrap();
        let contains = |needle: &[u8]| image_bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            contains(b"etc/imagegen/build.json")
                && contains(b"k-beta")
                && contains(b"fleet banner")
        );
        assert_eq!(
            fs::read_dir(&overlay).unwrap().count(),
            1,
            "the staged overlay is only read"
        );
        assert_eq!(tree_digest(&fixture.pristine), before, "round {round}");
    }
}

#[test]
fn a_reused_slot_is_reset_to_the_pristine_state() {
    let fixture = Fixture::new();
    let slot = fixture.path("slot");
    let pristine_before = tree_digest(&fixture.pristine);
    prepare_slot(&fixture.pristine, &slot).unwrap();
    let options = ImageOptions {
        filesystem: Some("ext4".into()),
        add_local_key: true,
        ..ImageOptions::default()
    };
    quick(
        &fixture,
        &slot,
        &inputs("alpha", &["luci"], options),
        None,
        "first",
    )
    .unwrap();
    assert!(slot.join("key-build").is_file());
    assert!(slot.join("tmp/build-alpha.txt").is_file());
    assert!(
        fs::read_to_string(slot.join("packages/Packages"))
            .unwrap()
            .contains("reindexed")
    );
    assert!(
        fs::read_to_string(slot.join(".config"))
            .unwrap()
            .contains("CONFIG_TARGET_ROOTFS_EXT4FS=y")
    );

    let again = quick(
        &fixture,
        &slot,
        &inputs("alpha", &[], ImageOptions::default()),
        None,
        "unprepared",
    );
    assert_eq!(again.unwrap_err().code, ErrorCode::Precondition);

    let report = prepare_slot(&fixture.pristine, &slot).unwrap();
    assert!(report.reused);
    assert!(report.removed > 0 && report.kept > 0);
    for gone in [
        "key-build",
        "tmp",
        "dl",
        "build_dir/target-test/root-test",
        "build_dir/target-test/linux-test_sub/tmp",
    ] {
        assert!(
            fs::symlink_metadata(slot.join(gone)).is_err(),
            "{gone} survived the reset"
        );
    }
    for restored in ["packages/Packages", ".config", ".profiles.mk"] {
        assert_eq!(
            fs::read(slot.join(restored)).unwrap(),
            fs::read(fixture.pristine.join(restored)).unwrap(),
            "{restored}"
        );
    }
    let shared = fs::metadata(slot.join("include/version.mk")).unwrap();
    assert_eq!(
        shared.ino(),
        fs::metadata(fixture.pristine.join("include/version.mk"))
            .unwrap()
            .ino()
    );
    let copied = fs::metadata(slot.join("packages/Packages")).unwrap();
    assert_ne!(
        copied.ino(),
        fs::metadata(fixture.pristine.join("packages/Packages"))
            .unwrap()
            .ino()
    );

    assert_eq!(tree_entries(&slot), tree_entries(&fixture.pristine));

    // Whatever a build does to shared, copied, linked and directory entries is undone.
    fs::remove_file(slot.join("include/version.mk")).unwrap();
    fs::write(slot.join("Makefile.new"), "replaced").unwrap();
    fs::rename(slot.join("Makefile.new"), slot.join("Makefile")).unwrap();
    fs::remove_file(slot.join("staging_dir/host/bin/mkhash-link")).unwrap();
    fs::write(slot.join("staging_dir/host/bin/mkhash-link"), "not a link").unwrap();
    fs::remove_dir_all(slot.join("target/linux")).unwrap();
    fs::write(slot.join("target/linux"), "a file where a directory was").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(slot.join("keys/b5043e70f9a75cde"))
        .unwrap();
    fs::write(slot.join("keys/b5043e70f9a75cde"), "rewritten in place").unwrap();
    fs::set_permissions(slot.join("include"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::create_dir_all(slot.join("build_dir/target-test/linux-test_sub/tmp/deep")).unwrap();
    fs::write(
        slot.join("build_dir/target-test/linux-test_sub/root.squashfs"),
        "fs",
    )
    .unwrap();
    prepare_slot(&fixture.pristine, &slot).unwrap();
    assert_eq!(tree_entries(&slot), tree_entries(&fixture.pristine));
    assert_eq!(tree_digest(&fixture.pristine), pristine_before);

    // A reset of an untouched slot changes nothing.
    let idle = prepare_slot(&fixture.pristine, &slot).unwrap();
    assert_eq!((idle.removed, idle.shared, idle.copied), (0, 0, 0));
    quick(
        &fixture,
        &slot,
        &inputs("alpha", &["luci"], ImageOptions::default()),
        None,
        "second",
    )
    .unwrap();
}

/// Unsandboxed: as root the sandbox's build user cannot write shared files at all (that case
/// is in `sandbox.rs`); here the detection itself is under test.
#[test]
fn a_write_through_a_shared_file_is_detected() {
    let fixture = Fixture::unsandboxed();
    let slot = fixture.path("slot");
    prepare_slot(&fixture.pristine, &slot).unwrap();
    let overlay = fixture.overlay("overlay", &["hazard"]);
    let error = quick(
        &fixture,
        &slot,
        &inputs("alpha", &[], ImageOptions::default()),
        Some(&overlay),
        "hazard",
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::ImagebuilderError);
    assert_eq!(
        error.message,
        "a build wrote into the pristine Image Builder through a shared file: `include/readonly.mk`"
    );
    // The damage is also noticed by the next reset, so the slot is not silently reused.
    let error = prepare_slot(&fixture.pristine, &slot).unwrap_err();
    assert_eq!(error.code, ErrorCode::ImagebuilderError);
}

/// Live (non-zombie) processes in a process group.
fn live_members(group: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == group.to_string() && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

/// Waits (bounded) until the fixture wrote its sleeper's pid and group.
fn sleeper(slot: &Path) -> Option<(i32, i32)> {
    let text = fs::read_to_string(slot.join("sleeper.pid")).ok()?;
    let mut numbers = text.split_whitespace().map(|n| n.parse::<i32>());
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

fn assert_group_gone(group: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live_members(group).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        live_members(group),
        Vec::<i32>::new(),
        "processes of group {group} survived"
    );
}

/// Unsandboxed: the fixture reports process ids, which the sandbox's PID namespace would
/// renumber (`sandbox.rs` checks the sandboxed case by command line instead).
#[test]
fn a_timeout_kills_the_whole_process_group() {
    let fixture = Fixture::unsandboxed();
    let slot = fixture.path("slot");
    prepare_slot(&fixture.pristine, &slot).unwrap();
    let overlay = fixture.overlay("overlay", &["sleep"]);
    let cancel = AtomicBool::new(false);
    let inputs = inputs("alpha", &[], ImageOptions::default());
    let error = build(
        &fixture,
        &slot,
        &inputs,
        Some(&overlay),
        None,
        "timeout",
        Duration::from_secs(6),
        &cancel,
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BuildFailed);
    assert_eq!(error.message, "build timed out after 6 s");
    assert!(error.log_path.is_some());
    let (sleeper_pid, group) = sleeper(&slot).expect("the fixture started its sleeper");
    assert_ne!(sleeper_pid, group);
    assert_group_gone(group);
}

/// Unsandboxed, like the timeout test above.
#[test]
fn the_cancel_flag_interrupts_a_build() {
    let fixture = Fixture::unsandboxed();
    let slot = fixture.path("slot");
    prepare_slot(&fixture.pristine, &slot).unwrap();
    let overlay = fixture.overlay("overlay", &["sleep"]);
    let cancel = AtomicBool::new(false);
    let inputs = inputs("alpha", &[], ImageOptions::default());
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sleeper(&slot).is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            cancel.store(true, Ordering::Relaxed);
        });
        build(
            &fixture,
            &slot,
            &inputs,
            Some(&overlay),
            None,
            "cancel",
            Duration::from_secs(600),
            &cancel,
        )
    });
    assert_eq!(result.unwrap_err().code, ErrorCode::Interrupted);
    let (_, group) = sleeper(&slot).expect("the fixture started its sleeper");
    assert_group_gone(group);
}

#[test]
fn failures_are_classified_from_the_log() {
    let fixture = Fixture::new();
    let slot = fixture.path("slot");
    let cases: Vec<(&str, BuildInputs, Vec<&str>, ErrorCode, &str)> = vec![
        (
            "profile",
            inputs("gamma", &[], ImageOptions::default()),
            vec![],
            ErrorCode::ImagebuilderError,
            "Image Builder has no profile `gamma`",
        ),
        (
            "package",
            inputs("alpha", &["luci", "nope"], ImageOptions::default()),
            vec![],
            ErrorCode::BuildFailed,
            "package `nope` does not exist for test/sub",
        ),
        (
            "toobig",
            inputs("alpha", &[], ImageOptions::default()),
            vec!["toobig"],
            ErrorCode::BuildFailed,
            "image too big for the device",
        ),
        (
            "nofs",
            inputs(
                "alpha",
                &[],
                ImageOptions {
                    filesystem: Some("ubifs".into()),
                    ..ImageOptions::default()
                },
            ),
            vec![],
            ErrorCode::Precondition,
            "filesystem `ubifs` is not available for test/sub",
        ),
    ];
    for (tag, inputs, markers, code, message) in cases {
        prepare_slot(&fixture.pristine, &slot).unwrap();
        let overlay = fixture.overlay(&format!("overlay-{tag}"), &markers);
        let error = quick(&fixture, &slot, &inputs, Some(&overlay), tag).unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (code, message),
            "{tag}"
        );
        if code != ErrorCode::Precondition {
            let log = fs::read_to_string(error.log_path.as_ref().unwrap()).unwrap();
            assert!(log.starts_with("make image PROFILE="), "{tag}: {log}");
            assert!(
                error.details["log_tail"]
                    .as_str()
                    .is_some_and(|tail| !tail.is_empty())
            );
        }
    }
}

#[test]
fn the_artifact_store_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(&dir.path().join("artifacts")).unwrap();
    let source = dir.path().join("image.bin");
    fs::write(&source, b"firmware image bytes").unwrap();
    let (sha256, size) = cas.put_file(&source).unwrap();
    assert_eq!(sha256, hex::encode(Sha256::digest(b"firmware image bytes")));
    assert_eq!(size, 20);
    assert!(cas.contains(&sha256));
    assert!(cas.verify(&sha256).unwrap());

    let blob = cas.blob_path(&sha256);
    assert!(blob.starts_with(dir.path().join("artifacts/blobs/sha256").join(&sha256[..2])));
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, b"firmware image BYTES").unwrap();
    assert!(!cas.verify(&sha256).unwrap());

    assert_eq!(cas.blobs().unwrap(), vec![(sha256.clone(), 20)]);
    assert_eq!(cas.remove(&sha256).unwrap(), 20);
    assert!(!cas.contains(&sha256));
    assert!(cas.blobs().unwrap().is_empty());
}
