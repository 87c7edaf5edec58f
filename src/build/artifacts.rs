//! Build outputs: classify what `make image` left in BIN_DIR with the `profiles.json` it
//! wrote (falling back to file names), hash every file, describe the build in a JSON
//! manifest, and copy results into a profile's `bin_dir`. Storing blobs is [`crate::cas`]'s
//! job; recording them is the caller's.

use std::fs::{self, File};

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cas::sha256_file;
use crate::error::{Error, ErrorCode, Result};
use crate::key::BuildInputs;

pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// One file a build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltArtifact {
    pub path: PathBuf,
    pub name: String,
    /// `sysupgrade`, `factory`, `combined`, `combined-efi`, `rootfs`, `kernel`, `sdcard`,
    /// `manifest`, `rootfs-tarball`, `metadata`, ... (`profiles.json`'s `type` when listed).
    pub kind: String,
    pub filesystem: Option<String>,
    pub sha256: String,
    pub size: u64,
}

/// An image entry of `profiles.json` (reference §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct ImageEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    filesystem: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

/// The Image Builder profile id as `profiles.json` keys it (without `DEVICE_`).
pub(crate) fn profile_key(profile: &str) -> &str {
    profile.strip_prefix("DEVICE_").unwrap_or(profile)
}

/// The images `profiles.json` lists for `profile`, or `None` when the profile is absent.
fn profile_images(profiles_json: &Value, profile: &str) -> Option<Result<Vec<ImageEntry>>> {
    let images = profiles_json
        .get("profiles")?
        .get(profile_key(profile))?
        .get("images")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    Some(serde_json::from_value(images).map_err(|error| {
        Error::new(
            ErrorCode::ImagebuilderError,
            format!("`profiles.json` has a malformed image list: {error}"),
        )
    }))
}

/// Why the profile's images are missing from `profiles.json`, if they are; `filesystem`
/// additionally requires an image of that filesystem.
pub(crate) fn missing_images(
    profiles_json: Option<&Value>,
    profile: &str,
    filesystem: Option<&str>,
) -> Option<String> {
    let Some(json) = profiles_json else {
        return Some(match filesystem {
            Some(wanted) => format!(
                "the build wrote no `profiles.json` (does the target build `{wanted}` images?)"
            ),
            None => "the build wrote no `profiles.json`".to_string(),
        });
    };
    let images = match profile_images(json, profile) {
        None => {
            return Some(format!(
                "`profiles.json` does not list `{}`",
                profile_key(profile)
            ));
        }
        Some(Err(error)) => return Some(error.message),
        Some(Ok(images)) => images,
    };
    if images.is_empty() {
        return Some("`profiles.json` lists no image".to_string());
    }
    let wanted = filesystem?;
    let found = images
        .iter()
        .any(|image| image.filesystem.as_deref() == Some(wanted));
    (!found).then(|| {
        format!("no `{wanted}` image was written (does the target build `{wanted}` images?)")
    })
}

/// Hashes and classifies every regular file in `output_dir`.
pub(crate) fn collect_artifacts(
    output_dir: &Path,
    profile: &str,
    profiles_json: Option<&Value>,
) -> Result<Vec<BuiltArtifact>> {
    let listed = match profiles_json.and_then(|json| profile_images(json, profile)) {
        Some(images) => images?,
        None => Vec::new(),
    };
    let mut artifacts = Vec::new();
    for entry in
        fs::read_dir(output_dir).map_err(|error| Error::io("listing", output_dir, error))?
    {
        let entry = entry.map_err(|error| Error::io("listing", output_dir, error))?;
        let path = entry.path();
        let is_file = entry
            .file_type()
            .map(|kind| kind.is_file())
            .unwrap_or(false);
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %path.display(), "ignoring an output whose name is not UTF-8");
            continue;
        };
        if !is_file {
            continue;
        }
        let (sha256, size) = sha256_file(&path)?;
        let (kind, filesystem) = match listed.iter().find(|image| image.name == name) {
            Some(image) => {
                check_listed_hash(image, &sha256)?;
                (image.kind.clone(), image.filesystem.clone())
            }
            None => classify_by_name(&name),
        };
        artifacts.push(BuiltArtifact {
            path,
            name,
            kind,
            filesystem,
            sha256,
            size,
        });
    }
    if let Some(image) = listed
        .iter()
        .find(|image| !artifacts.iter().any(|a| a.name == image.name))
    {
        return Err(Error::new(
            ErrorCode::BuildFailed,
            format!(
                "`profiles.json` lists `{}`, but the build did not write it",
                image.name
            ),
        ));
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(artifacts)
}

fn check_listed_hash(image: &ImageEntry, actual: &str) -> Result<()> {
    match &image.sha256 {
        Some(expected) if !expected.eq_ignore_ascii_case(actual) => Err(Error::new(
            ErrorCode::BuildFailed,
            format!(
                "`{}` does not match the sha256 in `profiles.json`",
                image.name
            ),
        )
        .with_details(serde_json::json!({ "expected": expected, "actual": actual }))),
        _ => Ok(()),
    }
}

/// Kind and filesystem of an output from its name alone, for files `profiles.json` does not
/// list (manifest, kernel, rootfs tarball, checksums) or when it is missing.
pub fn classify_by_name(name: &str) -> (String, Option<String>) {
    if name == "sha256sums" || name == "profiles.json" {
        return ("metadata".to_string(), None);
    }
    let filesystem = ["squashfs", "ext4", "ubifs", "jffs2", "erofs", "initramfs"]
        .into_iter()
        .find(|fs| name.contains(&format!("-{fs}-")))
        .map(str::to_string);
    let kind = if name.ends_with(".manifest") {
        "manifest"
    } else if name.ends_with("-rootfs.tar.gz") {
        "rootfs-tarball"
    } else if name.ends_with("-kernel.bin") {
        "kernel"
    } else {
        const BY_NAME: &[(&str, &str)] = &[
            ("-sysupgrade", "sysupgrade"),
            ("-factory", "factory"),
            ("-combined-efi", "combined-efi"),
            ("-combined", "combined"),
            ("-sdcard", "sdcard"),
            ("-rootfs", "rootfs"),
            ("-kernel", "kernel"),
        ];
        BY_NAME
            .iter()
            .find(|(marker, _)| name.contains(marker))
            .map(|(_, kind)| *kind)
            .unwrap_or("other")
    };
    (kind.to_string(), filesystem)
}

/// Copies artifacts into a profile's `bin_dir`, each atomically (temp file, fsync, rename).
/// Returns the written paths.
pub fn copy_to_bin_dir(artifacts: &[BuiltArtifact], bin_dir: &Path) -> Result<Vec<PathBuf>> {
    let sources: Vec<(&Path, &str)> = artifacts
        .iter()
        .map(|artifact| (artifact.path.as_path(), artifact.name.as_str()))
        .collect();
    copy_named(&sources, bin_dir)
}

/// Copies stored artifacts out of the CAS into `dir` under their names, each atomically.
pub fn copy_stored(
    cas: &crate::cas::Cas,
    artifacts: &[crate::state::ArtifactRef],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let blobs: Vec<(PathBuf, &str)> = artifacts
        .iter()
        .map(|artifact| (cas.blob_path(&artifact.sha256), artifact.name.as_str()))
        .collect();
    let sources: Vec<(&Path, &str)> = blobs
        .iter()
        .map(|(path, name)| (path.as_path(), *name))
        .collect();
    copy_named(&sources, dir)
}

fn copy_named(sources: &[(&Path, &str)], bin_dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(bin_dir).map_err(|error| Error::io("creating", bin_dir, error))?;
    let mut written = Vec::new();
    for (source, name) in sources {
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return Err(Error::internal(format!("refusing artifact name `{name}`")));
        }
        let target = bin_dir.join(name);
        let temp = bin_dir.join(format!(".{name}.imagegen-partial"));
        let copy = || -> std::io::Result<()> {
            // A planted file or symlink at the temp name is removed, never followed: the
            // temp file is created exclusively (O_EXCL refuses even a dangling symlink).
            match fs::remove_file(&temp) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
            let mut output = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)?;
            std::io::copy(&mut File::open(source)?, &mut output)?;
            output.set_permissions(fs::Permissions::from_mode(0o644))?;
            output.sync_all()?;
            fs::rename(&temp, &target)
        };
        if let Err(error) = copy() {
            let _ = fs::remove_file(&temp);
            return Err(Error::io("copying an artifact to", &target, error));
        }
        written.push(target);
    }
    Ok(written)
}

/// An artifact as the build manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestArtifact {
    pub name: String,
    pub kind: String,
    pub filesystem: Option<String>,
    pub sha256: String,
    pub size: u64,
}

impl From<&BuiltArtifact> for ManifestArtifact {
    fn from(artifact: &BuiltArtifact) -> ManifestArtifact {
        ManifestArtifact {
            name: artifact.name.clone(),
            kind: artifact.kind.clone(),
            filesystem: artifact.filesystem.clone(),
            sha256: artifact.sha256.clone(),
            size: artifact.size,
        }
    }
}

/// Which Image Builder made a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagebuilderFacts {
    #[serde(flatten)]
    pub triple: crate::triple::Triple,
    pub version_code: Option<String>,
}

/// The JSON description of one successful build (format_version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    pub format_version: u32,
    pub build_key: String,
    pub inputs: BuildInputs,
    pub profile_id: String,
    pub artifacts: Vec<ManifestArtifact>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    pub imagebuilder: ImagebuilderFacts,
    /// Whether `make image` ran in the build sandbox (absent in manifests written before
    /// the sandbox existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<super::SandboxReport>,
}

impl BuildManifest {
    /// Describes a finished build. The revision comes from the `profiles.json` the build
    /// wrote (what actually ran), falling back to the pinned one.
    pub fn new(
        profile_id: &str,
        build_key: &str,
        inputs: &BuildInputs,
        output: &super::BuildOutput,
    ) -> BuildManifest {
        let built_revision = output
            .profiles_json
            .as_ref()
            .and_then(|json| json.get("version_code"))
            .and_then(Value::as_str)
            .map(str::to_string);
        BuildManifest {
            format_version: MANIFEST_FORMAT_VERSION,
            build_key: build_key.to_string(),
            inputs: inputs.clone(),
            profile_id: profile_id.to_string(),
            artifacts: output
                .artifacts
                .iter()
                .map(ManifestArtifact::from)
                .collect(),
            started_at: output.started_at.clone(),
            finished_at: output.finished_at.clone(),
            imagebuilder: ImagebuilderFacts {
                triple: inputs.builder.triple.clone(),
                version_code: built_revision.or_else(|| inputs.builder.version_code.clone()),
            },
            sandbox: Some(output.sandbox.clone()),
        }
    }

    /// Writes the manifest as pretty JSON, atomically.
    pub fn write_to(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|error| Error::internal(format!("serializing the build manifest: {error}")))?;
        text.push(b'\n');
        crate::fsutil::write_atomically(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_classify_without_profiles_json() {
        let cases = [
            (
                "openwrt-23.05.4-x86-64-generic-squashfs-combined-efi.img.gz",
                "combined-efi",
                Some("squashfs"),
            ),
            (
                "openwrt-23.05.4-x86-64-generic-ext4-combined.img.gz",
                "combined",
                Some("ext4"),
            ),
            ("openwrt-23.05.4-x86-64-generic-kernel.bin", "kernel", None),
            (
                "openwrt-23.05.4-x86-64-generic-rootfs.tar.gz",
                "rootfs-tarball",
                None,
            ),
            (
                "openwrt-23.05.4-x86-64-generic-squashfs-rootfs.img.gz",
                "rootfs",
                Some("squashfs"),
            ),
            ("openwrt-23.05.4-x86-64-generic.manifest", "manifest", None),
            (
                "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-factory-eu.bin",
                "factory",
                Some("squashfs"),
            ),
            (
                "openwrt-bcm27xx-bcm2711-rpi-4-ext4-sdcard.img.gz",
                "sdcard",
                Some("ext4"),
            ),
            ("sha256sums", "metadata", None),
            ("profiles.json", "metadata", None),
            ("notes.txt", "other", None),
        ];
        for (name, kind, filesystem) in cases {
            let (got_kind, got_filesystem) = classify_by_name(name);
            assert_eq!(
                (got_kind.as_str(), got_filesystem.as_deref()),
                (kind, filesystem),
                "{name}"
            );
        }
    }

    fn profiles(images: Value) -> Value {
        json!({ "version_code": "r1-abc", "profiles": { "generic": { "images": images } } })
    }

    #[test]
    fn profiles_json_decides_kind_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a-squashfs-factory-eu.bin"), b"").unwrap();
        fs::write(dir.path().join("a.manifest"), b"x - 1\n").unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let json = profiles(
            json!([{ "name": "a-squashfs-factory-eu.bin", "type": "factory-eu",
                                     "filesystem": "squashfs", "sha256": empty }]),
        );
        let artifacts = collect_artifacts(dir.path(), "DEVICE_generic", Some(&json)).unwrap();
        let kinds: Vec<&str> = artifacts.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["factory-eu", "manifest"]);
        assert_eq!(artifacts[0].sha256, empty);

        let wrong = profiles(
            json!([{ "name": "a-squashfs-factory-eu.bin", "type": "factory",
                                      "sha256": "00" }]),
        );
        let error = collect_artifacts(dir.path(), "generic", Some(&wrong)).unwrap_err();
        assert_eq!(error.code, ErrorCode::BuildFailed);
        let ghost = profiles(json!([{ "name": "missing.bin", "type": "sysupgrade" }]));
        assert!(collect_artifacts(dir.path(), "generic", Some(&ghost)).is_err());
    }

    #[test]
    fn missing_images_are_explained() {
        let json =
            profiles(json!([{ "name": "a", "type": "sysupgrade", "filesystem": "squashfs" }]));
        assert_eq!(
            missing_images(Some(&json), "generic", Some("squashfs")),
            None
        );
        assert_eq!(
            missing_images(Some(&json), "generic", Some("ext4")).as_deref(),
            Some("no `ext4` image was written (does the target build `ext4` images?)")
        );
        assert!(missing_images(Some(&json), "other", None).is_some());
        assert!(missing_images(Some(&profiles(json!([]))), "generic", None).is_some());
        assert!(missing_images(None, "generic", None).is_some());
    }

    #[test]
    fn bin_dir_copies_are_complete_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("image.bin");
        fs::write(&source, b"firmware").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o444)).unwrap();
        let artifact = BuiltArtifact {
            path: source,
            name: "image.bin".into(),
            kind: "sysupgrade".into(),
            filesystem: None,
            sha256: String::new(),
            size: 8,
        };
        let bin = dir.path().join("bin");
        let written = copy_to_bin_dir(std::slice::from_ref(&artifact), &bin).unwrap();
        assert_eq!(fs::read(&written[0]).unwrap(), b"firmware");
        copy_to_bin_dir(&[artifact], &bin).unwrap();
        let names: Vec<_> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn planted_links_in_a_bin_dir_are_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("image.bin");
        fs::write(&source, b"firmware").unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&victim, bin.join(".image.bin.imagegen-partial")).unwrap();
        std::os::unix::fs::symlink(&victim, bin.join("image.bin")).unwrap();
        let artifact = BuiltArtifact {
            path: source,
            name: "image.bin".into(),
            kind: "sysupgrade".into(),
            filesystem: None,
            sha256: String::new(),
            size: 8,
        };
        copy_to_bin_dir(&[artifact], &bin).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(
            !fs::symlink_metadata(bin.join("image.bin"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read(bin.join("image.bin")).unwrap(), b"firmware");
    }
}
