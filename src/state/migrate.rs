//! In-place upgrades of older databases, one schema version at a time, each in one write
//! transaction: a crash mid-upgrade leaves the old version intact, and the next open
//! upgrades again. An older database is never refused or wiped.

use redb::{Database, ReadableTable, TableDefinition};

use super::records::{BuildRecord, ProfilePointer};
use super::tables::{
    BUILD_KEY_TO_BUILD, FLEET_PROFILE_TO_POINTER, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
};
use super::{database_error, encode, guarded};
use crate::error::{Error, Result};

/// One upgrade step: from its version to the next, inside the given transaction.
type Step = fn(&redb::WriteTransaction) -> Result<()>;

/// The steps, indexed by the version they upgrade from (1 → 2 is `STEPS[0]`).
const STEPS: &[(u64, Step)] = &[(1, typed_build_inputs), (2, applied_by_from_pointers)];

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
