//! The flash action of one fleet device: whether the device needs its profile's image
//! written, why, and whether this run may do it. Pure: the presence of the device's path and
//! its recorded state are gathered by `desired` and `recorded`.
//!
//! Why a device needs a flash: it was never flashed by this fleet; its image changes (the
//! build is rebuilt, or the chosen artifact differs from what it carries); its last flash did
//! not complete, failed or was interrupted (it holds a partial image); or it is suspect (a
//! read-back differed). Whether the run may write it: only with the run's
//! [`FlashPermission`]; otherwise the action is `skip`, which is not a pending change. A
//! device whose path does not exist is skipped too, unless the permission names it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::diff::{Recorded, build_address, flash_address};
use super::image::choose_image;
use super::model::{Action, ActionKind, FlashPermission, Resource};
use crate::key::{Reason, short_hash};
use crate::manifest::VerifyMode;
use crate::state::FlashStatus;

/// A fleet device that should carry its profile's image.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredFlash {
    pub device_id: String,
    pub profile_id: String,
    pub path: PathBuf,
    /// The image type to write (`combined`, `sysupgrade`, `sdcard`, ...).
    pub image: String,
    /// The profile's `policies.filesystem`: chooses among several images of one kind.
    pub filesystem: Option<String>,
    pub verify: VerifyMode,
    pub wipe: bool,
    /// Whether `path` exists now (a card in its reader).
    pub present: bool,
}

/// A fleet device's record, as its last flash left it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDeviceState {
    pub last_flash_id: u64,
    pub last_status: FlashStatus,
    /// The flash whose read-back differed, until a fully verified flash succeeds.
    pub suspect_since: Option<u64>,
}

fn reason(text: impl Into<String>) -> Reason {
    Reason {
        field: "device".to_string(),
        text: text.into(),
        old: Value::Null,
        new: Value::Null,
    }
}

/// Why the device's record says it needs writing again (nothing when its last flash
/// succeeded and it is not suspect).
fn record_reasons(state: &RecordedDeviceState) -> Vec<String> {
    let id = state.last_flash_id;
    let mut reasons = Vec::new();
    match state.last_status {
        FlashStatus::InProgress => reasons.push(format!(
            "flash #{id} did not complete (its process was killed or lost power); the device holds a partial image"
        )),
        FlashStatus::Failed => {
            reasons.push(format!("flash #{id} failed; the device holds a partial image"))
        }
        FlashStatus::Interrupted => reasons.push(format!(
            "flash #{id} was interrupted; the device holds a partial image"
        )),
        FlashStatus::VerifyFailed => reasons.push(format!(
            "flash #{id} read back different bytes than it wrote: the device is suspect"
        )),
        FlashStatus::Succeeded => {}
    }
    match state.suspect_since {
        Some(since) if !(since == id && state.last_status == FlashStatus::VerifyFailed) => {
            reasons.push(format!(
                "the device is suspect since flash #{since} (its read-back differed); only a fully verified flash clears that"
            ))
        }
        _ => {}
    }
    reasons
}

/// The device's action. `build` is this plan's action for the device's profile, when the
/// plan has one.
pub(super) fn flash_action(
    fleet: &str,
    flash: &DesiredFlash,
    recorded: &Recorded,
    build: Option<&Action>,
    permission: &FlashPermission,
) -> Action {
    let build_changes = build.is_none_or(|action| action.action != ActionKind::NoOp);
    let chosen = match (build_changes, recorded.builds.get(&flash.profile_id)) {
        (false, Some(old)) => {
            choose_image(&old.artifacts, &flash.image, flash.filesystem.as_deref())
                .map(|artifact| Some(artifact.sha256.clone()))
                .map_err(|error| error.message)
        }
        _ => Ok(None),
    };
    let previous = recorded.devices.get(&flash.device_id);
    let state = recorded.device_states.get(&flash.device_id);
    let mut why: Vec<String> = state.map(record_reasons).unwrap_or_default();
    match (previous, &chosen) {
        (_, Err(message)) => why = vec![message.clone()],
        (None, _) if why.is_empty() => why.push("never flashed by this fleet".to_string()),
        (Some(_), Ok(None)) => {
            why.push("its image will be rebuilt (artifact known after build)".to_string())
        }
        (Some(old), Ok(Some(sha))) if &old.artifact_sha256 != sha => why.push(format!(
            "its image changed since the last flash: it carries {}, the fleet wants {}",
            short_hash(&old.artifact_sha256),
            short_hash(sha)
        )),
        _ => {}
    }
    let kind = match (&chosen, why.is_empty()) {
        (Err(_), _) => ActionKind::Skip,
        (_, true) => ActionKind::NoOp,
        _ if previous.is_none() && state.is_none() => ActionKind::Create,
        _ => ActionKind::Replace,
    };
    let (kind, gate) = gate(flash, kind, permission);
    let suspect = state.is_some_and(|state| state.suspect_since.is_some());
    let mut result = Action {
        address: flash_address(&flash.device_id),
        resource: Resource::Flash,
        action: kind,
        key: chosen.unwrap_or_default(),
        previous_key: previous.map(|old| old.artifact_sha256.clone()),
        reasons: why.into_iter().chain(gate).map(reason).collect(),
        depends_on: Vec::new(),
        same_inputs_as: None,
        cache_hit: false,
        profile_id: Some(flash.profile_id.clone()),
        device_id: Some(flash.device_id.clone()),
        builder: None,
        inputs: None,
        details: details(flash, suspect),
        packages: None,
    };
    if build.is_some() {
        result
            .depends_on
            .push(build_address(fleet, &flash.profile_id));
    }
    result
}

/// A change becomes `skip` unless the run may write the device and the device is there;
/// a device the permission names is written (or fails) even when its path is missing now.
fn gate(
    flash: &DesiredFlash,
    kind: ActionKind,
    permission: &FlashPermission,
) -> (ActionKind, Option<String>) {
    let id = &flash.device_id;
    let path = flash.path.display();
    if !kind.is_change() {
        return (kind, None);
    }
    if !permission.allows(id) {
        return (
            ActionKind::Skip,
            Some(format!(
                "writing devices needs an explicit permission: `imagegen apply --flash {id}` (or `--flash` for every device)"
            )),
        );
    }
    match (flash.present, permission.names(id)) {
        (true, _) => (kind, None),
        (false, true) => (
            kind,
            Some(format!(
                "`{path}` does not exist now: insert the device, or the flash fails with `device_not_found`"
            )),
        ),
        (false, false) => (
            ActionKind::Skip,
            Some(format!(
                "`{path}` does not exist (device not inserted); skipped"
            )),
        ),
    }
}

/// What the plan shows about the write: where, which image, how it is checked. A suspect
/// device is read back in full whatever `verify` says: only that clears the suspicion.
fn details(flash: &DesiredFlash, suspect: bool) -> BTreeMap<String, String> {
    let verify = match (flash.verify, suspect) {
        (VerifyMode::Full, _) => "full".to_string(),
        (_, true) => "full (the device is suspect)".to_string(),
        (mode, false) => mode.as_str().to_string(),
    };
    let mut details = BTreeMap::from([
        ("path".to_string(), flash.path.display().to_string()),
        ("image".to_string(), flash.image.clone()),
        ("verify".to_string(), verify),
    ]);
    if flash.wipe {
        details.insert("wipe".to_string(), "true".to_string());
    }
    details
}

#[cfg(test)]
mod tests;
