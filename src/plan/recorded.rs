//! What the state store recorded for a fleet, as `diff` needs it: the Image Builders, the
//! fleet's pointers and whether their builds are still usable, which wanted keys a recorded
//! build could serve, and a digest of all that for saved plans. Reads the store and stats
//! blobs; never writes.

use std::collections::BTreeSet;

use super::diff::{Recorded, RecordedBuild, RecordedBuilder, RecordedDevice, RecordedDeviceState};
use crate::error::Result;
use crate::state::{BuildStatus, Reader, fleet_device_key};

/// What the store recorded for the fleet, which of the `wanted` keys (that no pointer of the
/// fleet names yet) a recorded build could serve, and how their last flashes left `devices`.
pub(super) fn recorded_state(
    fleet: &str,
    reader: &Reader,
    cas: &crate::cas::Cas,
    wanted: &BTreeSet<String>,
    require_verified: bool,
    devices: &[&str],
) -> Result<Recorded> {
    let mut recorded = Recorded::default();
    for builder in reader.builders()? {
        let ready = builder.status == crate::state::BuilderStatus::Ready;
        let trouble = match (&builder.status, &builder.key_id) {
            (crate::state::BuilderStatus::Broken, _) => Some(format!(
                "the cached tree is damaged ({}); it is fetched again",
                builder.error.as_deref().unwrap_or("it changed since it was fetched")
            )),
            (_, None) if require_verified && ready => Some(
                "fetched while signature verification was off; its signed sha256sums is checked before use"
                    .to_string(),
            ),
            _ => None,
        };
        recorded.builders.insert(
            builder.triple,
            RecordedBuilder {
                archive_sha256: builder.archive_sha256,
                ready,
                trouble,
            },
        );
    }
    for (profile_id, pointer) in reader.profile_pointers(fleet)? {
        let record = reader.build(&pointer.build_key)?;
        let inputs = record.as_ref().map(|record| record.inputs.clone());
        let usable = record.as_ref().is_some_and(|record| {
            record.status == BuildStatus::Succeeded
                && record
                    .artifacts
                    .iter()
                    .all(|artifact| blob_intact(cas, &artifact.sha256, artifact.size))
        });
        let artifacts = record.map(|record| record.artifacts).unwrap_or_default();
        recorded.builds.insert(
            profile_id,
            RecordedBuild {
                key: pointer.build_key,
                inputs,
                usable,
                artifacts,
            },
        );
    }
    let pointed: BTreeSet<&str> = recorded
        .builds
        .values()
        .filter(|build| build.usable)
        .map(|build| build.key.as_str())
        .collect();
    let mut reusable = BTreeSet::new();
    for key in wanted {
        if pointed.contains(key.as_str()) {
            reusable.insert(key.clone());
            continue;
        }
        let usable = reader.build(key)?.is_some_and(|record| {
            record.status == BuildStatus::Succeeded
                && record
                    .artifacts
                    .iter()
                    .all(|artifact| blob_intact(cas, &artifact.sha256, artifact.size))
        });
        if usable {
            reusable.insert(key.clone());
        }
    }
    recorded.reusable = reusable;
    for (device_id, pointer) in reader.device_pointers(fleet)? {
        recorded.devices.insert(
            device_id,
            RecordedDevice {
                artifact_sha256: pointer.artifact_sha256,
            },
        );
    }
    for device_id in devices {
        if let Some(device) = reader.device(&fleet_device_key(fleet, device_id))? {
            recorded.device_states.insert(
                device_id.to_string(),
                RecordedDeviceState {
                    last_flash_id: device.last_flash_id,
                    last_status: device.last_status,
                    suspect_since: device.suspect_since,
                },
            );
        }
    }
    Ok(recorded)
}

/// Cheap integrity for planning: the blob exists with its recorded size. Full hashes are
/// checked when a build is reused and by `imagegen artifacts verify`.
fn blob_intact(cas: &crate::cas::Cas, sha256: &str, size: u64) -> bool {
    std::fs::metadata(cas.blob_path(sha256))
        .is_ok_and(|metadata| metadata.is_file() && metadata.len() == size)
}

pub(super) fn state_fingerprint(recorded: &Recorded) -> String {
    let mut hasher = blake3::Hasher::new();
    for (key, builder) in &recorded.builders {
        hasher.update(
            format!(
                "builder {key} {} {}\n",
                builder.archive_sha256, builder.ready
            )
            .as_bytes(),
        );
    }
    for (profile, build) in &recorded.builds {
        hasher.update(format!("build {profile} {} {}\n", build.key, build.usable).as_bytes());
    }
    for (device, flashed) in &recorded.devices {
        hasher.update(format!("device {device} {}\n", flashed.artifact_sha256).as_bytes());
    }
    for (device, state) in &recorded.device_states {
        hasher.update(
            format!(
                "device-state {device} {} {:?} {:?}\n",
                state.last_flash_id, state.last_status, state.suspect_since
            )
            .as_bytes(),
        );
    }
    hasher.finalize().to_hex().to_string()
}
