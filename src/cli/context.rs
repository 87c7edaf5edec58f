//! What every command needs: the global flags, the environment (passed in, never read
//! elsewhere), the fleet manifest and the effective settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::args::GlobalArgs;
use crate::error::{Error, ErrorCode, Result};
use crate::manifest::{self, Fleet};
use crate::settings::{self, FlagSettings, Settings};

pub(crate) struct Context {
    pub global: GlobalArgs,
    pub env: BTreeMap<String, String>,
}

pub(crate) const MANIFEST_NAME: &str = "imagegen.toml";

impl Context {
    pub fn new(global: GlobalArgs, env: BTreeMap<String, String>) -> Context {
        Context { global, env }
    }

    pub fn json(&self) -> bool {
        self.global.json
    }

    /// The manifest path: `--manifest`, else `imagegen.toml` in the current directory or
    /// the nearest parent that has one.
    pub fn manifest_path(&self) -> Result<PathBuf> {
        if let Some(path) = &self.global.manifest {
            return Ok(path.clone());
        }
        let cwd = std::env::current_dir().map_err(|error| {
            Error::internal(format!("cannot read the current directory: {error}"))
        })?;
        cwd.ancestors()
            .map(|dir| dir.join(MANIFEST_NAME))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Precondition,
                    format!(
                        "no `{MANIFEST_NAME}` in `{}` or any parent directory",
                        cwd.display()
                    ),
                )
                .with_help("run imagegen inside a fleet repository, or pass `--manifest PATH`")
            })
    }

    pub fn load_fleet(&self) -> Result<Fleet> {
        let path = self.manifest_path()?;
        manifest::load_fleet(&path)
    }

    /// The fleet when there is one: commands such as `config` or `builds` also work outside
    /// a fleet repository (with flags, environment and defaults only).
    pub fn optional_fleet(&self) -> Result<Option<Fleet>> {
        match self.load_fleet() {
            Ok(fleet) => Ok(Some(fleet)),
            Err(error)
                if error.code == ErrorCode::Precondition && self.global.manifest.is_none() =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    pub fn flags(&self) -> FlagSettings {
        let global = &self.global;
        FlagSettings {
            db: global.db.clone(),
            artifacts_dir: global.artifacts_dir.clone(),
            cache_dir: global.cache_dir.clone(),
            tmp_dir: global.tmp_dir.clone(),
            offline: global.offline.then_some(true),
            log_level: global.log_level.clone(),
            mirror: global.mirror.clone(),
            jobs: global.jobs,
            download_jobs: global.download_jobs,
            trusted_keys: (!global.trusted_keys.is_empty()).then(|| global.trusted_keys.clone()),
            verify_signatures: global.verify_signatures,
            build_timeout: global.build_timeout,
        }
    }

    /// Effective settings for a fleet (or without one, from flags, env and defaults).
    pub fn settings(&self, fleet: Option<&Fleet>) -> Result<Settings> {
        let settings =
            settings::resolve(&self.flags(), &self.env, fleet.map(|fleet| &fleet.settings))?;
        init_logging(&settings.log_level.value);
        Ok(settings)
    }
}

/// Logs and progress go to stderr; data to stdout.
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("imagegen={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("imagegen=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// `path` relative to `base` when it is inside it, for display.
pub(crate) fn display_relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .map(|relative| relative.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
