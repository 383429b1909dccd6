//! OpenAI `chat.completion.chunk` events → Anthropic's stream event sequence.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use super::response::{anthropic_usage, error_body, stop_reason};
use crate::{api::Usage, error::Error, sse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Tool(usize),
}

/// Translates one stream, event by event (state: the open block and tool call indices).
///
/// The first chunk opens the message (`message_start`); text opens a text block, each new tool
/// call (an OpenAI `index` seen for the first time, or a new `id`) closes the open block and
/// opens a `tool_use` block with the call's id and name; argument pieces become
/// `input_json_delta`s of their call's block. `[DONE]` closes the open block and sends
/// `message_delta` (stop reason, usage) and `message_stop`.
#[derive(Debug, Default)]
pub struct EventTranslator {
    started: bool,
    finished: bool,
    next_block: usize,
    open: Option<Open>,
    /// OpenAI tool call index → Anthropic block index.
    tools: HashMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

fn event(out: &mut BytesMut, data: &Value) {
    let kind = data["type"].as_str().unwrap_or("message");
    out.extend_from_slice(format!("event: {kind}\ndata: {data}\n\n").as_bytes());
}

impl EventTranslator {
    /// A translator for a new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the stream was ended (by `[DONE]` or an error).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Translates OpenAI SSE bytes holding whole events (as the engine's stream guard yields them).
    pub fn on_events(&mut self, events: &[u8]) -> Bytes {
        let mut framer = sse::SseFramer::default();
        framer.push(events);
        let mut out = BytesMut::new();
        while let Some(ev) = framer.next_event() {
            if let Some(data) = sse::event_data(&ev) {
                self.on_data(&data, &mut out);
            }
        }
        out.freeze()
    }

    /// Ends the stream with an Anthropic `error` event for `err`.
    pub fn on_error(&mut self, err: &Error) -> Bytes {
        let (_, body) = error_body(err);
        self.finished = true;
        let mut out = BytesMut::new();
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }

    fn on_data(&mut self, data: &str, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        if data.trim() == "[DONE]" {
            self.finish(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            // Skipping it would end the message as if complete, minus this chunk's text: the
            // client must learn that its answer is broken. (The engine's stream guard already
            // ends chat streams at such an event; this holds for any stream given to it.)
            let err = Error::BadUpstreamResponse {
                message: "an event of the upstream stream is not valid JSON; the stream was ended there"
                    .to_owned(),
            };
            out.extend_from_slice(&self.on_error(&err));
            return;
        };
        if let Some(error) = chunk.get("error") {
            // An in-band error from an OpenAI-compatible upstream.
            let message = error["message"].as_str().unwrap_or("upstream error");
            event(
                out,
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            );
            self.finished = true;
            return;
        }
        self.start(&chunk, out);
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = serde_json::from_value(usage.clone()).ok();
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            return;
        };
        let delta = &choice["delta"];
        for key in ["content", "refusal"] {
            if let Some(text) = delta[key].as_str().filter(|t| !t.is_empty()) {
                self.text(text, out);
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.tool_call(call, out);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        event(
            out,
            &json!({"type": "message_start", "message": {
                "id": chunk["id"].as_str().unwrap_or("msg_weir"),
                "type": "message", "role": "assistant", "content": [],
                "model": chunk["model"].as_str().unwrap_or_default(),
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
    }

    fn close_open(&mut self, out: &mut BytesMut) {
        if let Some(Open::Text(index) | Open::Tool(index)) = self.open.take() {
            event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut BytesMut) -> usize {
        self.close_open(out);
        let index = self.next_block;
        self.next_block += 1;
        event(
            out,
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Open::Text(index));
                index
            }
        };
        event(
            out,
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn tool_call(&mut self, call: &Value, out: &mut BytesMut) {
        let openai_index = call["index"].as_u64().unwrap_or(0);
        let new_call = call["id"].is_string() || !self.tools.contains_key(&openai_index);
        if new_call {
            let id = call["id"]
                .as_str()
                .map_or_else(|| format!("toolu_weir_{openai_index}"), str::to_owned);
            let name = call["function"]["name"].as_str().unwrap_or_default();
            let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
            let index = self.open_block(block, out);
            self.open = Some(Open::Tool(index));
            self.tools.insert(openai_index, index);
        }
        let Some(&index) = self.tools.get(&openai_index) else {
            return;
        };
        if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
            event(
                out,
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.start(&Value::Null, out);
        self.close_open(out);
        let usage = anthropic_usage(self.usage.as_ref());
        event(
            out,
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
            "usage": usage}),
        );
        event(out, &json!({"type": "message_stop"}));
        self.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_chunk_ends_the_stream_with_an_error_event() {
        let mut t = EventTranslator::new();
        let out = t.on_events(
            b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
              data: {\"choices\":[{\"delta\":{\"content\":\"lo\n\n\
              data: {\"choices\":[{\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}\n\n\
              data: [DONE]\n\n",
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Hel"), "{text}");
        assert!(text.trim_end().starts_with("event: message_start"), "{text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: error"), "{text}");
        assert!(
            !text.contains("message_stop") && !text.contains("\"!\""),
            "{text}"
        );
        assert!(t.is_finished());
    }
}
