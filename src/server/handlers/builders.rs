//! `/builders`: the Image Builders recorded in the state store, fetching and pruning them.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;

use super::json_body;
use crate::error::Result;
use crate::imagebuilder::cache::Ensured;
use crate::ops::{self, BuilderInfo, FleetNeed, PruneReport};
use crate::server::error::{ApiResult, ErrorBody};
use crate::server::{Access, AppState};
use crate::state::BuilderRecord;
use crate::triple::Triple;

/// Every Image Builder recorded in the state store.
#[utoipa::path(get, path = "/builders", tag = "builders",
    responses((status = 200, description = "Recorded Image Builders", body = Vec<BuilderRecord>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<Vec<BuilderRecord>>> {
    let records = state
        .run(FleetNeed::Optional, Access::Store, ops::list_builders)
        .await?;
    Ok(Json(records))
}

/// One Image Builder: its state record and its `imagegen.lock` entry.
#[utoipa::path(get, path = "/builders/{release}/{target}/{subtarget}", tag = "builders",
    params(("release" = String, Path, description = "e.g. `23.05.4`"),
        ("target" = String, Path, description = "e.g. `ath79`"),
        ("subtarget" = String, Path, description = "e.g. `generic`")),
    responses((status = 200, description = "The Image Builder", body = BuilderInfo),
        (status = 404, description = "Neither recorded nor locked", body = ErrorBody),
        (status = 422, description = "Not an Image Builder address", body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((release, target, subtarget)): Path<(String, String, String)>,
) -> ApiResult<Json<BuilderInfo>> {
    let triple = Triple::parse(&format!("{release}/{target}/{subtarget}"))?;
    let info = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::builder_info(workspace, &triple)
        })
        .await?;
    Ok(Json(info))
}

/// `POST /builders/ensure`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EnsureRequest {
    /// `RELEASE/TARGET/SUBTARGET` addresses; empty means every one the fleet uses.
    pub builders: Vec<String>,
}

/// Fetches (verifies, unpacks) pinned Image Builders into the cache.
#[utoipa::path(post, path = "/builders/ensure", tag = "builders",
    request_body(content = Option<EnsureRequest>, content_type = "application/json"),
    responses((status = 200, description = "Where each one is", body = Vec<Ensured>),
        (status = 422, description = "Not an Image Builder address", body = ErrorBody)))]
pub(crate) async fn ensure(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> ApiResult<Json<Vec<Ensured>>> {
    let request: EnsureRequest = json_body(&body)?;
    let triples = request
        .builders
        .iter()
        .map(|text| Triple::parse(text))
        .collect::<Result<Vec<_>>>()?;
    let ensured = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::ensure_builders(workspace, &triples, &mut |_, _| {})
        })
        .await?;
    Ok(Json(ensured))
}

/// `POST /builders/prune`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PruneRequest {
    /// Also remove Image Builders that recorded builds use.
    pub force: bool,
    /// Only report what would be removed.
    pub dry_run: bool,
}

/// Removes cached Image Builders that no recorded build uses.
#[utoipa::path(post, path = "/builders/prune", tag = "builders",
    request_body(content = Option<PruneRequest>, content_type = "application/json"),
    responses((status = 200, description = "What was (or would be) removed", body = PruneReport)))]
pub(crate) async fn prune(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> ApiResult<Json<PruneReport>> {
    let request: PruneRequest = json_body(&body)?;
    let report = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::prune_builders(workspace, request.force, request.dry_run)
        })
        .await?;
    Ok(Json(report))
}
