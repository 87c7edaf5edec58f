//! The API description: `GET /openapi.json`, generated from the handlers' annotations and
//! the report types' `ToSchema` derives, and `GET /docs`, a page rendered from it (no
//! scripts, nothing fetched from elsewhere).

use std::fmt::Write;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::download;
use super::error::ErrorBody;
use super::handlers::{builders, flash, fleet, jobs, profiles, records};
use crate::exec::Event;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "imagegen",
        description = "Declarative fleet manager for custom OpenWrt firmware: the operations of \
            the `imagegen` command line over HTTP. Errors are `{\"error\": {\"code\", \"message\", \
            \"problems\"}}` with stable codes (docs/api.md)."
    ),
    paths(
        fleet::health, fleet::config, fleet::plan, jobs::apply,
        profiles::list, profiles::show, profiles::create, profiles::replace, profiles::delete,
        builders::list, builders::show, builders::ensure, builders::prune,
        records::builds, jobs::build, records::build, records::build_artifacts, records::build_log,
        records::artifacts, records::artifact, download::download,
        flash::list, flash::start,
        jobs::list, jobs::show, jobs::events, jobs::cancel,
    ),
    components(schemas(ErrorBody, Event)),
    tags(
        (name = "server", description = "Health and effective settings"),
        (name = "plan", description = "What apply would change, and why"),
        (name = "jobs", description = "Apply and build as background jobs, with live events"),
        (name = "profiles", description = "The fleet's profile files"),
        (name = "builders", description = "Official Image Builders: recorded, fetched, pruned"),
        (name = "builds", description = "Recorded builds and their logs"),
        (name = "artifacts", description = "The content-addressed artifact store"),
        (name = "flash", description = "Writing artifacts to whole disks, and the records of every flash"),
    )
)]
struct ApiDoc;

/// Paths anyone may call; every other operation needs the bearer token when one is set.
const PUBLIC_PATHS: &[&str] = &["/health"];

/// The OpenAPI document (computed once).
pub fn openapi_json() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        add_common_parts(&mut document);
        document
    })
}

/// The bearer scheme, and the error answers every operation can give: a malformed request
/// (400), a missing token (401), the store held elsewhere or no fleet (409), a failure (500).
fn add_common_parts(document: &mut Value) {
    document["components"]["securitySchemes"] = json!({
        "bearer": { "type": "http", "scheme": "bearer",
            "description": "Required off loopback; optional on loopback (docs/api.md)" }
    });
    let error = |description: &str| {
        json!({ "description": description, "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/ErrorBody" } } } })
    };
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            if !public {
                operation["security"] = json!([{ "bearer": [] }]);
            }
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            let mut common = vec![
                ("400", "Malformed request (`usage`)"),
                (
                    "500",
                    "The operation failed (`internal_error`, `download_error`, ...)",
                ),
            ];
            if !public {
                common.push(("401", "Missing or wrong bearer token (`unauthorized`)"));
                common.push((
                    "409",
                    "The state store is held by a job or another process (`state_locked`), \
                     or there is no fleet (`precondition`)",
                ));
            }
            for (status, description) in common {
                responses
                    .entry(status)
                    .or_insert_with(|| error(description));
            }
        }
    }
}

pub(crate) async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_json().to_string(),
    )
}

/// A readable list of the operations, straight from the OpenAPI document.
pub(crate) async fn docs_page() -> Html<String> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Html(PAGE.get_or_init(|| render_docs(openapi_json())).clone())
}

fn render_docs(document: &Value) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>imagegen API</title>\
         <style>body{font:15px/1.45 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}\
         code,pre{font-family:ui-monospace,monospace}h2{margin-top:2em;border-bottom:1px solid #ccc}\
         .op{margin:1em 0;padding:.6em 1em;border-left:4px solid #4a7;background:#f6f8f7}\
         .method{font-weight:bold;text-transform:uppercase;margin-right:.5em}\
         table{border-collapse:collapse}td{padding:.1em .8em .1em 0;vertical-align:top}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>imagegen API</h1><p>{}</p><p>The machine-readable description is \
         <a href=\"/openapi.json\"><code>/openapi.json</code></a>; the dashboard is at \
         <a href=\"/\"><code>/</code></a>.</p>",
        escape(document["info"]["description"].as_str().unwrap_or_default())
    );
    let tags = document["tags"].as_array().cloned().unwrap_or_default();
    for tag in &tags {
        let name = tag["name"].as_str().unwrap_or_default();
        let _ = write!(
            html,
            "<h2>{}</h2><p>{}</p>",
            escape(name),
            escape(tag["description"].as_str().unwrap_or_default())
        );
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let tagged = operation["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|tag| tag == name));
                if tagged {
                    render_operation(&mut html, path, method, operation);
                }
            }
        }
    }
    html.push_str("</body></html>");
    html
}

fn render_operation(html: &mut String, path: &str, method: &str, operation: &Value) {
    let _ = write!(
        html,
        "<div class=\"op\"><div><span class=\"method\">{}</span><code>{}</code></div><p>{}</p>",
        escape(method),
        escape(path),
        escape(
            operation["description"]
                .as_str()
                .unwrap_or_else(|| { operation["summary"].as_str().unwrap_or_default() })
        )
    );
    html.push_str("<table>");
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let _ = write!(
            html,
            "<tr><td>{} <code>{}</code></td><td>{}</td></tr>",
            escape(parameter["in"].as_str().unwrap_or_default()),
            escape(parameter["name"].as_str().unwrap_or_default()),
            escape(parameter["description"].as_str().unwrap_or_default())
        );
    }
    for (status, response) in operation["responses"].as_object().into_iter().flatten() {
        let _ = write!(
            html,
            "<tr><td><b>{}</b></td><td>{}</td></tr>",
            escape(status),
            escape(response["description"].as_str().unwrap_or_default())
        );
    }
    html.push_str("</table></div>");
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
