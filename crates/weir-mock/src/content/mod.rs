//! Pure, synchronous response generation for the OpenAI endpoints the mock speaks.
//!
//! Nothing here does IO, sleeps or needs a runtime: the `weir` library calls [`respond`]
//! in-process for its offline "mock" provider, and the [`server`](crate::server) wraps it with
//! faults and pacing. Only the `content` and `chunks` [directives](Directives) matter here.

pub mod anthropic;
mod chat;
mod derived;
mod directives;
mod embeddings;
mod error;
pub mod gemini;
mod images;
mod models;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

pub use derived::{derived_content, prompt_hash, prompt_text};
pub use directives::{DirectiveError, Directives, HEADER_PREFIX, MAX_CHUNKS, MODEL_PREFIX};
pub use embeddings::base64_encode;
pub use error::{error_kind, error_reply, fault_reply};
pub use images::PNG_1X1_BASE64;
pub use models::MODELS;

/// The assistant text when no `content` directive is given.
pub const DEFAULT_CONTENT: &str = "This is a mock response from Weir's mock upstream.";

/// Number of content pieces in a stream when no `chunks` directive is given.
pub const DEFAULT_CHUNKS: usize = 5;

/// Embedding length when the request has no `dimensions` (small: tests do not need 1536 floats).
pub const DEFAULT_DIMENSIONS: usize = 8;

/// The SSE event that ends every complete stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// A generated response: an HTTP status and a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body, either complete JSON or a list of SSE events.
    pub body: ReplyBody,
}

/// The body of a [`Reply`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// A complete JSON body (application/json).
    Json(Bytes),
    /// A server-sent-event stream: each element is ONE complete SSE event, e.g.
    /// `b"data: {...}\n\n"`; the last element is `b"data: [DONE]\n\n"`.
    Events(Vec<Bytes>),
}

impl Reply {
    /// True for a server-sent-event stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.body, ReplyBody::Events(_))
    }

    /// The `Content-Type` this body is sent with.
    pub fn content_type(&self) -> &'static str {
        match self.body {
            ReplyBody::Json(_) => "application/json",
            ReplyBody::Events(_) => "text/event-stream",
        }
    }

    /// The whole body as one buffer (events concatenated), as a client would read it.
    pub fn to_bytes(&self) -> Bytes {
        match &self.body {
            ReplyBody::Json(bytes) => bytes.clone(),
            ReplyBody::Events(events) => Bytes::from(events.concat()),
        }
    }
}

/// Answers one request in-process, as the mock upstream would (without faults or pacing).
///
/// `path` is relative to the API root, without the `/v1` prefix and without a leading slash,
/// e.g. `"chat/completions"`, `"embeddings"`, `"images/generations"`, `"models"`,
/// `"models/gpt-4o-mini"`; it may carry a `?query`, which is ignored for routing. Any other
/// method/path is echoed back as `{"object":"mock.echo","method","path","body"}`.
///
/// ```
/// use weir_mock::content::{respond, ReplyBody};
///
/// let reply = respond(
///     "POST",
///     "chat/completions",
///     br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"x_mock":{"content":"hello"}}"#,
/// );
/// assert_eq!(reply.status, 200);
/// let ReplyBody::Json(body) = reply.body else { unreachable!() };
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["choices"][0]["message"]["content"], "hello");
/// ```
pub fn respond(method: &str, path: &str, body: &[u8]) -> Reply {
    respond_with(method, path, body, &Directives::default())
}

/// Like [`respond`], with `directives` overlaid on the ones the body carries (model name and
/// `x_mock`); the server passes the merged header/body directives here.
pub fn respond_with(method: &str, path: &str, body: &[u8], directives: &Directives) -> Reply {
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    let route = route.trim_matches('/');
    let is = |m: &str| method.eq_ignore_ascii_case(m);
    match route {
        "chat/completions" if is("POST") => chat::respond(body, directives),
        anthropic::MESSAGES_PATH if is("POST") => anthropic::respond(body, directives),
        "embeddings" if is("POST") => embeddings::respond(body),
        "images/generations" if is("POST") => images::respond(body),
        "models" if is("GET") => models::list(),
        _ => match route.strip_prefix("models/") {
            Some(id) if is("GET") && !id.is_empty() => models::retrieve(id),
            _ => echo(method, path, body),
        },
    }
}

/// The generic answer for paths the mock does not model, so passthrough can be tested.
fn echo(method: &str, path: &str, body: &[u8]) -> Reply {
    #[derive(Serialize)]
    struct Echo<'a> {
        object: &'static str,
        method: &'a str,
        path: &'a str,
        body: Value,
    }
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    ok_json(&Echo {
        object: "mock.echo",
        method,
        path,
        body,
    })
}

/// A 200 reply with `value` serialised as JSON.
fn ok_json<T: Serialize>(value: &T) -> Reply {
    Reply {
        status: 200,
        body: ReplyBody::Json(to_json_bytes(value)),
    }
}

/// Serialises our own response types, which cannot fail (no maps with non-string keys, no
/// failing `Serialize` impls); the fallback keeps that an invariant rather than a panic.
fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => Bytes::from_static(
            br#"{"error":{"message":"mock could not serialise its response","type":"server_error","param":null,"code":null}}"#,
        ),
    }
}

/// Current unix time in seconds (wall clock: `created` fields are calendar times).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Process-wide sequence for response ids, so ids are unique but still predictable.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A rough token count: whitespace-separated words, the same estimate for prompts and output.
fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.to_bytes()).unwrap()
    }

    #[test]
    fn echo_for_unknown_routes() {
        let reply = respond("POST", "files?purpose=batch", br#"{"a":1}"#);
        assert_eq!(reply.status, 200);
        let v = json(&reply);
        assert_eq!(v["object"], "mock.echo");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "files?purpose=batch");
        assert_eq!(v["body"]["a"], 1);
        // Wrong method on a modelled path is also echoed, with a null body for non-JSON.
        let v = json(&respond("GET", "chat/completions", b"nope"));
        assert_eq!(v["object"], "mock.echo");
        assert_eq!(v["body"], Value::Null);
    }

    #[test]
    fn query_is_ignored_for_routing() {
        let v = json(&respond("GET", "models?limit=2", b""));
        assert_eq!(v["object"], "list");
    }

    #[test]
    fn error_kinds() {
        assert_eq!(error_kind(429), ("requests", Some("rate_limit_exceeded")));
        assert_eq!(error_kind(503), ("server_error", None));
        assert_eq!(error_kind(401).1, Some("invalid_api_key"));
        let v = json(&fault_reply(429));
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["param"], Value::Null);
        assert_eq!(fault_reply(500).status, 500);
    }
}
