//! Anthropic SSE events → OpenAI `chat.completion.chunk` events, translated as they arrive.
//!
//! `message_start` gives the role chunk; text deltas become content chunks; each `tool_use` block
//! becomes one tool call whose OpenAI `index` counts tool calls only (a text block before it does
//! not shift it) and whose `id` is the block's, with its `input_json_delta`s as argument pieces;
//! `message_delta` gives the finish chunk; `message_stop` the usage chunk (when
//! `stream_options.include_usage` asked for one) and `data: [DONE]`. An `error` event ends the
//! stream with an error, which the engine's stream guard turns into an OpenAI error event (or, if
//! nothing was sent yet, into an ordinary — retryable — failed attempt). A stream that ends
//! without `message_stop` ends without `[DONE]`, which the guard reports as cut short.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::StatusCode;
use serde_json::{Value, json};

use super::response::{finish_reason, openai_usage, unix_now};
use crate::{
    api::anthropic::{
        AnthropicUsage, AnyBlock, BlockDelta, ContentBlock, StreamEvent, status_for_error_type,
    },
    error::Error,
    sse::{MAX_EVENT_BYTES, SseFramer, event_data},
    upstream::ByteStream,
};

/// The translation state of one stream.
#[derive(Debug, Default)]
pub(crate) struct Translator {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// Anthropic block index → OpenAI tool call index.
    tool_index: HashMap<usize, usize>,
    done: bool,
}

const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

impl Translator {
    /// A translator; `include_usage` adds the final usage chunk.
    pub(crate) fn new(include_usage: bool) -> Self {
        Translator {
            include_usage,
            created: unix_now(),
            ..Default::default()
        }
    }

    /// Whether `message_stop` was seen (and `[DONE]` written).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one event's `data:` payload, appending OpenAI events to `out`.
    pub(crate) fn on_event(&mut self, data: &str, out: &mut BytesMut) -> Result<(), Error> {
        let event: StreamEvent = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(e) => {
                let kind = serde_json::from_str::<Value>(data)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                return match kind {
                    // A new event type: skipping it is what Anthropic's versioning asks of clients.
                    Some(kind) if !KNOWN_EVENTS.contains(&kind.as_str()) => Ok(()),
                    _ => Err(Error::BadUpstreamResponse {
                        message: format!("Anthropic stream event: {e}"),
                    }),
                };
            }
        };
        match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage = message.usage;
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                AnyBlock::Known(ContentBlock::Text { text, .. }) if !text.is_empty() => {
                    self.chunk(out, json!({ "content": text }), None);
                }
                AnyBlock::Known(ContentBlock::ToolUse { id, name, .. }) => {
                    let tool = self.tool_index.len();
                    self.tool_index.insert(index, tool);
                    let call = json!({
                        "index": tool, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""},
                    });
                    self.chunk(out, json!({ "tool_calls": [call] }), None);
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.chunk(out, json!({ "content": text }), None),
                BlockDelta::InputJsonDelta { partial_json } => {
                    // Anthropic often opens with an empty fragment: nothing to send.
                    if let Some(&tool) = self.tool_index.get(&index).filter(|_| !partial_json.is_empty()) {
                        let call = json!({"index": tool, "function": {"arguments": partial_json}});
                        self.chunk(out, json!({ "tool_calls": [call] }), None);
                    }
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    // Cumulative counts; input may be restated here (newer API versions do).
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                    if u.cache_read_input_tokens.is_some() {
                        self.usage.cache_read_input_tokens = u.cache_read_input_tokens;
                    }
                    if u.cache_creation_input_tokens.is_some() {
                        self.usage.cache_creation_input_tokens = u.cache_creation_input_tokens;
                    }
                }
                if let Some(reason) = finish_reason(delta.stop_reason.as_deref()) {
                    self.chunk(out, json!({}), Some(reason));
                }
            }
            StreamEvent::MessageStop => {
                if self.include_usage {
                    let usage = openai_usage(&self.usage);
                    self.write(
                        out,
                        &json!({
                            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": usage,
                        }),
                    );
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping => {}
            StreamEvent::Error { error } => {
                let status = StatusCode::from_u16(status_for_error_type(&error.kind))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Err(Error::Upstream {
                    status,
                    message: error.message,
                    code: Some(error.kind.clone()),
                    error_type: Some(error.kind),
                    param: None,
                    retry_after: None,
                });
            }
        }
        Ok(())
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        self.write(
            out,
            &json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
        );
    }

    fn write(&self, out: &mut BytesMut, value: &Value) {
        out.extend_from_slice(b"data: ");
        // Our own JSON values always serialise.
        if let Ok(bytes) = serde_json::to_vec(value) {
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(b"\n\n");
    }
}

/// Translates an Anthropic event stream incrementally: each upstream read yields the OpenAI
/// events of the Anthropic events it completed (nothing is buffered beyond one partial event).
pub(crate) fn translate(upstream: ByteStream, translator: Translator) -> ByteStream {
    struct State {
        upstream: ByteStream,
        framer: SseFramer,
        translator: Translator,
        /// An error to yield after the events that preceded it.
        pending: Option<Error>,
        finished: bool,
    }
    let state = State {
        upstream,
        framer: SseFramer::default(),
        translator,
        pending: None,
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(err) = st.pending.take() {
                st.finished = true;
                return Some((Err(err), st));
            }
            if st.finished {
                return None;
            }
            let chunk = match st.upstream.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => {
                    st.finished = true;
                    return Some((Err(err), st));
                }
                None => return None,
            };
            st.framer.push(&chunk);
            let mut out = BytesMut::new();
            while let Some(event) = st.framer.next_event() {
                let Some(data) = event_data(&event) else { continue };
                if let Err(err) = st.translator.on_event(&data, &mut out) {
                    st.pending = Some(err);
                    break;
                }
                if st.translator.is_done() {
                    // Nothing after message_stop matters; stop reading.
                    st.finished = true;
                    break;
                }
            }
            if st.pending.is_none() && st.framer.pending().len() > MAX_EVENT_BYTES {
                st.pending = Some(Error::BadUpstreamResponse {
                    message: format!("an event of the Anthropic stream exceeded {MAX_EVENT_BYTES} bytes"),
                });
            }
            if !out.is_empty() {
                return Some((Ok::<Bytes, Error>(out.freeze()), st));
            }
        }
    }))
}
