//! Errors over HTTP: the one mapping from [`ErrorCode`] to a status, and the JSON body
//! `{"error": {"code", "message", "problems", ...}}` every failing request gets (the same
//! object `--json` prints on the command line).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode};

/// The HTTP status of every error code; the only place statuses are chosen for errors.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Usage => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionError => StatusCode::FORBIDDEN,
        ErrorCode::ProfileNotFound
        | ErrorCode::BuildNotFound
        | ErrorCode::ArtifactNotFound
        | ErrorCode::JobNotFound
        | ErrorCode::BuilderNotFound
        | ErrorCode::DeviceNotFound => StatusCode::NOT_FOUND,
        ErrorCode::StateLocked
        | ErrorCode::StalePlan
        | ErrorCode::Precondition
        | ErrorCode::DeviceMounted
        | ErrorCode::DeviceBusy
        | ErrorCode::DeviceSystemDisk
        | ErrorCode::DeviceReadOnly
        | ErrorCode::FlashNotConfirmed => StatusCode::CONFLICT,
        ErrorCode::Validation
        | ErrorCode::DeviceNotBlock
        | ErrorCode::DeviceIsPartition
        | ErrorCode::ImageTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::DownloadError
        | ErrorCode::SignatureError
        | ErrorCode::ImagebuilderError
        | ErrorCode::BuildFailed
        | ErrorCode::FlashError
        | ErrorCode::FlashHashMismatch
        | ErrorCode::DeviceError
        | ErrorCode::Interrupted
        | ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub error: Error,
}

/// An [`Error`] on its way out as a response. Routing failures (no such path, wrong method)
/// keep their own 404/405 and carry the `usage` code.
#[derive(Debug)]
pub(crate) struct ApiError {
    error: Error,
    routing_status: Option<StatusCode>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// No route for this path (404) or not for this method (405).
    pub(crate) fn routing(status: StatusCode, message: String) -> ApiError {
        ApiError {
            error: Error::new(ErrorCode::Usage, message)
                .with_help("`GET /openapi.json` lists every operation; `GET /docs` shows them"),
            routing_status: Some(status),
        }
    }

    /// A request axum itself refused (bad path encoding, body over the limit), keeping
    /// axum's status.
    pub(crate) fn rejected(status: StatusCode, message: String) -> ApiError {
        ApiError {
            error: Error::new(ErrorCode::Usage, message),
            routing_status: Some(status),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> ApiError {
        ApiError::from(Error::new(ErrorCode::Usage, message))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError {
            error,
            routing_status: None,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::usage(format!("invalid request body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::usage(format!("invalid query: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::usage(format!("invalid path: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self
            .routing_status
            .unwrap_or_else(|| status_of(self.error.code));
        let unauthorized = self.error.code == ErrorCode::Unauthorized;
        let mut response = (status, Json(ErrorBody { error: self.error })).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"imagegen\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_one_the_api_documents() {
        let codes = [
            ErrorCode::Validation,
            ErrorCode::ProfileNotFound,
            ErrorCode::StateLocked,
            ErrorCode::Usage,
            ErrorCode::Unauthorized,
            ErrorCode::PermissionError,
            ErrorCode::InternalError,
            ErrorCode::BuildFailed,
        ];
        let statuses: Vec<u16> = codes.iter().map(|code| status_of(*code).as_u16()).collect();
        assert_eq!(statuses, [422, 404, 409, 400, 401, 403, 500, 500]);
    }
}
