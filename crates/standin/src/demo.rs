//! A complete stand-in download mirror for the offline demo and the tests: for each
//! (release, target, subtarget), a stand-in Image Builder generated from the real upstream
//! `profiles.json` in `data_dir`, packed like the real archive (`.tar.xz` up to 23.05,
//! `.tar.zst` after), listed in a signed `sha256sums`, with the release's `.overview.json`,
//! and the package feeds its `repositories.conf` lists ([`super::feeds`]).
//! The signing key is the public TEST key of [`super::mirror`]; its public half is written
//! next to the mirror so a fleet can name it in `trusted_keys`. Each device's initramfs
//! image that `profiles.json` lists is published too ([`with_initramfs_images`]).

use std::path::{Path, PathBuf};

use super::imagebuilder::{self as standin_ib, Compression};
use super::mirror::{ArchiveSource, MirrorWriter, TargetFiles, test_secret_key};
use imagegen::error::{Error, Result};

/// What [`write_mirror`] produced.
#[derive(Debug, Clone)]
pub struct DemoMirror {
    pub root: PathBuf,
    /// `file:///...` URL of the root.
    pub url: String,
    /// The usign public key file (TEST key) that verifies every `sha256sums.sig`.
    pub public_key: PathBuf,
}

/// Writes a mirror under `root` for `triples` (release, target, subtarget), taking device
/// data from `data_dir` (e.g. [`crate::upstream_data`]). `build_cpu_seconds` makes
/// each stand-in `make image` burn that much CPU (0 for tests).
pub fn write_mirror(
    root: &Path,
    data_dir: &Path,
    triples: &[(&str, &str, &str)],
    build_cpu_seconds: f64,
) -> Result<DemoMirror> {
    let writer = MirrorWriter::new(root);
    let key = test_secret_key();
    let work = root.join(".work");
    std::fs::create_dir_all(&work).map_err(|error| Error::io("creating", &work, error))?;
    let mut releases: Vec<&str> = Vec::new();
    let mut specs = Vec::new();
    for (release, target, subtarget) in triples {
        let mut spec = standin_ib::spec_from_data(data_dir, release, target, subtarget)?;
        spec.build_cpu_seconds = build_cpu_seconds;
        specs.push(spec);
        if !releases.contains(release) {
            releases.push(release);
        }
    }
    // Feeds first: the core feed lives in the target directory, which `sha256sums` covers.
    let borrowed: Vec<&standin_ib::StandinSpec> = specs.iter().collect();
    super::feeds::write_feeds(root, &borrowed, &key)?;
    for spec in &specs {
        write_target(&writer, &work, spec, &key)?;
    }
    let overview = std::fs::read(data_dir.join(".overview.json"))
        .map_err(|error| Error::io("reading", &data_dir.join(".overview.json"), error))?;
    for release in releases {
        let targets: Vec<(String, &str)> = triples
            .iter()
            .filter(|(r, _, _)| r == &release)
            .map(|(_, target, subtarget)| (format!("{target}/{subtarget}"), "stand-in"))
            .collect();
        let targets: Vec<(&str, &str)> = targets.iter().map(|(t, a)| (t.as_str(), *a)).collect();
        writer.write_release_index(release, &targets, &overview)?;
    }
    std::fs::remove_dir_all(&work).map_err(|error| Error::io("removing", &work, error))?;
    let public_key = root.join("imagegen-standin-test-key.pub");
    imagegen::fsutil::write_atomically(&public_key, key.public_key().to_file_text().as_bytes())?;
    Ok(DemoMirror {
        root: root.to_path_buf(),
        url: writer.file_url(),
        public_key,
    })
}

/// [`write_mirror`] for every (release, target, subtarget) the fleet's profiles use.
pub fn write_mirror_for_fleet(
    root: &Path,
    data_dir: &Path,
    fleet: &imagegen::manifest::Fleet,
    build_cpu_seconds: f64,
) -> Result<DemoMirror> {
    let triples = fleet.triples();
    let borrowed: Vec<(&str, &str, &str)> = triples
        .iter()
        .map(|triple| {
            (
                triple.release.as_str(),
                triple.target.as_str(),
                triple.subtarget.as_str(),
            )
        })
        .collect();
    write_mirror(root, data_dir, &borrowed, build_cpu_seconds)
}

/// Generates, packs and publishes one stand-in Image Builder; returns its archive name.
pub fn write_target(
    writer: &MirrorWriter,
    work: &Path,
    spec: &standin_ib::StandinSpec,
    key: &imagegen::imagebuilder::usign::SecretKey,
) -> Result<String> {
    let compression = Compression::for_release(&spec.release);
    let scratch = work.join(format!(
        "{}-{}-{}",
        spec.release, spec.target, spec.subtarget
    ));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|error| Error::io("removing", &scratch, error))?;
    }
    std::fs::create_dir_all(&scratch).map_err(|error| Error::io("creating", &scratch, error))?;
    let tree = standin_ib::write_tree(spec, &scratch)?;
    let archive = standin_ib::pack(&tree, compression, &scratch)?;
    let archive_name = standin_ib::archive_name(spec, compression);
    let (profiles_json, initramfs) =
        with_initramfs_images(&standin_ib::server_profiles_json(spec)?, spec)?;
    let mut extra: Vec<(&str, &[u8])> = vec![("version.buildinfo", spec.version_code.as_bytes())];
    extra.extend(
        initramfs
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
    );
    writer.write_target(
        &TargetFiles {
            release: &spec.release,
            target: &spec.target,
            subtarget: &spec.subtarget,
            archive_name: &archive_name,
            archive: ArchiveSource::File(&archive),
            profiles_json: profiles_json.as_bytes(),
            extra,
        },
        Some(key),
    )?;
    std::fs::remove_dir_all(&scratch).map_err(|error| Error::io("removing", &scratch, error))?;
    Ok(archive_name)
}

/// A file published in a target directory: its name and bytes.
pub type PublishedFile = (String, Vec<u8>);

/// Upstream publishes a prebuilt initramfs kernel per device next to the Image Builder and
/// lists it in `profiles.json` (filesystem `initramfs`, with its sha256). The stand-in
/// publishes a small file of its own for each and lists that file's real sha256, so fetching
/// and verifying one works like against the real mirror. Returns the rewritten
/// `profiles.json` (compact, sorted keys, like upstream) and the files (name, bytes).
pub fn with_initramfs_images(
    profiles_json: &str,
    spec: &standin_ib::StandinSpec,
) -> Result<(String, Vec<PublishedFile>)> {
    let invalid = |error: serde_json::Error| {
        Error::new(
            imagegen::error::ErrorCode::Validation,
            format!("stand-in profiles.json: {error}"),
        )
    };
    let mut parsed: serde_json::Value = serde_json::from_str(profiles_json).map_err(invalid)?;
    let mut files = Vec::new();
    if let Some(profiles) = parsed["profiles"].as_object_mut() {
        for (device, profile) in profiles.iter_mut() {
            let Some(images) = profile["images"].as_array_mut() else {
                continue;
            };
            for image in images
                .iter_mut()
                .filter(|image| image["filesystem"] == "initramfs")
            {
                let Some(name) = image["name"].as_str().map(str::to_string) else {
                    continue;
                };
                let bytes = format!(
                    "stand-in initramfs kernel of {device} for OpenWrt {} {}/{}\n",
                    spec.release, spec.target, spec.subtarget
                )
                .into_bytes();
                let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                image["sha256"] = serde_json::json!(sha256);
                image["sha256_unsigned"] = serde_json::json!(sha256);
                files.push((name, bytes));
            }
        }
    }
    let text = serde_json::to_string(&parsed).map_err(invalid)?;
    Ok((text, files))
}
