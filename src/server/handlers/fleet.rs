//! `GET /health`, `GET /config` and `POST /plan`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::json_body;
use crate::ops::{self, FleetNeed, PlanRequest};
use crate::plan::Plan;
use crate::server::error::{ApiResult, ErrorBody};
use crate::server::{Access, AppState};
use crate::settings::SettingEntry;

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The imagegen version.
    pub version: String,
    /// The id of the job that holds the state store, if one runs.
    pub running_job: Option<String>,
}

/// Liveness: answers without loading the fleet or opening the store.
#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "The server is up", body = Health)))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        running_job: state.jobs.running_id(),
    })
}

/// Every effective setting with its origin (`imagegen config --json`); no secrets.
#[utoipa::path(get, path = "/config", tag = "server",
    responses((status = 200, description = "Effective settings", body = Vec<SettingEntry>),
        (status = 422, description = "The manifest is invalid", body = ErrorBody)))]
pub(crate) async fn config(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<Vec<SettingEntry>>> {
    let entries = state
        .run(FleetNeed::Optional, Access::Files, |workspace| {
            Ok(workspace.config())
        })
        .await?;
    Ok(Json(entries))
}

/// The plan of the fleet against the recorded state (docs/plan-json.md); an empty body
/// plans with the defaults.
#[utoipa::path(post, path = "/plan", tag = "plan",
    request_body(content = Option<PlanRequest>, content_type = "application/json"),
    responses((status = 200, description = "The plan", body = Plan),
        (status = 404, description = "The selection names a profile the fleet does not have", body = ErrorBody),
        (status = 422, description = "The fleet is invalid; `problems` point into its files", body = ErrorBody)))]
pub(crate) async fn plan(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult<Json<Plan>> {
    let request: PlanRequest = json_body(&body)?;
    let plan = state
        .run(FleetNeed::Required, Access::Store, move |workspace| {
            ops::plan(workspace, &request)
        })
        .await?;
    Ok(Json(plan))
}
