//! One write transaction over the state. Nothing is visible to readers, nor durable, until
//! [`Writer::commit`]; dropping a writer aborts it.

use redb::{Database, Key, ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::reader::get_record;
use super::records::{
    ArtifactRecord, BuildRecord, BuilderRecord, DevicePointer, DeviceRecord, FlashRecord,
    FlashStatus, ProfilePointer,
};
use super::tables::{
    ARTIFACT_SHA256_TO_ARTIFACT, BUILD_KEY_TO_BUILD, BUILDER_KEY_TO_BUILDER, DEVICE_KEY_TO_DEVICE,
    FLASH_ID_TO_FLASH, FLEET_DEVICE_TO_POINTER, FLEET_PROFILE_TO_POINTER, META, PATH_TO_FILE_HASH,
    SCHEMA_VERSION, SCHEMA_VERSION_KEY,
};
use super::{database_error, encode, guarded};
use crate::error::Result;
use crate::triple::Triple;

type Bytes = &'static [u8];

/// A write transaction. Use one per call site and [`Writer::commit`] it.
pub struct Writer {
    txn: WriteTransaction,
}

impl Writer {
    pub(crate) fn new(txn: WriteTransaction) -> Writer {
        Writer { txn }
    }

    /// Makes every change of this transaction visible and durable, or none of them.
    pub fn commit(self) -> Result<()> {
        guarded("committing", || {
            self.txn
                .commit()
                .map_err(|error| database_error("committing", error))
        })
    }

    pub fn builder(&self, triple: &Triple) -> Result<Option<BuilderRecord>> {
        self.get(BUILDER_KEY_TO_BUILDER, triple.to_string().as_str())
    }

    /// Inserts or replaces the record for its Image Builder.
    pub fn put_builder(&mut self, record: &BuilderRecord) -> Result<()> {
        self.put(
            BUILDER_KEY_TO_BUILDER,
            record.triple.to_string().as_str(),
            record,
        )
    }

    pub fn remove_builder(&mut self, triple: &Triple) -> Result<bool> {
        self.remove(BUILDER_KEY_TO_BUILDER, triple.to_string().as_str())
    }

    pub fn build(&self, key: &str) -> Result<Option<BuildRecord>> {
        self.get(BUILD_KEY_TO_BUILD, key)
    }

    /// Inserts or replaces the record for its build key.
    pub fn put_build(&mut self, record: &BuildRecord) -> Result<()> {
        self.put(BUILD_KEY_TO_BUILD, record.key.as_str(), record)
    }

    pub fn remove_build(&mut self, key: &str) -> Result<bool> {
        self.remove(BUILD_KEY_TO_BUILD, key)
    }

    pub fn artifact(&self, sha256: &str) -> Result<Option<ArtifactRecord>> {
        self.get(ARTIFACT_SHA256_TO_ARTIFACT, sha256)
    }

    /// Inserts the artifact, or updates it keeping every build that produced it before: the
    /// stored `builds` is the old list followed by the new keys it lacked. Returns what was
    /// stored.
    pub fn put_artifact(&mut self, record: &ArtifactRecord) -> Result<ArtifactRecord> {
        let mut merged = record.clone();
        if let Some(existing) = self.artifact(&record.sha256)? {
            merged.builds = existing.builds;
            for build in &record.builds {
                if !merged.builds.contains(build) {
                    merged.builds.push(build.clone());
                }
            }
        }
        self.put(ARTIFACT_SHA256_TO_ARTIFACT, record.sha256.as_str(), &merged)?;
        Ok(merged)
    }

    pub fn remove_artifact(&mut self, sha256: &str) -> Result<bool> {
        self.remove(ARTIFACT_SHA256_TO_ARTIFACT, sha256)
    }

    /// Records a flash attempt under the next free id (ignoring `record.id`) and returns it.
    pub fn add_flash(&mut self, record: &FlashRecord) -> Result<u64> {
        guarded("writing FLASH_ID_TO_FLASH", || self.insert_flash(record))
    }

    fn insert_flash(&mut self, record: &FlashRecord) -> Result<u64> {
        let name = FLASH_ID_TO_FLASH.name();
        let mut table = self.open(FLASH_ID_TO_FLASH)?;
        let last = table
            .last()
            .map_err(|error| database_error(&format!("reading {name}"), error))?
            .map(|(id, _)| id.value());
        let id = last.unwrap_or(0) + 1;
        let record = FlashRecord {
            id,
            ..record.clone()
        };
        let bytes = encode(name, &record)?;
        table
            .insert(id, bytes.as_slice())
            .map_err(|error| database_error(&format!("writing {name}"), error))?;
        Ok(id)
    }

    pub fn flash(&self, id: u64) -> Result<Option<FlashRecord>> {
        self.get(FLASH_ID_TO_FLASH, id)
    }

    /// Replaces the record of an attempt [`Writer::add_flash`] recorded (its end).
    pub fn put_flash(&mut self, record: &FlashRecord) -> Result<()> {
        self.put(FLASH_ID_TO_FLASH, record.id, record)
    }

    pub fn device(&self, key: &str) -> Result<Option<DeviceRecord>> {
        self.get(DEVICE_KEY_TO_DEVICE, key)
    }

    /// A flash attempt starts (before its first byte): stores it under the next free id,
    /// marks its device as being flashed and drops the fleet's pointer to what the device
    /// held, which is about to be destroyed. Returns the record with its id.
    pub fn start_flash(&mut self, record: &FlashRecord) -> Result<FlashRecord> {
        let id = self.add_flash(record)?;
        let record = FlashRecord {
            id,
            ..record.clone()
        };
        let previous = self.device(&record.device_key)?;
        self.put_device(&DeviceRecord::after_flash(previous.as_ref(), &record))?;
        if let (Some(fleet), Some(device)) = (&record.fleet, &record.device_id) {
            self.remove_device_pointer(fleet, device)?;
        }
        Ok(record)
    }

    /// A flash attempt ended: its record, its device's state, and for a fleet device that
    /// now holds the image, the fleet's pointer to it (the artifact, else the image file).
    pub fn end_flash(&mut self, record: &FlashRecord) -> Result<()> {
        self.put_flash(record)?;
        let previous = self.device(&record.device_key)?;
        self.put_device(&DeviceRecord::after_flash(previous.as_ref(), record))?;
        if let (FlashStatus::Succeeded, Some(fleet), Some(device)) =
            (record.status, &record.fleet, &record.device_id)
        {
            let artifact_sha256 = record
                .artifact
                .as_ref()
                .map_or(&record.image_sha256, |artifact| &artifact.sha256)
                .clone();
            let pointer = DevicePointer {
                artifact_sha256,
                flash_id: record.id,
                flashed_at: record.finished_at.unwrap_or(record.started_at),
            };
            self.set_device_pointer(fleet, device, &pointer)?;
        }
        Ok(())
    }

    /// Inserts or replaces the record of its device key.
    pub fn put_device(&mut self, record: &DeviceRecord) -> Result<()> {
        self.put(DEVICE_KEY_TO_DEVICE, record.key.as_str(), record)
    }

    pub fn set_profile_pointer(
        &mut self,
        fleet: &str,
        profile_id: &str,
        pointer: &ProfilePointer,
    ) -> Result<()> {
        self.put(FLEET_PROFILE_TO_POINTER, (fleet, profile_id), pointer)
    }

    pub fn remove_profile_pointer(&mut self, fleet: &str, profile_id: &str) -> Result<bool> {
        self.remove(FLEET_PROFILE_TO_POINTER, (fleet, profile_id))
    }

    pub fn set_device_pointer(
        &mut self,
        fleet: &str,
        device_id: &str,
        pointer: &DevicePointer,
    ) -> Result<()> {
        self.put(FLEET_DEVICE_TO_POINTER, (fleet, device_id), pointer)
    }

    pub fn remove_device_pointer(&mut self, fleet: &str, device_id: &str) -> Result<bool> {
        self.remove(FLEET_DEVICE_TO_POINTER, (fleet, device_id))
    }

    /// Stores the overlay module's opaque bytes per absolute path.
    pub fn put_file_hashes(
        &mut self,
        entries: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<()> {
        let what = "writing PATH_TO_FILE_HASH";
        guarded(what, || {
            let mut table = self.open(PATH_TO_FILE_HASH)?;
            for (path, bytes) in entries {
                table
                    .insert(path.as_str(), bytes.as_slice())
                    .map_err(|error| database_error(what, error))?;
            }
            Ok(())
        })
    }

    /// Forgets cached entries (files that no longer exist); returns how many were removed.
    pub fn remove_file_hashes<'p>(
        &mut self,
        paths: impl IntoIterator<Item = &'p str>,
    ) -> Result<usize> {
        let what = "writing PATH_TO_FILE_HASH";
        guarded(what, || {
            let mut table = self.open(PATH_TO_FILE_HASH)?;
            let mut removed = 0;
            for path in paths {
                let old = table
                    .remove(path)
                    .map_err(|error| database_error(what, error))?;
                removed += usize::from(old.is_some());
            }
            Ok(removed)
        })
    }

    /// The table, created on first use.
    fn open<K: Key + 'static>(
        &self,
        definition: TableDefinition<K, Bytes>,
    ) -> Result<Table<'_, K, Bytes>> {
        self.txn
            .open_table(definition)
            .map_err(|error| database_error(&format!("opening {}", definition.name()), error))
    }

    fn get<'k, K: Key + 'static, T: DeserializeOwned>(
        &self,
        definition: TableDefinition<K, Bytes>,
        key: K::SelfType<'k>,
    ) -> Result<Option<T>> {
        let name = definition.name();
        guarded(&format!("reading {name}"), || {
            get_record(&self.open(definition)?, name, key)
        })
    }

    fn put<'k, K: Key + 'static, T: Serialize>(
        &mut self,
        definition: TableDefinition<K, Bytes>,
        key: K::SelfType<'k>,
        record: &T,
    ) -> Result<()> {
        let name = definition.name();
        let what = format!("writing {name}");
        let bytes = encode(name, record)?;
        guarded(&what, || {
            let mut table = self.open(definition)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|error| database_error(&what, error))?;
            Ok(())
        })
    }

    fn remove<'k, K: Key + 'static>(
        &mut self,
        definition: TableDefinition<K, Bytes>,
        key: K::SelfType<'k>,
    ) -> Result<bool> {
        let what = format!("writing {}", definition.name());
        guarded(&what, || {
            let mut table = self.open(definition)?;
            let old = table
                .remove(key)
                .map_err(|error| database_error(&what, error))?;
            Ok(old.is_some())
        })
    }
}

/// Creates every table and records the schema version, in one transaction.
pub(crate) fn initialise(db: &Database) -> Result<()> {
    let txn = db
        .begin_write()
        .map_err(|error| database_error("starting a write", error))?;
    let writer = Writer::new(txn);
    {
        let mut meta = writer
            .txn
            .open_table(META)
            .map_err(|error| database_error("opening META", error))?;
        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
            .map_err(|error| database_error("writing META", error))?;
    }
    writer.open(BUILDER_KEY_TO_BUILDER)?;
    writer.open(BUILD_KEY_TO_BUILD)?;
    writer.open(ARTIFACT_SHA256_TO_ARTIFACT)?;
    writer.open(FLASH_ID_TO_FLASH)?;
    writer.open(DEVICE_KEY_TO_DEVICE)?;
    writer.open(FLEET_PROFILE_TO_POINTER)?;
    writer.open(FLEET_DEVICE_TO_POINTER)?;
    writer.open(PATH_TO_FILE_HASH)?;
    writer.commit()
}
