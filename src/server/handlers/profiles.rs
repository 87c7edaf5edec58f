//! `/profiles`: list, show, and write or delete validated profile files in the fleet.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};

use crate::manifest::ProfileFilter;
use crate::ops::{self, FleetNeed, ProfileDetail, ProfileSummary, ProfileWritten, WriteMode};
use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::{Access, AppState};
use crate::source::Format;

/// The fleet's profiles, filtered as `profiles list` filters them.
#[utoipa::path(get, path = "/profiles", tag = "profiles", params(ProfileFilter),
    responses((status = 200, description = "Profiles in `profile_id` order", body = Vec<ProfileSummary>),
        (status = 422, description = "The fleet is invalid", body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ProfileFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<ProfileSummary>>> {
    let Query(filter) = query?;
    let rows = state
        .run(FleetNeed::Required, Access::Files, move |workspace| {
            ops::list_profiles(workspace, &filter)
        })
        .await?;
    Ok(Json(rows))
}

/// One profile and the file it lives in.
#[utoipa::path(get, path = "/profiles/{profile_id}", tag = "profiles",
    params(("profile_id" = String, Path, description = "The profile id")),
    responses((status = 200, description = "The profile", body = ProfileDetail),
        (status = 404, description = "No such profile", body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(profile_id): Path<String>,
) -> ApiResult<Json<ProfileDetail>> {
    let detail = state
        .run(FleetNeed::Required, Access::Files, move |workspace| {
            ops::show_profile(workspace, &profile_id)
        })
        .await?;
    Ok(Json(detail))
}

/// Adds a profile: the body is a profile file (YAML, JSON or TOML, by `Content-Type`),
/// validated like `imagegen validate`; problems point into the body.
#[utoipa::path(post, path = "/profiles", tag = "profiles",
    request_body(description = "A profile file (docs/profiles.md)", content(
        (crate::manifest::Profile = "application/json"),
        (String = "application/yaml"),
        (String = "application/toml"))),
    responses((status = 201, description = "Written", body = ProfileWritten),
        (status = 422, description = "Invalid profile, or the id exists", body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProfileWritten>)> {
    let written = write(&state, None, &headers, body, WriteMode::Create).await?;
    Ok((StatusCode::CREATED, Json(written)))
}

/// Creates or replaces the profile `profile_id`; the body's `profile_id` must match.
#[utoipa::path(put, path = "/profiles/{profile_id}", tag = "profiles",
    params(("profile_id" = String, Path, description = "The profile id")),
    request_body(description = "A profile file (docs/profiles.md)", content(
        (crate::manifest::Profile = "application/json"),
        (String = "application/yaml"),
        (String = "application/toml"))),
    responses((status = 200, description = "Written", body = ProfileWritten),
        (status = 422, description = "Invalid profile", body = ErrorBody)))]
pub(crate) async fn replace(
    State(state): State<Arc<AppState>>,
    Path(profile_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ProfileWritten>> {
    let written = write(&state, Some(profile_id), &headers, body, WriteMode::Replace).await?;
    Ok(Json(written))
}

/// Removes a profile's file; refused while devices of the fleet use it.
#[utoipa::path(delete, path = "/profiles/{profile_id}", tag = "profiles",
    params(("profile_id" = String, Path, description = "The profile id")),
    responses((status = 200, description = "Removed", body = ProfileWritten),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 422, description = "Devices still use it", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(profile_id): Path<String>,
) -> ApiResult<Json<ProfileWritten>> {
    let removed = state
        .run(FleetNeed::Required, Access::Files, move |workspace| {
            ops::delete_profile(workspace, &profile_id)
        })
        .await?;
    Ok(Json(removed))
}

async fn write(
    state: &AppState,
    profile_id: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
    mode: WriteMode,
) -> ApiResult<ProfileWritten> {
    let format = body_format(headers)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::usage("the profile is not UTF-8 text"))?;
    state
        .run(FleetNeed::Required, Access::Files, move |workspace| {
            ops::write_profile(workspace, profile_id.as_deref(), &text, format, mode)
        })
        .await
}

/// The profile format from `Content-Type`; YAML when none is given.
fn body_format(headers: &HeaderMap) -> ApiResult<Format> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Yaml);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/toml" => Ok(Format::Toml),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/plain" => Ok(Format::Yaml),
        other => Err(ApiError::usage(format!(
            "unsupported profile format `{other}`: send `application/yaml`, `application/json` or `application/toml`"
        ))),
    }
}
