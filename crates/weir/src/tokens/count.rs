//! Token counts of request bodies, read in place.
//!
//! Chat requests follow OpenAI's documented framing (the tiktoken cookbook's
//! `num_tokens_from_messages`, which `tiktoken-rs` implements): every message costs 3 tokens of
//! framing plus its role and content; a `name` costs its tokens plus 1; each assistant tool call
//! (and legacy `function_call`) costs its name, its arguments and 1; the reply is primed with 3.
//! Parts the formula does not cover are estimated:
//!
//! - **Images** (`image_url` parts): 85 tokens with `detail: "low"`; otherwise 765, what a
//!   1024×1024 image costs at high detail on GPT-4o (85 + 170 per 512-pixel tile, 4 tiles). The
//!   real cost depends on the image's size, which the gateway does not decode.
//! - **Tool and function definitions, `response_format`**: the tokens of their JSON text. OpenAI
//!   renders definitions into a compact internal form, so this is usually a slight overcount.
//! - **Other parts** (audio, files): a token per 4 bytes of their JSON.
//!
//! Text is counted as ordinary text: special-token spellings such as `<|endoftext|>` in a message
//! count as the text they are, which is how OpenAI's API treats user content.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Encoding;
use crate::{body::RawObject, request::RequestFacts};

/// Framing tokens per message (`<|start|>{role}\n ... <|end|>`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra tokens when a message has a `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens priming the assistant's reply, once per request.
pub const REPLY_PRIMING: u64 = 3;
/// Extra tokens per tool call (or legacy function call) in an assistant message.
pub const TOKENS_PER_TOOL_CALL: u64 = 1;
/// An image part with `detail: "low"`.
pub const IMAGE_LOW_DETAIL: u64 = 85;
/// An image part with `detail` `high` or `auto` (a 1024×1024 image at high detail).
pub const IMAGE_HIGH_DETAIL: u64 = 765;

/// Tokens of `text` in `encoding`.
pub fn count_text(encoding: Encoding, text: &str) -> u64 {
    encoding.tokenizer().count(text) as u64
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow, default)]
    detail: Option<Cow<'a, str>>,
}

fn count_opt(encoding: Encoding, text: Option<&Cow<'_, str>>) -> u64 {
    text.map_or(0, |t| count_text(encoding, t))
}

/// A message's `content`: a string, an array of parts, or null.
fn count_content(encoding: Encoding, raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => {
            let s: Cow<'_, str> = serde_json::from_str(text).ok()?;
            Some(count_text(encoding, &s))
        }
        b'[' => {
            let parts: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            let mut total = 0;
            for raw_part in parts {
                let part: Part<'_> = serde_json::from_str(raw_part.get()).ok()?;
                total += match part.kind.as_deref() {
                    Some("text") | Some("input_text") => count_opt(encoding, part.text.as_ref()),
                    Some("refusal") => count_opt(encoding, part.refusal.as_ref()),
                    Some("image_url") | Some("input_image") => {
                        match part.image_url.as_ref().and_then(|i| i.detail.as_deref()) {
                            Some("low") => IMAGE_LOW_DETAIL,
                            _ => IMAGE_HIGH_DETAIL,
                        }
                    }
                    _ => (raw_part.get().len() as u64).div_ceil(4),
                };
            }
            Some(total)
        }
        b'n' => Some(0),
        _ => None,
    }
}

/// Input tokens of a chat completion request: its messages with their framing, the reply
/// priming, and the estimated tools, functions and response format (see the module docs).
/// `None` when `messages` is missing or not an array of message objects.
pub fn count_chat(encoding: Encoding, body: &RequestFacts) -> Option<u64> {
    count_chat_fields(encoding, body.object()?)
}

/// [`count_chat`] on the body's raw top-level fields.
pub(crate) fn count_chat_fields(encoding: Encoding, body: &RawObject) -> Option<u64> {
    let messages: Vec<Message<'_>> = serde_json::from_str(body.get("messages")?.get()).ok()?;
    let mut total = REPLY_PRIMING;
    for message in &messages {
        total += TOKENS_PER_MESSAGE + count_opt(encoding, message.role.as_ref());
        if let Some(content) = message.content {
            total += count_content(encoding, content)?;
        }
        if let Some(name) = &message.name {
            total += count_text(encoding, name) + TOKENS_PER_NAME;
        }
        total += count_opt(encoding, message.refusal.as_ref());
        let calls = message
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.function.as_ref())
            .chain(message.function_call.as_ref());
        for call in calls {
            total += count_opt(encoding, call.name.as_ref())
                + count_opt(encoding, call.arguments.as_ref())
                + TOKENS_PER_TOOL_CALL;
        }
    }
    for key in ["tools", "functions", "response_format"] {
        if let Some(raw) = body.get(key).filter(|r| r.get() != "null") {
            total += count_text(encoding, raw.get());
        }
    }
    Some(total)
}

/// Input tokens of an embeddings request's `input`: a string, an array of strings, a token array
/// (its length), or an array of token arrays. Embeddings have no per-input framing. `None` when
/// `input` has another shape.
pub fn count_embedding_input(encoding: Encoding, input: &RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item<'a> {
        Token(#[allow(dead_code)] u64),
        Text(#[serde(borrow)] Cow<'a, str>),
        Tokens(Vec<u64>),
    }
    let text = input.get();
    match text.as_bytes().first()? {
        b'"' => {
            let s: Cow<'_, str> = serde_json::from_str(text).ok()?;
            Some(count_text(encoding, &s))
        }
        b'[' => {
            let items: Vec<Item<'_>> = serde_json::from_str(text).ok()?;
            Some(
                items
                    .iter()
                    .map(|item| match item {
                        Item::Token(_) => 1,
                        Item::Text(s) => count_text(encoding, s),
                        Item::Tokens(tokens) => tokens.len() as u64,
                    })
                    .sum(),
            )
        }
        _ => None,
    }
}
