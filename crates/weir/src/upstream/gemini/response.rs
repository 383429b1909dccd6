//! Gemini `generateContent` response → OpenAI `chat.completion`.

use serde_json::{Map, Value, json};

use super::THOUGHT_SIGNATURE_SEPARATOR;
use crate::api::{
    ChatChoice, ChatCompletionResponse, ChatMessage, Usage,
    gemini::{Candidate, GenerateContentResponse, Part, UsageMetadata},
};

/// What every translated answer of one request shares.
#[derive(Debug, Clone)]
pub(crate) struct ReplyContext {
    /// `chatcmpl-...`, the same on every chunk of a stream.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The model name the request used (Gemini's `modelVersion` wins when present).
    pub model: String,
}

impl ReplyContext {
    /// A fresh id and the current time.
    pub(crate) fn new(model: &str) -> Self {
        ReplyContext {
            id: format!("chatcmpl-{}", random_id()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            model: model.to_owned(),
        }
    }
}

/// 24 random alphanumerics, as OpenAI's ids have.
pub(super) fn random_id() -> String {
    (0..24).map(|_| fastrand::alphanumeric()).collect()
}

/// Gemini's finish reason in OpenAI's words. `tool_calls` wins over a plain stop when the
/// candidate called functions (Gemini says `STOP` then).
pub(super) fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// `usageMetadata` → OpenAI usage: thinking tokens count as output (they are billed so) and are
/// reported as `reasoning_tokens`; context-cache hits as `cached_tokens`.
pub(super) fn usage(meta: &UsageMetadata) -> Usage {
    let prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count;
    let completion = meta.candidates_token_count + meta.thoughts_token_count;
    let mut extra = Map::new();
    extra.insert(
        "prompt_tokens_details".to_owned(),
        json!({ "cached_tokens": meta.cached_content_token_count }),
    );
    extra.insert(
        "completion_tokens_details".to_owned(),
        json!({ "reasoning_tokens": meta.thoughts_token_count }),
    );
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: if meta.total_token_count > 0 {
            meta.total_token_count
        } else {
            prompt + completion
        },
        extra,
    }
}

/// The text (thinking parts left out) and tool calls of a candidate's parts. Tool calls are
/// numbered from `first_index` (a stream continues its numbering across events).
pub(super) fn split_parts(parts: &[Part], first_index: usize) -> (Option<String>, Vec<Value>) {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for part in parts {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(t) = &part.text {
            text.get_or_insert_with(String::new).push_str(t);
        }
        if let Some(call) = &part.function_call {
            let mut id = call.id.clone().unwrap_or_else(|| format!("call_{}", random_id()));
            // A thinking model's signature must come back with the call in the next turn; the
            // client only keeps the id, so the signature rides in it.
            if let Some(sig) = &part.thought_signature {
                id.push_str(THOUGHT_SIGNATURE_SEPARATOR);
                id.push_str(sig);
            }
            let arguments = call
                .args
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            calls.push(json!({
                "index": first_index + calls.len(),
                "id": id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }));
        }
    }
    (text, calls)
}

fn choice(candidate: &Candidate, position: usize) -> ChatChoice {
    let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
    let (text, mut calls) = split_parts(parts, 0);
    for call in &mut calls {
        // `index` belongs to stream deltas only.
        if let Some(obj) = call.as_object_mut() {
            obj.remove("index");
        }
    }
    let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
    let finish = finish_reason(reason, !calls.is_empty());
    let mut extra = Map::new();
    extra.insert("logprobs".to_owned(), Value::Null);
    ChatChoice {
        index: candidate.index.unwrap_or(position as u32),
        message: ChatMessage {
            role: "assistant".to_owned(),
            content: Some(text.map_or(Value::Null, Value::String)),
            tool_calls: (!calls.is_empty()).then_some(calls),
            refusal: None,
            ..ChatMessage::default()
        },
        finish_reason: Some(finish.to_owned()),
        extra,
    }
}

/// A whole response. A prompt Gemini blocked (no candidates, `promptFeedback.blockReason`)
/// becomes one empty choice finished by `content_filter`, as OpenAI reports filtered prompts.
pub(crate) fn chat_completion(resp: &GenerateContentResponse, ctx: &ReplyContext) -> ChatCompletionResponse {
    let mut choices: Vec<ChatChoice> = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| choice(c, i))
        .collect();
    if choices.is_empty() {
        let blocked = resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_some();
        let mut extra = Map::new();
        extra.insert("logprobs".to_owned(), Value::Null);
        choices.push(ChatChoice {
            index: 0,
            message: ChatMessage {
                role: "assistant".to_owned(),
                content: Some(Value::Null),
                ..ChatMessage::default()
            },
            finish_reason: Some(if blocked { "content_filter" } else { "stop" }.to_owned()),
            extra,
        });
    }
    ChatCompletionResponse {
        id: resp
            .response_id
            .as_ref()
            .map_or_else(|| ctx.id.clone(), |id| format!("chatcmpl-{id}")),
        object: "chat.completion".to_owned(),
        created: ctx.created,
        model: resp.model_version.clone().unwrap_or_else(|| ctx.model.clone()),
        choices,
        usage: resp.usage_metadata.as_ref().map(usage),
        system_fingerprint: None,
        extra: Map::new(),
    }
}
