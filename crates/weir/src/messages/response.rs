//! OpenAI chat completion → Anthropic message; engine errors → Anthropic's error shape.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{
    api::{
        ChatCompletionResponse, ErrorResponse, Usage,
        anthropic::{ErrorEnvelope, error_type_for_status},
    },
    error::Error,
};

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
pub(super) fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage for OpenAI usage: cached reads (`cached_tokens`) and writes (the
/// `cache_creation_tokens` extension) are taken out of the input count and reported apart.
pub(super) fn anthropic_usage(usage: Option<&Usage>) -> Value {
    let Some(usage) = usage else {
        return json!({"input_tokens": 0, "output_tokens": 0});
    };
    let details = usage.extra.get("prompt_tokens_details");
    let detail = |key: &str| {
        details
            .and_then(|d| d.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (read, written) = (detail("cached_tokens"), detail("cache_creation_tokens"));
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(read + written),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    })
}

/// Tool arguments as an input object; arguments that are not a JSON object (a model's broken
/// output) are kept under `arguments` rather than lost.
pub(super) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}

/// A `chat.completion` body as an Anthropic message (first choice).
pub fn to_message(body: &[u8]) -> Result<Bytes, Error> {
    let completion: ChatCompletionResponse =
        serde_json::from_slice(body).map_err(|e| Error::BadUpstreamResponse {
            message: format!("chat completion: {e}"),
        })?;
    let choice = completion.choices.first();
    let mut content = Vec::new();
    if let Some(message) = choice.map(|c| &c.message) {
        let text = match &message.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        };
        let text = if text.is_empty() {
            message.refusal.clone().unwrap_or_default()
        } else {
            text
        };
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in message.tool_calls.iter().flatten() {
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            content.push(json!({
                "type": "tool_use",
                "id": call["id"],
                "name": call["function"]["name"],
                "input": tool_input(arguments),
            }));
        }
    }
    let message = json!({
        "id": completion.id,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": anthropic_usage(completion.usage.as_ref()),
    });
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// An engine error in Anthropic's shape: the status of the one mapping, its message, and the
/// Anthropic error type for that status (what Anthropic's SDKs key their exceptions on).
pub fn error_body(err: &Error) -> (http::StatusCode, Bytes) {
    let mapped = ErrorResponse::from_error(err);
    let envelope = ErrorEnvelope::new(
        error_type_for_status(mapped.status.as_u16()),
        mapped.body.error.message,
    );
    let body = serde_json::to_vec(&envelope)
        .map(Bytes::from)
        .unwrap_or_else(|_| {
            Bytes::from_static(br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#)
        });
    (mapped.status, body)
}
