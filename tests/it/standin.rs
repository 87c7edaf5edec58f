//! The stand-in Image Builder, generated from real 23.05.4 metadata and driven by real GNU make.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imagegen_standin::imagebuilder::{self as ib, Compression, PackageManager, RootfsEntry};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn data_dir() -> std::path::PathBuf {
    crate::support::upstream_data()
}

struct Standin {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Standin {
    /// A tree whose `repositories.conf` points at a `file://` mirror holding its feeds.
    fn new(target: &str, subtarget: &str, tweak: impl FnOnce(&mut ib::StandinSpec)) -> Standin {
        let mut spec =
            ib::spec_from_data(data_dir().as_path(), "23.05.4", target, subtarget).expect("spec");
        tweak(&mut spec);
        let dir = tempfile::tempdir().expect("temp dir");
        spec.mirror_url =
            imagegen_standin::feeds::write_local_mirror(&spec, &dir.path().join("mirror"))
                .expect("feeds");
        let root = ib::write_tree(&spec, dir.path()).expect("tree");
        Standin { dir, root }
    }

    fn make(&self, args: &[&str]) -> Output {
        make_in(&self.root, args, None)
    }

    fn bin_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn make_in(root: &Path, args: &[&str], path: Option<&str>) -> Output {
    // An absolute program path, so a test can hand make a PATH without make in it.
    let mut command = Command::new(which("make"));
    command
        .current_dir(root)
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().expect("run make")
}

fn which(tool: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "make failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn file(rootfs: &BTreeMap<String, RootfsEntry>, path: &str) -> (u32, String) {
    match rootfs.get(path) {
        Some(RootfsEntry::File { mode, data }) => {
            (*mode, String::from_utf8_lossy(data).into_owned())
        }
        other => panic!("{path}: expected a file, found {other:?}"),
    }
}

fn profiles_json(bin_dir: &Path) -> Value {
    let text = fs::read_to_string(bin_dir.join("profiles.json")).expect("profiles.json");
    assert!(
        !text.ends_with('\n'),
        "profiles.json ends without a newline"
    );
    assert!(!text.contains(": ") && !text.contains('\n'), "compact JSON");
    serde_json::from_str(&text).expect("JSON")
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).expect("read")))
}

#[test]
fn help_and_info_have_the_real_shape() {
    let standin = Standin::new("ath79", "generic", |_| {});
    assert!(!standin.root.join(".profiles.mk").exists());
    let help = standin.make(&[]);
    assert_ok(&help);
    let help = stdout(&help);
    assert!(help.starts_with("Available Commands:\n\thelp:\tThis help text\n"));
    for block in [
        "\nimage:\n",
        "\nmanifest:\n",
        "\npackage_whatdepends:\n",
        "\npackage_depends:\n",
    ] {
        assert!(help.contains(block), "help lacks {block:?}");
    }
    assert!(help.contains("\tmake image ROOTFS_PARTSIZE=\"<size>\" # override the default"));
    assert!(help.ends_with("\tmake package_depends PACKAGE=\"<pkg>\"\n\n"));

    let info = standin.make(&["info"]);
    assert_ok(&info);
    assert!(
        standin.root.join(".profiles.mk").exists(),
        "generated on first run"
    );
    let info = stdout(&info);
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], "Current Target: \"ath79/generic\"");
    assert_eq!(lines[1], "Current Architecture: \"mips\"");
    assert_eq!(lines[2], "Current Revision: \"r24012-d8dd03c46f\"");
    assert!(lines[3].starts_with("Default Packages: base-files busybox "));
    assert_eq!(&lines[4..6], ["Available Profiles:", ""]);
    assert_eq!(
        &lines[6..11],
        [
            "8dev_carambola2:",
            "    8devices Carambola2",
            "    Packages: kmod-usb-chipidea2",
            "    hasImageMetadata: 1",
            "    SupportedDevices: 8dev,carambola2 carambola2",
        ]
    );
    let profiles = lines
        .iter()
        .filter(|line| !line.starts_with(' ') && line.ends_with(':'));
    assert_eq!(
        profiles.count(),
        349 + 1,
        "every profile plus `Available Profiles:`"
    );
    assert!(info.contains("tplink_archer-c7-v2:\n    TP-Link Archer C7 v2\n"));

    let value = standin.make(&["val.KERNEL_BUILD_DIR"]);
    assert_ok(&value);
    assert_eq!(
        stdout(&value).trim_end(),
        standin
            .root
            .join("build_dir/target-mips_24kc_musl/linux-ath79_generic")
            .display()
            .to_string()
    );
}

#[test]
fn image_applies_every_variable() {
    let standin = Standin::new("ath79", "generic", |_| {});
    let overlay = standin.dir.path().join("files");
    fs::create_dir_all(overlay.join("etc/init.d")).expect("mkdir");
    fs::write(overlay.join("etc/secret"), "s3cret\n").expect("write");
    fs::set_permissions(
        overlay.join("etc/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    fs::write(
        overlay.join("etc/init.d/fleetd"),
        "#!/bin/sh /etc/rc.common\nSTART=85\n",
    )
    .expect("write");
    fs::set_permissions(
        overlay.join("etc/init.d/fleetd"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    symlink("/tmp/fleet", overlay.join("etc/fleet-link")).expect("symlink");
    let bin_dir = standin.bin_dir("out");
    let output = standin.make(&[
        "image",
        "PROFILE=DEVICE_tplink_archer-c7-v2",
        "PACKAGES=luci -ppp -ppp-mod-pppoe",
        &format!("FILES={}", overlay.display()),
        "DISABLED_SERVICES=dnsmasq uhttpd",
        "EXTRA_IMAGE_NAME=Fleet_A",
        &format!("BIN_DIR={}", bin_dir.display()),
        "ROOTFS_PARTSIZE=256",
        "ADD_LOCAL_KEY=1",
        "CONFIG_TARGET_ROOTFS_PARTSIZE=999",
    ]);
    assert_ok(&output);
    let out = stdout(&output);
    assert!(out.starts_with("Building images for ath79 - TP-Link Archer C7 v2\nPackages: luci ath10k-firmware-qca988x-ct "));
    assert!(out.contains("\nDisabling dnsmasq\n") && out.contains("\nEnabling fleetd\n"));

    let prefix = "openwrt-23.05.4-fleet-a-ath79-generic-tplink_archer-c7-v2";
    let expected: BTreeSet<String> = [
        format!("{prefix}-squashfs-factory.bin"),
        format!("{prefix}-squashfs-factory-eu.bin"),
        format!("{prefix}-squashfs-factory-us.bin"),
        format!("{prefix}-squashfs-sysupgrade.bin"),
        format!("{prefix}.manifest"),
        "profiles.json".to_string(),
        "sha256sums".to_string(),
    ]
    .into_iter()
    .collect();
    assert_eq!(names(&bin_dir), expected);

    let image =
        ib::read_image(&bin_dir.join(format!("{prefix}-squashfs-sysupgrade.bin"))).expect("image");
    assert_eq!(
        (
            image.device.as_str(),
            image.filesystem.as_str(),
            image.image_type.as_str()
        ),
        ("tplink_archer-c7-v2", "squashfs", "sysupgrade")
    );
    let rootfs = image.rootfs;
    assert!(rootfs.contains_key("/usr/lib/standin/installed/luci"));
    assert!(
        rootfs.contains_key("/usr/lib/standin/installed/uhttpd"),
        "dependency of luci"
    );
    assert!(
        rootfs.contains_key("/usr/lib/standin/installed/kmod-ath10k-ct"),
        "device package"
    );
    assert!(!rootfs.contains_key("/usr/lib/standin/installed/ppp"));
    assert_eq!(
        file(&rootfs, "/etc/secret"),
        (0o600, "s3cret\n".to_string())
    );
    assert_eq!(file(&rootfs, "/etc/init.d/fleetd").0, 0o755);
    assert_eq!(
        rootfs.get("/etc/fleet-link"),
        Some(&RootfsEntry::Symlink {
            target: "/tmp/fleet".to_string()
        })
    );
    let links: BTreeSet<&str> = rootfs
        .keys()
        .filter_map(|path| path.strip_prefix("/etc/rc.d/"))
        .collect();
    assert!(links.contains("S85fleetd") && links.contains("S19dropbear"));
    assert!(
        !links
            .iter()
            .any(|link| link.ends_with("dnsmasq") || link.ends_with("uhttpd"))
    );
    let build = file(&rootfs, "/usr/lib/standin/build").1;
    assert!(build.contains("rootfs_partsize=256\n"), "{build}");
    assert!(
        file(&rootfs, "/etc/openwrt_release")
            .1
            .contains("DISTRIB_RELEASE='23.05.4'")
    );
    let key_id = fs::read_to_string(standin.root.join("key-build.pub")).expect("key");
    let key_id = key_id
        .lines()
        .next()
        .and_then(|line| line.rsplit(' ').next())
        .expect("id");
    assert!(rootfs.contains_key(&format!("/etc/opkg/keys/{key_id}")));

    let manifest =
        fs::read_to_string(bin_dir.join(format!("{prefix}.manifest"))).expect("manifest");
    assert!(manifest.contains("\nluci - git-24.192.45505-aa0a8e4-1\n"));
    let lines: Vec<&str> = manifest.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);

    let json = profiles_json(&bin_dir);
    assert!(json.get("linux_kernel").is_none(), "not in 23.05.4");
    let profile = &json["profiles"]["tplink_archer-c7-v2"];
    assert_eq!(profile["image_prefix"], prefix);
    let images = profile["images"].as_array().expect("images");
    assert_eq!(images.len(), 4);
    for image in images {
        let name = image["name"].as_str().expect("name");
        assert_eq!(image["sha256"], sha256_file(&bin_dir.join(name)));
        assert_eq!(image["filesystem"], "squashfs");
        assert!(image.get("size").is_none(), "not before 25.12");
    }
    let sums = fs::read_to_string(bin_dir.join("sha256sums")).expect("sums");
    let listed: Vec<String> = sums
        .lines()
        .map(|line| {
            let (hash, name) = line.split_once(" *").expect("format");
            assert_eq!(hash, sha256_file(&bin_dir.join(name)));
            name.to_string()
        })
        .collect();
    let mut without_sums = expected.clone();
    without_sums.remove("sha256sums");
    assert_eq!(listed, without_sums.into_iter().collect::<Vec<_>>());
}

#[test]
fn x86_defaults_to_the_first_profile_and_reads_filesystems_from_config() {
    let standin = Standin::new("x86", "64", |_| {});
    let bin_dir = standin.bin_dir("out");
    let bin = format!("BIN_DIR={}", bin_dir.display());
    // CONFIG_* on the command line is ignored: only .config counts.
    assert_ok(&standin.make(&["image", &bin, "CONFIG_TARGET_ROOTFS_EXT4FS="]));
    let prefix = "openwrt-23.05.4-x86-64-generic";
    let mut expected: BTreeSet<String> = ["ext4", "squashfs"]
        .iter()
        .flat_map(|fs| {
            ["combined", "combined-efi", "rootfs"]
                .iter()
                .map(move |kind| format!("{prefix}-{fs}-{kind}.img.gz"))
        })
        .collect();
    for extra in ["-kernel.bin", "-rootfs.tar.gz", ".manifest"] {
        expected.insert(format!("{prefix}{extra}"));
    }
    expected.extend(["profiles.json".to_string(), "sha256sums".to_string()]);
    assert_eq!(names(&bin_dir), expected);

    let combined = bin_dir.join(format!("{prefix}-squashfs-combined-efi.img.gz"));
    let image = ib::read_image(&combined).expect("gzip image with metadata trailer");
    assert_eq!(image.image_type, "combined-efi");
    assert!(
        image
            .rootfs
            .contains_key("/usr/lib/standin/installed/kmod-e1000e")
    );
    let json = profiles_json(&bin_dir);
    let entry = json["profiles"]["generic"]["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|image| image["type"] == "combined-efi" && image["filesystem"] == "squashfs")
        .expect("entry")
        .clone();
    assert_ne!(
        entry["sha256"], entry["sha256_unsigned"],
        "metadata appended"
    );

    let config = standin.root.join(".config");
    let text = fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "CONFIG_TARGET_ROOTFS_EXT4FS=y",
        "# CONFIG_TARGET_ROOTFS_EXT4FS is not set",
    );
    fs::write(&config, text).expect("write config");
    let squash_only = standin.bin_dir("squash");
    assert_ok(&standin.make(&["image", &format!("BIN_DIR={}", squash_only.display())]));
    assert!(
        names(&squash_only)
            .iter()
            .all(|name| !name.contains("-ext4-"))
    );
    assert!(names(&squash_only).contains(&format!("{prefix}-squashfs-rootfs.img.gz")));
}

#[test]
fn unknown_profile_fails_with_the_real_text() {
    let standin = Standin::new("ath79", "generic", |_| {});
    let output = standin.make(&["image", "PROFILE=no_such_device"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stdout(&output),
        "Profile \"no_such_device\" does not exist!\n\
         Use \"make info\" to get a list of available profile names.\n"
    );
}

#[test]
fn unknown_package_fails_with_opkg_and_apk_text() {
    let opkg = Standin::new("ath79", "generic", |_| {});
    let output = opkg.make(&[
        "image",
        "PACKAGES=luci no-such-pkg",
        &format!("BIN_DIR={}", opkg.bin_dir("o").display()),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "Collected errors:\n * opkg_install_cmd: Cannot install package no-such-pkg.\n"
        )
    );

    let apk = Standin::new("ath79", "generic", |spec| {
        spec.package_manager = PackageManager::Apk
    });
    assert!(apk.root.join("repositories").exists() && !apk.root.join("repositories.conf").exists());
    let output = apk.make(&["manifest", "PACKAGES=no-such-pkg"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(
        "ERROR: unable to select packages:\n  no-such-pkg (no such package):\n    required by: world[no-such-pkg]\n"
    ));
    let manifest = apk.make(&["manifest", "PACKAGES=tcpdump"]);
    assert_ok(&manifest);
    let text = stdout(&manifest);
    assert!(
        text.lines()
            .any(|line| line == "apk-mbedtls 3.0.0_pre20250606-r1"),
        "{text}"
    );
    assert!(
        text.lines().any(|line| line == "tcpdump 4.99.4-r1"),
        "{text}"
    );
}

#[test]
fn snapshot_apk_image_has_versionless_names_and_apk_files() {
    let standin = Standin::new("ath79", "generic", |spec| {
        spec.release = "SNAPSHOT".to_string();
        spec.package_manager = PackageManager::Apk;
    });
    assert_eq!(
        standin.root.file_name().expect("name").to_string_lossy(),
        "openwrt-imagebuilder-ath79-generic.Linux-x86_64"
    );
    let repositories = fs::read_to_string(standin.root.join("repositories")).expect("repos");
    let mirror = format!("file://{}", standin.dir.path().join("mirror").display());
    assert!(repositories.starts_with(&format!(
        "{mirror}/snapshots/targets/ath79/generic/packages/packages.adb\n"
    )));
    assert!(repositories.contains("/kmods/"));
    let bin_dir = standin.bin_dir("out");
    let output = standin.make(&[
        "image",
        "ADD_LOCAL_KEY=1",
        "PACKAGES=luci",
        &format!("BIN_DIR={}", bin_dir.display()),
    ]);
    assert_ok(&output);
    assert!(standin.root.join("keys/local-private-key.pem").exists());
    let image = bin_dir.join("openwrt-ath79-generic-8dev_carambola2-squashfs-sysupgrade.bin");
    let rootfs = ib::read_image_rootfs(&image).expect("image");
    assert!(rootfs.contains_key("/etc/apk/keys/local-public-key.pem"));
    assert!(rootfs.contains_key("/usr/lib/standin/installed/luci-app-package-manager"));
    let installed = file(&rootfs, "/lib/apk/db/installed").1;
    assert!(
        installed.contains("P:apk-mbedtls\nV:3.0.0_pre20250606-r1\n"),
        "{installed}"
    );
    let manifest =
        fs::read_to_string(bin_dir.join("openwrt-ath79-generic-8dev_carambola2.manifest"))
            .expect("manifest");
    assert!(
        manifest.contains("\nluci - git-24.192.45505-aa0a8e4-r1\n"),
        "{manifest}"
    );
    let json = profiles_json(&bin_dir);
    assert_eq!(json["version_number"], "SNAPSHOT");
    assert_eq!(json["linux_kernel"]["version"], "6.12.30");
    let sysupgrade = &json["profiles"]["8dev_carambola2"]["images"][0];
    assert_eq!(
        sysupgrade["size"],
        fs::metadata(&image).expect("stat").len()
    );
}

#[test]
fn too_big_images_are_dropped_with_a_warning_and_exit_0() {
    let device = "tplink_archer-c7-v2";
    let standin = Standin::new("ath79", "generic", |spec| {
        spec.size_limit_devices.insert(device.to_string(), 1000);
    });
    let bin_dir = standin.bin_dir("out");
    let output = standin.make(&[
        "image",
        &format!("PROFILE={device}"),
        &format!("BIN_DIR={}", bin_dir.display()),
        "FILES=/no/such/overlay",
    ]);
    assert_ok(&output);
    let warning = stderr(&output);
    assert!(warning.contains("    WARNING: Image file "), "{warning}");
    assert!(warning.contains("/tmp/openwrt-23.05.4-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin is too big: "));
    assert!(names(&bin_dir).iter().all(|name| !name.ends_with(".bin")));
    assert!(!bin_dir.join("profiles.json").exists(), "no image, no JSON");
}

#[test]
fn profiles_json_merges_builds_into_one_bin_dir() {
    let standin = Standin::new("ath79", "generic", |_| {});
    let bin = format!("BIN_DIR={}", standin.bin_dir("shared").display());
    assert_ok(&standin.make(&["image", &bin]));
    assert_ok(&standin.make(&["image", "PROFILE=tplink_archer-c7-v2", &bin]));
    let json = profiles_json(&standin.bin_dir("shared"));
    let ids: Vec<&String> = json["profiles"]
        .as_object()
        .expect("profiles")
        .keys()
        .collect();
    assert_eq!(
        ids,
        ["8dev_carambola2", "tplink_archer-c7-v2"],
        "default profile is the first"
    );
    assert_eq!(json["version_code"], "r24012-d8dd03c46f");
    let sums = fs::read_to_string(standin.bin_dir("shared").join("sha256sums")).expect("sums");
    assert!(sums.contains("-8dev_carambola2-squashfs-sysupgrade.bin\n"));
    assert!(sums.contains("-tplink_archer-c7-v2-squashfs-factory.bin\n"));

    assert_ok(&standin.make(&["clean", &bin]));
    assert!(!standin.bin_dir("shared").exists(), "clean removes BIN_DIR");
    assert!(!standin.root.join("tmp").exists() && !standin.root.join("dl").exists());
}

#[test]
fn package_queries_need_package() {
    let standin = Standin::new("x86", "64", |_| {});
    for (target, word) in [
        ("package_whatdepends", "whatdepends"),
        ("package_depends", "depends"),
    ] {
        let output = standin.make(&[target]);
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(
            stdout(&output),
            format!("Variable `PACKAGE` is not set but required by `{word}`\n")
        );
    }
    let depends = standin.make(&["package_depends", "PACKAGE=luci"]);
    assert_ok(&depends);
    assert_eq!(
        stdout(&depends),
        "luci depends on:\n\tluci-light\n\tluci-app-opkg\n"
    );
    let list = standin.make(&["package_list"]);
    assert_ok(&list);
    assert!(
        stdout(&list)
            .lines()
            .any(|line| line.starts_with("tcpdump - 4.99.4-1 - "))
    );
    let manifest = standin.make(&["manifest", "PACKAGES=collectd -ppp -ppp-mod-pppoe"]);
    assert_ok(&manifest);
    assert!(stdout(&manifest).contains("\ncollectd - 5.12.0-49\n"));
    assert!(!stdout(&manifest).contains("\nppp - "));
}

#[test]
fn missing_host_tool_fails_the_prerequisite_check() {
    let standin = Standin::new("x86", "64", |_| {});
    let tools = standin.dir.path().join("host-bin");
    fs::create_dir_all(&tools).expect("mkdir");
    for tool in [
        "sh", "awk", "tar", "gzip", "find", "cp", "mv", "mkdir", "rm", "touch", "cat", "date",
    ] {
        symlink(which(tool), tools.join(tool)).expect("symlink");
    }
    let path = tools.display().to_string();
    let output = make_in(&standin.root, &["image"], Some(&path));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stdout(&output).contains("Prerequisite check failed. Use FORCE=1 to override.\n"),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let details = fs::read_to_string(standin.root.join("tmp/.prereq-error")).expect("details");
    assert!(details.contains("python3"));
    assert!(!standin.root.join("staging_dir/host/.prereq-build").exists());
}

#[test]
fn pack_makes_xz_and_zstd_archives_with_one_top_dir() {
    let standin = Standin::new("x86", "64", |_| {});
    let out = standin.bin_dir("archives");
    fs::create_dir_all(&out).expect("mkdir");
    let top = standin
        .root
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    for compression in [Compression::Xz, Compression::Zstd] {
        let archive = ib::pack(&standin.root, compression, &out).expect("pack");
        assert_eq!(
            archive.file_name().expect("name").to_string_lossy(),
            format!("{top}{}", compression.extension())
        );
        let listing = Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .expect("tar");
        assert!(listing.status.success(), "{}", stderr(&listing));
        let listing = stdout(&listing);
        let tops: BTreeSet<&str> = listing
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .map(|path| path.split('/').next().unwrap_or(""))
            .collect();
        assert_eq!(tops, BTreeSet::from([top.as_str()]));
        assert!(listing.contains(&format!(" {top}/Makefile\n")));
        assert!(
            listing.contains("-rwxr-xr-x 0/0"),
            "modes and numeric owners kept"
        );
    }
    // Packing is deterministic.
    let again = standin.bin_dir("again");
    fs::create_dir_all(&again).expect("mkdir");
    let first = ib::pack(&standin.root, Compression::Zstd, &out).expect("pack");
    let second = ib::pack(&standin.root, Compression::Zstd, &again).expect("pack");
    assert_eq!(sha256_file(&first), sha256_file(&second));
}

fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[test]
fn build_cpu_seconds_burns_real_cpu() {
    let standin = Standin::new("x86", "64", |spec| spec.build_cpu_seconds = 0.6);
    let before = children_cpu_seconds();
    assert_ok(&standin.make(&[
        "image",
        &format!("BIN_DIR={}", standin.bin_dir("o").display()),
    ]));
    let used = children_cpu_seconds() - before;
    assert!(used >= 0.6, "children used only {used:.2} CPU seconds");
}

#[test]
fn concurrent_builds_in_one_tree_are_caught() {
    let standin = Standin::new("x86", "64", |_| {});
    let marker = standin
        .root
        .join("build_dir/target-x86_64_musl/root-x86/.standin-build-id");
    let hold = standin.dir.path().join("hold");
    fs::write(&hold, "").expect("hold file");
    let spawn = |bin: &str| {
        Command::new(which("make"))
            .current_dir(&standin.root)
            .args([
                "image",
                &format!("BIN_DIR={}", standin.bin_dir(bin).display()),
            ])
            .env_remove("MAKEFLAGS")
            .env("STANDIN_HOLD_FILE", &hold)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn make")
    };
    let read_marker = || fs::read_to_string(&marker).unwrap_or_default();
    // The first build claims the staging dir, then waits in build_image on the hold file
    // (and says so with `hold.parked`), past everything else it writes there.
    let first = spawn("a");
    let parked = standin.dir.path().join("hold.parked");
    while !parked.exists() || !read_marker().ends_with('\n') {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let first_id = read_marker();
    // The second build wipes and claims the same dir, as a careless client would cause.
    let second = spawn("b");
    while read_marker() == first_id || !read_marker().ends_with('\n') {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    fs::remove_file(&hold).expect("release");
    let first = first.wait_with_output().expect("wait");
    // The second build usually succeeds, but the first may have scribbled into its dirs.
    let _ = second.wait_with_output().expect("wait");
    assert_eq!(first.status.code(), Some(2), "{}", stdout(&first));
    assert!(
        stderr(&first).contains("concurrent builds in one Image Builder directory are unsafe"),
        "{}",
        stderr(&first)
    );
}

#[test]
fn every_upstream_target_makes_a_tree() {
    let parent = tempfile::tempdir().expect("temp dir");
    let mut count = 0;
    for target in fs::read_dir(data_dir().as_path().join("targets")).expect("targets") {
        let target = target.expect("entry").path();
        for subtarget in fs::read_dir(&target).expect("subtargets") {
            let subtarget = subtarget.expect("entry").path();
            let name = |path: &Path| {
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            };
            let spec = ib::spec_from_data(
                data_dir().as_path(),
                "23.05.4",
                &name(&target),
                &name(&subtarget),
            )
            .expect("spec");
            let tree = ib::write_tree(&spec, parent.path()).expect("tree");
            assert!(tree.join(".targetinfo").exists());
            count += 1;
        }
    }
    assert_eq!(count, 75, "every target/subtarget of the 23.05.4 data");
}

#[test]
fn info_quotes_titles_with_apostrophes() {
    let standin = Standin::new("mvebu", "cortexa9", |_| {});
    let info = standin.make(&["info"]);
    assert_ok(&info);
    assert!(
        stdout(&info)
            .contains("plathome_openblocks-ax3-4:\n    Plat'Home OpenBlocks AX3 4 ports\n")
    );
}

/// The feed directory `short` of the stand-in's local mirror.
fn feed_dir(standin: &Standin, short: &str) -> PathBuf {
    let spec = ib::spec_from_data(data_dir().as_path(), "23.05.4", "x86", "64").expect("spec");
    let feed = imagegen_standin::feeds::feed_dirs(&spec)
        .expect("feeds")
        .into_iter()
        .find(|feed| feed.short == short)
        .expect("feed");
    standin.dir.path().join("mirror").join(feed.path)
}

fn image_with(standin: &Standin, packages: &str, tag: &str) -> Output {
    standin.make(&[
        "image",
        &format!("PACKAGES={packages}"),
        &format!("BIN_DIR={}", standin.bin_dir(tag).display()),
    ])
}

#[test]
fn packages_come_only_from_the_listed_feeds_checked_like_opkg_does() {
    let standin = Standin::new("x86", "64", |_| {});
    let output = image_with(&standin, "htop", "all-feeds");
    assert_ok(&output);
    assert!(
        stderr(&output)
            .contains("/packages/x86_64/packages/Packages.sig\nSignature check passed.\n"),
        "{}",
        stderr(&output)
    );

    // A package file that no longer matches the signed index.
    let feed = feed_dir(&standin, "packages");
    let htop = fs::read_dir(&feed)
        .expect("feed")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().contains("/htop_"))
        .expect("htop");
    let original = fs::read(&htop).expect("read");
    let mut tampered = original.clone();
    tampered.push(0);
    fs::write(&htop, &tampered).expect("tamper");
    let output = image_with(&standin, "htop", "tampered");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!(
            " * opkg_install_pkg: Package size mismatch: htop is {} bytes, expecting {} bytes\n",
            tampered.len(),
            original.len()
        )),
        "{}",
        stderr(&output)
    );
    fs::write(&htop, &original).expect("restore");

    // An index signed by a key the tree does not trust: the feed is dropped.
    let index = fs::read(feed.join("Packages")).expect("index");
    let stranger = imagegen::imagebuilder::usign::SecretKey::from_seed([7; 32]);
    fs::write(feed.join("Packages.sig"), stranger.sign(&index)).expect("re-sign");
    let output = image_with(&standin, "htop", "untrusted");
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("Signature check failed.\nRemove wrong Signature file.\n"),
        "{text}"
    );
    assert!(
        text.contains(" * opkg_install_cmd: Cannot install package htop.\n"),
        "{text}"
    );

    // A feed the repository list no longer names is not read at all, even if reachable.
    imagegen_standin::feeds::sign_index(
        &feed,
        PackageManager::Opkg,
        &index,
        &imagegen_standin::mirror::test_secret_key(),
    )
    .expect("re-sign");
    let conf = standin.root.join("repositories.conf");
    let listed = fs::read_to_string(&conf).expect("repositories.conf");
    let without: String = listed
        .lines()
        .filter(|line| !line.contains("openwrt_packages"))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(&conf, without).expect("edit");
    let output = image_with(&standin, "htop", "unlisted");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(" * opkg_install_cmd: Cannot install package htop.\n"),
        "{}",
        stderr(&output)
    );

    // A listed feed that cannot be fetched.
    fs::write(&conf, &listed).expect("restore");
    fs::rename(&feed, feed.with_extension("gone")).expect("remove feed");
    let output = image_with(&standin, "htop", "missing");
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "*** Failed to download the package list from file://{}/Packages.gz\n",
            feed.display()
        )),
        "{text}"
    );
}

#[test]
fn a_dependency_no_feed_has_and_conflicts_fail_like_opkg() {
    let standin = Standin::new("x86", "64", |_| {});
    let output = image_with(&standin, "dnsmasq-full", "conflict");
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(" * check_conflicts_for: The following packages conflict with "),
        "{text}"
    );
    let feed = feed_dir(&standin, "packages");
    let index = fs::read_to_string(feed.join("Packages")).expect("index");
    let broken = index.replace(
        "Package: htop\nVersion: 3.3.0-1\nDepends: libc\n",
        "Package: htop\nVersion: 3.3.0-1\nDepends: libc, libncursesw6 (>= 6.4)\n",
    );
    assert_ne!(broken, index);
    imagegen_standin::feeds::sign_index(
        &feed,
        PackageManager::Opkg,
        broken.as_bytes(),
        &imagegen_standin::mirror::test_secret_key(),
    )
    .expect("re-sign");
    let output = image_with(&standin, "htop", "unsatisfied");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            " * satisfy_dependencies_for: Cannot satisfy the following dependencies for htop:\n * \tlibncursesw6 (>= 6.4)\n"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn packages_dropped_into_the_local_directory_are_indexed_and_installed() {
    // No feed is reachable (the repository list points at the real server); the tree's own
    // `packages/` directory holds every package, as a user could drop them there.
    let mut spec = ib::spec_from_data(data_dir().as_path(), "23.05.4", "x86", "64").expect("spec");
    spec.local_packages = true;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = ib::write_tree(&spec, dir.path()).expect("tree");
    let output = make_in(
        &root,
        &[
            "image",
            "PACKAGES=htop",
            &format!("BIN_DIR={}", dir.path().join("out").display()),
        ],
        None,
    );
    assert_ok(&output);
    let text = stderr(&output);
    assert!(
        text.contains("Package list missing or not up-to-date, generating it.\n"),
        "{text}"
    );
    assert!(
        text.contains("*** Failed to download the package list from https://downloads.openwrt.org/releases/23.05.4/packages/x86_64/base/Packages.gz\n"),
        "{text}"
    );
    let index = fs::read_to_string(root.join("packages/Packages")).expect("local index");
    assert!(index.contains("Package: htop\n"), "{index}");
}
