//! Stand-in OpenWrt Image Builder: writes a tree (and its release archive) that real GNU make
//! drives exactly like a real Image Builder (same targets, variables, messages, exit codes and
//! output names) but that "builds" fake images from fake packages in about a second.
//!
//! This module only writes files and reads stand-in images back; it never runs make and never
//! touches the network. The make-time behaviour lives in `src/standin/files/` (Makefile,
//! `scripts/standin.py`), embedded here with `include_str!`. See `docs/standin.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use imagegen::error::{Error, ErrorCode, Result};

const MAKEFILE: &str = include_str!("files/Makefile");
const RULES_MK: &str = include_str!("files/rules.mk");
const ENGINE_PY: &str = include_str!("files/standin.py");
const PACKAGES_PY: &str = include_str!("files/standin_packages.py");
const TARGET_METADATA_AWK: &str = include_str!("files/target-metadata.awk");

/// The modification time of every entry in a packed archive (2024-07-15, like 23.05.4).
const ARCHIVE_MTIME: u64 = 1_721_081_658;

/// The official snapshot usign key, which 23.05 Image Builders trust (reference §2.4).
const SNAPSHOT_KEY_ID: &str = "b5043e70f9a75cde";
const SNAPSHOT_KEY: &str = "RWS1BD5w+adc3j2Hqg9+b66CvLR7NlHbsj7wjNVj0XGt/othDgIAOJS+";

/// Which package manager the Image Builder drives: opkg (≤ 24.10) or apk (25.12, snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackageManager {
    Opkg,
    Apk,
}

/// How the Image Builder archive is compressed: xz (≤ 23.05) or zstd (≥ 24.10, snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Xz,
    Zstd,
}

impl Compression {
    /// The compression upstream uses for this release's Image Builder (reference §1.6).
    pub fn for_release(release: &str) -> Compression {
        let major = release
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(major) if major <= 23 => Compression::Xz,
            _ => Compression::Zstd,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Compression::Xz => ".tar.xz",
            Compression::Zstd => ".tar.zst",
        }
    }
}

/// Everything that makes one stand-in Image Builder.
#[derive(Debug, Clone)]
pub struct StandinSpec {
    /// "23.05.4", "24.10.0", "SNAPSHOT".
    pub release: String,
    pub target: String,
    pub subtarget: String,
    /// The revision, e.g. "r24012-d8dd03c46f".
    pub version_code: String,
    /// An upstream `profiles.json` text: device ids, titles, packages, image names and types.
    pub profiles_json: String,
    pub package_manager: PackageManager,
    /// Package names the feed offers besides default, device and dependency packages.
    pub extra_packages: Vec<String>,
    /// CPU seconds each `make image` burns (0 for tests, ~2 for scheduling benchmarks).
    pub build_cpu_seconds: f64,
    /// Device id → image size limit in bytes, to produce the "too big" failure.
    pub size_limit_devices: BTreeMap<String, u64>,
    /// The download server the tree's `repositories.conf` / `repositories` points at, like a
    /// real Image Builder's (`https://downloads.openwrt.org`); a test that drives make
    /// directly points it at a `file://` mirror with the feeds ([`crate::feeds`]).
    pub mirror_url: String,
    /// Put every feed package into the tree's own `packages/` directory (where users drop
    /// custom packages; make indexes it), so the tree builds with no feed reachable.
    pub local_packages: bool,
}

/// Where a real Image Builder's repository list points.
pub const UPSTREAM_MIRROR: &str = "https://downloads.openwrt.org";

/// The names of the packages the stand-in feeds offer by default besides the target's own.
pub fn default_extra_packages() -> Vec<String> {
    crate::feeds::default_extra_packages()
}

/// `openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64` (no version for `SNAPSHOT`).
pub fn imagebuilder_name(spec: &StandinSpec) -> String {
    let version = if versioned_file_names(&spec.release) {
        format!("{}-", spec.release)
    } else {
        String::new()
    };
    format!(
        "openwrt-imagebuilder-{version}{}-{}.Linux-x86_64",
        spec.target, spec.subtarget
    )
}

/// The archive file name: [`imagebuilder_name`] plus `.tar.xz` or `.tar.zst`.
pub fn archive_name(spec: &StandinSpec, compression: Compression) -> String {
    format!("{}{}", imagebuilder_name(spec), compression.extension())
}

/// A spec from real upstream data: `<data_dir>/targets/<t>/<s>/profiles.json`, with the
/// default extra packages, no CPU burn and no size limits. Releases from 25 on and
/// snapshots use apk.
pub fn spec_from_data(
    data_dir: &Path,
    release: &str,
    target: &str,
    subtarget: &str,
) -> Result<StandinSpec> {
    let path = data_dir
        .join("targets")
        .join(target)
        .join(subtarget)
        .join("profiles.json");
    let profiles_json = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    let parsed: Value = serde_json::from_str(&profiles_json).map_err(|e| {
        Error::new(
            ErrorCode::Validation,
            format!("parsing `{}`: {e}", path.display()),
        )
    })?;
    let version_code = parsed["version_code"]
        .as_str()
        .unwrap_or("r0-0000000000")
        .to_string();
    let major = release
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    let package_manager = match major {
        Some(major) if major < 25 => PackageManager::Opkg,
        _ => PackageManager::Apk,
    };
    Ok(StandinSpec {
        release: release.to_string(),
        target: target.to_string(),
        subtarget: subtarget.to_string(),
        version_code,
        profiles_json,
        package_manager,
        extra_packages: default_extra_packages(),
        build_cpu_seconds: 0.0,
        size_limit_devices: BTreeMap::new(),
        mirror_url: UPSTREAM_MIRROR.to_string(),
        local_packages: false,
    })
}

/// The target's `profiles.json` as the download server would publish it for this spec:
/// upstream devices and images, with the spec's release, revision and file-name prefix
/// (`openwrt-[<release>-]<t>-<s>`), and `apk-mbedtls` for `opkg` in apk trees. Compact JSON
/// with sorted keys and no trailing newline, like upstream.
pub fn server_profiles_json(spec: &StandinSpec) -> Result<String> {
    let invalid = |message: String| Error::new(ErrorCode::Validation, message);
    let mut parsed: Value = serde_json::from_str(&spec.profiles_json)
        .map_err(|e| invalid(format!("stand-in profiles.json: {e}")))?;
    let old_prefix = image_file_prefix(
        parsed["version_number"].as_str().unwrap_or(""),
        &spec.target,
        &spec.subtarget,
    );
    let new_prefix = image_file_prefix(&spec.release, &spec.target, &spec.subtarget);
    let rename = |value: &mut Value| {
        if let Some(text) = value
            .as_str()
            .and_then(|t| t.strip_prefix(old_prefix.as_str()))
        {
            *value = Value::String(format!("{new_prefix}{text}"));
        }
    };
    if let Some(profiles) = parsed["profiles"].as_object_mut() {
        for profile in profiles.values_mut() {
            rename(&mut profile["image_prefix"]);
            if let Some(images) = profile["images"].as_array_mut() {
                images
                    .iter_mut()
                    .for_each(|image| rename(&mut image["name"]));
            }
        }
    }
    let info = TargetInfo::parse(spec)?;
    parsed["version_code"] = json!(spec.version_code);
    parsed["version_number"] = json!(spec.release);
    let mut default_packages = info.default_packages.clone();
    default_packages.sort();
    parsed["default_packages"] = json!(default_packages);
    parsed["arch_packages"] = json!(info.arch_packages);
    match linux_kernel(spec, &info) {
        Some(kernel) => parsed["linux_kernel"] = kernel,
        None => {
            if let Some(object) = parsed.as_object_mut() {
                object.remove("linux_kernel");
            }
        }
    }
    // serde_json's map is sorted, so this prints sorted keys.
    serde_json::to_string(&parsed).map_err(|e| Error::internal(format!("serializing: {e}")))
}

/// `IMG_PREFIX` of official builds: `openwrt-23.05.4-ath79-generic`, `openwrt-x86-64`.
fn image_file_prefix(release: &str, target: &str, subtarget: &str) -> String {
    if versioned_file_names(release) && !release.is_empty() {
        format!("openwrt-{}-{target}-{subtarget}", release.to_lowercase())
    } else {
        format!("openwrt-{target}-{subtarget}")
    }
}

/// Writes `parent/<imagebuilder_name>/` with everything a real Image Builder ships, and
/// returns that directory. Fails if it already exists.
pub fn write_tree(spec: &StandinSpec, parent: &Path) -> Result<PathBuf> {
    let info = TargetInfo::parse(spec)?;
    let root = parent.join(imagebuilder_name(spec));
    if root.exists() {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("`{}` already exists", root.display()),
        ));
    }
    let writer = TreeWriter { root: root.clone() };
    writer.file("Makefile", MAKEFILE, 0o644)?;
    writer.file("rules.mk", RULES_MK, 0o644)?;
    writer.file("scripts/standin.py", ENGINE_PY, 0o755)?;
    writer.file("scripts/standin_packages.py", PACKAGES_PY, 0o644)?;
    writer.file("scripts/target-metadata.awk", TARGET_METADATA_AWK, 0o644)?;
    writer.file(".config", &dot_config(spec, &info), 0o644)?;
    writer.file(".targetinfo", &targetinfo(spec, &info), 0o644)?;
    writer.file("include/version.mk", &version_mk(spec, &info), 0o644)?;
    writer.file("include/target.mk", &target_mk(&info), 0o644)?;
    let metadata = serde_json::to_string_pretty(&standin_json(spec, &info))
        .map_err(|e| Error::internal(format!("serializing stand-in metadata: {e}")))?;
    writer.file("include/standin.json", &metadata, 0o644)?;
    write_repositories(&writer, spec, &info)?;
    write_local_packages(&writer, spec, &info)?;
    write_target_files(&writer, spec, &info)?;
    Ok(root)
}

const PACKAGES_README: &str = "Put custom packages here; they are installed with the \
feed packages (make indexes this directory when a file in it is newer than the index).\n";

/// `packages/`: the Image Builder's local repository. opkg trees ship an empty `Packages` so
/// opkg does not complain (reference §4); with `local_packages` every feed package is here.
fn write_local_packages(writer: &TreeWriter, spec: &StandinSpec, info: &TargetInfo) -> Result<()> {
    writer.file("packages/README.md", PACKAGES_README, 0o644)?;
    if spec.package_manager == PackageManager::Opkg {
        writer.file("packages/Packages", "", 0o644)?;
    }
    if !spec.local_packages {
        return Ok(());
    }
    for package in crate::feeds::packages_of(spec, info) {
        writer.bytes(
            &format!("packages/{}", package.file_name(spec.package_manager)),
            &crate::feeds::package_file(&package),
            0o644,
        )?;
    }
    Ok(())
}

/// The repository list (reference §1.5) pointing at `spec.mirror_url`, and the keys that
/// verify the feeds: the snapshot key 23.05 trees ship, plus the stand-in TEST key that
/// signs the stand-in mirror's feeds (a real Image Builder ships the keys of its feeds).
fn write_repositories(writer: &TreeWriter, spec: &StandinSpec, info: &TargetInfo) -> Result<()> {
    let base = spec.mirror_url.trim_end_matches('/');
    let feeds = crate::feeds::feed_dirs_of(spec, info);
    let test_key = crate::mirror::test_secret_key().public_key();
    writer.file(
        &format!("keys/{}", test_key.key_id),
        &test_key.to_file_text(),
        0o644,
    )?;
    match spec.package_manager {
        PackageManager::Opkg => {
            let mut text = String::from(
                "## Place your custom repositories here, they must match the architecture and version.\n\
                 # src/gz %n %U\n# src custom file:///usr/src/openwrt/bin/%T/packages\n\n",
            );
            for feed in &feeds {
                text.push_str(&format!("src/gz {} {base}/{}\n", feed.name, feed.path));
            }
            text.push_str(
                "\n## This is the local package repository, do not remove!\n\
                 src imagebuilder file:packages\n\noption check_signature\n",
            );
            writer.file("repositories.conf", &text, 0o644)?;
            let key = format!(
                "untrusted comment: OpenWrt usign key of Snapshot Builds\n{SNAPSHOT_KEY}\n"
            );
            writer.file(&format!("keys/{SNAPSHOT_KEY_ID}"), &key, 0o644)
        }
        PackageManager::Apk => {
            let text: String = feeds
                .iter()
                .map(|feed| format!("{base}/{}/packages.adb\n", feed.path))
                .collect();
            writer.file("repositories", &text, 0o644)?;
            let pem = "-----BEGIN PUBLIC KEY-----\n\
                       MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEstandinstandinstandinstandin\n\
                       standinstandinstandinstandinstandinstandinstandinstandinAAAA==\n\
                       -----END PUBLIC KEY-----\n";
            writer.file("keys/openwrt-snapshots.pem", pem, 0o644)
        }
    }
}

fn write_target_files(writer: &TreeWriter, spec: &StandinSpec, info: &TargetInfo) -> Result<()> {
    let board = &spec.target;
    writer.file(
        &format!("target/linux/{board}/image/Makefile"),
        "# Stand-in: image recipes are in include/standin.json (see docs/standin.md).\n",
        0o644,
    )?;
    writer.file(
        "target/linux/Makefile",
        "# Stand-in: nothing to build here.\n",
        0o644,
    )?;
    let kernel_dir = format!(
        "build_dir/{}/linux-{board}_{}",
        info.build_dir_name(),
        spec.subtarget
    );
    let mut kernel = format!(
        "STANDIN-KERNEL {} {}/{}\n",
        info.kernel_version, spec.target, spec.subtarget
    )
    .into_bytes();
    kernel.resize(4096, 0);
    writer.bytes(
        &format!("{kernel_dir}/{}", info.kernel_file()),
        &kernel,
        0o644,
    )?;
    writer.file(
        "staging_dir/host/bin/mkhash",
        "#!/usr/bin/env python3\nimport hashlib, sys\n\
         algo, paths = sys.argv[1], sys.argv[2:]\n\
         for p in paths:\n    print(hashlib.new(algo, open(p, 'rb').read()).hexdigest())\n",
        0o755,
    )
}

/// Small helper that writes files below the tree root, creating parents and setting modes.
struct TreeWriter {
    root: PathBuf,
}

impl TreeWriter {
    fn file(&self, relative: &str, text: &str, mode: u32) -> Result<()> {
        self.bytes(relative, text.as_bytes(), mode)
    }

    fn bytes(&self, relative: &str, data: &[u8], mode: u32) -> Result<()> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        }
        fs::write(&path, data).map_err(|e| Error::io("writing", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting the mode of", &path, e))
    }
}

// ------------------------------------------------------------------ target description

/// What the stand-in needs from `profiles.json`, in the shape the tree files want.
pub(crate) struct TargetInfo {
    pub(crate) arch_packages: String,
    pub(crate) default_packages: Vec<String>,
    source_date_epoch: i64,
    pub(crate) kernel_version: String,
    pub(crate) devices: Vec<Device>,
}

pub(crate) struct Device {
    id: String,
    title: String,
    titles: Value,
    pub(crate) device_packages: Vec<String>,
    supported_devices: Vec<String>,
    images: Vec<ImageRecipe>,
}

struct ImageRecipe {
    filesystem: Option<String>,
    image_type: String,
    /// The file name after `<device image prefix>-`, e.g. `squashfs-sysupgrade.bin`.
    suffix: String,
    /// Upstream appended sysupgrade metadata (its `sha256` differs from `sha256_unsigned`).
    metadata: bool,
}

impl Device {
    fn has_image_metadata(&self) -> bool {
        self.images.iter().any(|image| image.metadata)
    }
}

impl TargetInfo {
    pub(crate) fn parse(spec: &StandinSpec) -> Result<TargetInfo> {
        let invalid = |message: String| Error::new(ErrorCode::Validation, message);
        let parsed: Value = serde_json::from_str(&spec.profiles_json)
            .map_err(|e| invalid(format!("stand-in profiles.json: {e}")))?;
        let profiles = parsed["profiles"]
            .as_object()
            .ok_or_else(|| invalid("stand-in profiles.json has no `profiles` object".into()))?;
        let mut default_packages = strings(&parsed["default_packages"]);
        if spec.package_manager == PackageManager::Apk {
            for name in &mut default_packages {
                if name == "opkg" {
                    *name = "apk-mbedtls".to_string();
                }
            }
        }
        let devices = profiles
            .iter()
            .map(|(id, profile)| Device::parse(id, profile))
            .collect();
        Ok(TargetInfo {
            arch_packages: parsed["arch_packages"]
                .as_str()
                .unwrap_or("x86_64")
                .to_string(),
            default_packages,
            source_date_epoch: parsed["source_date_epoch"]
                .as_i64()
                .unwrap_or(ARCHIVE_MTIME as i64),
            kernel_version: kernel_version(&spec.release).to_string(),
            devices,
        })
    }

    /// `target-mips_24kc_musl`, `target-arm_cortex-a7+neon-vfpv4_musl_eabi`.
    fn build_dir_name(&self) -> String {
        let eabi = if self.arch_packages.starts_with("arm_") {
            "_eabi"
        } else {
            ""
        };
        format!("target-{}_musl{eabi}", self.arch_packages)
    }

    /// The CPU family (`ARCH`), e.g. `mips` for `mips_24kc`.
    fn arch(&self) -> String {
        if self.arch_packages.starts_with("x86_64") {
            return "x86_64".to_string();
        }
        let family = self.arch_packages.split('_').next().unwrap_or("");
        family.to_string()
    }

    fn kernel_file(&self) -> &'static str {
        if self.arch().starts_with("x86") || self.arch() == "i386" {
            "bzImage"
        } else {
            "vmlinux"
        }
    }

    fn filesystems(&self) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = self
            .devices
            .iter()
            .flat_map(|device| device.images.iter())
            .filter_map(|image| image.filesystem.clone())
            .collect();
        set.insert("squashfs".to_string());
        set
    }
}

impl Device {
    fn parse(id: &str, profile: &Value) -> Device {
        let upstream_prefix = profile["image_prefix"].as_str().unwrap_or("");
        let images = profile["images"]
            .as_array()
            .map(|images| {
                images
                    .iter()
                    .filter_map(|image| ImageRecipe::parse(upstream_prefix, image))
                    .collect()
            })
            .unwrap_or_default();
        Device {
            id: id.to_string(),
            title: device_title(&profile["titles"]),
            titles: profile["titles"].clone(),
            device_packages: strings(&profile["device_packages"]),
            supported_devices: strings(&profile["supported_devices"]),
            images,
        }
    }
}

impl ImageRecipe {
    /// None for what an Image Builder never builds (initramfs kernels and their artifacts).
    fn parse(upstream_prefix: &str, image: &Value) -> Option<ImageRecipe> {
        let name = image["name"].as_str()?;
        let filesystem = image["filesystem"].as_str().map(str::to_string);
        if filesystem.as_deref() == Some("initramfs") || name.contains("-initramfs") {
            return None;
        }
        let suffix = name.strip_prefix(upstream_prefix)?.strip_prefix('-')?;
        Some(ImageRecipe {
            filesystem,
            image_type: image["type"].as_str().unwrap_or("image").to_string(),
            suffix: suffix.to_string(),
            metadata: image["sha256"] != image["sha256_unsigned"],
        })
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The main `DEVICE_TITLE`: vendor, model and variant joined by spaces.
fn device_title(titles: &Value) -> String {
    let first = &titles[0];
    if let Some(title) = first["title"].as_str() {
        return title.to_string();
    }
    ["vendor", "model", "variant"]
        .iter()
        .filter_map(|key| first[*key].as_str())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn versioned_file_names(release: &str) -> bool {
    release != "SNAPSHOT"
}

pub(crate) fn kernel_version(release: &str) -> &'static str {
    match release.get(..5) {
        Some("22.03") => "5.10.221",
        Some("23.05") => "5.15.162",
        Some("24.10") => "6.6.73",
        _ => "6.12.30",
    }
}

pub(crate) fn vermagic(spec: &StandinSpec) -> String {
    let digest = Sha256::digest(format!(
        "{}/{}/{}",
        spec.release, spec.target, spec.subtarget
    ));
    hex::encode(&digest[..16])
}

// ------------------------------------------------------------------ tree files

fn dot_config(spec: &StandinSpec, info: &TargetInfo) -> String {
    let filesystems = info.filesystems();
    let flag = |name: &str, on: bool| {
        if on {
            format!("CONFIG_{name}=y\n")
        } else {
            format!("# CONFIG_{name} is not set\n")
        }
    };
    let (board, sub) = (&spec.target, &spec.subtarget);
    let mut text = format!(
        "CONFIG_TARGET_{board}=y\nCONFIG_TARGET_{board}_{sub}=y\n\
         CONFIG_TARGET_MULTI_PROFILE=y\n\
         CONFIG_TARGET_BOARD=\"{board}\"\nCONFIG_TARGET_SUBTARGET=\"{sub}\"\n\
         CONFIG_TARGET_ARCH_PACKAGES=\"{}\"\nCONFIG_ARCH=\"{}\"\n\
         CONFIG_VERSION_DIST=\"OpenWrt\"\nCONFIG_VERSION_NUMBER=\"{}\"\nCONFIG_VERSION_CODE=\"\"\n",
        info.arch_packages,
        info.arch(),
        spec.release
    );
    text += &flag("VERSION_FILENAMES", versioned_file_names(&spec.release));
    text += &flag("TARGET_ROOTFS_SQUASHFS", true);
    text += &flag("TARGET_ROOTFS_EXT4FS", filesystems.contains("ext4"));
    text += &flag("TARGET_ROOTFS_UBIFS", filesystems.contains("ubifs"));
    text += &flag("TARGET_ROOTFS_JFFS2", filesystems.contains("jffs2"));
    text += &flag("TARGET_ROOTFS_TARGZ", spec.target == "x86");
    text += "CONFIG_TARGET_ROOTFS_PARTSIZE=104\n";
    text += &flag("TARGET_IMAGES_GZIP", true);
    text += &flag("JSON_OVERVIEW_IMAGE_INFO", true);
    text += &flag("SIGNATURE_CHECK", true);
    text += &flag("USE_APK", spec.package_manager == PackageManager::Apk);
    text
}

fn targetinfo(spec: &StandinSpec, info: &TargetInfo) -> String {
    let mut text = format!(
        "Source-Makefile: target/linux/{board}/Makefile\nTarget: {board}/{sub}\n\
         Target-Board: {board}\nTarget-Arch: {}\nTarget-Arch-Packages: {}\n\
         Default-Packages: {}\n\n",
        info.arch(),
        info.arch_packages,
        info.default_packages.join(" "),
        board = spec.target,
        sub = spec.subtarget,
    );
    for device in &info.devices {
        text += &format!(
            "Target-Profile: DEVICE_{}\nTarget-Profile-Name: {}\n\
             Target-Profile-hasImageMetadata: {}\nTarget-Profile-SupportedDevices: {}\n\
             Target-Profile-Packages: {}\n@@\n\n",
            device.id,
            device.title,
            u8::from(device.has_image_metadata()),
            device.supported_devices.join(" "),
            device.device_packages.join(" "),
        );
    }
    text
}

fn version_mk(spec: &StandinSpec, info: &TargetInfo) -> String {
    format!(
        "REVISION:={}\nSOURCE_DATE_EPOCH:={}\nVERSION_NUMBER:={}\nLINUX_VERSION:={}\nLINUX_VERMAGIC:={}\n",
        spec.version_code,
        info.source_date_epoch,
        spec.release,
        info.kernel_version,
        vermagic(spec)
    )
}

fn target_mk(info: &TargetInfo) -> String {
    format!(
        "ARCH:={}\nARCH_PACKAGES:={}\nTARGET_BUILD_DIR_NAME:={}\nDEFAULT_PACKAGES:={}\n",
        info.arch(),
        info.arch_packages,
        info.build_dir_name(),
        info.default_packages.join(" ")
    )
}

fn standin_json(spec: &StandinSpec, info: &TargetInfo) -> Value {
    let kernel_install = matches!(spec.target.as_str(), "x86" | "armsr");
    let devices: Vec<Value> = info
        .devices
        .iter()
        .map(|device| {
            let images: Vec<Value> = device
                .images
                .iter()
                .map(|image| {
                    json!({
                        "filesystem": image.filesystem,
                        "type": image.image_type,
                        "suffix": image.suffix,
                        "metadata": image.metadata,
                    })
                })
                .collect();
            json!({
                "id": device.id,
                "titles": device.titles,
                "device_packages": device.device_packages,
                "supported_devices": device.supported_devices,
                "images": images,
                "kernel_install": kernel_install,
                "image_size_limit": spec.size_limit_devices.get(&device.id),
            })
        })
        .collect();
    json!({
        "board": spec.target,
        "subtarget": spec.subtarget,
        "version_number": spec.release,
        "version_code": spec.version_code,
        "source_date_epoch": info.source_date_epoch,
        "arch_packages": info.arch_packages,
        "default_packages": info.default_packages,
        "feeds": crate::feeds::feed_dirs_of(spec, info)
            .iter()
            .map(|feed| {
                let index = match spec.package_manager {
                    PackageManager::Opkg => "",
                    PackageManager::Apk => "/packages.adb",
                };
                (feed.name.clone(), format!("{UPSTREAM_MIRROR}/{}{index}", feed.path))
            })
            .collect::<Vec<_>>(),
        "kernel_file": info.kernel_file(),
        "build_cpu_seconds": spec.build_cpu_seconds,
        "linux_kernel": linux_kernel(spec, info),
        "image_sizes": new_metadata_fields(&spec.release),
        "devices": devices,
    })
}

/// `profiles.json` carries `linux_kernel` from 23.05.6 and 24.10 on (reference §3.2).
fn linux_kernel(spec: &StandinSpec, info: &TargetInfo) -> Option<Value> {
    let release = spec.release.as_str();
    let old = release.starts_with("22.")
        || (release.starts_with("23.05.") && release.as_bytes().get(6).is_some_and(|c| *c < b'6'));
    (!old).then(
        || json!({"version": info.kernel_version, "release": "1", "vermagic": vermagic(spec)}),
    )
}

/// Per-image `size` and per-device `file_size_limits` exist from 25.12 on (reference §3.3).
fn new_metadata_fields(release: &str) -> bool {
    let major = release
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    major.is_none_or(|major| major >= 25)
}

// ------------------------------------------------------------------ archive

/// Packs `tree` into `out_dir/<tree name>.tar.xz|.tar.zst`: one top directory, sorted
/// entries, fixed mtimes, numeric owner 0. Returns the archive path.
pub fn pack(tree: &Path, compression: Compression, out_dir: &Path) -> Result<PathBuf> {
    let top = tree
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            Error::new(
                ErrorCode::Validation,
                format!("`{}` has no usable name", tree.display()),
            )
        })?;
    let path = out_dir.join(format!("{top}{}", compression.extension()));
    let partial = out_dir.join(format!(".{top}{}.partial", compression.extension()));
    let written = write_compressed(tree, top, compression, &partial);
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written?;
    fs::rename(&partial, &path).map_err(|e| Error::io("renaming", &partial, e))?;
    Ok(path)
}

fn write_compressed(
    tree: &Path,
    top: &str,
    compression: Compression,
    partial: &Path,
) -> Result<()> {
    let file = fs::File::create(partial).map_err(|e| Error::io("creating", partial, e))?;
    let io_error = |e: std::io::Error| Error::io("writing", partial, e);
    match compression {
        Compression::Xz => {
            let mut encoder = liblzma::write::XzEncoder::new(file, 6);
            write_tar(tree, top, &mut encoder)?;
            encoder
                .finish()
                .map_err(io_error)?
                .sync_all()
                .map_err(io_error)?;
        }
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(file, 12).map_err(io_error)?;
            write_tar(tree, top, &mut encoder)?;
            encoder
                .finish()
                .map_err(io_error)?
                .sync_all()
                .map_err(io_error)?;
        }
    }
    Ok(())
}

fn write_tar(tree: &Path, top: &str, out: &mut dyn Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut entries = vec![(PathBuf::new(), tree.to_path_buf())];
    collect_entries(tree, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (relative, full) in entries {
        let name = Path::new(top).join(&relative);
        append_entry(&mut builder, &name, &full)?;
    }
    builder
        .into_inner()
        .and_then(|out| out.flush())
        .map_err(|e| Error::io("writing archive of", tree, e))
}

fn collect_entries(dir: &Path, relative: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    let read = fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
    for entry in read {
        let entry = entry.map_err(|e| Error::io("reading", dir, e))?;
        let full = entry.path();
        let rel = relative.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("reading", &full, e))?;
        out.push((rel.clone(), full.clone()));
        if kind.is_dir() {
            collect_entries(&full, &rel, out)?;
        }
    }
    Ok(())
}

fn append_entry(
    builder: &mut tar::Builder<&mut dyn Write>,
    name: &Path,
    full: &Path,
) -> Result<()> {
    let meta = fs::symlink_metadata(full).map_err(|e| Error::io("reading", full, e))?;
    let io_error = |e: std::io::Error| Error::io("archiving", full, e);
    let mut header = tar::Header::new_gnu();
    header.set_mtime(ARCHIVE_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(meta.permissions().mode() & 0o7777);
    if meta.file_type().is_symlink() {
        let target = fs::read_link(full).map_err(io_error)?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, name, target)
            .map_err(io_error)
    } else if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, name, std::io::empty())
            .map_err(io_error)
    } else {
        let data = fs::read(full).map_err(io_error)?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, name, data.as_slice())
            .map_err(io_error)
    }
}

// ------------------------------------------------------------------ reading images back

/// One entry of an image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsEntry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// A stand-in image: its header line and its root filesystem keyed by absolute path.
#[derive(Debug, Clone)]
pub struct StandinImage {
    pub device: String,
    pub filesystem: String,
    pub image_type: String,
    pub rootfs: BTreeMap<String, RootfsEntry>,
}

/// Reads a stand-in image (`.bin`, `.img.gz`, with or without the metadata trailer).
pub fn read_image(image: &Path) -> Result<StandinImage> {
    let raw = fs::read(image).map_err(|e| Error::io("reading", image, e))?;
    let bad = |why: &str| {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!("`{}` is not a stand-in image: {why}", image.display()),
        )
    };
    let payload = if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip_first_member(&raw).ok_or_else(|| bad("broken gzip data"))?
    } else {
        raw
    };
    let newline = payload
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header = std::str::from_utf8(&payload[..newline]).map_err(|_| bad("header is not text"))?;
    let fields: Vec<&str> = header.split(' ').collect();
    if fields.len() != 5 || fields[0] != "STANDIN-IMAGE" || fields[1] != "v1" {
        return Err(bad("unknown header"));
    }
    let rootfs = read_rootfs_tar(&payload[newline + 1..]).map_err(|e| bad(&e.to_string()))?;
    Ok(StandinImage {
        device: fields[2].to_string(),
        filesystem: fields[3].to_string(),
        image_type: fields[4].to_string(),
        rootfs,
    })
}

/// The root filesystem of a stand-in image, keyed by absolute path (`/etc/banner`).
pub fn read_image_rootfs(image: &Path) -> Result<BTreeMap<String, RootfsEntry>> {
    Ok(read_image(image)?.rootfs)
}

fn read_rootfs_tar(data: &[u8]) -> std::io::Result<BTreeMap<String, RootfsEntry>> {
    let mut archive = tar::Archive::new(data);
    let mut rootfs = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = format!("/{}", path.trim_start_matches("./").trim_end_matches('/'));
        let mode = entry.header().mode()?;
        let item = match entry.header().entry_type() {
            tar::EntryType::Directory => RootfsEntry::Dir { mode },
            tar::EntryType::Symlink => RootfsEntry::Symlink {
                target: entry
                    .link_name()?
                    .map(|target| target.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            _ => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                RootfsEntry::File { mode, data }
            }
        };
        rootfs.insert(path, item);
    }
    Ok(rootfs)
}

/// Inflates the first gzip member; anything after it (OpenWrt's metadata trailer) is ignored.
fn gunzip_first_member(data: &[u8]) -> Option<Vec<u8>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if data.len() < 18 || data[2] != 8 {
        return None;
    }
    let flags = data[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let length = u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]) as usize;
        at += 2 + length;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|byte| *byte == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    miniz_oxide::inflate::decompress_to_vec(data.get(at..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(release: &str) -> StandinSpec {
        StandinSpec {
            release: release.to_string(),
            target: "ath79".to_string(),
            subtarget: "generic".to_string(),
            version_code: "r1-abc".to_string(),
            profiles_json: "{\"profiles\":{}}".to_string(),
            package_manager: PackageManager::Opkg,
            extra_packages: vec![],
            build_cpu_seconds: 0.0,
            size_limit_devices: BTreeMap::new(),
            mirror_url: UPSTREAM_MIRROR.to_string(),
            local_packages: false,
        }
    }

    #[test]
    fn names_follow_the_upstream_pattern() {
        assert_eq!(
            archive_name(&spec("23.05.4"), Compression::Xz),
            "openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz"
        );
        assert_eq!(
            archive_name(&spec("SNAPSHOT"), Compression::Zstd),
            "openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst"
        );
        assert_eq!(Compression::for_release("23.05.4"), Compression::Xz);
        assert_eq!(Compression::for_release("24.10.0"), Compression::Zstd);
        assert_eq!(Compression::for_release("SNAPSHOT"), Compression::Zstd);
    }

    #[test]
    fn image_recipes_skip_initramfs_and_keep_the_suffix() {
        let image = json!({"name": "p-dev-squashfs-sysupgrade.bin", "type": "sysupgrade",
            "filesystem": "squashfs", "sha256": "a", "sha256_unsigned": "b"});
        let recipe = ImageRecipe::parse("p-dev", &image).expect("a recipe");
        assert_eq!(recipe.suffix, "squashfs-sysupgrade.bin");
        assert!(recipe.metadata);
        let kernel = json!({"name": "p-dev-initramfs-kernel.bin", "type": "kernel",
            "filesystem": "initramfs", "sha256": "a", "sha256_unsigned": "a"});
        assert!(ImageRecipe::parse("p-dev", &kernel).is_none());
    }

    #[test]
    fn titles_join_vendor_model_variant() {
        let titles = json!([{"vendor": "TP-Link", "model": "Archer C7", "variant": "v2"}]);
        assert_eq!(device_title(&titles), "TP-Link Archer C7 v2");
        assert_eq!(device_title(&json!([{"title": "Generic"}])), "Generic");
    }

    #[test]
    fn gunzip_ignores_trailing_metadata() {
        let text = b"hello stand-in".to_vec();
        let deflated = miniz_oxide::deflate::compress_to_vec(&text, 6);
        let mut gz = vec![0x1f, 0x8b, 8, FNAME_FLAG, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(b"name\0");
        gz.extend_from_slice(&deflated);
        gz.extend_from_slice(&[0; 8]);
        gz.extend_from_slice(b"{\"metadata\":1}FWx0");
        assert_eq!(gunzip_first_member(&gz), Some(text));
    }

    const FNAME_FLAG: u8 = 8;

    #[test]
    fn server_profiles_json_renames_images_for_the_release() {
        let mut spec = spec("SNAPSHOT");
        spec.profiles_json = json!({
            "version_number": "23.05.4", "version_code": "r9-old",
            "default_packages": ["opkg", "busybox"],
            "profiles": {"dev": {
                "image_prefix": "openwrt-23.05.4-ath79-generic-dev",
                "images": [{"name": "openwrt-23.05.4-ath79-generic-dev-squashfs-sysupgrade.bin"}]
            }}
        })
        .to_string();
        spec.package_manager = PackageManager::Apk;
        let text = server_profiles_json(&spec).expect("json");
        assert!(!text.ends_with('\n'));
        let parsed: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(parsed["version_number"], "SNAPSHOT");
        assert_eq!(parsed["version_code"], "r1-abc");
        assert_eq!(
            parsed["default_packages"],
            json!(["apk-mbedtls", "busybox"])
        );
        let profile = &parsed["profiles"]["dev"];
        assert_eq!(profile["image_prefix"], "openwrt-ath79-generic-dev");
        assert_eq!(
            profile["images"][0]["name"],
            "openwrt-ath79-generic-dev-squashfs-sysupgrade.bin"
        );
    }
}
