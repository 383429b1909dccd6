//! The gateway's one error edge: every failure becomes a response here, in the error shape of
//! the API face that serves the request.
//!
//! Which shape is not a property of the path: each face's router declares it
//! ([`ErrorShape`] as a request extension, set by the router before any of its middleware runs),
//! and everything under that router (the key check, the handlers, the event that ends a stream
//! cut off by the drain) renders errors through it. Status, `Retry-After` and the other headers
//! come from the engine's one mapping ([`ErrorResponse::from_error`]) for every shape; only the
//! body differs.

use std::convert::Infallible;

use axum::{
    body::Body,
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, header, request::Parts};
use weir::api::ErrorResponse;

/// How the API a request came in on spells its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// OpenAI's `{"error":{"message","type","param","code"}}`: the OpenAI-compatible API and the
    /// gateway's own routes (admin, health, unknown URLs).
    #[default]
    OpenAi,
    /// Anthropic's `{"type":"error","error":{"type","message"}}`, which Anthropic SDKs parse.
    Anthropic,
}

impl ErrorShape {
    /// `error`, to be rendered in this shape.
    pub fn error(self, error: weir::Error) -> ApiError {
        ApiError { error, shape: self }
    }

    /// The server-sent event that ends a stream with `error`, in this shape.
    pub(crate) fn stream_event(self, error: &weir::Error) -> Bytes {
        match self {
            ErrorShape::OpenAi => weir::sse::error_event(error),
            ErrorShape::Anthropic => weir::messages::EventTranslator::new().on_error(error),
        }
    }
}

/// The shape the serving router declared; OpenAI's where none did (the gateway's own routes).
impl<S: Send + Sync> FromRequestParts<S> for ErrorShape {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<ErrorShape>().copied().unwrap_or_default())
    }
}

/// An engine error on its way to the client, and the shape to render it in.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong.
    pub error: weir::Error,
    /// How the client's API spells it.
    pub shape: ErrorShape,
}

/// OpenAI's shape: the gateway's own routes use `?` on engine results.
impl From<weir::Error> for ApiError {
    fn from(error: weir::Error) -> Self {
        ErrorShape::OpenAi.error(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mapped = ErrorResponse::from_error(&self.error);
        let body = match self.shape {
            ErrorShape::OpenAi => mapped.body_bytes(),
            ErrorShape::Anthropic => weir::messages::error_body(&self.error).1,
        };
        let mut resp = Response::new(Body::from(body));
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
        // The end-of-request log line reads this to say what kind of failure it was.
        resp.extensions_mut().insert(self.error.kind());
        resp
    }
}
