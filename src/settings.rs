//! Effective settings: CLI flags > environment > `imagegen.toml` `[settings]` > defaults,
//! each value remembering its origin. (Stub: the helper that owns this file fills it in.)

use std::path::PathBuf;

/// The `[settings]` table of `imagegen.toml`, already type-checked by `manifest`.
/// Relative paths are already resolved against the fleet root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// The manifest file these values came from (for the origin column of `imagegen config`).
    pub path: PathBuf,
    pub db: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tmp_dir: Option<PathBuf>,
    pub offline: Option<bool>,
    pub log_level: Option<String>,
    pub mirror: Option<String>,
    pub jobs: Option<u32>,
    pub download_jobs: Option<u32>,
    pub trusted_keys: Option<Vec<PathBuf>>,
    pub verify_signatures: Option<bool>,
    /// Seconds one `make image` may run before it is stopped.
    pub build_timeout: Option<u64>,
}
