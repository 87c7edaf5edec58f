//! The server value every request shares, how a tool runs its operation (off the async
//! runtime, with the client's cancellation), and the rmcp `ServerHandler`: server info,
//! tools (from [`super::tools`]) and resources (from [`super::resources`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool_handler};
use tokio_util::sync::CancellationToken;

use super::ServerConfig;
use crate::error::{Error, Result};
use crate::ops::{FleetNeed, Workspace};

const INSTRUCTIONS: &str = "imagegen manages a fleet of custom OpenWrt firmware declaratively. \
The fleet is imagegen.toml plus one profile file per device build recipe (read them as resources). \
Typical use: `validate` after editing files (problems come with file:line:col), `plan` to see what \
would be fetched and built and why, `build_image` or `apply` to build, `list_artifacts` for the images. \
Builds are cached by build key: building an unchanged profile again reuses the recorded images. \
`flash_artifact` writes an image to a disk only with `force: true` on a server started with \
`--allow-flash`; otherwise it is a dry run that shows what would be written where. \
Failed tools return isError with a stable `error.code`.";

/// The MCP server: configuration and the tool router. Cheap to clone (rmcp clones it per
/// connection).
#[derive(Clone)]
pub(crate) struct ImagegenServer {
    pub(crate) state: Arc<ServerState>,
    tool_router: ToolRouter<ImagegenServer>,
}

/// What every request shares.
pub(crate) struct ServerState {
    pub(crate) config: ServerConfig,
    /// Cancelled when the client goes away: runs still going are interrupted.
    pub(crate) shutdown: CancellationToken,
}

impl ImagegenServer {
    pub(crate) fn new(config: ServerConfig) -> ImagegenServer {
        ImagegenServer {
            state: Arc::new(ServerState {
                config,
                shutdown: CancellationToken::new(),
            }),
            tool_router: Self::tools() + Self::flash_tools(),
        }
    }

    /// Whether flashing tools may write to devices (`imagegen mcp --allow-flash`).
    pub(crate) fn allow_flash(&self) -> bool {
        self.state.config.allow_flash
    }

    /// Loads the workspace (anew for every call, so edited files are seen) and runs one
    /// operation on tokio's blocking pool.
    pub(crate) async fn run<T, F>(&self, need: FleetNeed, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Workspace) -> Result<T> + Send + 'static,
    {
        let options = self.state.config.workspace.clone();
        tokio::task::spawn_blocking(move || {
            let workspace = Workspace::load(&options, need)?;
            operation(&workspace)
        })
        .await
        .unwrap_or_else(|join| {
            Err(Error::internal(format!(
                "the operation stopped unexpectedly: {join}"
            )))
        })
    }

    /// A cancel flag for one run: set when the client cancels the request or leaves.
    pub(crate) fn cancel_flag(&self, context: &RequestContext<RoleServer>) -> CancelFlag {
        let flag = Arc::new(AtomicBool::new(false));
        let request = context.ct.clone();
        let shutdown = self.state.shutdown.clone();
        let set = Arc::clone(&flag);
        let watcher = tokio::spawn(async move {
            tokio::select! {
                () = request.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
            set.store(true, Ordering::SeqCst);
        });
        CancelFlag { flag, watcher }
    }
}

/// A run's cancel flag and the task that sets it; dropping it stops the task.
pub(crate) struct CancelFlag {
    pub(crate) flag: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for CancelFlag {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ImagegenServer {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("imagegen", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS.to_string())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        super::resources::list(self).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        super::resources::read(self, &request.uri).await
    }
}

/// Serves until the client closes the stream, then interrupts whatever still runs.
pub(crate) async fn run(
    config: ServerConfig,
    input: std::fs::File,
    output: std::fs::File,
) -> Result<()> {
    let server = ImagegenServer::new(config);
    let state = Arc::clone(&server.state);
    let transport = (
        tokio::fs::File::from_std(input),
        tokio::fs::File::from_std(output),
    );
    tracing::info!("imagegen MCP server ready on stdio");
    let service = server
        .serve(transport)
        .await
        .map_err(|error| Error::internal(format!("MCP initialization failed: {error}")))?;
    let ended = service.waiting().await;
    state.shutdown.cancel();
    match ended {
        Ok(reason) => {
            tracing::info!("MCP session ended: {reason:?}");
            Ok(())
        }
        Err(error) => Err(Error::internal(format!("MCP session failed: {error}"))),
    }
}
