//! A release target's upstream facts: signed `sha256sums`, the Image Builder archive name and
//! hash, and `profiles.json`. Fetches small files only; never downloads the archive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checksums;
use super::mirror::MirrorClient;
use super::usign::Keyring;
use super::{release_dir, target_dir, validate_name};
use crate::error::{Error, ErrorCode, Result};
use crate::triple::Triple;

/// What one target directory says about its Image Builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetMetadata {
    #[serde(flatten)]
    pub triple: Triple,
    /// The archive file name, read from `sha256sums`.
    pub archive: String,
    pub archive_sha256: String,
    /// The key that signed `sha256sums`; `None` when verification was off.
    pub key_id: Option<String>,
    /// That key's fingerprint ([`super::usign::PublicKey::fingerprint`]).
    pub key_fingerprint: Option<String>,
    /// The revision, e.g. `r23809-234f1a2efa` (from `profiles.json`).
    pub version_code: String,
    #[serde(skip)]
    pub profiles_json: Vec<u8>,
    pub profiles_json_sha256: String,
    pub url_of_archive: String,
}

/// `profiles.json` as written by `json_overview_image_info.py`; extra fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilesJson {
    pub target: String,
    pub version_code: String,
    pub version_number: String,
    #[serde(default)]
    pub default_packages: Vec<String>,
    /// The package architecture (`mips_24kc`): the feeds' `packages/<arch>/` directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_packages: Option<String>,
    /// The kernel (23.05.6, 24.10 and later): names the `kmods/<version>-<release>-<vermagic>`
    /// feed. Upstream writes `release` as a string; numbers are accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_kernel: Option<LinuxKernel>,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileInfo>,
}

/// `profiles.json` `linux_kernel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxKernel {
    pub version: String,
    #[serde(deserialize_with = "string_or_number")]
    pub release: String,
    pub vermagic: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => Ok(text),
        serde_json::Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

/// A device's flash limits in bytes (`profiles.json` 25.12 and later).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSizeLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileInfo {
    #[serde(default)]
    pub device_packages: Vec<String>,
    #[serde(default)]
    pub image_prefix: String,
    #[serde(default)]
    pub images: Vec<ImageInfo>,
    #[serde(default)]
    pub supported_devices: Vec<String>,
    #[serde(default)]
    pub titles: Vec<Title>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_limits: Option<FileSizeLimits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_unsigned: Option<String>,
}

/// A device title: either `title` alone or `vendor` + `model` (+ `variant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Title {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl ProfilesJson {
    /// The device entry an Image Builder profile id names: a key of `profiles`, or (as ASU
    /// accepts) one of a device's `supported_devices` with `,` written as `_`.
    pub fn device(&self, id: &str) -> Option<&ProfileInfo> {
        self.profiles.get(id).or_else(|| {
            self.profiles.values().find(|info| {
                info.supported_devices
                    .iter()
                    .any(|board| board.replace(',', "_") == id)
            })
        })
    }

    /// Parses `profiles.json` bytes; `origin` names the file in the error.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<ProfilesJson> {
        serde_json::from_slice(bytes).map_err(|error| {
            Error::new(
                ErrorCode::ImagebuilderError,
                format!("`{origin}` is not a valid profiles.json: {error}"),
            )
        })
    }
}

/// Reads and checks a target directory's metadata. With `verify`, `sha256sums` must carry a
/// valid signature by a key in `keyring`; without, `key_id` is `None`.
pub fn fetch_target(
    client: &MirrorClient,
    keyring: &Keyring,
    verify: bool,
    triple: &Triple,
) -> Result<TargetMetadata> {
    for (what, value) in [
        ("release", &triple.release),
        ("target", &triple.target),
        ("subtarget", &triple.subtarget),
    ] {
        validate_name(what, value)?;
    }
    let dir = target_dir(triple);
    let sums = client.get(&format!("{dir}/sha256sums"))?;
    let (key_id, key_fingerprint) = if verify {
        let signature = client.get(&format!("{dir}/sha256sums.sig"))?;
        let signature = String::from_utf8_lossy(&signature);
        let key = keyring
            .verify_key(&sums, &signature)
            .map_err(|error| Error {
                message: format!(
                    "`{}`: {}",
                    client.url_of(&format!("{dir}/sha256sums")),
                    error.message
                ),
                ..error
            })?;
        (Some(key.key_id.to_string()), Some(key.fingerprint()))
    } else {
        (None, None)
    };
    let entries = checksums::parse(&sums)?;
    let (archive, archive_sha256) =
        checksums::find_imagebuilder(&entries).map_err(|error| Error {
            message: format!("{} ({})", error.message, client.url_of(&dir)),
            ..error
        })?;
    let profiles_path = format!("{dir}/profiles.json");
    let profiles_json = client.get(&profiles_path)?;
    let profiles_json_sha256 = hex::encode(Sha256::digest(&profiles_json));
    if let Some(listed) = checksums::lookup(&entries, "profiles.json")
        && listed != profiles_json_sha256
    {
        return Err(Error::new(
            ErrorCode::DownloadError,
            format!(
                "sha256 mismatch for profiles.json: expected {listed}, got {profiles_json_sha256}"
            ),
        )
        .with_help("the mirror may be mid-sync; retry later or use another mirror"));
    }
    let profiles = ProfilesJson::parse(&profiles_json, &client.url_of(&profiles_path))?;
    let url_of_archive = client.url_of(&format!("{dir}/{archive}"));
    Ok(TargetMetadata {
        triple: triple.clone(),
        archive,
        archive_sha256,
        key_id,
        key_fingerprint,
        version_code: profiles.version_code,
        profiles_json,
        profiles_json_sha256,
        url_of_archive,
    })
}

/// The release's `.overview.json` (device titles → targets), unparsed.
pub fn fetch_overview(client: &MirrorClient, release: &str) -> Result<Vec<u8>> {
    validate_name("release", release)?;
    client.get(&format!("{}/.overview.json", release_dir(release)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_profiles_json_with_extra_fields() {
        let text = br#"{"metadata_version":1,"target":"x86/64","version_code":"r1-abc",
            "version_number":"23.05.4","arch_packages":"x86_64",
            "profiles":{"generic":{"image_prefix":"p","images":[{"name":"a.img","type":"combined",
            "filesystem":"ext4","sha256":"00"}],"supported_devices":[],"titles":[{"title":"Generic"}]}}}"#;
        let parsed = ProfilesJson::parse(text, "t").unwrap();
        assert_eq!(parsed.profiles["generic"].images[0].kind, "combined");
        assert!(ProfilesJson::parse(b"{}", "t").is_err());
    }
}
