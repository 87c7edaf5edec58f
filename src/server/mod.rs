//! `imagegen serve`: the HTTP API and the fleet dashboard, over the operations layer.
//!
//! Every handler parses its request, runs one [`crate::ops`] operation on tokio's blocking
//! pool (never on the async runtime) and renders the operation's `Serialize` report as JSON;
//! no handler decides anything the CLI would not. Edits to the fleet files between requests
//! are always seen: a loaded workspace is reused only while the manifest and every profile
//! file (as the manifest's patterns match them now) keep their size and modification time.
//!
//! The state store takes an exclusive lock while open, so within this process requests that
//! open it go through one gate, in arrival order ([`AppState::run`]). A background job
//! (`POST /apply`, `POST /builds`) holds the gate for its whole run; meanwhile requests that
//! need the store get `409 state_locked` at once, naming the job. Another process holding
//! the store is waited for briefly, then also `409 state_locked` (docs/api.md).

mod auth;
mod dashboard;
mod download;
mod error;
mod handlers;
mod jobs;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::{Error, ErrorCode, Result};
use crate::ops::{FleetNeed, FleetStamp, RunHooks, Workspace, WorkspaceOptions};
use auth::Token;
use error::{ApiError, ApiResult};
use jobs::{FinishGuard, JobKind, JobResult, JobView, Jobs};

pub use openapi::openapi_json;

/// A file modified this close to a load may have been read in its older version (and some
/// filesystems keep coarse times), so such a load is used but not kept.
const STABLE_MARGIN: Duration = Duration::from_secs(2);

/// How long a request waits for the store gate behind other requests of this process.
const GATE_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting request checks whether a job took the store meanwhile.
const JOB_CHECK: Duration = Duration::from_millis(100);

/// How `imagegen serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// A file holding the bearer token (else `OWRT_IMG_API_TOKEN`, else none).
    pub token_file: Option<PathBuf>,
    /// Where the fleet is and the settings inputs; loaded again for every request.
    pub workspace: WorkspaceOptions,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a request waits for another process to release the state store.
    pub store_wait: Duration,
    /// `--allow-flash`: `POST /flash` and an apply's flash permission may write block
    /// devices; without it they are refused (`403 permission_error`).
    pub allow_flash: bool,
}

/// What every handler shares.
pub(crate) struct AppState {
    workspace: WorkspaceOptions,
    store_wait: Duration,
    /// One permit: whoever holds it may open the state store.
    gate: Arc<Semaphore>,
    jobs: Arc<Jobs>,
    token: Option<Token>,
    workspaces: Arc<WorkspaceCache>,
    allow_flash: bool,
}

/// The last loaded workspace and the stamp of its files: loading 1,000 profiles costs tens
/// of milliseconds, stamping them (one `stat` each) about a millisecond (docs/api.md).
#[derive(Default)]
struct WorkspaceCache {
    last: Mutex<Option<(FleetStamp, Arc<Workspace>)>>,
}

impl WorkspaceCache {
    /// The cached workspace while its files are unchanged, else a fresh load.
    fn get(
        &self,
        options: &WorkspaceOptions,
        need: FleetNeed,
        store_wait: Duration,
    ) -> Result<Arc<Workspace>> {
        let cached = self.lock().clone();
        if let Some((stamp, workspace)) = cached
            && workspace.fleet_stamp().as_ref() == Some(&stamp)
        {
            return Ok(workspace);
        }
        let started = SystemTime::now();
        let mut workspace = Workspace::load(options, need)?;
        workspace.store_wait = store_wait;
        let workspace = Arc::new(workspace);
        if let Some(stamp) = workspace.fleet_stamp()
            && stamp
                .newest()
                .is_some_and(|newest| newest + STABLE_MARGIN < started)
        {
            *self.lock() = Some((stamp, Arc::clone(&workspace)));
        }
        Ok(workspace)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(FleetStamp, Arc<Workspace>)>> {
        self.last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// What a request's operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only the fleet files and settings (profiles, config).
    Files,
    /// The state store (everything about builders, builds, artifacts and plans).
    Store,
}

impl AppState {
    /// Refuses to write block devices unless the server was started with `--allow-flash`.
    pub(crate) fn check_flash_allowed(&self, what: &str) -> ApiResult<()> {
        if self.allow_flash {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::PermissionError,
            format!("{what} writes block devices, and this server was started without `--allow-flash`"),
        )
        .with_help("restart it with `imagegen serve --allow-flash`, or flash with `imagegen flash write` on the machine")
        .into())
    }

    /// Loads the workspace and runs one operation on the blocking pool.
    pub(crate) async fn run<T, F>(
        &self,
        need: FleetNeed,
        access: Access,
        operation: F,
    ) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Workspace) -> Result<T> + Send + 'static,
    {
        let permit = match access {
            Access::Store => Some(self.store_permit().await?),
            Access::Files => None,
        };
        let options = self.workspace.clone();
        let store_wait = self.store_wait;
        let workspaces = Arc::clone(&self.workspaces);
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let workspace = workspaces.get(&options, need, store_wait)?;
            operation(&workspace)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(ApiError::from),
            Err(error) => Err(Error::internal(format!("the operation stopped: {error}")).into()),
        }
    }

    /// The store gate, in arrival order; `state_locked` at once while a job holds the store
    /// (also when one starts while this request waits).
    async fn store_permit(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.jobs.check_idle()?;
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        // One acquire for the whole wait, so the request keeps its place in the queue.
        let acquire = Arc::clone(&self.gate).acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    return permit.map_err(|_| Error::internal("the store gate is closed").into());
                }
                _ = tokio::time::sleep(JOB_CHECK) => {
                    self.jobs.check_idle()?;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::new(
                            ErrorCode::StateLocked,
                            "the state store stayed busy with other requests",
                        )
                        .with_help("try again")
                        .into());
                    }
                }
            }
        }
    }

    /// Starts a background job holding the store gate: answers once the job holds the
    /// store (or with the error that kept it from starting, e.g. `state_locked`).
    pub(crate) async fn start_job<F>(&self, kind: JobKind, operation: F) -> ApiResult<JobView>
    where
        F: FnOnce(&Workspace, &RunHooks) -> Result<JobResult> + Send + 'static,
    {
        let job = self.jobs.begin(kind)?;
        let permit =
            match tokio::time::timeout(GATE_WAIT, Arc::clone(&self.gate).acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    self.jobs.abandon(&job);
                    return Err(
                        Error::new(ErrorCode::StateLocked, "the state store stayed busy")
                            .with_help("try again")
                            .into(),
                    );
                }
            };
        let (started, start_result) = oneshot::channel();
        let options = self.workspace.clone();
        let (worker_job, jobs) = (Arc::clone(&job), Arc::clone(&self.jobs));
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let guard = FinishGuard(Arc::clone(&worker_job), jobs);
            let workspace = match open_for_job(&options, &worker_job.id) {
                Ok(workspace) => workspace,
                Err(error) => {
                    let _ = started.send(Err(error));
                    return;
                }
            };
            let _ = started.send(Ok(()));
            let hooks = RunHooks {
                cancel: Arc::clone(&worker_job.cancel),
                reporter: worker_job.events.as_ref(),
                on_plan: &|_| Ok(()),
            };
            worker_job.finish(operation(&workspace, &hooks));
            drop(guard);
        });
        match start_result.await {
            Ok(Ok(())) => Ok(job.view()),
            Ok(Err(error)) => {
                self.jobs.abandon(&job);
                Err(error.into())
            }
            Err(_) => {
                self.jobs.abandon(&job);
                Err(Error::internal("the job stopped before it started").into())
            }
        }
    }
}

/// Loads the workspace for a job and checks that no other process holds the store, so
/// that a concurrent `imagegen apply` elsewhere is a `409` on the request, not a failed job.
fn open_for_job(options: &WorkspaceOptions, job_id: &str) -> Result<Workspace> {
    let workspace = Workspace::load(options, FleetNeed::Required)?;
    drop(workspace.store(&format!("imagegen serve (job {job_id})"))?);
    Ok(workspace)
}

/// Runs the server until Ctrl-C or SIGTERM. The first line on stdout names the address it
/// listens on (useful with port 0).
pub fn serve(options: ServeOptions) -> Result<()> {
    let token = auth::load_token(options.token_file.as_deref(), &options.workspace.env)?;
    auth::check_listen_policy(&options.listen, token.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::internal(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(run(options, token))
}

async fn run(options: ServeOptions, token: Option<Token>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|error| {
            Error::new(
                ErrorCode::Precondition,
                format!("cannot listen on `{}`: {error}", options.listen),
            )
            .with_help("pick another address with `--listen ADDR:PORT` (port 0 picks a free one)")
        })?;
    let address = listener
        .local_addr()
        .map_err(|error| Error::internal(format!("no local address: {error}")))?;
    let mut workspace = options.workspace;
    workspace
        .env
        .remove(crate::settings::env_vars::OWRT_IMG_API_TOKEN);
    let state = Arc::new(AppState {
        workspace,
        store_wait: options.store_wait,
        gate: Arc::new(Semaphore::new(1)),
        jobs: Arc::new(Jobs::default()),
        token,
        workspaces: Arc::new(WorkspaceCache::default()),
        allow_flash: options.allow_flash,
    });
    let app = routes::router(Arc::clone(&state), options.body_limit);
    println!("imagegen serve: listening on http://{address}/ (API docs at /docs)");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown(state))
        .await
        .map_err(|error| Error::internal(format!("server failed: {error}")))
}

/// Waits for Ctrl-C or SIGTERM, then cancels a running job so its event streams end.
async fn shutdown(state: Arc<AppState>) {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminated => {},
    }
    state.jobs.cancel_running();
}
