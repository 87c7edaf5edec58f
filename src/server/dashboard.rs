//! The fleet dashboard at `/`: one static page and its script and style, compiled into the
//! binary. The page only calls the API (with the bearer token the user types, when the server
//! needs one); it fetches nothing from anywhere else.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => {
            return super::error::ApiError::routing(
                StatusCode::NOT_FOUND,
                format!("no asset `{name}`"),
            )
            .into_response();
        }
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
