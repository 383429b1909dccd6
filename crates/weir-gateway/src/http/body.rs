//! Reading a client's request body: within the configured size limit (413 past it) and the body
//! read timeout, whichever API face the request is for.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use bytes::Bytes;
use http::header;
use weir::Error;

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads a request body up to `limit` bytes (413 past it) within the body read timeout.
pub(crate) async fn read_body(limit: usize, headers: &http::HeaderMap, body: Body) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    // `to_bytes` stops reading at the limit, so a body without Content-Length can't exhaust memory.
    // A client trickling its body must not hold a task (and the drain) forever.
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, to_bytes(body, limit))
        .await
        .map_err(|_| Error::ClientTimeout {
            after: BODY_READ_TIMEOUT,
        })?;
    let body = body.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            Error::PayloadTooLarge { limit }
        } else {
            Error::InvalidRequest {
                message: format!("could not read the request body: {e}"),
                param: None,
                code: None,
            }
        }
    })?;
    Ok(body)
}
