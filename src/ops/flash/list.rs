//! `flash list`: the recorded attempts, newest first, and each device's state, optionally
//! of one device. An `in_progress` record read here belongs to a flash whose process died
//! (the flashing process holds the state lock until it records the end), so it reads "did
//! not complete".

use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::Result;
use crate::ops::Workspace;
use crate::state::{DeviceRecord, FlashRecord, FlashStatus};

/// Which records `flash list` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlashFilter {
    /// Only this device: a fleet device id, a device key, a serial, or a path (given or
    /// resolved, e.g. `/dev/sdb` or a `/dev/disk/by-id/` link).
    #[serde(default)]
    pub device: Option<String>,
    /// At most this many attempts, the newest.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One recorded attempt and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashEntry {
    #[serde(flatten)]
    pub record: FlashRecord,
    /// False for a flash that did not complete (`in_progress`).
    pub completed: bool,
    /// The first later flash of the same device that succeeded: the device no longer holds
    /// what this one wrote (or left half-written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<u64>,
}

/// The devices flashes saw and the attempts, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlashListing {
    pub devices: Vec<DeviceRecord>,
    pub flashes: Vec<FlashEntry>,
}

/// Every recorded flash (or those of one device) and the state of the devices.
pub fn flash_list(workspace: &Workspace, filter: &FlashFilter) -> Result<FlashListing> {
    let store = workspace.store("imagegen flash list")?;
    let reader = store.read()?;
    Ok(listing(reader.flashes()?, reader.devices()?, filter))
}

/// The listing from the records (`flashes` newest first).
pub(crate) fn listing(
    flashes: Vec<FlashRecord>,
    devices: Vec<DeviceRecord>,
    filter: &FlashFilter,
) -> FlashListing {
    let resolved = filter
        .device
        .as_deref()
        .and_then(|query| std::fs::canonicalize(query).ok());
    let matches_flash = |record: &FlashRecord| match filter.device.as_deref() {
        None => true,
        Some(query) => {
            record.device_key == query
                || record.device_id.as_deref() == Some(query)
                || record.identity.serial.as_deref() == Some(query)
                || record.device_path == Path::new(query)
                || record.device_node == Path::new(query)
                || resolved.as_deref() == Some(record.device_node.as_path())
        }
    };
    let entries: Vec<FlashEntry> = flashes
        .iter()
        .enumerate()
        .filter(|(_, record)| matches_flash(record))
        .map(|(index, record)| FlashEntry {
            completed: record.status != FlashStatus::InProgress,
            // `flashes` is newest first: later attempts come before this one.
            superseded_by: flashes[..index]
                .iter()
                .rev()
                .find(|later| {
                    later.device_key == record.device_key && later.status == FlashStatus::Succeeded
                })
                .map(|later| later.id),
            record: record.clone(),
        })
        .take(filter.limit.unwrap_or(usize::MAX))
        .collect();
    let devices = devices
        .into_iter()
        .filter(|device| {
            filter.device.is_none()
                || flashes
                    .iter()
                    .any(|record| record.device_key == device.key && matches_flash(record))
        })
        .collect();
    FlashListing {
        devices,
        flashes: entries,
    }
}
