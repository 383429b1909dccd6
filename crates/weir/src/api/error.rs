//! The OpenAI error shape, and the one function that maps an [`Error`] to an HTTP status and body.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// `{"error": {...}}`, as OpenAI returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error object.
    pub error: ErrorObject,
}

/// The inner error object: `message`, `type`, `param`, `code` are always present (possibly null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// A human-readable description.
    pub message: String,
    /// The error family, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code, if any.
    pub code: Option<String>,
}

/// An error ready to be sent to a client: status, body and the `Retry-After` to pass on.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    /// HTTP status for the client.
    pub status: StatusCode,
    /// OpenAI-shaped body.
    pub body: ErrorBody,
    /// Passed on as `Retry-After` (whole seconds, rounded up) when set.
    pub retry_after: Option<Duration>,
    /// More headers for the client, e.g. `x-ratelimit-*` on a local rate-limit refusal.
    pub headers: Vec<(&'static str, String)>,
}

impl ErrorResponse {
    fn new(
        status: StatusCode,
        error_type: &str,
        message: String,
        param: Option<String>,
        code: Option<String>,
    ) -> Self {
        ErrorResponse {
            status,
            body: ErrorBody {
                error: ErrorObject {
                    message,
                    error_type: error_type.to_owned(),
                    param,
                    code,
                },
            },
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// THE mapping from engine errors to what a client sees. Everything user-facing goes through here.
    ///
    /// Upstream statuses are not passed through blindly: a 401/403 from the upstream is the gateway's
    /// problem (its credentials), not the client's, so it becomes a 500; upstream 5xx becomes 502 so
    /// clients can tell "the gateway failed" (500) from "the provider failed" (502).
    pub fn from_error(err: &Error) -> Self {
        let msg = err.to_string();
        match err {
            Error::InvalidRequest { param, code, .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                msg,
                param.clone(),
                code.map(str::to_owned),
            ),
            Error::ModelNotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                msg,
                Some("model".to_owned()),
                Some("model_not_found".to_owned()),
            ),
            Error::PayloadTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                msg,
                None,
                Some("request_too_large".to_owned()),
            ),
            Error::Unauthenticated { .. } => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                msg,
                None,
                Some("invalid_api_key".to_owned()),
            ),
            Error::NotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                msg,
                None,
                Some("not_found".to_owned()),
            ),
            Error::RateLimited {
                retry_after,
                headers,
                detail,
                ..
            } => {
                let error_type = if detail.contains("token") {
                    "tokens"
                } else {
                    "requests"
                };
                let mut resp = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    error_type,
                    msg,
                    None,
                    Some("rate_limit_exceeded".to_owned()),
                );
                resp.retry_after = Some(*retry_after);
                // Retry-After itself is set from `retry_after`; the rest describe the limit.
                resp.headers = headers
                    .iter()
                    .filter(|(name, _)| *name != "retry-after")
                    .cloned()
                    .collect();
                resp
            }
            Error::ClientTimeout { .. } => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                msg,
                None,
                Some("request_timeout".to_owned()),
            ),
            Error::RequestTooLarge { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                msg,
                Some("max_tokens".to_owned()),
                Some("request_too_large_for_limit".to_owned()),
            ),
            Error::MethodNotAllowed { .. } => Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                msg,
                None,
                Some("method_not_allowed".to_owned()),
            ),
            Error::Upstream {
                status,
                message,
                error_type,
                code,
                param,
                retry_after,
            } => Self::from_upstream(*status, message, error_type, code, param, *retry_after),
            Error::PoolExhausted { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("The gateway's upstream connection pool is exhausted ({msg})."),
                None,
                Some("pool_exhausted".to_owned()),
            ),
            Error::Timeout { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                format!("The upstream did not answer in time ({msg})."),
                None,
                Some("upstream_timeout".to_owned()),
            ),
            Error::Connect { .. } | Error::Transport { .. } | Error::BadUpstreamResponse { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                msg,
                None,
                Some("upstream_unavailable".to_owned()),
            ),
            Error::NoDeploymentAvailable { retry_after, .. } => {
                let mut resp = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    msg,
                    None,
                    Some("no_available_deployment".to_owned()),
                );
                resp.retry_after = *retry_after;
                resp
            }
            Error::Unavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                msg,
                None,
                Some("service_unavailable".to_owned()),
            ),
            Error::Config(_) | Error::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", msg, None, None)
            }
        }
    }

    fn from_upstream(
        status: StatusCode,
        message: &str,
        error_type: &Option<String>,
        code: &Option<String>,
        param: &Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        match status.as_u16() {
            401 | 403 => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!(
                    "The upstream provider rejected the gateway's credentials (HTTP {}). \
                     This is a gateway configuration problem, not a problem with your request.",
                    status.as_u16()
                ),
                None,
                Some("upstream_auth_failed".to_owned()),
            ),
            429 => {
                let mut resp = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    error_type.as_deref().unwrap_or("rate_limit_error"),
                    format!("The upstream provider is rate limiting requests: {message}"),
                    param.clone(),
                    code.clone().or_else(|| Some("rate_limit_exceeded".to_owned())),
                );
                resp.retry_after = retry_after;
                resp
            }
            500..=599 => {
                let mut resp = Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!(
                        "The upstream provider failed (HTTP {}): {message}",
                        status.as_u16()
                    ),
                    None,
                    Some("upstream_error".to_owned()),
                );
                resp.retry_after = retry_after;
                resp
            }
            // Other 4xx are about the request itself: pass status, message and param through so the
            // client can fix its request.
            _ => Self::new(
                status,
                error_type.as_deref().unwrap_or("invalid_request_error"),
                message.to_owned(),
                param.clone(),
                code.clone(),
            ),
        }
    }

    /// The JSON body as bytes.
    pub fn body_bytes(&self) -> bytes::Bytes {
        // Serialising plain strings cannot fail; fall back to a fixed body rather than panic.
        serde_json::to_vec(&self.body).map(bytes::Bytes::from).unwrap_or_else(|_| {
            bytes::Bytes::from_static(br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#)
        })
    }

    /// `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after
            .map(|d| d.as_secs_f64().ceil().max(1.0).to_string())
    }
}

/// Parses an upstream error body (`{"error": {...}}` or anything else) into message, type, code, param.
pub(crate) fn parse_upstream_error(body: &[u8]) -> (String, Option<String>, Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Loose {
        error: LooseInner,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum LooseInner {
        Object {
            message: Option<String>,
            #[serde(rename = "type")]
            error_type: Option<String>,
            code: Option<serde_json::Value>,
            param: Option<String>,
        },
        Text(String),
    }
    match serde_json::from_slice::<Loose>(body) {
        Ok(Loose {
            error:
                LooseInner::Object {
                    message,
                    error_type,
                    code,
                    param,
                },
        }) => {
            let code = code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            (
                message.unwrap_or_else(|| "no message".to_owned()),
                error_type,
                code,
                param,
            )
        }
        Ok(Loose {
            error: LooseInner::Text(message),
        }) => (message, None, None, None),
        Err(_) => {
            // Not OpenAI-shaped (an HTML error page from a proxy, say): keep a short, printable prefix.
            let text = String::from_utf8_lossy(body);
            let summary: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            let summary = if summary.trim().is_empty() {
                "empty body".to_owned()
            } else {
                summary
            };
            (summary, None, None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimeoutPhase;

    fn upstream(status: u16) -> Error {
        Error::Upstream {
            status: StatusCode::from_u16(status).unwrap(),
            message: "boom".into(),
            error_type: None,
            code: None,
            param: None,
            retry_after: Some(Duration::from_millis(1500)),
        }
    }

    #[test]
    fn status_matrix() {
        let cases = [
            (400, 400),
            (401, 500),
            (403, 500),
            (404, 404),
            (429, 429),
            (500, 502),
            (503, 502),
        ];
        for (up, want) in cases {
            assert_eq!(
                ErrorResponse::from_error(&upstream(up)).status.as_u16(),
                want,
                "upstream {up}"
            );
        }
        let t = Error::Timeout {
            phase: TimeoutPhase::Read,
            after: Duration::from_secs(30),
        };
        assert_eq!(ErrorResponse::from_error(&t).status, StatusCode::GATEWAY_TIMEOUT);
        let c = Error::Connect {
            message: "refused".into(),
        };
        assert_eq!(ErrorResponse::from_error(&c).status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = ErrorResponse::from_error(&upstream(429));
        assert_eq!(r.retry_after_header().as_deref(), Some("2"));
    }

    #[test]
    fn parses_openai_and_foreign_bodies() {
        let (m, t, c, p) = parse_upstream_error(
            br#"{"error":{"message":"bad","type":"invalid_request_error","code":123,"param":"x"}}"#,
        );
        assert_eq!(
            (m.as_str(), t.as_deref(), c.as_deref(), p.as_deref()),
            ("bad", Some("invalid_request_error"), Some("123"), Some("x"))
        );
        let (m, ..) = parse_upstream_error(b"<html>\n502 Bad Gateway</html>");
        assert_eq!(m, "<html>502 Bad Gateway</html>");
    }
}
