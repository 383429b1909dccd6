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
        // The request's summary says which deployment the engine tried last, and where it is.
        let summary = weir::telemetry::RequestSummary::current().map(|s| s.snapshot());
        let deployment = summary.as_ref().and_then(|s| s.deployment.clone());
        let upstream = summary.as_ref().and_then(|s| s.upstream.clone());
        let error = self.error;
        let mut mapped = ErrorResponse::from_error(&error);
        let named = deployment
            .as_deref()
            .filter(|_| names_upstream(&error))
            .map(|id| upstream_label(id, upstream.as_deref()));
        if let Some(at) = &named {
            mapped.body.error.message = format!("{at}: {}", mapped.body.error.message);
        }
        let body = match (self.shape, &named) {
            (ErrorShape::OpenAi, _) => mapped.body_bytes(),
            (ErrorShape::Anthropic, None) => weir::messages::error_body(&error).1,
            (ErrorShape::Anthropic, Some(at)) => {
                prefix_anthropic_message(weir::messages::error_body(&error).1, at)
            }
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
        if let Some(value) = deployment.and_then(|d| HeaderValue::from_str(&d).ok()) {
            resp.headers_mut().insert("x-weir-deployment", value);
        }
        // The end-of-request log line reads these to say what kind of failure it was, and why.
        resp.extensions_mut().insert(error.kind());
        resp.extensions_mut()
            .insert(RefusalReason(log_reason(&error).into()));
        resp
    }
}

/// Why a request was answered with an error, for the end-of-request log line: the gateway's
/// own message with every quoted value blanked (a JSON parse error can quote the client's
/// text), an upstream's answer reduced to its status and code (its message may echo the
/// prompt). Never the body, never a key.
#[derive(Debug, Clone)]
pub(crate) struct RefusalReason(pub(crate) std::sync::Arc<str>);

/// Most of 200 characters of `error`'s message, safe to log (see [`RefusalReason`]).
fn log_reason(error: &weir::Error) -> String {
    let text = match error {
        weir::Error::Upstream { status, code, .. } => match code {
            Some(code) => format!("upstream returned {status} ({code})"),
            None => format!("upstream returned {status}"),
        },
        other => other.to_string(),
    };
    let mut out = String::with_capacity(text.len().min(200));
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' if quoted => {
                quoted = false;
                out.push_str("…\"");
            }
            '"' => {
                quoted = true;
                out.push('"');
            }
            _ if quoted => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        if out.len() >= 200 {
            out.push('…');
            break;
        }
    }
    out
}

/// Whether the client's error is about reaching or hearing from an upstream (so it should say
/// which one), rather than about the request or the gateway.
fn names_upstream(error: &weir::Error) -> bool {
    use weir::{Error, TimeoutPhase};
    match error {
        Error::Connect { .. } | Error::Transport { .. } | Error::BadUpstreamResponse { .. } => true,
        Error::Timeout { phase, .. } => matches!(
            phase,
            TimeoutPhase::Connect | TimeoutPhase::Read | TimeoutPhase::Total
        ),
        Error::Upstream { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// `deployment `id` (host:port)`: how an error names its upstream (never a URL path, query or
/// credentials).
fn upstream_label(deployment: &str, upstream: Option<&str>) -> String {
    match upstream {
        Some(host) => format!("deployment `{deployment}` ({host})"),
        None => format!("deployment `{deployment}`"),
    }
}

/// An Anthropic-shaped error body with `prefix: ` before its message.
fn prefix_anthropic_message(body: Bytes, prefix: &str) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    if let Some(message) = value.pointer_mut("/error/message")
        && let Some(text) = message.as_str()
    {
        *message = serde_json::Value::String(format!("{prefix}: {text}"));
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}
