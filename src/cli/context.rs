//! What every command needs: the global flags and the environment (passed in, never read
//! elsewhere), turned into a loaded [`Workspace`].

use std::collections::BTreeMap;
use std::io::IsTerminal;

use super::args::GlobalArgs;
use crate::error::Result;
use crate::ops::{FleetNeed, Workspace, WorkspaceOptions};
use crate::settings::FlagSettings;

pub(crate) struct Context {
    pub global: GlobalArgs,
    pub env: BTreeMap<String, String>,
}

impl Context {
    pub fn new(global: GlobalArgs, env: BTreeMap<String, String>) -> Context {
        Context { global, env }
    }

    pub fn json(&self) -> bool {
        self.global.json
    }

    /// Colour on stderr: only on a terminal, and never with `NO_COLOR` set.
    pub fn color(&self) -> bool {
        std::io::stderr().is_terminal() && !crate::settings::no_color(&self.env)
    }

    /// The fleet (required) and the effective settings; starts logging at their level.
    pub fn workspace(&self) -> Result<Workspace> {
        self.load(FleetNeed::Required)
    }

    /// Like [`Context::workspace`] for commands that also work outside a fleet.
    pub fn optional_workspace(&self) -> Result<Workspace> {
        self.load(FleetNeed::Optional)
    }

    /// Where to find the fleet and the inputs of settings resolution, for frontends that
    /// load the workspace themselves (the MCP server, once per call).
    pub fn workspace_options(&self) -> WorkspaceOptions {
        WorkspaceOptions {
            manifest: self.global.manifest.clone(),
            search_from: None,
            flags: self.flags(),
            env: self.env.clone(),
        }
    }

    fn load(&self, need: FleetNeed) -> Result<Workspace> {
        let workspace = Workspace::load(&self.workspace_options(), need)?;
        init_logging(&workspace.settings.log_level.value, self.color());
        Ok(workspace)
    }

    fn flags(&self) -> FlagSettings {
        self.global.settings.0.clone()
    }
}

/// Logs and progress go to stderr; data to stdout.
pub(crate) fn init_logging(level: &str, color: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("imagegen={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("imagegen=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(color)
        .try_init();
}
