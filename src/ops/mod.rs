//! Operations: everything a frontend offers, as library functions that take typed options
//! and return a `Serialize` report or an [`Error`]. The CLI, the HTTP API and the MCP server
//! call these and only render what they return; none of them holds logic of its own.
//!
//! Operations never print, never read the process environment (a [`Workspace`] carries the
//! environment it was loaded with), never parse command-line text, and report progress of
//! long runs only through the executor's [`crate::exec::Reporter`] events. The rule for new
//! code: if two frontends would need it, it belongs here or below (docs/architecture.md).

mod apply;
mod builders;
mod check;
mod explain;
mod files;
mod flash;
mod plan;
mod profiles;
mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::lock::LockFile;
use crate::manifest::{self, Fleet};
use crate::settings::{self, FlagSettings, SettingEntry, Settings};
use crate::state::Store;

pub use apply::{
    ApplyOutcome, ApplyRequest, ArtifactLocation, BuildOutcome, BuildRequest, BuildResult,
    ProfileBuild, ProfileImages, RunHooks, apply, build, run_failure, select_profiles,
};
pub use builders::{
    BuilderInfo, BuilderVerification, PruneReport, TreeState, builder_info, ensure_builders,
    list_builders, lock, prune_builders, verify_builders,
};
pub use check::{SkippedCheck, ValidateReport, ValidateRequest, validate};
pub use explain::{ActionDetail, GraphReport, graph, show};
pub use files::{FleetFile, FleetFileId, FleetFileText, fleet_files, read_fleet_file};
pub use flash::{
    ArtifactSpec, FlashEntry, FlashEvents, FlashFilter, FlashListing, FlashOutcome, FlashRequest,
    FlashSource, devices, flash_artifact, flash_image, flash_list,
};
pub use plan::{PlanRequest, check_saved_plan, plan, read_saved_plan, save_plan};
pub use profiles::{
    ExportReport, PROFILES_DIR, ProfileDetail, ProfileSummary, ProfileWritten, WriteMode,
    delete_profile, export_profiles, import_profiles, list_profiles, show_profile,
    validate_profile_files, write_profile,
};
pub use records::{
    ArtifactDetail, ArtifactFilter, BuildFilter, BuildLog, ExportedArtifact, GcReport, GcRequest,
    VerifyReport, artifact_show, artifacts_export, artifacts_list, artifacts_verify, build_log,
    build_show, builds_filtered, builds_list, gc,
};

/// The manifest's file name, searched for upwards from the working directory.
pub const MANIFEST_NAME: &str = manifest::MANIFEST_FILE_NAME;

/// Where to find the fleet, and the inputs of settings resolution.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceOptions {
    /// An explicit manifest path (`--manifest`); otherwise searched from `search_from`.
    pub manifest: Option<PathBuf>,
    /// The directory to search upwards from for `imagegen.toml` (the working directory).
    pub search_from: Option<PathBuf>,
    /// Settings given on the command line (or by an API caller).
    pub flags: FlagSettings,
    /// The process environment, passed in (tests and servers pass their own).
    pub env: BTreeMap<String, String>,
}

/// Whether an operation needs a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetNeed {
    /// Fail without a manifest.
    Required,
    /// Work from flags, environment and defaults when there is none (`config`, `builds`);
    /// a manifest that exists but is broken is still an error.
    Optional,
}

/// A loaded fleet (when there is one) and the effective settings: what every operation
/// starts from.
#[derive(Debug)]
pub struct Workspace {
    pub fleet: Option<Fleet>,
    pub settings: Settings,
    pub env: BTreeMap<String, String>,
    /// How long [`Workspace::store`] waits for another process to release the state store
    /// before failing with `state_locked` (zero: fail at once, as the CLI does).
    pub store_wait: Duration,
}

impl Workspace {
    /// Finds and loads the fleet, then resolves the settings (flags > env > file > defaults).
    pub fn load(options: &WorkspaceOptions, need: FleetNeed) -> Result<Workspace> {
        let fleet = match manifest_path(options) {
            Ok(path) => {
                let home = settings::home_dir(&options.env);
                Some(manifest::load_fleet(&path, home.as_deref())?)
            }
            Err(error) if need == FleetNeed::Optional && options.manifest.is_none() => {
                drop(error);
                None
            }
            Err(error) => return Err(error),
        };
        let settings = settings::resolve(
            &options.flags,
            &options.env,
            fleet.as_ref().map(|fleet| &fleet.settings),
        )?;
        Ok(Workspace {
            fleet,
            settings,
            env: options.env.clone(),
            store_wait: Duration::ZERO,
        })
    }

    /// The fleet, or a `precondition` error saying how to name one.
    pub fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().ok_or_else(no_fleet)
    }

    /// Opens (and locks) the state store; `holder` tells other processes who holds it.
    pub fn store(&self, holder: &str) -> Result<Store> {
        match self.store_wait.is_zero() {
            true => Store::open(&self.settings.db.value, holder),
            false => Store::open_wait(&self.settings.db.value, holder, self.store_wait),
        }
    }

    /// The fleet's `imagegen.lock`, when the fleet has one.
    pub fn lock_file(&self) -> Result<Option<LockFile>> {
        match &self.fleet {
            Some(fleet) => LockFile::read(&fleet.lock_path()),
            None => Ok(None),
        }
    }

    /// Every effective setting with its origin (`imagegen config`, `GET /config`).
    pub fn config(&self) -> Vec<SettingEntry> {
        self.settings.entries()
    }
}

/// The fleet's files as they were at one moment: path, size and modification time of the
/// manifest and of every profile file its patterns match. Frontends that keep a loaded
/// [`Workspace`] between requests (`imagegen serve`) reuse it while the stamp is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStamp {
    files: Vec<(PathBuf, u64, Option<std::time::SystemTime>)>,
}

impl FleetStamp {
    /// The newest modification time among the files (`None` when one is unknown).
    pub fn newest(&self) -> Option<std::time::SystemTime> {
        self.files
            .iter()
            .map(|(_, _, modified)| *modified)
            .try_fold(std::time::UNIX_EPOCH, |newest, modified| {
                modified.map(|modified| newest.max(modified))
            })
    }
}

impl Workspace {
    /// The stamp of this workspace's fleet files as they are now (`None` without a fleet).
    /// A file that is gone or unreadable is stamped as such, so its return changes the stamp.
    pub fn fleet_stamp(&self) -> Option<FleetStamp> {
        let fleet = self.fleet.as_ref()?;
        let files = fleet
            .source_files()
            .into_iter()
            .map(|path| {
                let metadata = std::fs::metadata(&path).ok();
                let size = metadata.as_ref().map_or(u64::MAX, std::fs::Metadata::len);
                let modified = metadata.and_then(|metadata| metadata.modified().ok());
                (path, size, modified)
            })
            .collect();
        Some(FleetStamp { files })
    }
}

/// `--manifest`, else `imagegen.toml` in the search directory or its nearest parent.
fn manifest_path(options: &WorkspaceOptions) -> Result<PathBuf> {
    if let Some(path) = &options.manifest {
        return Ok(path.clone());
    }
    let start = match &options.search_from {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|error| {
            Error::internal(format!("cannot read the current directory: {error}"))
        })?,
    };
    start
        .ancestors()
        .map(|dir| dir.join(MANIFEST_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| not_found_from(&start))
}

fn not_found_from(start: &Path) -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!(
            "no `{MANIFEST_NAME}` in `{}` or any parent directory",
            start.display()
        ),
    )
    .with_help("run imagegen inside a fleet repository, or pass `--manifest PATH`")
}

fn no_fleet() -> Error {
    Error::new(
        ErrorCode::Precondition,
        format!("this needs a fleet, and no `{MANIFEST_NAME}` was found"),
    )
    .with_help("run imagegen inside a fleet repository, or pass `--manifest PATH`")
}

/// `path` relative to `base` when it is inside it, for display.
pub fn display_relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .map(|relative| relative.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
