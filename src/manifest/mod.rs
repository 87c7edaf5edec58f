//! The files a user writes, read into typed values with spans: profiles (one device build
//! recipe per YAML, JSON or TOML file) and the fleet manifest `imagegen.toml` (the lock file
//! `imagegen.lock`, which imagegen writes, is [`crate::lock`]). Everything is validated here and every
//! problem is reported at once with its line and column. This module checks the files
//! against themselves and each other, never against upstream metadata or the state store.

mod export;
mod fleet;
pub(crate) mod names;
mod profile;
mod read;
mod rules;
mod settings_table;

pub use export::export_profile;
pub(crate) use fleet::check_manifest_text;
pub use fleet::{Device, FlashTarget, Fleet, VerifyMode, load_fleet};
pub use profile::{
    BuildDefaults, FileEntry, Filesystem, LoadedProfile, Policies, Profile, ProfileFilter,
    ProfileMeta, is_snapshot_release,
};
pub use read::{load_profile, parse_profile};
pub use rules::{is_valid_id, is_valid_release, normalize_release};

/// The fleet manifest's file name.
pub const MANIFEST_FILE_NAME: &str = "imagegen.toml";
/// The lock file's name, next to `imagegen.toml` (its format is [`crate::lock`]'s).
pub const LOCK_FILE_NAME: &str = "imagegen.lock";
