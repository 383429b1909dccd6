//! Client authentication: the gateway key check in front of the API faces, the identities it
//! gives a request ([`ClientIdentity`] for limits and accounting, [`CacheTenant`] for the response
//! cache), and the constant-time key comparison the admin key check shares.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, header};

use crate::{http::error::ErrorShape, state::Shared};

/// Requires `Authorization: Bearer <key>` (or `x-api-key: <key>`) with one of the configured
/// gateway keys, if any are configured. The client's key is never forwarded upstream: deployments
/// use their own keys. A failure is rendered in the error shape of the router serving the request.
pub(crate) async fn authenticate(
    State(state): State<Shared>,
    shape: ErrorShape,
    mut req: Request,
    next: Next,
) -> Response {
    let engine = state.engine();
    let api_keys = &engine.config().server.api_keys;
    if api_keys.is_empty() {
        let anonymous = ClientIdentity::anonymous();
        anonymous.note_in_summary();
        req.extensions_mut().insert(anonymous);
        return next.run(req).await;
    }
    // Anthropic SDKs send the key as `x-api-key`; OpenAI's as a bearer token.
    let presented = bearer_token(req.headers())
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
                    let identity = ClientIdentity::key(index);
                    identity.note_in_summary();
                    req.extensions_mut().insert(identity);
                    req.extensions_mut().insert(tenant);
                    return next.run(req).await;
                }
                // Never echo the presented key back (OpenAI shows a prefix; a prefix still leaks).
                None => "Incorrect API key provided.",
            }
        }
    };
    shape
        .error(weir::Error::Unauthenticated {
            message: message.to_owned(),
        })
        .into_response()
}

/// The token of an `Authorization: Bearer <token>` header (untrimmed), if there is one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
}

/// Which client a request comes from, for per-client limits and accounting: the position of the
/// gateway key it presented (`key-0`, `key-1`...), never the key itself; `anonymous` without auth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientIdentity(pub(crate) std::sync::Arc<str>);

impl ClientIdentity {
    fn anonymous() -> Self {
        ClientIdentity("anonymous".into())
    }
    fn key(index: usize) -> Self {
        ClientIdentity(format!("key-{index}").into())
    }
    /// Names the client on the request's end-of-request line.
    fn note_in_summary(&self) {
        if let Some(summary) = weir::telemetry::RequestSummary::current() {
            summary.update(|s| s.client = Some(self.0.clone()));
        }
    }
}

/// Whose response cache a request reads and fills: a keyed hash of the client's gateway key
/// (never the key), so it is the same on every instance and survives reordering the key list.
/// Absent without authentication (everyone shares the anonymous tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheTenant(pub(crate) std::sync::Arc<str>);

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
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
