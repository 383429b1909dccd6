//! The gateway's one error edge: every failure becomes an OpenAI-shaped response here.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, header};
use weir::api::ErrorResponse;

/// An engine error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub weir::Error);

impl From<weir::Error> for ApiError {
    fn from(e: weir::Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mapped = ErrorResponse::from_error(&self.0);
        let mut resp = Response::new(Body::from(mapped.body_bytes()));
        *resp.status_mut() = mapped.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = mapped
            .retry_after_header()
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        for (name, value) in &mapped.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, value);
            }
        }
        // The middleware's end-of-request log line reads this to say what kind of failure it was.
        resp.extensions_mut().insert(self.0.kind());
        resp
    }
}
