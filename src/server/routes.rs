//! The route table: every path the server answers, in one place. Public routes (dashboard,
//! health, the API description) need no token; everything else goes through
//! [`auth::require_token`].
//! `POST /flash` answers `403` unless the server was started with `--allow-flash`
//! (`handlers/flash.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::handlers::{builders, flash, fleet, jobs, profiles, records};
use super::{AppState, auth, dashboard, download, openapi};

pub(crate) fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    let api = Router::new()
        .route("/config", get(fleet::config))
        .route("/plan", post(fleet::plan))
        .route("/apply", post(jobs::apply))
        .route("/profiles", get(profiles::list).post(profiles::create))
        .route(
            "/profiles/{profile_id}",
            get(profiles::show)
                .put(profiles::replace)
                .delete(profiles::delete),
        )
        .route("/builders", get(builders::list))
        .route("/builders/ensure", post(builders::ensure))
        .route("/builders/prune", post(builders::prune))
        .route(
            "/builders/{release}/{target}/{subtarget}",
            get(builders::show),
        )
        .route("/builds", get(records::builds).post(jobs::build))
        .route("/builds/{key}", get(records::build))
        .route("/builds/{key}/artifacts", get(records::build_artifacts))
        .route("/builds/{key}/log", get(records::build_log))
        .route("/artifacts", get(records::artifacts))
        .route("/artifacts/{sha256}", get(records::artifact))
        .route("/artifacts/{sha256}/download", get(download::download))
        .route("/flash", get(flash::list).post(flash::start))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/health", get(fleet::health))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs_page))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::routing(
        StatusCode::NOT_FOUND,
        format!("no such path `{}`", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::routing(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "`{}` does not take `{}`",
            request.uri().path(),
            request.method()
        ),
    )
}

/// axum's own rejections (a path segment that is not UTF-8, a body over the size limit) are
/// plain text; every error this server sends is the JSON error body, so they are rewritten.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    if !(status.is_client_error() && plain) {
        return response;
    }
    let (_, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is too large: {message}"),
        _ => message,
    };
    ApiError::rejected(status, message).into_response()
}
