//! Read queries over one consistent snapshot of the state. Never writes.

use std::collections::BTreeMap;

use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle,
};
use serde::de::DeserializeOwned;

use super::records::{
    ArtifactRecord, BuildRecord, BuilderRecord, DevicePointer, DeviceRecord, FlashRecord,
    ProfilePointer,
};
use super::tables::{
    ARTIFACT_SHA256_TO_ARTIFACT, BUILD_KEY_TO_BUILD, BUILDER_KEY_TO_BUILDER, DEVICE_KEY_TO_DEVICE,
    FLASH_ID_TO_FLASH, FLEET_DEVICE_TO_POINTER, FLEET_PROFILE_TO_POINTER, PATH_TO_FILE_HASH,
};
use super::{database_error, decode, guarded};
use crate::error::Result;
use crate::triple::Triple;

type Bytes = &'static [u8];

/// A read transaction: every query sees the same committed state.
pub struct Reader {
    txn: ReadTransaction,
}

impl Reader {
    pub(crate) fn new(txn: ReadTransaction) -> Reader {
        Reader { txn }
    }

    pub fn builder(&self, triple: &Triple) -> Result<Option<BuilderRecord>> {
        self.get(BUILDER_KEY_TO_BUILDER, triple.to_string().as_str())
    }

    /// Every Image Builder, ordered by release, target and subtarget.
    pub fn builders(&self) -> Result<Vec<BuilderRecord>> {
        self.values(BUILDER_KEY_TO_BUILDER)
    }

    pub fn build(&self, key: &str) -> Result<Option<BuildRecord>> {
        self.get(BUILD_KEY_TO_BUILD, key)
    }

    /// Every build, newest first (by start time, then key).
    pub fn builds(&self) -> Result<Vec<BuildRecord>> {
        let mut builds: Vec<BuildRecord> = self.values(BUILD_KEY_TO_BUILD)?;
        builds.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.key.cmp(&b.key)));
        Ok(builds)
    }

    pub fn artifact(&self, sha256: &str) -> Result<Option<ArtifactRecord>> {
        self.get(ARTIFACT_SHA256_TO_ARTIFACT, sha256)
    }

    /// Every artifact, ordered by sha256.
    pub fn artifacts(&self) -> Result<Vec<ArtifactRecord>> {
        self.values(ARTIFACT_SHA256_TO_ARTIFACT)
    }

    pub fn flash(&self, id: u64) -> Result<Option<FlashRecord>> {
        self.get(FLASH_ID_TO_FLASH, id)
    }

    /// Every flash attempt, newest first.
    pub fn flashes(&self) -> Result<Vec<FlashRecord>> {
        let mut flashes: Vec<FlashRecord> = self.values(FLASH_ID_TO_FLASH)?;
        flashes.reverse();
        Ok(flashes)
    }

    pub fn device(&self, key: &str) -> Result<Option<DeviceRecord>> {
        self.get(DEVICE_KEY_TO_DEVICE, key)
    }

    /// Every device a flash recorded, ordered by device key.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>> {
        self.values(DEVICE_KEY_TO_DEVICE)
    }

    pub fn profile_pointer(&self, fleet: &str, profile_id: &str) -> Result<Option<ProfilePointer>> {
        self.get(FLEET_PROFILE_TO_POINTER, (fleet, profile_id))
    }

    /// Profile id → pointer, for one fleet.
    pub fn profile_pointers(&self, fleet: &str) -> Result<BTreeMap<String, ProfilePointer>> {
        self.fleet_pointers(FLEET_PROFILE_TO_POINTER, fleet)
    }

    /// Every profile pointer of every fleet (what `gc` must keep).
    pub fn all_profile_pointers(&self) -> Result<Vec<ProfilePointer>> {
        self.values(FLEET_PROFILE_TO_POINTER)
    }

    pub fn device_pointer(&self, fleet: &str, device_id: &str) -> Result<Option<DevicePointer>> {
        self.get(FLEET_DEVICE_TO_POINTER, (fleet, device_id))
    }

    /// Device id → pointer, for one fleet.
    pub fn device_pointers(&self, fleet: &str) -> Result<BTreeMap<String, DevicePointer>> {
        self.fleet_pointers(FLEET_DEVICE_TO_POINTER, fleet)
    }

    /// The overlay module's cached bytes for one absolute path.
    pub fn file_hash(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let what = "reading PATH_TO_FILE_HASH";
        guarded(what, || {
            let Some(table) = self.open(PATH_TO_FILE_HASH)? else {
                return Ok(None);
            };
            let found = table
                .get(path)
                .map_err(|error| database_error(what, error))?;
            Ok(found.map(|bytes| bytes.value().to_vec()))
        })
    }

    /// Every cached entry whose path starts with `prefix` (pass a directory with a trailing
    /// `/` to get exactly the files below it).
    pub fn file_hashes_with_prefix(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        guarded("reading PATH_TO_FILE_HASH", || {
            self.prefixed_file_hashes(prefix)
        })
    }

    fn prefixed_file_hashes(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut found = BTreeMap::new();
        let Some(table) = self.open(PATH_TO_FILE_HASH)? else {
            return Ok(found);
        };
        let what = "reading PATH_TO_FILE_HASH";
        let range = table
            .range(prefix..)
            .map_err(|error| database_error(what, error))?;
        for entry in range {
            let (path, bytes) = entry.map_err(|error| database_error(what, error))?;
            if !path.value().starts_with(prefix) {
                break;
            }
            found.insert(path.value().to_string(), bytes.value().to_vec());
        }
        Ok(found)
    }

    /// A table, or `None` if it was never created (nothing is recorded in it).
    fn open<K: Key + 'static>(
        &self,
        definition: TableDefinition<K, Bytes>,
    ) -> Result<Option<ReadOnlyTable<K, Bytes>>> {
        match self.txn.open_table(definition) {
            Ok(table) => Ok(Some(table)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(database_error(
                &format!("opening {}", definition.name()),
                error,
            )),
        }
    }

    fn get<'k, K: Key + 'static, T: DeserializeOwned>(
        &self,
        definition: TableDefinition<K, Bytes>,
        key: K::SelfType<'k>,
    ) -> Result<Option<T>> {
        let name = definition.name();
        guarded(&format!("reading {name}"), || {
            match self.open(definition)? {
                Some(table) => get_record(&table, name, key),
                None => Ok(None),
            }
        })
    }

    fn values<K: Key + 'static, T: DeserializeOwned>(
        &self,
        definition: TableDefinition<K, Bytes>,
    ) -> Result<Vec<T>> {
        let name = definition.name();
        guarded(&format!("reading {name}"), || {
            match self.open(definition)? {
                Some(table) => all_records(&table, name),
                None => Ok(Vec::new()),
            }
        })
    }

    fn fleet_pointers<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<(&'static str, &'static str), Bytes>,
        fleet: &str,
    ) -> Result<BTreeMap<String, T>> {
        let what = format!("reading {}", definition.name());
        guarded(&what, || self.pointers_of_fleet(definition, fleet))
    }

    fn pointers_of_fleet<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<(&'static str, &'static str), Bytes>,
        fleet: &str,
    ) -> Result<BTreeMap<String, T>> {
        let mut found = BTreeMap::new();
        let Some(table) = self.open(definition)? else {
            return Ok(found);
        };
        let name = definition.name().to_string();
        let what = format!("reading {name}");
        let range = table
            .range((fleet, "")..)
            .map_err(|error| database_error(&what, error))?;
        for entry in range {
            let (key, bytes) = entry.map_err(|error| database_error(&what, error))?;
            let (key_fleet, id) = key.value();
            if key_fleet != fleet {
                break;
            }
            let label = format!("{:?}", (fleet, id));
            found.insert(id.to_string(), decode(&name, &label, bytes.value())?);
        }
        Ok(found)
    }
}

/// One record by key from any table of records (read or write transaction).
pub(crate) fn get_record<'k, K, T>(
    table: &impl ReadableTable<K, Bytes>,
    name: &str,
    key: K::SelfType<'k>,
) -> Result<Option<T>>
where
    K: Key + 'static,
    T: DeserializeOwned,
{
    let label = format!("{key:?}");
    let found = table
        .get(key)
        .map_err(|error| database_error(&format!("reading {name}"), error))?;
    match found {
        Some(bytes) => decode(name, &label, bytes.value()).map(Some),
        None => Ok(None),
    }
}

/// Every record of a table, in key order.
pub(crate) fn all_records<K, T>(table: &impl ReadableTable<K, Bytes>, name: &str) -> Result<Vec<T>>
where
    K: Key + 'static,
    T: DeserializeOwned,
{
    let what = format!("reading {name}");
    let iter = table.iter().map_err(|error| database_error(&what, error))?;
    let mut records = Vec::new();
    for entry in iter {
        let (key, bytes) = entry.map_err(|error| database_error(&what, error))?;
        records.push(decode(name, &format!("{:?}", key.value()), bytes.value())?);
    }
    Ok(records)
}
