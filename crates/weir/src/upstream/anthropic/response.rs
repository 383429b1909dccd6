//! Anthropic answers → OpenAI answers: messages, errors and model lists.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{
    api::{
        Model, ModelList,
        anthropic::{
            AnthropicUsage, AnyBlock, ContentBlock, ErrorEnvelope, MessagesResponse, ModelInfo, ModelsPage,
        },
    },
    error::Error,
};

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    Some(match stop_reason? {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer: the model stopped by itself.
        _ => "stop",
    })
}

/// OpenAI usage for Anthropic usage. Anthropic's `input_tokens` leaves out cached input, so the
/// prompt total adds cache reads and writes back; `cached_tokens` are the reads (priced as
/// cached), `cache_creation_tokens` (an extension) the writes.
pub(crate) fn openai_usage(usage: &AnthropicUsage) -> Value {
    let read = usage.cache_read_input_tokens.unwrap_or(0);
    let written = usage.cache_creation_input_tokens.unwrap_or(0);
    let prompt = usage.input_tokens + read + written;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    })
}

/// Unix seconds now (a calendar time, so the wall clock).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bad_response(what: &str, e: serde_json::Error) -> Error {
    Error::BadUpstreamResponse {
        message: format!("Anthropic {what}: {e}"),
    }
}

fn to_bytes(value: &Value) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A Messages API answer as a `chat.completion`: text blocks joined, `tool_use` blocks as tool
/// calls (input serialised to the arguments string, ids kept). Thinking is dropped.
pub(crate) fn chat_completion(body: &[u8]) -> Result<Bytes, Error> {
    let msg: MessagesResponse = serde_json::from_slice(body).map_err(|e| bad_response("message", e))?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &msg.content {
        match block {
            AnyBlock::Known(ContentBlock::Text { text: t, .. }) => {
                text.get_or_insert_with(String::new).push_str(t)
            }
            AnyBlock::Known(ContentBlock::ToolUse { id, name, input }) => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty()
        && let Some(obj) = message.as_object_mut()
    {
        obj.insert("tool_calls".to_owned(), Value::Array(tool_calls));
    }
    to_bytes(&json!({
        "id": msg.id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": msg.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(msg.stop_reason.as_deref()),
        }],
        "usage": openai_usage(&msg.usage),
    }))
}

/// An Anthropic error body in OpenAI's shape (`type` kept, and repeated as `code` so clients
/// can match on `overloaded_error`). Bodies that are not Anthropic-shaped are returned as they
/// are: the engine's error parser summarises them.
pub(crate) fn error_body(body: &[u8]) -> Bytes {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => to_bytes(&json!({"error": {
            "message": envelope.error.message,
            "type": envelope.error.kind,
            "param": null,
            "code": envelope.error.kind,
        }}))
        .unwrap_or_else(|_| Bytes::copy_from_slice(body)),
        Err(_) => Bytes::copy_from_slice(body),
    }
}

fn openai_model(info: ModelInfo) -> Model {
    Model {
        created: info.created_at.as_deref().and_then(rfc3339_seconds).unwrap_or(0),
        id: info.id,
        object: "model".to_owned(),
        owned_by: "anthropic".to_owned(),
    }
}

/// `GET /v1/models` → OpenAI's model list.
pub(crate) fn model_list(body: &[u8]) -> Result<Bytes, Error> {
    let page: ModelsPage = serde_json::from_slice(body).map_err(|e| bad_response("model list", e))?;
    let list = ModelList {
        object: "list".to_owned(),
        data: page.data.into_iter().map(openai_model).collect(),
    };
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// `GET /v1/models/{id}` → OpenAI's model object.
pub(crate) fn model(body: &[u8]) -> Result<Bytes, Error> {
    let info: ModelInfo = serde_json::from_slice(body).map_err(|e| bad_response("model", e))?;
    serde_json::to_vec(&openai_model(info))
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Seconds since the epoch of an RFC 3339 time such as `2025-02-19T00:00:00Z` (fraction and
/// offset ignored: a model's release time needs no more precision).
fn rfc3339_seconds(text: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (
        num(11..13).unwrap_or(0),
        num(14..16).unwrap_or(0),
        num(17..19).unwrap_or(0),
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2025-02-19T00:00:00Z"), Some(1_739_923_200));
        assert_eq!(rfc3339_seconds("2024-02-29T12:30:15.5Z"), Some(1_709_209_815));
        assert_eq!(rfc3339_seconds("nope"), None);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn")), Some("stop"));
        assert_eq!(finish_reason(Some("stop_sequence")), Some("stop"));
        assert_eq!(finish_reason(Some("max_tokens")), Some("length"));
        assert_eq!(finish_reason(Some("tool_use")), Some("tool_calls"));
        assert_eq!(finish_reason(Some("refusal")), Some("content_filter"));
        assert_eq!(finish_reason(None), None);
    }
}
