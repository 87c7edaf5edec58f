//! In-place upgrades of older databases, one schema version at a time, each in one write
//! transaction: a crash mid-upgrade leaves the old version intact, and the next open
//! upgrades again. An older database is never refused or wiped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redb::{Database, ReadableTable, TableDefinition};
use serde::Deserialize;

use super::records::{
    ArtifactRecord, BuildRecord, DeviceIdentity, DeviceRecord, FlashRecord, FlashStatus,
    FlashedArtifact, ProfilePointer, RecordedError, VerifyResult, disk_device_key,
    fleet_device_key,
};
use super::tables::{
    ARTIFACT_SHA256_TO_ARTIFACT, BUILD_KEY_TO_BUILD, DEVICE_KEY_TO_DEVICE, FLASH_ID_TO_FLASH,
    FLEET_DEVICE_TO_POINTER, FLEET_PROFILE_TO_POINTER, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
};
use super::{database_error, encode, guarded};
use crate::error::{Error, Result};

/// One upgrade step: from its version to the next, inside the given transaction.
type Step = fn(&redb::WriteTransaction) -> Result<()>;

/// The steps, indexed by the version they upgrade from (1 → 2 is `STEPS[0]`).
const STEPS: &[(u64, Step)] = &[
    (1, typed_build_inputs),
    (2, applied_by_from_pointers),
    (3, flash_records),
];

/// Upgrades `db` from schema `found` to [`SCHEMA_VERSION`].
pub(super) fn upgrade(db: &Database, found: u64) -> Result<()> {
    let mut version = found;
    while version < SCHEMA_VERSION {
        let Some((_, step)) = STEPS.iter().find(|(from, _)| *from == version) else {
            return Err(Error::internal(format!(
                "no upgrade from state schema {version}"
            )));
        };
        guarded("upgrading the state schema", || {
            let txn = db
                .begin_write()
                .map_err(|error| database_error("starting a write", error))?;
            step(&txn)?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|error| database_error("opening META", error))?;
                meta.insert(SCHEMA_VERSION_KEY, version + 1)
                    .map_err(|error| database_error("writing META", error))?;
            }
            txn.commit()
                .map_err(|error| database_error("committing the upgrade", error))
        })?;
        tracing::info!(
            from = version,
            to = version + 1,
            "upgraded the state schema"
        );
        version += 1;
    }
    Ok(())
}

/// Schema 2: a build record's `inputs` is a typed `BuildInputs` (schema 1 stored free JSON).
/// Every record is decoded and written back in the typed form; one whose inputs do not
/// decode cannot be reused safely, so it is dropped (the plan then rebuilds that profile).
fn typed_build_inputs(txn: &redb::WriteTransaction) -> Result<()> {
    let mut table = open(txn, BUILD_KEY_TO_BUILD)?;
    let what = "upgrading BUILD_KEY_TO_BUILD";
    let mut rewritten: Vec<(String, Vec<u8>)> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for entry in table.iter().map_err(|error| database_error(what, error))? {
        let (key, bytes) = entry.map_err(|error| database_error(what, error))?;
        let key = key.value().to_string();
        match serde_json::from_slice::<BuildRecord>(bytes.value()) {
            Ok(record) => rewritten.push((key, encode("BUILD_KEY_TO_BUILD", &record)?)),
            Err(error) => {
                tracing::warn!(build = %key, %error, "dropping a build record whose inputs cannot be read");
                dropped.push(key);
            }
        }
    }
    for (key, bytes) in &rewritten {
        table
            .insert(key.as_str(), bytes.as_slice())
            .map_err(|error| database_error(what, error))?;
    }
    for key in &dropped {
        table
            .remove(key.as_str())
            .map_err(|error| database_error(what, error))?;
    }
    Ok(())
}

/// Schema 3: every build record lists who applied it. Older records learn it from the
/// profile that built them and from the fleet pointers that name their key.
fn applied_by_from_pointers(txn: &redb::WriteTransaction) -> Result<()> {
    let what = "upgrading BUILD_KEY_TO_BUILD";
    let mut pointers: Vec<(String, String, ProfilePointer)> = Vec::new();
    {
        let table = txn
            .open_table(FLEET_PROFILE_TO_POINTER)
            .map_err(|error| database_error("opening FLEET_PROFILE_TO_POINTER", error))?;
        for entry in table.iter().map_err(|error| database_error(what, error))? {
            let (key, bytes) = entry.map_err(|error| database_error(what, error))?;
            let (fleet, profile) = key.value();
            if let Ok(pointer) = serde_json::from_slice::<ProfilePointer>(bytes.value()) {
                pointers.push((fleet.to_string(), profile.to_string(), pointer));
            }
        }
    }
    let mut table = open(txn, BUILD_KEY_TO_BUILD)?;
    let mut rewritten: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in table.iter().map_err(|error| database_error(what, error))? {
        let (key, bytes) = entry.map_err(|error| database_error(what, error))?;
        let Ok(mut record) = serde_json::from_slice::<BuildRecord>(bytes.value()) else {
            continue;
        };
        if let Some(fleet) = record.fleet.clone() {
            let (profile, at) = (record.profile_id.clone(), record.finished_at);
            record.note_applied(&fleet, &profile, at);
        }
        for (fleet, profile, pointer) in &pointers {
            if pointer.build_key == record.key {
                record.note_applied(fleet, profile, pointer.applied_at);
            }
        }
        rewritten.push((
            key.value().to_string(),
            encode("BUILD_KEY_TO_BUILD", &record)?,
        ));
    }
    for (key, bytes) in &rewritten {
        table
            .insert(key.as_str(), bytes.as_slice())
            .map_err(|error| database_error(what, error))?;
    }
    Ok(())
}

/// A flash record as schemas 1 to 3 stored it (nothing wrote them yet; a database may
/// still hold some).
#[derive(Deserialize)]
struct FlashRecordV2 {
    id: u64,
    device_id: Option<String>,
    device_path: PathBuf,
    identity: DeviceIdentity,
    artifact_sha256: String,
    bytes_written: u64,
    wipe: bool,
    verify_mode: String,
    verify_result: Option<String>,
    started_at: i64,
    finished_at: i64,
    status: String,
    error: Option<String>,
}

/// Schema 4: flash records get their typed shape, and each flashed device its
/// `DEVICE_KEY_TO_DEVICE` record, replayed from its flashes in order. A record that does
/// not decode is dropped (it describes a flash nobody can act on).
fn flash_records(txn: &redb::WriteTransaction) -> Result<()> {
    let what = "upgrading FLASH_ID_TO_FLASH";
    let fleets = fleets_of_devices(txn)?;
    let mut old: Vec<FlashRecordV2> = Vec::new();
    let mut dropped: Vec<u64> = Vec::new();
    {
        let table = open_flashes(txn)?;
        for entry in table.iter().map_err(|error| database_error(what, error))? {
            let (id, bytes) = entry.map_err(|error| database_error(what, error))?;
            match serde_json::from_slice::<FlashRecordV2>(bytes.value()) {
                Ok(record) => old.push(record),
                Err(error) => {
                    tracing::warn!(flash = id.value(), %error, "dropping a flash record that cannot be read");
                    dropped.push(id.value());
                }
            }
        }
    }
    let converted: Vec<FlashRecord> = old
        .into_iter()
        .map(|record| upgrade_flash(txn, record, &fleets))
        .collect();
    let mut flashes = open_flashes(txn)?;
    for id in dropped {
        flashes
            .remove(id)
            .map_err(|error| database_error(what, error))?;
    }
    let mut devices: BTreeMap<String, DeviceRecord> = BTreeMap::new();
    for record in &converted {
        let bytes = encode("FLASH_ID_TO_FLASH", record)?;
        flashes
            .insert(record.id, bytes.as_slice())
            .map_err(|error| database_error(what, error))?;
        let device = DeviceRecord::after_flash(devices.get(&record.device_key), record);
        devices.insert(device.key.clone(), device);
    }
    let mut table = open(txn, DEVICE_KEY_TO_DEVICE)?;
    for (key, device) in &devices {
        let bytes = encode("DEVICE_KEY_TO_DEVICE", device)?;
        table
            .insert(key.as_str(), bytes.as_slice())
            .map_err(|error| database_error("writing DEVICE_KEY_TO_DEVICE", error))?;
    }
    Ok(())
}

fn open_flashes(txn: &redb::WriteTransaction) -> Result<redb::Table<'_, u64, &'static [u8]>> {
    txn.open_table(FLASH_ID_TO_FLASH)
        .map_err(|error| database_error("opening FLASH_ID_TO_FLASH", error))
}

/// Fleet device id → the fleet whose device pointer names it (old flash records kept only
/// the device id).
fn fleets_of_devices(txn: &redb::WriteTransaction) -> Result<BTreeMap<String, String>> {
    let what = "reading FLEET_DEVICE_TO_POINTER";
    let table = txn
        .open_table(FLEET_DEVICE_TO_POINTER)
        .map_err(|error| database_error(what, error))?;
    let mut fleets = BTreeMap::new();
    for entry in table.iter().map_err(|error| database_error(what, error))? {
        let (key, _) = entry.map_err(|error| database_error(what, error))?;
        let (fleet, device) = key.value();
        fleets
            .entry(device.to_string())
            .or_insert_with(|| fleet.to_string());
    }
    Ok(fleets)
}

fn upgrade_flash(
    txn: &redb::WriteTransaction,
    old: FlashRecordV2,
    fleets: &BTreeMap<String, String>,
) -> FlashRecord {
    let fleet = old
        .device_id
        .as_ref()
        .and_then(|device| fleets.get(device).cloned());
    let device_key = match (&fleet, &old.device_id) {
        (Some(fleet), Some(device)) => fleet_device_key(fleet, device),
        _ => disk_device_key(&old.identity, None, None, &old.device_path),
    };
    let status = match old.status.as_str() {
        "succeeded" => FlashStatus::Succeeded,
        "in_progress" => FlashStatus::InProgress,
        "interrupted" => FlashStatus::Interrupted,
        "suspect" | "verify_failed" => FlashStatus::VerifyFailed,
        _ => FlashStatus::Failed,
    };
    let matched = match status {
        FlashStatus::VerifyFailed => Some(false),
        FlashStatus::Succeeded if old.verify_mode != "none" => Some(true),
        _ => None,
    };
    let artifact = stored_artifact(txn, &old.artifact_sha256);
    FlashRecord {
        id: old.id,
        device_key,
        fleet,
        device_id: old.device_id,
        device_node: old.device_path.clone(),
        device_path: old.device_path,
        identity: old.identity,
        image_path: PathBuf::new(),
        image_sha256: old.artifact_sha256.clone(),
        image_format: "unknown".to_string(),
        artifact: Some(FlashedArtifact {
            sha256: old.artifact_sha256,
            name: artifact
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            kind: artifact
                .as_ref()
                .map(|a| a.kind.clone())
                .unwrap_or_default(),
            build_key: artifact.and_then(|a| a.builds.last().cloned()),
            profile_id: None,
        }),
        image_bytes: None,
        bytes_written: old.bytes_written,
        wipe: old.wipe,
        verify_mode: old.verify_mode,
        verification: matched.map(|matched| VerifyResult {
            bytes: old.bytes_written,
            matched,
            digest: None,
            mismatch_offset: None,
        }),
        started_at: old.started_at,
        finished_at: Some(old.finished_at),
        status,
        error: old.error.map(|message| RecordedError {
            code: match status {
                FlashStatus::VerifyFailed => "flash_hash_mismatch",
                _ => "flash_error",
            }
            .to_string(),
            message: match old.verify_result {
                Some(result) => format!("{message} ({result})"),
                None => message,
            },
        }),
    }
}

/// The artifact record of an old flash, for its name and kind; `None` when it is gone or
/// unreadable (the flash record keeps its sha256 either way).
fn stored_artifact(txn: &redb::WriteTransaction, sha256: &str) -> Option<ArtifactRecord> {
    let table = txn.open_table(ARTIFACT_SHA256_TO_ARTIFACT).ok()?;
    let bytes = table.get(sha256).ok()??;
    serde_json::from_slice(bytes.value()).ok()
}

fn open<'t>(
    txn: &'t redb::WriteTransaction,
    definition: TableDefinition<'static, &'static str, &'static [u8]>,
) -> Result<redb::Table<'t, &'static str, &'static [u8]>> {
    txn.open_table(definition).map_err(|error| {
        database_error(
            &format!("opening {}", redb::TableHandle::name(&definition)),
            error,
        )
    })
}
