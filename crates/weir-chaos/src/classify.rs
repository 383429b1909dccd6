//! Sorting one answer into an [`Outcome`]: what the client got, judged against what the mock
//! would have sent for its prompt.

use serde_json::Value;

/// Which API face a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Face {
    /// `POST /v1/chat/completions`, OpenAI's shapes.
    Chat,
    /// `POST /v1/messages`, Anthropic's shapes.
    Messages,
}

impl Face {
    /// The gateway path of the face.
    pub fn path(self) -> &'static str {
        match self {
            Face::Chat => "/v1/chat/completions",
            Face::Messages => "/v1/messages",
        }
    }

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Face::Chat => "chat",
            Face::Messages => "messages",
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 200 (or a stream ended by its terminator) with exactly the mock's content.
    Complete,
    /// A 4xx/5xx in the face's error shape.
    CleanError,
    /// A stream that ended with an error event in the face's shape.
    ErrorEvent,
    /// A 4xx/5xx whose body is not the face's error shape.
    UnshapedError,
    /// The connection broke (reset, or a body cut without an error event, before any 200 body
    /// was judged) — the client knows it failed, but got nothing shaped.
    TransportError,
    /// No complete answer within the bound.
    Hang,
    /// A 200 or a cleanly ended stream whose content is not what the mock sent: truncated,
    /// spliced, unparsable, or a stream ending without its terminator and without an error.
    SilentlyWrong,
}

impl Outcome {
    /// Every outcome, in table order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Complete,
        Outcome::CleanError,
        Outcome::ErrorEvent,
        Outcome::UnshapedError,
        Outcome::TransportError,
        Outcome::Hang,
        Outcome::SilentlyWrong,
    ];

    /// The column name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::CleanError => "clean error",
            Outcome::ErrorEvent => "error event",
            Outcome::UnshapedError => "unshaped error",
            Outcome::TransportError => "transport error",
            Outcome::Hang => "hang",
            Outcome::SilentlyWrong => "silently wrong",
        }
    }
}

/// A verdict and, for a wrong one, why (kept for the first few, to debug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// What was wrong, for outcomes other than `Complete`/`CleanError`/`ErrorEvent`.
    pub detail: Option<String>,
}

impl Verdict {
    fn of(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            detail: None,
        }
    }

    fn wrong(outcome: Outcome, detail: impl Into<String>) -> Verdict {
        Verdict {
            outcome,
            detail: Some(detail.into()),
        }
    }
}

/// Judges an error status: shaped in the face's error shape or not.
pub fn error_status(face: Face, status: u16, body: &[u8]) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Verdict::wrong(Outcome::UnshapedError, format!("{status}: body is not JSON"));
    };
    if shaped_error(face, &value) {
        Verdict::of(Outcome::CleanError)
    } else {
        Verdict::wrong(Outcome::UnshapedError, format!("{status}: {value}"))
    }
}

/// OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
/// `{"type":"error","error":{"type","message"}}`.
fn shaped_error(face: Face, value: &Value) -> bool {
    let error = &value["error"];
    match face {
        Face::Chat => ["message", "type", "param", "code"]
            .iter()
            .all(|key| error.get(*key).is_some()),
        Face::Messages => {
            value["type"] == "error" && error["type"].is_string() && error["message"].is_string()
        }
    }
}

/// Judges a complete 200 body against the expected content.
pub fn unary(face: Face, body: &[u8], expected: &str) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Verdict::wrong(Outcome::SilentlyWrong, "200 body is not JSON");
    };
    let text = match face {
        Face::Chat => value["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned),
        Face::Messages => value["content"].as_array().map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        }),
    };
    match text {
        Some(text) if text == expected => Verdict::of(Outcome::Complete),
        Some(text) => Verdict::wrong(Outcome::SilentlyWrong, format!("content {text:?}")),
        None => Verdict::wrong(Outcome::SilentlyWrong, format!("no content in {value}")),
    }
}

/// Judges a 200 event stream, read to its end; `broken` is true when reading the body failed
/// (the connection broke) after `body` was received.
pub fn stream(face: Face, body: &[u8], broken: bool, expected: &str) -> Verdict {
    let text = String::from_utf8_lossy(body);
    let mut content = String::new();
    let mut ended = false;
    // Frames are split on blank lines; the mock and the gateway use LF or CRLF.
    let normalised = text.replace("\r\n", "\n");
    for frame in normalised.split("\n\n").filter(|f| !f.trim().is_empty()) {
        if ended {
            return Verdict::wrong(Outcome::SilentlyWrong, "events after the stream's end");
        }
        let data: String = frame
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n");
        if data.is_empty() {
            continue;
        }
        if face == Face::Chat && data == "[DONE]" {
            ended = true;
            continue;
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return Verdict::wrong(Outcome::SilentlyWrong, format!("unparsable event {data:?}"));
        };
        if event.get("error").is_some() || event["type"] == "error" {
            return if shaped_event_error(face, &event) {
                Verdict::of(Outcome::ErrorEvent)
            } else {
                Verdict::wrong(Outcome::UnshapedError, format!("error event {event}"))
            };
        }
        match face {
            Face::Chat => {
                if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                    content.push_str(piece);
                }
            }
            Face::Messages => {
                if event["type"] == "content_block_delta"
                    && let Some(piece) = event["delta"]["text"].as_str()
                {
                    content.push_str(piece);
                }
                if event["type"] == "message_stop" {
                    ended = true;
                }
            }
        }
    }
    if !ended {
        return if broken {
            Verdict::wrong(Outcome::TransportError, "stream cut without an error event")
        } else {
            Verdict::wrong(
                Outcome::SilentlyWrong,
                "stream ended without its terminator or an error",
            )
        };
    }
    if content == expected {
        Verdict::of(Outcome::Complete)
    } else {
        Verdict::wrong(Outcome::SilentlyWrong, format!("streamed content {content:?}"))
    }
}

fn shaped_event_error(face: Face, event: &Value) -> bool {
    match face {
        Face::Chat => event["error"]["message"].is_string(),
        Face::Messages => event["type"] == "error" && event["error"]["type"].is_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_streams() {
        let good = "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            stream(Face::Chat, good.as_bytes(), false, "abc").outcome,
            Outcome::Complete
        );
        assert_eq!(
            stream(Face::Chat, good.as_bytes(), false, "abcd").outcome,
            Outcome::SilentlyWrong
        );
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n";
        assert_eq!(
            stream(Face::Chat, cut.as_bytes(), false, "ab").outcome,
            Outcome::SilentlyWrong
        );
        assert_eq!(
            stream(Face::Chat, cut.as_bytes(), true, "ab").outcome,
            Outcome::TransportError
        );
        let malformed = "data: {\"choices\":[{\"del\n\ndata: [DONE]\n\n";
        assert_eq!(
            stream(Face::Chat, malformed.as_bytes(), false, "").outcome,
            Outcome::SilentlyWrong
        );
        let error = "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"upstream broke\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(
            stream(Face::Chat, error.as_bytes(), false, "x").outcome,
            Outcome::ErrorEvent
        );
    }

    #[test]
    fn messages_streams() {
        let good = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(
            stream(Face::Messages, good.as_bytes(), false, "hi").outcome,
            Outcome::Complete
        );
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"m\"}}\n\n";
        assert_eq!(
            stream(Face::Messages, error.as_bytes(), false, "hi").outcome,
            Outcome::ErrorEvent
        );
    }

    #[test]
    fn unary_and_errors() {
        let chat = br#"{"choices":[{"message":{"content":"x"}}]}"#;
        assert_eq!(unary(Face::Chat, chat, "x").outcome, Outcome::Complete);
        assert_eq!(unary(Face::Chat, chat, "y").outcome, Outcome::SilentlyWrong);
        assert_eq!(unary(Face::Chat, b"{\"choi", "x").outcome, Outcome::SilentlyWrong);
        let msg = br#"{"content":[{"type":"text","text":"x"}]}"#;
        assert_eq!(unary(Face::Messages, msg, "x").outcome, Outcome::Complete);
        let openai = br#"{"error":{"message":"m","type":"t","param":null,"code":null}}"#;
        assert_eq!(error_status(Face::Chat, 503, openai).outcome, Outcome::CleanError);
        assert_eq!(
            error_status(Face::Messages, 503, openai).outcome,
            Outcome::UnshapedError
        );
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"m"}}"#;
        assert_eq!(
            error_status(Face::Messages, 529, anthropic).outcome,
            Outcome::CleanError
        );
        assert_eq!(error_status(Face::Chat, 502, b"").outcome, Outcome::UnshapedError);
    }
}
