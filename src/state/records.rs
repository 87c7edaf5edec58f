//! The records the state store keeps. Plain data: no I/O and no database types here.
//!
//! Times are Unix seconds (UTC). Paths are absolute. Hashes are lowercase hex.

use std::path::{Path, PathBuf};

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
    /// The content digest of the unpacked tree when it was fetched (`imagebuilder::tree`);
    /// `None` for trees fetched before imagegen recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_digest: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Bytes.
    pub size: u64,
    /// How it was attached: `usb`, `mmc`, `loop`, … (schema 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// Where a flash attempt is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlashStatus {
    /// Recorded before the first byte is written. The flashing process holds the state lock
    /// until it records the end, so a reader that sees this status sees a flash that did
    /// not complete (the process was killed, or the machine lost power).
    InProgress,
    /// Written, flushed and (unless `verify_mode` is `none`) read back identical.
    Succeeded,
    /// Writing, flushing or reading back failed; the device holds a partial image.
    Failed,
    /// Stopped by Ctrl-C (or a client's cancellation); the device holds a partial image.
    Interrupted,
    /// The read-back differed from what was written (`flash_hash_mismatch`): the medium is
    /// suspect.
    VerifyFailed,
}

impl FlashStatus {
    /// Words for lists: `in_progress` reads "did not complete" (see [`FlashStatus::InProgress`]).
    pub fn describe(self) -> &'static str {
        match self {
            FlashStatus::InProgress => "did not complete",
            FlashStatus::Succeeded => "succeeded",
            FlashStatus::Failed => "failed",
            FlashStatus::Interrupted => "interrupted",
            FlashStatus::VerifyFailed => "verification failed",
        }
    }
}

/// The stored artifact a flash wrote, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashedArtifact {
    pub sha256: String,
    pub name: String,
    pub kind: String,
    /// The build it was taken from (the profile's current build for `PROFILE:KIND`, the
    /// newest build that produced it for a sha256 prefix), when known.
    pub build_key: Option<String>,
    pub profile_id: Option<String>,
}

/// What the read-back found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    /// Bytes read back and compared (for a mismatch: the bytes that were to be compared).
    pub bytes: u64,
    pub matched: bool,
    /// SHA-256 over the block digests (`flash::Verification::digest`) when it matched.
    pub digest: Option<String>,
    /// The offset of the first block that read back different.
    pub mismatch_offset: Option<u64>,
}

/// The error that ended a flash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordedError {
    /// The stable error code (`flash_hash_mismatch`, `interrupted`, …).
    pub code: String,
    pub message: String,
}

/// One flash attempt that got past the checks and the confirmation: written as
/// `in_progress` before the first byte reaches the device, then rewritten with how it
/// ended. Dry runs and refusals write nothing to the device and are not recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashRecord {
    /// Assigned by `Writer::add_flash`.
    pub id: u64,
    /// What identifies the device across flashes (the key of `DEVICE_KEY_TO_DEVICE`;
    /// `docs/flash.md`, "Which device").
    pub device_key: String,
    /// The fleet and fleet device id, when the disk is a fleet device's `flash.path`.
    pub fleet: Option<String>,
    pub device_id: Option<String>,
    /// The device path as given (`/dev/disk/by-id/...`).
    #[schema(value_type = String)]
    pub device_path: PathBuf,
    /// The disk node it resolved to (`/dev/sdb`).
    #[schema(value_type = String)]
    pub device_node: PathBuf,
    pub identity: DeviceIdentity,
    /// The file read: an artifact's blob in the store, or the image file given.
    #[schema(value_type = String)]
    pub image_path: PathBuf,
    /// SHA-256 of that file as it was before writing (compressed, when it is).
    pub image_sha256: String,
    /// `raw`, `gzip`, `xz` or `zstd`.
    pub image_format: String,
    /// Set when the image is a stored artifact.
    pub artifact: Option<FlashedArtifact>,
    /// Bytes to write (the decompressed image), when known before writing.
    pub image_bytes: Option<u64>,
    pub bytes_written: u64,
    pub wipe: bool,
    /// `full`, `prefix:<MiB>` or `none`.
    pub verify_mode: String,
    /// Absent while in progress, with `none`, and when the flash failed before the read-back.
    pub verification: Option<VerifyResult>,
    pub started_at: i64,
    /// Absent while in progress.
    pub finished_at: Option<i64>,
    pub status: FlashStatus,
    pub error: Option<RecordedError>,
}

/// One device as its flashes left it, keyed by its device key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRecord {
    pub key: String,
    pub fleet: Option<String>,
    pub device_id: Option<String>,
    pub identity: DeviceIdentity,
    /// The node it had at its last flash.
    #[schema(value_type = String)]
    pub node: PathBuf,
    pub last_flash_id: u64,
    /// How its last flash ended (`in_progress`: it did not complete).
    pub last_status: FlashStatus,
    pub updated_at: i64,
    /// The flash whose read-back differed from what was written, until a flash with full
    /// verification succeeds on the device: do not trust the medium while this is set.
    pub suspect_since: Option<u64>,
    /// The image file (and artifact) the device holds: set by a successful flash, cleared
    /// when a later one starts destroying it.
    pub image_sha256: Option<String>,
    pub artifact_sha256: Option<String>,
}

impl DeviceRecord {
    /// The device after `flash` (a new attempt or the end of one), given its record before.
    pub fn after_flash(previous: Option<&DeviceRecord>, flash: &FlashRecord) -> DeviceRecord {
        let fully_verified = flash.status == FlashStatus::Succeeded
            && flash.verify_mode == "full"
            && flash
                .verification
                .as_ref()
                .is_some_and(|result| result.matched);
        let suspect_since = match flash.status {
            FlashStatus::VerifyFailed => Some(flash.id),
            _ if fully_verified => None,
            _ => previous.and_then(|device| device.suspect_since),
        };
        let holds = flash.status == FlashStatus::Succeeded;
        DeviceRecord {
            key: flash.device_key.clone(),
            fleet: flash.fleet.clone(),
            device_id: flash.device_id.clone(),
            identity: flash.identity.clone(),
            node: flash.device_node.clone(),
            last_flash_id: flash.id,
            last_status: flash.status,
            updated_at: flash.finished_at.unwrap_or(flash.started_at),
            suspect_since,
            image_sha256: holds.then(|| flash.image_sha256.clone()),
            artifact_sha256: flash
                .artifact
                .as_ref()
                .filter(|_| holds)
                .map(|artifact| artifact.sha256.clone()),
        }
    }

    /// `flashed`, `did not complete`, …, with `SUSPECT` first when it is.
    pub fn describe(&self) -> String {
        let last = match self.last_status {
            FlashStatus::Succeeded => "flashed",
            FlashStatus::Failed | FlashStatus::Interrupted => "partial image",
            status => status.describe(),
        };
        match self.suspect_since {
            Some(id) => format!("SUSPECT (read-back differed in flash #{id}); {last}"),
            None => last.to_string(),
        }
    }
}

/// The device key of a fleet device: `fleet:<fleet>/<device id>`.
pub fn fleet_device_key(fleet: &str, device_id: &str) -> String {
    format!("fleet:{fleet}/{device_id}")
}

/// The device key of a disk that is no fleet device's: the most stable fact known about it,
/// in this order: `serial:<model>/<serial>`, `by-id:<link name>`, `loop:<backing file>`,
/// `node:<node>`.
pub fn disk_device_key(
    identity: &DeviceIdentity,
    by_id: Option<&Path>,
    backing_file: Option<&Path>,
    node: &Path,
) -> String {
    if let Some(serial) = &identity.serial {
        let model = identity.model.as_deref().unwrap_or("-");
        return format!("serial:{model}/{serial}");
    }
    if let Some(name) = by_id.and_then(Path::file_name) {
        return format!("by-id:{}", name.to_string_lossy());
    }
    if let Some(file) = backing_file {
        return format!("loop:{}", file.display());
    }
    format!("node:{}", node.display())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        id: u64,
        status: FlashStatus,
        verify_mode: &str,
        matched: Option<bool>,
    ) -> FlashRecord {
        FlashRecord {
            id,
            device_key: "serial:Card/0001".into(),
            fleet: None,
            device_id: None,
            device_path: PathBuf::from("/dev/sdb"),
            device_node: PathBuf::from("/dev/sdb"),
            identity: DeviceIdentity {
                model: Some("Card".into()),
                serial: Some("0001".into()),
                size: 8 << 30,
                transport: Some("usb".into()),
            },
            image_path: PathBuf::from("/images/a.img"),
            image_sha256: format!("{id:064x}"),
            image_format: "raw".into(),
            artifact: None,
            image_bytes: Some(1 << 20),
            bytes_written: 1 << 20,
            wipe: false,
            verify_mode: verify_mode.into(),
            verification: matched.map(|matched| VerifyResult {
                bytes: 1 << 20,
                matched,
                digest: None,
                mismatch_offset: None,
            }),
            started_at: 100 + id as i64,
            finished_at: (status != FlashStatus::InProgress).then_some(200 + id as i64),
            status,
            error: None,
        }
    }

    /// Replays attempts the way the flash operation records them.
    fn replay(attempts: &[FlashRecord]) -> DeviceRecord {
        let mut device: Option<DeviceRecord> = None;
        for flash in attempts {
            device = Some(DeviceRecord::after_flash(device.as_ref(), flash));
        }
        device.expect("at least one attempt")
    }

    #[test]
    fn a_success_says_what_the_device_holds_and_a_new_attempt_forgets_it() {
        let done = attempt(1, FlashStatus::Succeeded, "full", Some(true));
        let device = replay(std::slice::from_ref(&done));
        assert_eq!(device.last_status, FlashStatus::Succeeded);
        assert_eq!(
            device.image_sha256.as_deref(),
            Some(done.image_sha256.as_str())
        );
        assert_eq!(device.updated_at, 201);
        assert_eq!(device.describe(), "flashed");
        let started = attempt(2, FlashStatus::InProgress, "full", None);
        let device = replay(&[done, started]);
        assert_eq!(device.last_flash_id, 2);
        assert_eq!(device.image_sha256, None, "its image is being overwritten");
        assert_eq!(device.updated_at, 102);
        assert_eq!(device.describe(), "did not complete");
    }

    #[test]
    fn a_mismatch_makes_the_device_suspect_until_a_fully_verified_flash_succeeds() {
        let mismatch = attempt(1, FlashStatus::VerifyFailed, "full", Some(false));
        let device = replay(std::slice::from_ref(&mismatch));
        assert_eq!(device.suspect_since, Some(1));
        assert_eq!(device.image_sha256, None);
        assert_eq!(
            device.describe(),
            "SUSPECT (read-back differed in flash #1); verification failed"
        );
        // Neither an unverified nor a prefix-verified success, nor a failure, clears it.
        for later in [
            attempt(2, FlashStatus::Succeeded, "none", None),
            attempt(2, FlashStatus::Succeeded, "prefix:64", Some(true)),
            attempt(2, FlashStatus::Failed, "full", None),
            attempt(2, FlashStatus::InProgress, "full", None),
        ] {
            let device = replay(&[mismatch.clone(), later.clone()]);
            assert_eq!(device.suspect_since, Some(1), "{:?}", later.status);
            assert_eq!(device.last_status, later.status);
        }
        let cleared = replay(&[
            mismatch,
            attempt(2, FlashStatus::Succeeded, "full", Some(true)),
        ]);
        assert_eq!(cleared.suspect_since, None);
        assert_eq!(cleared.describe(), "flashed");
    }

    #[test]
    fn failures_leave_a_partial_image() {
        for status in [FlashStatus::Failed, FlashStatus::Interrupted] {
            let device = replay(&[
                attempt(1, FlashStatus::Succeeded, "full", Some(true)),
                attempt(2, status, "full", None),
            ]);
            assert_eq!(device.describe(), "partial image");
            assert_eq!(device.image_sha256, None);
            assert_eq!(device.suspect_since, None);
        }
    }

    #[test]
    fn disk_keys_prefer_the_most_stable_fact() {
        let mut identity = DeviceIdentity {
            model: Some("Ultra".into()),
            serial: Some("4C53".into()),
            size: 1,
            transport: None,
        };
        let link = Path::new("/dev/disk/by-id/usb-SanDisk_Ultra_4C53-0:0");
        let node = Path::new("/dev/sdb");
        let backing = Path::new("/var/tmp/disk.img");
        assert_eq!(
            disk_device_key(&identity, Some(link), None, node),
            "serial:Ultra/4C53"
        );
        identity.serial = None;
        assert_eq!(
            disk_device_key(&identity, Some(link), None, node),
            "by-id:usb-SanDisk_Ultra_4C53-0:0"
        );
        assert_eq!(
            disk_device_key(&identity, None, Some(backing), node),
            "loop:/var/tmp/disk.img"
        );
        assert_eq!(
            disk_device_key(&identity, None, None, node),
            "node:/dev/sdb"
        );
        assert_eq!(fleet_device_key("home", "lab-sd-1"), "fleet:home/lab-sd-1");
    }
}
