//! The API's handlers, one file per resource. Each parses the request, calls one operation
//! through [`super::AppState::run`] or [`super::AppState::start_job`], and returns its report.

pub(crate) mod builders;
pub(crate) mod flash;
pub(crate) mod fleet;
pub(crate) mod jobs;
pub(crate) mod profiles;
pub(crate) mod records;

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};

/// A JSON request body (an object); an empty body means the defaults.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required_json_body(body)
}

/// A JSON request body that must be there and be an object.
pub(crate) fn required_json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::usage("this request needs a JSON body"));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::usage(format!(
            "invalid request body at line {}, column {}: {error}",
            error.line(),
            error.column()
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::usage("the request body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|error| ApiError::usage(format!("invalid request body: {error}")))
}
