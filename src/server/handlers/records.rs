//! `/builds` and `/artifacts`: what the state store recorded (downloads are in
//! `server::download`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ops::{self, ArtifactDetail, ArtifactFilter, BuildLog, FleetNeed};
use crate::server::error::{ApiResult, ErrorBody};
use crate::server::{Access, AppState};
use crate::state::{ArtifactRecord, BuildRecord};

/// Every recorded build, newest first.
#[utoipa::path(get, path = "/builds", tag = "builds",
    responses((status = 200, description = "Recorded builds", body = Vec<BuildRecord>)))]
pub(crate) async fn builds(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<Vec<BuildRecord>>> {
    let records = state
        .run(FleetNeed::Optional, Access::Store, ops::builds_list)
        .await?;
    Ok(Json(records))
}

/// One build by key (a unique prefix is enough).
#[utoipa::path(get, path = "/builds/{key}", tag = "builds",
    params(("key" = String, Path, description = "Build key or unique prefix")),
    responses((status = 200, description = "The build", body = BuildRecord),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 422, description = "The prefix matches several builds", body = ErrorBody)))]
pub(crate) async fn build(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> ApiResult<Json<BuildRecord>> {
    let record = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::build_show(workspace, &key)
        })
        .await?;
    Ok(Json(record))
}

/// The artifacts of one build.
#[utoipa::path(get, path = "/builds/{key}/artifacts", tag = "builds",
    params(("key" = String, Path, description = "Build key or unique prefix")),
    responses((status = 200, description = "Its artifacts", body = Vec<ArtifactRecord>),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 422, description = "The prefix matches several builds", body = ErrorBody)))]
pub(crate) async fn build_artifacts(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<ArtifactRecord>>> {
    let filter = ArtifactFilter {
        build: Some(key),
        profile: None,
    };
    let records = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::artifacts_list(workspace, &filter)
        })
        .await?;
    Ok(Json(records))
}

/// `GET /builds/{key}/log`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Only the last this many bytes.
    pub tail: Option<u64>,
}

/// The log of a build (or its end).
#[utoipa::path(get, path = "/builds/{key}/log", tag = "builds",
    params(("key" = String, Path, description = "Build key or unique prefix"), LogQuery),
    responses((status = 200, description = "The log", body = BuildLog),
        (status = 404, description = "No such build, or it has no log", body = ErrorBody),
        (status = 422, description = "The prefix matches several builds", body = ErrorBody)))]
pub(crate) async fn build_log(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Json<BuildLog>> {
    let Query(query) = query?;
    let log = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::build_log(workspace, &key, query.tail)
        })
        .await?;
    Ok(Json(log))
}

/// The artifacts in the store: all, one build's, or one profile's builds'.
#[utoipa::path(get, path = "/artifacts", tag = "artifacts", params(ArtifactFilter),
    responses((status = 200, description = "Artifacts", body = Vec<ArtifactRecord>),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 422, description = "The build prefix matches several builds", body = ErrorBody)))]
pub(crate) async fn artifacts(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ArtifactFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<ArtifactRecord>>> {
    let Query(filter) = query?;
    let records = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::artifacts_list(workspace, &filter)
        })
        .await?;
    Ok(Json(records))
}

/// One artifact's metadata (a unique sha256 prefix is enough).
#[utoipa::path(get, path = "/artifacts/{sha256}", tag = "artifacts",
    params(("sha256" = String, Path, description = "sha256 or unique prefix")),
    responses((status = 200, description = "The artifact", body = ArtifactDetail),
        (status = 404, description = "No such artifact", body = ErrorBody),
        (status = 422, description = "The prefix matches several artifacts", body = ErrorBody)))]
pub(crate) async fn artifact(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
) -> ApiResult<Json<ArtifactDetail>> {
    let detail = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::artifact_show(workspace, &sha256)
        })
        .await?;
    Ok(Json(detail))
}
