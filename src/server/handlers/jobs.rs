//! Background jobs: `POST /apply`, `POST /builds`, and `/jobs` to follow them (status, final
//! report, server-sent events carrying the NDJSON lines of `apply --json`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use serde::Serialize;
use utoipa::ToSchema;

use super::{json_body, required_json_body};
use crate::ops::{self, ApplyRequest, BuildRequest};
use crate::server::AppState;
use crate::server::error::{ApiResult, ErrorBody};
use crate::server::jobs::{JobKind, JobResult, JobView};

/// Starts `apply` (complete the lock, plan, run what changed) as a background job. With
/// `plan` (from `POST /plan`), applies exactly that plan or fails with `stale_plan`.
#[utoipa::path(post, path = "/apply", tag = "jobs",
    request_body(content = Option<ApplyRequest>, content_type = "application/json"),
    responses((status = 202, description = "The job started", body = JobView),
        (status = 403, description = "The request (or its plan) allows flashing and the server was started without `--allow-flash` (`permission_error`)", body = ErrorBody),
        (status = 409, description = "A job or another process holds the state store (`state_locked`)", body = ErrorBody)))]
pub(crate) async fn apply(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let request: ApplyRequest = json_body(&body)?;
    if !request.flash_permission().is_none() {
        state.check_flash_allowed("an apply with `allow_flash`")?;
    }
    let job = state
        .start_job(JobKind::Apply, move |workspace, hooks| {
            ops::apply(workspace, &request, hooks)
                .map(|outcome| JobResult::Apply(Box::new(outcome)))
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Builds (or reuses, reporting `cache_hit`) the images of some profiles now, as a
/// background job; name `profiles` or select them with `filter`.
#[utoipa::path(post, path = "/builds", tag = "jobs",
    request_body(content = BuildRequest, content_type = "application/json", description = "Required"),
    responses((status = 202, description = "The job started", body = JobView),
        (status = 409, description = "A job or another process holds the state store (`state_locked`)", body = ErrorBody)))]
pub(crate) async fn build(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let request: BuildRequest = required_json_body(&body)?;
    let job = state
        .start_job(JobKind::Build, move |workspace, hooks| {
            ops::build(workspace, &request, hooks)
                .map(|outcome| JobResult::Build(Box::new(outcome)))
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// One server-sent event as a client sees it (the OpenAPI description of the stream).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventMessage {
    /// The line's 0-based index in the job's stream (send it back as `Last-Event-ID`).
    pub id: String,
    /// One JSON line: an `Event`, or last the summary (`{"event": "summary", ...}`) or
    /// `{"error": ...}`.
    pub data: String,
}

/// This server's recent jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "Jobs", body = Vec<JobView>)))]
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<JobView>> {
    Json(state.jobs.list())
}

/// A job's status and, once finished, its report.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(state.jobs.get(&id)?.view()))
}

/// Asks a running job to stop; finished steps stay recorded.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses((status = 202, description = "Cancellation requested", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = state.jobs.get(&id)?;
    job.request_cancel();
    Ok((StatusCode::ACCEPTED, Json(job.view())))
}

/// The job's events as server-sent events: each `data:` is one line of `apply --json`
/// (executor events, then the summary), with the line's 0-based index as its `id`. The
/// stream replays from the start (or after `Last-Event-ID`) and ends after the last line.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "`text/event-stream`; each event's `data` is one NDJSON line of `apply --json` (an `Event`, then the summary)", content_type = "text/event-stream", body = EventMessage),
        (status = 404, description = "No such job", body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let job = state.jobs.get(&id)?;
    let from = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    let stream = job
        .events_from(from)
        .map(|(index, line)| Ok(SseEvent::default().id(index.to_string()).data(&*line)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
