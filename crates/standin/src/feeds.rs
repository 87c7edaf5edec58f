//! The stand-in mirror's package feeds, laid out like upstream's (reference §1.4, §1.5): the
//! target's core feed in `targets/<t>/<s>/packages/`, kernel modules in
//! `targets/<t>/<s>/kmods/<kver>-<krel>-<vermagic>/` where the release has that feed, and
//! `packages/<arch>/{base,luci,packages,routing,telephony}/`, shared by every target of that
//! architecture. Each feed directory holds its package files and an index signed with the
//! stand-in TEST key like `sha256sums` is (the raw index bytes): `Packages`, `Packages.gz`
//! and `Packages.sig` for opkg, or the stand-in `packages.adb` and `packages.adb.sig` for
//! apk (docs/standin.md says what that stand-in is).
//!
//! Package contents come from `files/catalog.txt` plus the target's default and device
//! packages. This module writes files only; `files/standin.py` installs them at make time.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::imagebuilder::{PackageManager, StandinSpec, TargetInfo, kernel_version, vermagic};
use imagegen::error::{Error, Result};
use imagegen::imagebuilder::release_dir;
use imagegen::imagebuilder::usign::SecretKey;

const CATALOG: &str = include_str!("files/catalog.txt");

/// One feed of an Image Builder: its name in `repositories.conf` and its directory below the
/// mirror root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedDir {
    /// `openwrt_core`, `openwrt_base`, ...
    pub name: String,
    /// `core`, `kmods`, `base`, `luci`, `packages`, `routing`, `telephony`.
    pub short: String,
    /// `releases/23.05.4/packages/x86_64/base`.
    pub path: String,
}

/// The feeds a stand-in Image Builder lists, in upstream's order (reference §1.5).
pub fn feed_dirs(spec: &StandinSpec) -> Result<Vec<FeedDir>> {
    let info = TargetInfo::parse(spec)?;
    Ok(feed_dirs_of(spec, &info))
}

pub(crate) fn feed_dirs_of(spec: &StandinSpec, info: &TargetInfo) -> Vec<FeedDir> {
    let base = release_dir(&spec.release);
    let target_path = format!("{base}/targets/{}/{}", spec.target, spec.subtarget);
    let feed = |short: &str, path: String| FeedDir {
        name: format!("openwrt_{short}"),
        short: short.to_string(),
        path,
    };
    let mut feeds = vec![
        feed("core", format!("{target_path}/packages")),
        feed(
            "base",
            format!("{base}/packages/{}/base", info.arch_packages),
        ),
    ];
    if has_kmods_feed(&spec.release) {
        feeds.push(feed(
            "kmods",
            format!("{target_path}/kmods/{}", kmods_triple(spec)),
        ));
    }
    for short in ["luci", "packages", "routing", "telephony"] {
        feeds.push(feed(
            short,
            format!("{base}/packages/{}/{short}", info.arch_packages),
        ));
    }
    feeds
}

/// Kernel modules left the core feed for `kmods/<triple>/` in 23.05.6, 24.10 and snapshots
/// (reference §1.4); `profiles.json` carries `linux_kernel` in exactly those releases.
pub(crate) fn has_kmods_feed(release: &str) -> bool {
    let old = release.starts_with("22.")
        || (release.starts_with("23.05.") && release.as_bytes().get(6).is_some_and(|c| *c < b'6'));
    !old
}

/// `<kver>-<krel>-<vermagic>`, the kmods directory name.
pub(crate) fn kmods_triple(spec: &StandinSpec) -> String {
    format!("{}-1-{}", kernel_version(&spec.release), vermagic(spec))
}

/// One package of the stand-in feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPackage {
    pub name: String,
    pub version: String,
    /// opkg syntax: `libc`, `kernel (= 5.15.162-1-…)`.
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub conflicts: Vec<String>,
    /// The feed's short name (`core`, `base`, ...).
    pub feed: String,
    /// `all` or the package architecture.
    pub architecture: String,
    pub installed_size: u64,
}

impl FeedPackage {
    /// `busybox_1.36.1-1_x86_64.ipk` (opkg) or `busybox-1.36.1-r1.apk` (apk).
    pub fn file_name(&self, manager: PackageManager) -> String {
        match manager {
            PackageManager::Opkg => {
                format!("{}_{}_{}.ipk", self.name, self.version, self.architecture)
            }
            PackageManager::Apk => format!("{}-{}.apk", self.name, self.version),
        }
    }

    /// The `control` file: the fields `Packages` stanzas repeat.
    fn control(&self) -> String {
        let mut text = format!("Package: {}\nVersion: {}\n", self.name, self.version);
        for (field, list) in [
            ("Depends", &self.depends),
            ("Provides", &self.provides),
            ("Conflicts", &self.conflicts),
        ] {
            if !list.is_empty() {
                text += &format!("{field}: {}\n", list.join(", "));
            }
        }
        text += &format!(
            "Section: {}\nArchitecture: {}\nInstalled-Size: {}\nDescription: {} (stand-in package)\n",
            self.feed, self.architecture, self.installed_size, self.name
        );
        text
    }
}

struct CatalogEntry {
    extra: bool,
    name: String,
    version: String,
    depends: Vec<String>,
    feed: Option<String>,
    provides: Vec<String>,
    conflicts: Vec<String>,
}

fn catalog() -> Vec<CatalogEntry> {
    CATALOG
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut fields: Vec<&str> = line.split('\t').collect();
            let extra = fields.first() == Some(&"extra");
            if extra {
                fields.remove(0);
            }
            let list = |text: &str, separator: char| -> Vec<String> {
                text.split(separator)
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let mut entry = CatalogEntry {
                extra,
                name: fields.first().copied().unwrap_or("").to_string(),
                version: fields.get(1).copied().unwrap_or("-").to_string(),
                depends: list(fields.get(2).copied().unwrap_or(""), ','),
                feed: None,
                provides: Vec::new(),
                conflicts: Vec::new(),
            };
            for attribute in fields.get(3).copied().unwrap_or("").split_whitespace() {
                match attribute.split_once('=') {
                    Some(("feed", feed)) => entry.feed = Some(feed.to_string()),
                    Some(("provides", names)) => entry.provides = list(names, ','),
                    Some(("conflicts", names)) => entry.conflicts = list(names, ','),
                    _ => {}
                }
            }
            entry
        })
        .collect()
}

/// The names of the packages the stand-in feeds offer besides the target's own.
pub fn default_extra_packages() -> Vec<String> {
    catalog()
        .into_iter()
        .filter(|entry| entry.extra)
        .map(|entry| entry.name)
        .collect()
}

/// The name the package has under this package manager (LuCI renamed its opkg app).
fn package_name(spec: &StandinSpec, name: &str) -> String {
    match (spec.package_manager, name) {
        (PackageManager::Opkg, "luci-app-package-manager") => "luci-app-opkg".to_string(),
        _ => name.to_string(),
    }
}

/// The name a dependency entry is about: `kernel (= 1)` → `kernel`.
fn dependency_name(entry: &str) -> &str {
    entry.split([' ', '(']).next().unwrap_or(entry)
}

/// Every package the feeds of `spec` offer: defaults, device packages, extras, `kernel`,
/// `libc` and the dependency closure of all of them.
pub fn packages(spec: &StandinSpec) -> Result<Vec<FeedPackage>> {
    let info = TargetInfo::parse(spec)?;
    Ok(packages_of(spec, &info))
}

pub(crate) fn packages_of(spec: &StandinSpec, info: &TargetInfo) -> Vec<FeedPackage> {
    let known: BTreeMap<String, CatalogEntry> = catalog()
        .into_iter()
        .map(|entry| (package_name(spec, &entry.name), entry))
        .collect();
    let mut wanted: Vec<String> = info.default_packages.clone();
    for device in &info.devices {
        wanted.extend(device.device_packages.iter().cloned());
    }
    wanted.extend(spec.extra_packages.iter().cloned());
    wanted.extend(["kernel".to_string(), "libc".to_string()]);
    let mut feed: BTreeMap<String, FeedPackage> = BTreeMap::new();
    while let Some(name) = wanted.pop() {
        let name = name.trim_start_matches('-').to_string();
        if name.is_empty() || feed.contains_key(&name) {
            continue;
        }
        let package = package_facts(spec, info, &name, known.get(&name));
        wanted.extend(
            package
                .depends
                .iter()
                .map(|dep| dependency_name(dep).to_string()),
        );
        feed.insert(name, package);
    }
    feed.into_values().collect()
}

fn package_facts(
    spec: &StandinSpec,
    info: &TargetInfo,
    name: &str,
    entry: Option<&CatalogEntry>,
) -> FeedPackage {
    let kernel = format!("{}-1-{}", info.kernel_version, vermagic(spec));
    let kmod_version = format!("{}-1", info.kernel_version);
    let kernel_dependency = format!("kernel (= {})", version_for(spec, &kernel));
    let (version, depends) = match (name, entry) {
        ("kernel", _) => (kernel.clone(), vec![]),
        (kmod, Some(entry)) if entry.version == "-" || kmod.starts_with("kmod-") => {
            let mut depends: Vec<String> = entry
                .depends
                .iter()
                .filter(|dep| dependency_name(dep) != "kernel")
                .cloned()
                .collect();
            depends.insert(0, kernel_dependency.clone());
            (kmod_version, depends)
        }
        (_, Some(entry)) => (
            entry.version.replace("%R", &spec.version_code),
            entry.depends.clone(),
        ),
        (kmod, None) if kmod.starts_with("kmod-") => (kmod_version, vec![kernel_dependency]),
        (_, None) => {
            let digest = Sha256::digest(name.as_bytes());
            (
                format!("1.{}.{}-1", digest[0] % 10, digest[1] % 7),
                vec!["libc".to_string()],
            )
        }
    };
    let rename = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .map(|item| {
                let target = dependency_name(item);
                item.replacen(target, &package_name(spec, target), 1)
            })
            .collect()
    };
    let feed = feed_of(spec, name, entry);
    let architecture = if feed == "luci" {
        "all".to_string()
    } else {
        info.arch_packages.clone()
    };
    FeedPackage {
        name: name.to_string(),
        version: version_for(spec, &version),
        depends: rename(&depends),
        provides: entry.map(|e| rename(&e.provides)).unwrap_or_default(),
        conflicts: entry.map(|e| rename(&e.conflicts)).unwrap_or_default(),
        installed_size: 1024 + u64::from(Sha256::digest(name.as_bytes())[0]) * 97,
        feed,
        architecture,
    }
}

fn feed_of(spec: &StandinSpec, name: &str, entry: Option<&CatalogEntry>) -> String {
    if let Some(feed) = entry.and_then(|entry| entry.feed.clone()) {
        return feed;
    }
    if name.starts_with("kmod-") {
        return if has_kmods_feed(&spec.release) {
            "kmods"
        } else {
            "core"
        }
        .to_string();
    }
    let feed = match name {
        "kernel" | "libc" | "libgcc" | "base-files" => "core",
        luci if luci.starts_with("luci") => "luci",
        _ if entry.is_some_and(|entry| entry.extra) => "packages",
        _ => "base",
    };
    feed.to_string()
}

/// apk spells versions `-rN`; opkg versions pass unchanged.
fn version_for(spec: &StandinSpec, version: &str) -> String {
    match spec.package_manager {
        PackageManager::Opkg => version.to_string(),
        PackageManager::Apk => apk_version(version),
    }
}

/// apk spells the package release `-rN`: `1.36.1-1` becomes `1.36.1-r1`.
pub(crate) fn apk_version(version: &str) -> String {
    match version.rsplit_once('-') {
        Some((base, release))
            if !release.is_empty() && release.chars().all(|c| c.is_ascii_digit()) =>
        {
            format!("{base}-r{release}")
        }
        Some((_, release)) if release.starts_with('r') => version.to_string(),
        _ => format!("{version}-r1"),
    }
}

// ------------------------------------------------------------------ package files

/// A package file: a gzipped tar of `./debian-binary`, `./data.tar.gz` and
/// `./control.tar.gz`, as OpenWrt's `ipkg-build` makes them. The data holds one marker file,
/// `/usr/lib/standin/installed/<name>` (`<name> <version>`). apk trees use the same container
/// under the `.apk` name (docs/standin.md).
pub fn package_file(package: &FeedPackage) -> Vec<u8> {
    let marker = format!("{} {}\n", package.name, package.version);
    let data = gzip(&tar(&[(
        &format!("./usr/lib/standin/installed/{}", package.name),
        marker.as_bytes(),
    )]));
    let control = gzip(&tar(&[("./control", package.control().as_bytes())]));
    gzip(&tar(&[
        ("./debian-binary", b"2.0\n"),
        ("./data.tar.gz", &data),
        ("./control.tar.gz", &control),
    ]))
}

/// A tar of regular files. Names keep their `./` prefix as `ipkg-build`'s tar writes them
/// (the tar crate's path setters would drop it), so they go into the header directly.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        let length = name.len().min(field.len() - 1);
        field[..length].copy_from_slice(&name.as_bytes()[..length]);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        // Writing into a Vec cannot fail.
        let _ = builder.append(&header, *data);
    }
    builder.into_inner().unwrap_or_default()
}

/// Deterministic gzip (mtime 0, no name).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

// ------------------------------------------------------------------ writing feeds

/// The index stanza of one package file (`ipkg-make-index.sh` field order).
fn index_stanza(package: &FeedPackage, file_name: &str, bytes: &[u8]) -> String {
    let mut text = format!("Package: {}\nVersion: {}\n", package.name, package.version);
    for (field, list) in [
        ("Depends", &package.depends),
        ("Provides", &package.provides),
        ("Conflicts", &package.conflicts),
    ] {
        if !list.is_empty() {
            text += &format!("{field}: {}\n", list.join(", "));
        }
    }
    text += &format!(
        "Section: {}\nArchitecture: {}\nInstalled-Size: {}\nFilename: {file_name}\nSize: {}\nSHA256sum: {}\nDescription: {} (stand-in package)\n\n",
        package.feed,
        package.architecture,
        package.installed_size,
        bytes.len(),
        hex::encode(Sha256::digest(bytes)),
        package.name
    );
    text
}

/// The index file name a package manager reads: `Packages` (opkg) or `packages.adb` (apk).
pub fn index_name(manager: PackageManager) -> &'static str {
    match manager {
        PackageManager::Opkg => "Packages",
        PackageManager::Apk => "packages.adb",
    }
}

/// Writes one feed directory: every package file, the index and its signature (plus
/// `Packages.gz` for opkg). Replaces what an earlier write left in `dir`.
pub fn write_feed(
    dir: &Path,
    packages: &[&FeedPackage],
    manager: PackageManager,
    key: &SecretKey,
) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|error| Error::io("removing", dir, error))?;
    }
    fs::create_dir_all(dir).map_err(|error| Error::io("creating", dir, error))?;
    let mut index = String::new();
    let mut sorted: Vec<&&FeedPackage> = packages.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for package in sorted {
        let bytes = package_file(package);
        let file_name = package.file_name(manager);
        write(&dir.join(&file_name), &bytes)?;
        index += &index_stanza(package, &file_name, &bytes);
    }
    sign_index(dir, manager, index.as_bytes(), key)
}

/// (Re)writes a feed's index and signature from `index` bytes (for tests that re-publish or
/// tamper with a feed).
pub fn sign_index(
    dir: &Path,
    manager: PackageManager,
    index: &[u8],
    key: &SecretKey,
) -> Result<()> {
    let name = index_name(manager);
    write(&dir.join(name), index)?;
    if manager == PackageManager::Opkg {
        write(&dir.join("Packages.gz"), &gzip(index))?;
    }
    write(&dir.join(format!("{name}.sig")), key.sign(index).as_bytes())
}

/// Writes every feed the `specs` need below `mirror_root`, signed with `key`. Feeds of one
/// architecture are shared by the targets of a release (their packages are merged), as on
/// the real server. Returns the feed directories written.
pub fn write_feeds(
    mirror_root: &Path,
    specs: &[&StandinSpec],
    key: &SecretKey,
) -> Result<Vec<PathBuf>> {
    // Feed path → (package manager, packages by name).
    let mut feeds: BTreeMap<String, (PackageManager, BTreeMap<String, FeedPackage>)> =
        BTreeMap::new();
    for spec in specs {
        let info = TargetInfo::parse(spec)?;
        let dirs = feed_dirs_of(spec, &info);
        for dir in &dirs {
            feeds
                .entry(dir.path.clone())
                .or_insert_with(|| (spec.package_manager, BTreeMap::new()));
        }
        for package in packages_of(spec, &info) {
            let Some(dir) = dirs.iter().find(|dir| dir.short == package.feed) else {
                continue;
            };
            if let Some((_, packages)) = feeds.get_mut(&dir.path) {
                packages.entry(package.name.clone()).or_insert(package);
            }
        }
    }
    let mut written = Vec::new();
    for (path, (manager, packages)) in &feeds {
        let dir = mirror_root.join(path);
        let list: Vec<&FeedPackage> = packages.values().collect();
        write_feed(&dir, &list, *manager, key)?;
        written.push(dir);
    }
    Ok(written)
}

/// A `file://` mirror holding just the feeds of `spec` (signed with the TEST key), for tests
/// that drive a stand-in tree with make directly. Returns the mirror's URL; set it as the
/// spec's `mirror_url` before writing the tree.
pub fn write_local_mirror(spec: &StandinSpec, mirror_root: &Path) -> Result<String> {
    write_feeds(mirror_root, &[spec], &crate::mirror::test_secret_key())?;
    Ok(format!("file://{}", mirror_root.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|error| Error::io("writing", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apk_versions_get_an_r_release() {
        assert_eq!(apk_version("1.36.1-1"), "1.36.1-r1");
        assert_eq!(apk_version("26"), "26-r1");
        assert_eq!(apk_version("3.0.0_pre20250606-r1"), "3.0.0_pre20250606-r1");
    }

    #[test]
    fn catalog_rows_carry_feeds_provides_and_conflicts() {
        let entries = catalog();
        let wpad = entries
            .iter()
            .find(|entry| entry.name == "wpad-mbedtls")
            .expect("wpad-mbedtls");
        assert_eq!(wpad.feed.as_deref(), Some("base"));
        assert_eq!(wpad.provides, ["hostapd", "wpa-supplicant", "wpad"]);
        assert!(wpad.conflicts.contains(&"wpad-basic-mbedtls".to_string()));
        let dnsmasq = entries.iter().find(|entry| entry.name == "dnsmasq");
        assert_eq!(
            dnsmasq.map(|entry| entry.depends.clone()),
            Some(vec![
                "libc".to_string(),
                "libubus (>= 2023-06-05)".to_string()
            ])
        );
    }

    #[test]
    fn package_files_are_gzipped_tars_with_control_and_data() {
        let package = FeedPackage {
            name: "busybox".into(),
            version: "1.36.1-1".into(),
            depends: vec!["libc".into()],
            provides: vec![],
            conflicts: vec![],
            feed: "base".into(),
            architecture: "x86_64".into(),
            installed_size: 2048,
        };
        let bytes = package_file(&package);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let outer = flate2::read::GzDecoder::new(bytes.as_slice());
        let mut archive = tar::Archive::new(outer);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
        );
        assert_eq!(package_file(&package), bytes, "deterministic");
        assert_eq!(
            package.file_name(PackageManager::Opkg),
            "busybox_1.36.1-1_x86_64.ipk"
        );
    }
}
