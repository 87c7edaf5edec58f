//! Writes a stand-in OpenWrt download mirror (real layout, real `sha256sums`, real usign
//! signatures) for tests and the offline demo. Signs with a test key, which imagegen never
//! trusts by default. Does not generate Image Builder archives (see `standin::imagebuilder`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use imagegen::error::{Error, Result};
use imagegen::imagebuilder::checksums::{self, ChecksumEntry};
use imagegen::imagebuilder::usign::SecretKey;
use imagegen::imagebuilder::{release_dir, target_dir};

/// Seed of the stand-in mirror's signing key. A TEST key: public, so it proves nothing; it is
/// only trusted when a test or the demo adds it to the keyring explicitly.
pub const TEST_KEY_SEED: [u8; 32] = *b"imagegen stand-in TEST key seed!";

/// The test signing key derived from [`TEST_KEY_SEED`].
pub fn test_secret_key() -> SecretKey {
    SecretKey::from_seed(TEST_KEY_SEED)
}

/// Where the archive bytes come from.
pub enum ArchiveSource<'a> {
    Bytes(&'a [u8]),
    /// Copied into the mirror (streamed; fine for big benchmark archives).
    File(&'a Path),
}

/// One target directory's content.
pub struct TargetFiles<'a> {
    pub release: &'a str,
    pub target: &'a str,
    pub subtarget: &'a str,
    pub archive_name: &'a str,
    pub archive: ArchiveSource<'a>,
    pub profiles_json: &'a [u8],
    /// Other files (relative paths, `/` allowed), e.g. `version.buildinfo`.
    pub extra: Vec<(&'a str, &'a [u8])>,
}

/// Lays out a mirror tree under `root`.
pub struct MirrorWriter {
    root: PathBuf,
}

impl MirrorWriter {
    pub fn new(root: impl Into<PathBuf>) -> MirrorWriter {
        MirrorWriter { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `file://` URL of the mirror root.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// The directory of a target on disk.
    pub fn target_path(&self, release: &str, target: &str, subtarget: &str) -> PathBuf {
        self.root.join(target_dir(&imagegen::triple::Triple::new(
            release, target, subtarget,
        )))
    }

    /// Writes the target's files, then `sha256sums` and (with a key) `sha256sums.sig`.
    pub fn write_target(
        &self,
        files: &TargetFiles<'_>,
        key: Option<&SecretKey>,
    ) -> Result<PathBuf> {
        let dir = self.target_path(files.release, files.target, files.subtarget);
        create_dirs(&dir)?;
        let archive_path = dir.join(files.archive_name);
        match files.archive {
            ArchiveSource::Bytes(bytes) => write(&archive_path, bytes)?,
            ArchiveSource::File(source) => {
                fs::copy(source, &archive_path)
                    .map_err(|error| Error::io("copying", source, error))?;
            }
        }
        write(&dir.join("profiles.json"), files.profiles_json)?;
        for (rel, bytes) in &files.extra {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                create_dirs(parent)?;
            }
            write(&path, bytes)?;
        }
        self.seal_target(files.release, files.target, files.subtarget, key)?;
        Ok(dir)
    }

    /// (Re)writes `sha256sums` over every file below the target dir, recursively, sorted, and
    /// signs it with `key` (without a key, any old signature is removed).
    pub fn seal_target(
        &self,
        release: &str,
        target: &str,
        subtarget: &str,
        key: Option<&SecretKey>,
    ) -> Result<Vec<u8>> {
        let dir = self.target_path(release, target, subtarget);
        let mut entries = Vec::new();
        collect_checksums(&dir, &dir, &mut entries)?;
        let sums = checksums::render(&entries).into_bytes();
        write(&dir.join("sha256sums"), &sums)?;
        let sig_path = dir.join("sha256sums.sig");
        match key {
            Some(key) => write(&sig_path, key.sign(&sums).as_bytes())?,
            None => match fs::remove_file(&sig_path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io("removing", &sig_path, error));
                }
                _ => {}
            },
        }
        Ok(sums)
    }

    /// Writes `<release-root>/.targets.json` (`"target/subtarget": "arch"`) and `.overview.json`.
    pub fn write_release_index(
        &self,
        release: &str,
        targets: &[(&str, &str)],
        overview_json: &[u8],
    ) -> Result<()> {
        let dir = self.root.join(release_dir(release));
        create_dirs(&dir)?;
        let map: serde_json::Map<String, serde_json::Value> = targets
            .iter()
            .map(|(target, arch)| ((*target).to_string(), serde_json::Value::from(*arch)))
            .collect();
        write(
            &dir.join(".targets.json"),
            serde_json::Value::Object(map).to_string().as_bytes(),
        )?;
        write(&dir.join(".overview.json"), overview_json)
    }

    /// Writes `/.versions.json`; `versions` newest first, as the real file lists them.
    pub fn write_versions(&self, stable: &str, oldstable: &str, versions: &[&str]) -> Result<()> {
        create_dirs(&self.root)?;
        let json = serde_json::json!({
            "stable_version": stable,
            "oldstable_version": oldstable,
            "upcoming_version": "",
            "versions_list": versions,
        });
        write(
            &self.root.join(".versions.json"),
            json.to_string().as_bytes(),
        )
    }
}

fn collect_checksums(root: &Path, dir: &Path, entries: &mut Vec<ChecksumEntry>) -> Result<()> {
    let listing = fs::read_dir(dir).map_err(|error| Error::io("listing", dir, error))?;
    for entry in listing {
        let entry = entry.map_err(|error| Error::io("listing", dir, error))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|error| Error::io("inspecting", &path, error))?;
        if kind.is_dir() {
            collect_checksums(root, &path, entries)?;
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .map_err(|_| Error::internal("walked outside the target dir"))?
            .to_string_lossy()
            .into_owned();
        if !kind.is_file() || rel == "sha256sums" || rel == "sha256sums.sig" {
            continue;
        }
        entries.push(ChecksumEntry {
            sha256: sha256_file(&path)?,
            path: rel,
        });
    }
    Ok(())
}

/// Streams a file through SHA-256.
pub fn sha256_file(path: &Path) -> Result<String> {
    imagegen::cas::sha256_file(path).map(|(sha256, _)| sha256)
}

fn create_dirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|error| Error::io("creating", path, error))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|error| Error::io("writing", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagegen::imagebuilder::usign::Keyring;

    #[test]
    fn sealed_target_verifies_with_the_test_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let writer = MirrorWriter::new(dir.path());
        let key = test_secret_key();
        let files = TargetFiles {
            release: "23.05.4",
            target: "x86",
            subtarget: "64",
            archive_name: "openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz",
            archive: ArchiveSource::Bytes(b"not really xz"),
            profiles_json: b"{}",
            extra: vec![("packages/Packages", b"x")],
        };
        let target = writer.write_target(&files, Some(&key)).unwrap();
        let sums = fs::read(target.join("sha256sums")).unwrap();
        let text = String::from_utf8(sums.clone()).unwrap();
        let paths: Vec<&str> = text.lines().map(|line| &line[66..]).collect();
        assert_eq!(
            paths,
            [
                "openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz",
                "packages/Packages",
                "profiles.json"
            ]
        );
        let signature = fs::read_to_string(target.join("sha256sums.sig")).unwrap();
        assert!(Keyring::official().verify(&sums, &signature).is_err());
        let mut keyring = Keyring::empty();
        keyring.add(key.public_key());
        assert_eq!(keyring.verify(&sums, &signature).unwrap(), key.key_id);
    }
}
