//! `GET /artifacts/{sha256}/download`: an artifact's bytes from the content-addressed store,
//! with `ETag` (the sha256), `Content-Length` and one `Range` (206, or 416 when it cannot
//! be satisfied). Several ranges are answered with the whole file (RFC 9110 allows it).

use std::io::SeekFrom;
use std::ops::RangeInclusive;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::error::{ApiResult, ErrorBody};
use super::{Access, AppState};
use crate::error::{Error, ErrorCode};
use crate::ops::{self, FleetNeed};

/// Bytes read from the blob per chunk of the response body.
const CHUNK: usize = 64 * 1024;

/// What a `Range` header asks of a file of some size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No (usable) range: the whole file.
    Whole,
    /// One satisfiable range, inclusive.
    Part(RangeInclusive<u64>),
    /// A byte range outside the file.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against a file of `size` bytes. Anything
/// else (other units, several ranges, garbage) is ignored, which means the whole file.
pub(crate) fn parse_range(header: &str, size: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let (first, last) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => return RangeAnswer::Whole,
        (true, false) => match number(end) {
            Some(0) => return RangeAnswer::Unsatisfiable,
            Some(suffix) => (size.saturating_sub(suffix), size.saturating_sub(1)),
            None => return RangeAnswer::Whole,
        },
        (false, open_end) => {
            let Some(first) = number(start) else {
                return RangeAnswer::Whole;
            };
            let last = match open_end {
                true => size.saturating_sub(1),
                false => match number(end) {
                    Some(last) if last >= first => last.min(size.saturating_sub(1)),
                    _ => return RangeAnswer::Whole,
                },
            };
            (first, last)
        }
    };
    if size == 0 || first >= size {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part(first..=last)
}

/// An artifact's bytes.
#[utoipa::path(get, path = "/artifacts/{sha256}/download", tag = "artifacts",
    params(("sha256" = String, Path, description = "sha256 or unique prefix"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`")),
    responses((status = 200, description = "The whole artifact", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "`If-None-Match` matched the sha256"),
        (status = 404, description = "No such artifact, or its blob is missing", body = ErrorBody),
        (status = 416, description = "The range is outside the artifact"),
        (status = 422, description = "The prefix matches several artifacts", body = ErrorBody)))]
pub(crate) async fn download(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let detail = state
        .run(FleetNeed::Optional, Access::Store, move |workspace| {
            ops::artifact_show(workspace, &sha256)
        })
        .await?;
    if !detail.present {
        return Err(Error::new(
            ErrorCode::ArtifactNotFound,
            format!(
                "the blob of `{}` is missing from the store",
                detail.artifact.name
            ),
        )
        .with_help("run `imagegen artifacts verify`, then `imagegen apply` to rebuild it")
        .into());
    }
    let etag = format!("\"{}\"", detail.artifact.sha256);
    let matches_etag = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            })
    };
    if matches_etag(header::IF_NONE_MATCH) {
        return Ok(with_common(
            StatusCode::NOT_MODIFIED.into_response(),
            &etag,
            &detail.artifact.name,
        ));
    }
    let mut file = tokio::fs::File::open(&detail.path)
        .await
        .map_err(|error| Error::io("reading", &detail.path, error))?;
    let size = file
        .metadata()
        .await
        .map_err(|error| Error::io("reading", &detail.path, error))?
        .len();
    // `If-Range` with another validator means "the file changed: send all of it".
    let if_range_ok = headers.get(header::IF_RANGE).is_none() || matches_etag(header::IF_RANGE);
    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        Some(text) if if_range_ok => parse_range(text, size),
        _ => RangeAnswer::Whole,
    };
    let (status, start, length) = match range {
        RangeAnswer::Whole => (StatusCode::OK, 0, size),
        RangeAnswer::Part(range) => (
            StatusCode::PARTIAL_CONTENT,
            *range.start(),
            range.end() - range.start() + 1,
        ),
        RangeAnswer::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            insert(
                &mut response,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Ok(with_common(response, &etag, &detail.artifact.name));
        }
    };
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|error| Error::io("reading", &detail.path, error))?;
    let mut response = Response::new(Body::from_stream(chunks(file, length)));
    *response.status_mut() = status;
    insert(&mut response, header::CONTENT_LENGTH, &length.to_string());
    insert(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let last = start + length - 1;
        insert(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{last}/{size}"),
        );
    }
    Ok(with_common(response, &etag, &detail.artifact.name))
}

/// The file's next `remaining` bytes, in chunks.
fn chunks(
    file: tokio::fs::File,
    remaining: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold((file, remaining), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let wanted = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut buffer = vec![0; wanted];
        match file.read(&mut buffer).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the blob is shorter than its size",
                )),
                (file, 0),
            )),
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(buffer), (file, remaining - read as u64)))
            }
            Err(error) => Some((Err(error), (file, 0))),
        }
    })
}

fn with_common(mut response: Response, etag: &str, name: &str) -> Response {
    insert(&mut response, header::ETAG, etag);
    insert(&mut response, header::ACCEPT_RANGES, "bytes");
    // Artifact names come from Image Builder output; keep the header to safe characters.
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        .collect();
    insert(
        &mut response,
        header::CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{safe}\""),
    );
    response
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0..=9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90..=99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90..=99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0..=99));
        assert_eq!(parse_range("bytes=50-1000", 100), Part(50..=99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=x-", 100), Whole);
    }
}
