//! `imagegen mcp`: start the MCP server on stdio.

use super::args::McpArgs;
use super::context::{Context, init_logging};
use crate::error::{Result, exit};
use crate::mcp::{self, ServerConfig};
use crate::ops::{FleetNeed, Workspace};

pub(crate) fn serve(context: &Context, args: &McpArgs) -> Result<i32> {
    let options = context.workspace_options();
    // The server starts even when the fleet does not load: `validate` then says why. The log
    // level comes from the settings when they resolve. Logs never carry colour: MCP clients
    // write a server's stderr to log files.
    match Workspace::load(&options, FleetNeed::Optional) {
        Ok(workspace) => init_logging(&workspace.settings.log_level.value, false),
        Err(error) => {
            init_logging("info", false);
            tracing::warn!(
                "the fleet does not load yet ({}: {}); tools will report it",
                error.code,
                error.message
            );
        }
    }
    mcp::serve_stdio(ServerConfig {
        workspace: options,
        allow_flash: args.allow_flash,
    })?;
    Ok(exit::OK)
}
