//! The MCP server (`imagegen mcp`): the fleet's operations as Model Context Protocol tools
//! and its files as read-only resources, for AI agents, over stdio with the official Rust
//! SDK (`rmcp`). Design notes and the tool list: `docs/mcp.md`.
//!
//! Every tool parses its arguments ([`params`]), calls exactly one [`crate::ops`] operation
//! on tokio's blocking pool, and renders the `Serialize` report it returns ([`reply`]); no
//! tool decides anything itself. Long runs forward the executor's events as MCP progress
//! notifications ([`progress`]). Nothing here writes to the process's stdout: [`stdio`]
//! moves the protocol onto private descriptors first, so a stray print or a child process
//! cannot corrupt the protocol stream.

mod flash;
mod params;
mod progress;
mod reply;
mod resources;
mod server;
mod stdio;
mod tools;

use crate::error::{Error, Result};
use crate::ops::WorkspaceOptions;

/// What the server is started with.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// How each tool call finds the fleet and resolves settings (the fleet is loaded anew
    /// per call, so edits to profiles are seen without a restart).
    pub workspace: WorkspaceOptions,
    /// `--allow-flash`: a `flash_artifact` tool may write to a device when a call also says
    /// `force: true`. Without it flashing tools only describe what they would do.
    pub allow_flash: bool,
}

/// Serves MCP on this process's stdin and stdout until the client closes the stream.
pub fn serve_stdio(config: ServerConfig) -> Result<()> {
    let (input, output) = stdio::take_protocol_streams()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .thread_name("imagegen-mcp")
        .build()
        .map_err(|error| Error::internal(format!("cannot start the async runtime: {error}")))?;
    let served = runtime.block_on(server::run(config, input, output));
    // Runs still going were cancelled when the session ended; give them a moment to stop
    // their builds and record what finished, but never let one keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    served
}
