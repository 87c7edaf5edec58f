//! The records the state store keeps. Plain data: no I/O and no database types here.
//!
//! Times are Unix seconds (UTC). Paths are absolute. Hashes are lowercase hex.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::key::BuildInputs;
use crate::triple::Triple;

/// Where an Image Builder is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuilderStatus {
    /// Download or extraction started but did not finish.
    Pending,
    /// Verified, extracted and usable at `path`.
    Ready,
    /// Extraction or a health check failed; `error` says why.
    Broken,
}

/// One Image Builder, keyed by its [`Triple`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuilderRecord {
    #[serde(flatten)]
    pub triple: Triple,
    /// The archive file name as listed in `sha256sums`.
    pub archive: String,
    pub archive_sha256: String,
    pub url: String,
    /// The usign key id that signed `sha256sums`, when signatures were verified.
    pub key_id: Option<String>,
    pub version_code: Option<String>,
    pub status: BuilderStatus,
    /// The pristine extracted tree.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// Bytes on disk of the extracted tree.
    pub size: u64,
    pub first_used: i64,
    pub last_used: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Succeeded,
    Failed,
}

/// An artifact as one build produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactRef {
    pub sha256: String,
    pub name: String,
    /// `sysupgrade`, `factory`, `combined`, `kernel`, `rootfs`, `manifest`, … (the `type` in
    /// the Image Builder's `profiles.json`, or a name-based guess).
    pub kind: String,
    pub filesystem: Option<String>,
    pub size: u64,
}

/// One (fleet, profile) that applied a build: pointed its profile at the build's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppliedBy {
    pub fleet: String,
    pub profile_id: String,
    /// When it last applied this build.
    pub applied_at: i64,
}

/// One build, keyed by its build key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildRecord {
    pub key: String,
    /// The profile whose build made the record (the first, when several share the key).
    pub profile_id: String,
    pub fleet: Option<String>,
    /// The canonical inputs the key was computed from (owned by `key`).
    pub inputs: BuildInputs,
    pub status: BuildStatus,
    pub started_at: i64,
    pub finished_at: i64,
    #[schema(value_type = Option<String>)]
    pub log_path: Option<PathBuf>,
    #[schema(value_type = Option<String>)]
    pub manifest_path: Option<PathBuf>,
    pub artifacts: Vec<ArtifactRef>,
    pub error: Option<String>,
    /// Every (fleet, profile) that applied this build, sorted; a key maps back to everyone
    /// who uses its image (several profiles can share one build key).
    #[serde(default)]
    pub applied_by: Vec<AppliedBy>,
    /// The build tree kept by `build_defaults.keep_build_dir`, when one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kept_build_dir: Option<PathBuf>,
}

impl BuildRecord {
    /// Notes that `profile_id` of `fleet` applied this build at `at` (once per pair; the
    /// time is the latest).
    pub fn note_applied(&mut self, fleet: &str, profile_id: &str, at: i64) {
        match self
            .applied_by
            .iter_mut()
            .find(|entry| entry.fleet == fleet && entry.profile_id == profile_id)
        {
            Some(entry) => entry.applied_at = at,
            None => {
                self.applied_by.push(AppliedBy {
                    fleet: fleet.to_string(),
                    profile_id: profile_id.to_string(),
                    applied_at: at,
                });
                self.applied_by
                    .sort_by(|a, b| (&a.fleet, &a.profile_id).cmp(&(&b.fleet, &b.profile_id)));
            }
        }
    }

    /// Whether `profile_id` (of any fleet) built or applied this build.
    pub fn used_by_profile(&self, profile_id: &str) -> bool {
        self.profile_id == profile_id
            || self
                .applied_by
                .iter()
                .any(|entry| entry.profile_id == profile_id)
    }
}

/// One blob of the content-addressed store, keyed by sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactRecord {
    pub sha256: String,
    pub name: String,
    pub kind: String,
    pub filesystem: Option<String>,
    pub size: u64,
    /// The build keys that produced these exact bytes, oldest first.
    pub builds: Vec<String>,
}

/// What a block device said about itself when it was flashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// One flash attempt, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlashRecord {
    /// Assigned by `Writer::add_flash`.
    pub id: u64,
    /// The fleet device id, when the flash was for a fleet device.
    pub device_id: Option<String>,
    pub device_path: PathBuf,
    pub identity: DeviceIdentity,
    pub artifact_sha256: String,
    pub bytes_written: u64,
    pub wipe: bool,
    /// `full`, `prefix`, `none`, … (owned by `flash`).
    pub verify_mode: String,
    pub verify_result: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    /// `succeeded`, `failed`, `suspect`, … (owned by `flash`).
    pub status: String,
    pub error: Option<String>,
}

/// The build last applied for one (fleet, profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePointer {
    pub build_key: String,
    pub applied_at: i64,
}

/// The artifact last flashed to one (fleet, device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePointer {
    pub artifact_sha256: String,
    pub flash_id: u64,
    pub flashed_at: i64,
}
