//! Anthropic Messages API wire types (`POST /v1/messages`), for both directions: the Anthropic
//! provider sends [`MessagesRequest`] and reads [`MessagesResponse`] and [`StreamEvent`]s; the
//! gateway's Anthropic-compatible endpoint reads requests and writes responses and events.
//!
//! Checked against Anthropic's API reference (Messages, streaming, errors, models). Content
//! blocks this crate does not model (server tools, citations, documents on the response side)
//! are kept as raw JSON by [`AnyBlock::Other`] so an answer never fails to parse because
//! Anthropic added a block type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;

/// The `anthropic-version` header value this crate speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `POST /v1/messages` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// Model name.
    pub model: String,
    /// The conversation: alternating `user` and `assistant` turns.
    pub messages: Vec<Message>,
    /// Output cap; required by Anthropic.
    pub max_tokens: u32,
    /// System prompt: plain text or text blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
    /// Custom stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream the answer as server-sent events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature (0 to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Tool definitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model may use tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Request metadata (`user_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Content blocks.
    pub content: Vec<ContentBlock>,
}

/// A content block of a request or response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Prompt-caching marker (`{"type":"ephemeral"}`), kept as given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// An image.
    Image {
        /// Where the image comes from.
        source: ImageSource,
    },
    /// A tool call made by the assistant.
    ToolUse {
        /// Call id (`toolu_...`), echoed by the matching `tool_result`.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments, a JSON object.
        input: Value,
    },
    /// The result of a tool call, sent by the user.
    ToolResult {
        /// The `tool_use` block this answers.
        tool_use_id: String,
        /// Text or blocks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Value>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Extended thinking (response side).
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Integrity signature.
        #[serde(default)]
        signature: Option<String>,
    },
}

/// An image's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline bytes.
    Base64 {
        /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`.
        media_type: String,
        /// Base64 data.
        data: String,
    },
    /// A public URL Anthropic fetches.
    Url {
        /// The URL.
        url: String,
    },
}

/// A block as found in a response: a modelled one, or any other kept as raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnyBlock {
    /// A block this crate models.
    Known(ContentBlock),
    /// Anything else (server tool use, redacted thinking, ...).
    Other(Value),
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of its input.
    pub input_schema: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolChoice {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tool, for `tool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// At most one tool call per answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// `msg_...`.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    /// Always `assistant`.
    #[serde(default = "assistant_role")]
    pub role: String,
    /// The generated blocks.
    #[serde(default)]
    pub content: Vec<AnyBlock>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Which stop sequence matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Token usage.
    #[serde(default)]
    pub usage: AnthropicUsage,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

/// Anthropic's usage: input excludes the cached parts, which are reported apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthropicUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// One streamed event (the SSE `data:` payload; its `event:` name equals `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// First event: the message with empty content and the input usage.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A block begins.
    ContentBlockStart {
        /// Its position in `content`.
        index: usize,
        /// The block, with empty text / empty input.
        content_block: AnyBlock,
    },
    /// A piece of a block.
    ContentBlockDelta {
        /// Which block.
        index: usize,
        /// The piece.
        delta: BlockDelta,
    },
    /// A block ends.
    ContentBlockStop {
        /// Which block.
        index: usize,
    },
    /// Top-level changes: stop reason, cumulative output usage.
    MessageDelta {
        /// Stop reason and sequence.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    /// Last event of a complete stream.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// The stream failed.
    Error {
        /// What failed.
        error: ErrorDetail,
    },
}

/// The piece carried by a `content_block_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// More of a tool call's input, as a fragment of JSON text.
    InputJsonDelta {
        /// The fragment.
        partial_json: String,
    },
    /// More thinking.
    ThinkingDelta {
        /// The text.
        thinking: String,
    },
    /// A thinking block's signature.
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// Citations and future delta kinds.
    #[serde(other)]
    Other,
}

/// `message_delta.delta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why the model stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Which stop sequence matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// `{"type":"error","error":{"type","message"}}`: Anthropic's error body and stream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub error: ErrorDetail,
}

/// The inner error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// For a human.
    #[serde(default)]
    pub message: String,
}

impl ErrorEnvelope {
    /// An error of `kind` with `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        ErrorEnvelope {
            kind: "error".to_owned(),
            error: ErrorDetail {
                kind: kind.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// Anthropic's error `type` for an HTTP status (what its SDKs expect for that status).
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ if status < 500 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The HTTP status Anthropic uses for an error `type` (for errors arriving inside a stream,
/// which carry a type but no status of their own).
pub fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// `GET /v1/models` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsPage {
    /// The models.
    pub data: Vec<ModelInfo>,
    /// More pages follow.
    #[serde(default)]
    pub has_more: bool,
}

/// One model of a [`ModelsPage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model id.
    pub id: String,
    /// RFC 3339 release time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Human name.
    #[serde(default)]
    pub display_name: Option<String>,
}
