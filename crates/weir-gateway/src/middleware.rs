//! Request ids, the per-request span and log line, and client authentication.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, header};
use tracing::{Instrument, field::Empty};
use weir::telemetry::RequestSummary;

use crate::{AppState, error::ApiError, telemetry};

/// The request's correlation id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Takes `x-request-id` from the client when it is sane (short, printable, no spaces: it ends up
/// in logs and upstream headers) or makes a UUID; puts it on the request, on every log line of the
/// request (through the span), and on the response. Logs one line when the response body has been
/// sent (see [`telemetry::RequestEnd`]), with what the engine put in the request's summary.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Fields named after the OpenTelemetry HTTP and GenAI conventions, filled as they are known.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        %path,
        otel.name = %format_args!("{method} {path}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.response.status_code = Empty,
        gen_ai.request.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        weir.deployment = Empty,
        weir.attempts = Empty,
        error.type = Empty,
    );
    let traceparent = telemetry::client_traceparent(req.headers());
    telemetry::adopt_remote_parent(&span, traceparent.as_deref());
    let summary = RequestSummary::new();
    summary.update(|s| s.traceparent = traceparent);
    let end = telemetry::RequestEnd::start(span.clone(), summary.clone(), path.starts_with("/v1/"));
    let mut resp = summary.scope(next.run(req)).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    end.attach(resp)
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// Requires `Authorization: Bearer <key>` with one of the configured gateway keys (if any are
/// configured). The client's key is never forwarded upstream: deployments use their own keys.
pub async fn authenticate(
    State(state): State<std::sync::Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let engine = state.engine();
    let api_keys = &engine.config().server.api_keys;
    if api_keys.is_empty() {
        req.extensions_mut().insert(ClientIdentity::anonymous());
        return next.run(req).await;
    }
    // Anthropic SDKs send the key as `x-api-key`; OpenAI's as a bearer token.
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let message = match presented {
        None => {
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'."
        }
        Some(key) => {
            // Compare against every key (no early exit), so timing doesn't tell which one matched.
            let matched = api_keys.iter().enumerate().fold(None, |found, (i, k)| {
                let equal = constant_time_eq(k.expose().as_bytes(), key.as_bytes());
                found.or(equal.then_some(i))
            });
            match matched {
                Some(index) => {
                    // The cache follows the key itself, not its position in the config.
                    let tenant = CacheTenant(weir::cache::tenant_for_key(key.as_bytes()).into());
                    req.extensions_mut().insert(ClientIdentity::key(index));
                    req.extensions_mut().insert(tenant);
                    return next.run(req).await;
                }
                // Never echo the presented key back (OpenAI shows a prefix; a prefix still leaks).
                None => "Incorrect API key provided.",
            }
        }
    };
    let err = weir::Error::Unauthenticated {
        message: message.to_owned(),
    };
    if req.uri().path().starts_with("/v1/messages") {
        return crate::messages::error_response(err);
    }
    ApiError(err).into_response()
}

/// Which client a request comes from, for per-client limits and accounting: the position of the
/// gateway key it presented (`key-0`, `key-1`...), never the key itself; `anonymous` without auth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity(pub std::sync::Arc<str>);

impl ClientIdentity {
    fn anonymous() -> Self {
        ClientIdentity("anonymous".into())
    }
    fn key(index: usize) -> Self {
        ClientIdentity(format!("key-{index}").into())
    }
}

/// Whose response cache a request reads and fills: a keyed hash of the client's gateway key
/// (never the key), so it is the same on every instance and survives reordering the key list.
/// Absent without authentication (everyone shares the anonymous tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheTenant(pub std::sync::Arc<str>);

/// Compares without an early exit, so response timing does not reveal how much of a key matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        assert!(is_sane_request_id("req_123-abc"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("line\nbreak"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
