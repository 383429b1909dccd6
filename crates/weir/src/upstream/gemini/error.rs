//! Gemini's error shape (`{"error": {"code", "message", "status", "details"}}`, Google's RPC
//! status) → OpenAI's (`{"error": {"message", "type", "param", "code"}}`).
//!
//! The HTTP status stays Gemini's (it already follows the RPC status: `RESOURCE_EXHAUSTED` 429,
//! `UNAVAILABLE` 503, `INVALID_ARGUMENT` 400...), so the engine's retry and cooldown rules apply
//! unchanged. `code` is the RPC status in lower case, except that an over-long prompt becomes
//! `context_length_exceeded` (so context-window fallbacks work), and a `RetryInfo.retryDelay` in
//! `details` becomes a `retry-after-ms` header (Gemini sends no `Retry-After`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;

/// Gemini's `error` object, found in an object or (non-SSE streams) an array's first element.
fn error_object(body: &Value) -> Option<&Value> {
    body.get("error")
        .or_else(|| body.as_array()?.first()?.get("error"))
}

/// The OpenAI `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The HTTP status for an RPC status name (for errors inside a 200 stream).
fn status_for(rpc: &str) -> u16 {
    match rpc {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

struct Parsed {
    status: u16,
    message: String,
    code: Option<String>,
    retry_after: Option<Duration>,
}

fn parse(http_status: Option<u16>, body: &Value) -> Option<Parsed> {
    let error = error_object(body)?;
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned();
    let rpc = error.get("status").and_then(Value::as_str);
    let status = http_status
        .or_else(|| error.get("code").and_then(Value::as_u64).map(|c| c as u16))
        .or_else(|| rpc.map(status_for))
        .unwrap_or(500);
    let lower = message.to_ascii_lowercase();
    let code =
        if lower.contains("exceeds the maximum number of tokens") || lower.contains("input token count") {
            Some("context_length_exceeded".to_owned())
        } else {
            rpc.map(str::to_ascii_lowercase)
        };
    let retry_after = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .and_then(|d| d.get("retryDelay")?.as_str().map(parse_delay))
        .flatten();
    Some(Parsed {
        status,
        message,
        code,
        retry_after,
    })
}

/// `"37s"`, `"1.5s"` (protobuf Duration JSON) → a duration.
fn parse_delay(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// Rewrites a non-success Gemini answer into the OpenAI error shape, adding `retry-after-ms`
/// from `RetryInfo`. A body that is not Gemini-shaped is left alone (the engine summarises it).
pub(super) fn translate_error(status: StatusCode, headers: &mut HeaderMap, body: &[u8]) -> Bytes {
    let Some(parsed) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| parse(Some(status.as_u16()), &v))
    else {
        return Bytes::copy_from_slice(body);
    };
    if let Some(delay) = parsed.retry_after
        && !headers.contains_key("retry-after")
        && let Ok(value) = HeaderValue::from_str(&delay.as_millis().to_string())
    {
        headers.insert("retry-after-ms", value);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let out = json!({"error": {
        "message": parsed.message,
        "type": error_type(parsed.status),
        "param": null,
        "code": parsed.code,
    }});
    Bytes::from(out.to_string())
}

/// An `{"error": ...}` event inside a stream, as an engine error (the guard turns it into an
/// OpenAI error event).
pub(super) fn stream_error(event: &Value) -> Error {
    match parse(None, event) {
        Some(p) => Error::Upstream {
            status: StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_type: Some(error_type(p.status).to_owned()),
            message: p.message,
            code: p.code,
            param: None,
            retry_after: p.retry_after,
        },
        None => Error::BadUpstreamResponse {
            message: "the Gemini stream sent an unreadable error event".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_with_retry_info() {
        let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        let mut headers = HeaderMap::new();
        let out = translate_error(StatusCode::TOO_MANY_REQUESTS, &mut headers, body);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": {
                "message": "Resource has been exhausted (e.g. check quota).",
                "type": "rate_limit_error", "param": null, "code": "resource_exhausted"
            }})
        );
        assert_eq!(headers["retry-after-ms"], "37000");
    }

    #[test]
    fn long_prompt_is_a_context_length_error_and_foreign_bodies_pass() {
        let body = br#"[{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}]"#;
        let out = translate_error(StatusCode::BAD_REQUEST, &mut HeaderMap::new(), body);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let html = b"<html>502</html>";
        assert_eq!(
            translate_error(StatusCode::BAD_GATEWAY, &mut HeaderMap::new(), html).as_ref(),
            html
        );
    }

    #[test]
    fn stream_errors_take_their_status_from_the_body() {
        let err =
            stream_error(&json!({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}));
        match err {
            Error::Upstream { status, code, .. } => {
                assert_eq!(status.as_u16(), 503);
                assert_eq!(code.as_deref(), Some("unavailable"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status_for("RESOURCE_EXHAUSTED"), 429);
        assert_eq!(parse_delay("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_delay("soon"), None);
    }
}
