//! OpenAI-shaped error bodies: `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

use super::{Reply, ReplyBody};

/// The `type` and default `code` OpenAI uses for an HTTP status.
///
/// 429 mirrors OpenAI's rate-limit body (`type: "requests"`, `code: "rate_limit_exceeded"`);
/// 5xx are `server_error` with a null code, as OpenAI sends for overload and internal errors.
pub fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("invalid_request_error", Some("permission_denied")),
        404 => ("invalid_request_error", Some("not_found")),
        408 => ("timeout", Some("timeout")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

/// An error reply with an explicit message, `param` and `code`; `type` follows [`error_kind`].
pub fn error_reply(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    let (kind, _) = error_kind(status);
    let envelope = Envelope {
        error: Inner {
            message,
            kind,
            param,
            code,
        },
    };
    Reply {
        status,
        body: ReplyBody::Json(super::to_json_bytes(&envelope)),
    }
}

/// The reply for a scripted `status` fault: an error body with the type and code of
/// [`error_kind`] and a message saying the mock produced it on purpose.
pub fn fault_reply(status: u16) -> Reply {
    let (_, code) = error_kind(status);
    let message = format!("Mock upstream fault: HTTP {status} requested by a directive.");
    error_reply(status, &message, None, code)
}

/// 400 `invalid_request_error`, the answer to a malformed request.
pub(crate) fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    error_reply(400, message, param, code)
}

/// 400 for a missing required field, worded as OpenAI does.
pub(crate) fn missing(param: &str) -> Reply {
    invalid(
        &format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

/// 400 for a body that failed to deserialize: syntax errors get OpenAI's "could not parse"
/// wording; type errors say which field was wrong, as far as serde knows.
pub(crate) fn from_serde(err: &serde_json::Error) -> Reply {
    match err.classify() {
        serde_json::error::Category::Data => invalid(
            &format!("Invalid request body: {err}."),
            None,
            Some("invalid_type"),
        ),
        _ => invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
             using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
            None,
        ),
    }
}

/// 400 for a directive that could not be parsed.
pub(crate) fn from_directive(err: &super::DirectiveError) -> Reply {
    invalid(&err.to_string(), Some("x_mock"), Some("invalid_mock_directive"))
}
