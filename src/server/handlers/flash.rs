//! `GET /flash` (the recorded flashes and device states) and `POST /flash` (a stored
//! artifact onto a whole disk, through [`ops::flash_artifact`]).
//!
//! `POST /flash` is refused (`403 permission_error`) unless the server was started with
//! `--allow-flash`. Even then a request without `"force": true` is a dry run that answers at
//! once with what would be written where; with it, the flash runs as a job (`202`), its
//! progress as run events on `GET /jobs/{id}/events`, its outcome in `GET /jobs/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::required_json_body;
use crate::error::{Error, ErrorCode, Result};
use crate::exec::{Event, Reporter};
use crate::flash::{FlashObserver, FlashPlan, FlashProgress, VerifyMode};
use crate::ops::{
    self, FlashEvents, FlashFilter, FlashListing, FlashOutcome, FlashRequest, FleetNeed,
};
use crate::server::error::{ApiResult, ErrorBody};
use crate::server::jobs::{JobKind, JobResult, JobView};
use crate::server::{Access, AppState};

/// Progress events of a flash job are sent at most this often (and at each phase change).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// The body of `POST /flash`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlashBody {
    /// `PROFILE:KIND` (the profile's current build, such as `lab.rpi4.sd:factory`) or a
    /// sha256 prefix of at least 6 hex digits.
    pub artifact: String,
    /// The whole disk: `/dev/sdX`, `/dev/mmcblkN` or a `/dev/disk/by-id/...` link.
    pub device: String,
    /// Really write (as a job). Without it the request is a dry run: every check runs and
    /// the answer says what would be written where.
    #[serde(default)]
    pub force: bool,
    /// Zero both ends of the disk before writing.
    #[serde(default)]
    pub wipe: bool,
    /// `full` (default), `prefix:<MiB>` or `none`.
    #[serde(default)]
    pub verify: Option<String>,
}

/// The recorded flash attempts (newest first) and each device's state; `device` narrows
/// them to one device (a fleet device id, a device key, a serial or a path).
#[utoipa::path(get, path = "/flash", tag = "flash", params(FlashFilter),
    responses((status = 200, description = "Flashes and devices", body = FlashListing)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<FlashFilter>, QueryRejection>,
) -> ApiResult<Json<FlashListing>> {
    let Query(filter) = query?;
    let listing = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::flash_list(workspace, &filter)
        })
        .await?;
    Ok(Json(listing))
}

/// Writes a stored artifact to a whole disk and reads it back. DESTROYS the disk's
/// contents. Refused unless the server runs with `--allow-flash`; without `"force": true` a
/// dry run (`200`, nothing written or recorded); with it a job (`202`).
#[utoipa::path(post, path = "/flash", tag = "flash",
    request_body(content = FlashBody, content_type = "application/json"),
    responses((status = 200, description = "Dry run: what would be written where", body = FlashOutcome),
        (status = 202, description = "The flash started as a job", body = JobView),
        (status = 403, description = "The server was started without `--allow-flash` (`permission_error`)", body = ErrorBody),
        (status = 404, description = "No such artifact or device", body = ErrorBody),
        (status = 422, description = "The artifact name, device or verification mode is invalid", body = ErrorBody)))]
pub(crate) async fn start(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    state.check_flash_allowed("`POST /flash`")?;
    let body: FlashBody = required_json_body(&body)?;
    let verify: VerifyMode = match &body.verify {
        Some(text) => text.parse()?,
        None => VerifyMode::Full,
    };
    let mut request = FlashRequest::new(&body.device);
    request.wipe = body.wipe;
    request.verify = verify;
    let artifact = body.artifact;
    if !body.force {
        request.dry_run = true;
        let outcome = state
            .run(FleetNeed::Optional, Access::Store, move |workspace| {
                ops::flash_artifact(workspace, &artifact, &request, &mut JobObserver::quiet())
            })
            .await?;
        return Ok(Json(outcome).into_response());
    }
    request.force = true;
    let job = state
        .start_job(JobKind::Flash, move |workspace, hooks| {
            request.cancel = Some(Arc::clone(&hooks.cancel));
            let mut observer = JobObserver::new(hooks.reporter);
            let outcome = ops::flash_artifact(workspace, &artifact, &request, &mut observer);
            observer.finish(outcome.as_ref().err());
            outcome.map(|outcome| JobResult::Flash(Box::new(outcome)))
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// A flash job's progress as run events (one step `flash.<kernel name>` in the pool
/// `flash`), the same lines `imagegen flash … --json` prints.
struct JobObserver<'a> {
    reporter: Option<&'a dyn Reporter>,
    /// Once writing started.
    events: Option<FlashEvents>,
}

impl<'a> JobObserver<'a> {
    fn new(reporter: &'a dyn Reporter) -> JobObserver<'a> {
        JobObserver {
            reporter: Some(reporter),
            events: None,
        }
    }

    /// For a dry run, which reports nothing.
    fn quiet() -> JobObserver<'static> {
        JobObserver {
            reporter: None,
            events: None,
        }
    }

    fn emit(&self, event: &Event) {
        if let Some(reporter) = self.reporter {
            reporter.event(event);
        }
    }

    /// Ends the step and the run once the flash returned (nothing when it never started).
    fn finish(&self, error: Option<&Error>) {
        if let Some(events) = &self.events {
            for event in &events.finish(error) {
                self.emit(event);
            }
        }
    }
}

impl FlashObserver for JobObserver<'_> {
    /// Never asked: a write needs `force`, and then the operation does not ask.
    fn confirm(&mut self, plan: &FlashPlan) -> Result<()> {
        Err(Error::new(
            ErrorCode::FlashNotConfirmed,
            format!(
                "`{}` cannot be confirmed over HTTP",
                plan.device.node.display()
            ),
        )
        .with_help("send `\"force\": true` to a server started with `--allow-flash`"))
    }

    fn started(&mut self, plan: &FlashPlan) {
        let (events, first) = FlashEvents::start(plan, PROGRESS_INTERVAL);
        for event in &first {
            self.emit(event);
        }
        self.events = Some(events);
    }

    fn progress(&mut self, progress: &FlashProgress) {
        let detail = crate::flash::format_size(progress.bytes);
        let event = self
            .events
            .as_mut()
            .and_then(|events| events.progress(progress, &detail));
        if let Some(event) = event {
            self.emit(&event);
        }
    }
}
