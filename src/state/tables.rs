//! The database schema, in one place: every redb table, its key and value types, and the
//! schema version. Nothing else in the crate names a table.
//!
//! Record values are the serde_json bytes of the types in [`super::records`]; their shape is
//! covered by [`SCHEMA_VERSION`] like the tables themselves.

use redb::TableDefinition;

/// The version of the tables and record encodings below. Bump it for any change an older
/// imagegen could misread, and add the upgrade step in `migrate`; an imagegen refuses a
/// database with a newer version and upgrades an older one in place.
///
/// 1: first release. 2: `BuildRecord.inputs` is a typed `BuildInputs`. 3: a build record
/// lists every (fleet, profile) that applied it (`applied_by`) and a kept build tree.
/// 4: flash records (`FlashRecord` reshaped: status enum, device key, image and artifact,
/// verification) and [`DEVICE_KEY_TO_DEVICE`].
pub const SCHEMA_VERSION: u64 = 4;

/// The key in [`META`] that holds the schema version.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Database facts: `schema_version`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("META");

/// `Triple` as `"<release>/<target>/<subtarget>"` → `BuilderRecord`.
pub(crate) const BUILDER_KEY_TO_BUILDER: TableDefinition<&str, &[u8]> =
    TableDefinition::new("BUILDER_KEY_TO_BUILDER");

/// Build key (hex blake3) → `BuildRecord`.
pub(crate) const BUILD_KEY_TO_BUILD: TableDefinition<&str, &[u8]> =
    TableDefinition::new("BUILD_KEY_TO_BUILD");

/// Artifact sha256 (hex) → `ArtifactRecord`.
pub(crate) const ARTIFACT_SHA256_TO_ARTIFACT: TableDefinition<&str, &[u8]> =
    TableDefinition::new("ARTIFACT_SHA256_TO_ARTIFACT");

/// Flash id (1, 2, …; never reused) → `FlashRecord`.
pub(crate) const FLASH_ID_TO_FLASH: TableDefinition<u64, &[u8]> =
    TableDefinition::new("FLASH_ID_TO_FLASH");

/// Device key (`docs/flash.md`, "Which device") → `DeviceRecord`: each device's state after
/// its last flash (flashed, did not complete, partial, suspect).
pub(crate) const DEVICE_KEY_TO_DEVICE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("DEVICE_KEY_TO_DEVICE");

/// (fleet, profile id) → `ProfilePointer`: the build last applied for that profile.
pub(crate) const FLEET_PROFILE_TO_POINTER: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("FLEET_PROFILE_TO_POINTER");

/// (fleet, device id) → `DevicePointer`: the artifact last flashed to that device, set by a
/// successful flash and removed when a flash starts (the old image is being destroyed).
pub(crate) const FLEET_DEVICE_TO_POINTER: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("FLEET_DEVICE_TO_POINTER");

/// Absolute path → opaque bytes owned by `overlay` (its per-file hash cache).
pub(crate) const PATH_TO_FILE_HASH: TableDefinition<&str, &[u8]> =
    TableDefinition::new("PATH_TO_FILE_HASH");
