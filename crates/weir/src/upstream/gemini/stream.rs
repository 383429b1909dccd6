//! Gemini's SSE stream (`streamGenerateContent?alt=sse`) → OpenAI `chat.completion.chunk` events,
//! one upstream event at a time (nothing is buffered beyond an incomplete event).
//!
//! Each Gemini event is a whole `GenerateContentResponse` holding the *new* parts of each
//! candidate. Per candidate we send a first delta with `role`, text deltas, tool calls (Gemini
//! sends each call whole, so one delta carries id, name and all arguments), and a chunk with the
//! `finish_reason` when Gemini gives one. When the upstream ends after finishing, a usage chunk
//! follows if `stream_options.include_usage` asked for it, then `data: [DONE]`. An upstream that
//! ends before any finish reason sends no `[DONE]`, so the engine's stream guard reports the
//! truncation; an `{"error": ...}` event becomes an error the guard sends as an OpenAI error event.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::{
    error::stream_error,
    response::{ReplyContext, finish_reason, split_parts, usage},
};
use crate::{
    api::{ChatCompletionChunk, ChatDelta, ChunkChoice, Usage, gemini::GenerateContentResponse},
    error::Error,
    sse::{SseFramer, event_data},
    upstream::ByteStream,
};

/// Per-candidate progress.
#[derive(Debug, Default, Clone)]
struct CandidateState {
    role_sent: bool,
    tool_calls: usize,
    finished: bool,
}

/// The translation state of one stream.
struct Translator {
    ctx: ReplyContext,
    include_usage: bool,
    candidates: Vec<CandidateState>,
    usage: Option<Usage>,
    framer: SseFramer,
}

impl Translator {
    fn state(&mut self, index: usize) -> &mut CandidateState {
        if self.candidates.len() <= index {
            self.candidates.resize(index + 1, CandidateState::default());
        }
        &mut self.candidates[index]
    }

    fn any_finished(&self) -> bool {
        self.candidates.iter().any(|c| c.finished)
    }

    /// Translates every complete event buffered so far into `out`.
    fn drain(&mut self, out: &mut BytesMut) -> Result<(), Error> {
        while let Some(event) = self.framer.next_event() {
            self.event(&event, out)?;
        }
        Ok(())
    }

    fn event(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        let Some(data) = event_data(event) else {
            return Ok(());
        };
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_str(data).map_err(|e| Error::BadUpstreamResponse {
            message: format!("a Gemini stream event is not JSON: {e}"),
        })?;
        if value.get("error").is_some() {
            return Err(stream_error(&value));
        }
        let resp: GenerateContentResponse =
            serde_json::from_value(value).map_err(|e| Error::BadUpstreamResponse {
                message: format!("unexpected Gemini stream event: {e}"),
            })?;
        if let Some(model) = &resp.model_version {
            self.ctx.model.clone_from(model);
        }
        if let Some(meta) = &resp.usage_metadata {
            self.usage = Some(usage(meta));
        }
        if resp.candidates.is_empty()
            && resp
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
        {
            // A blocked prompt: one empty choice finished by the content filter.
            let state = self.state(0);
            state.finished = true;
            let delta = ChatDelta {
                role: Some("assistant".to_owned()),
                ..ChatDelta::default()
            };
            self.chunk(out, 0, delta, Some("content_filter"));
            return Ok(());
        }
        for (position, candidate) in resp.candidates.iter().enumerate() {
            let index = candidate.index.map_or(position, |i| i as usize);
            let parts = candidate.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
            let first_call = self.state(index).tool_calls;
            let (text, calls) = split_parts(parts, first_call);
            let state = self.state(index);
            state.tool_calls += calls.len();
            let role = (!state.role_sent).then(|| "assistant".to_owned());
            state.role_sent = true;
            let called_tools = state.tool_calls > 0;
            if role.is_some() || text.is_some() || !calls.is_empty() {
                let delta = ChatDelta {
                    role,
                    // The first delta carries `content` even when empty, as OpenAI's does.
                    content: text.or_else(|| calls.is_empty().then(String::new)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: Map::new(),
                };
                self.chunk(out, index as u32, delta, None);
            }
            if let Some(reason) = &candidate.finish_reason {
                self.state(index).finished = true;
                let reason = finish_reason(reason, called_tools);
                self.chunk(out, index as u32, ChatDelta::default(), Some(reason));
            }
        }
        Ok(())
    }

    fn chunk(&self, out: &mut BytesMut, index: u32, delta: ChatDelta, finish: Option<&str>) {
        let mut extra = Map::new();
        extra.insert("logprobs".to_owned(), Value::Null);
        let chunk = ChatCompletionChunk {
            id: self.ctx.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.ctx.created,
            model: self.ctx.model.clone(),
            choices: vec![ChunkChoice {
                index,
                delta,
                finish_reason: finish.map(str::to_owned),
                extra,
            }],
            usage: None,
            extra: Map::new(),
        };
        write_event(out, &chunk);
    }

    /// The end of a complete stream: the usage chunk if asked for, then `[DONE]`.
    fn finish(&self, out: &mut BytesMut) {
        if self.include_usage {
            let chunk = ChatCompletionChunk {
                id: self.ctx.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.ctx.created,
                model: self.ctx.model.clone(),
                choices: Vec::new(),
                usage: Some(self.usage.clone().unwrap_or_default()),
                extra: Map::new(),
            };
            write_event(out, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

fn write_event(out: &mut BytesMut, chunk: &ChatCompletionChunk) {
    out.extend_from_slice(b"data: ");
    let mut writer = std::mem::take(out).writer();
    // Serialising our own plain structs into memory cannot fail; an empty object keeps the
    // event well formed if that ever changed.
    if serde_json::to_writer(&mut writer, chunk).is_err() {
        writer.get_mut().extend_from_slice(b"{}");
    }
    *out = writer.into_inner();
    out.extend_from_slice(b"\n\n");
}

/// Wraps a Gemini SSE body into an OpenAI chat SSE body.
pub(crate) fn translate(upstream: ByteStream, ctx: ReplyContext, include_usage: bool) -> ByteStream {
    struct State {
        upstream: ByteStream,
        translator: Translator,
        queue: VecDeque<Result<Bytes, Error>>,
        ended: bool,
    }
    let state = State {
        upstream,
        translator: Translator {
            ctx,
            include_usage,
            candidates: Vec::new(),
            usage: None,
            framer: SseFramer::default(),
        },
        queue: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((item, st));
            }
            if st.ended {
                return None;
            }
            let mut out = BytesMut::new();
            match st.upstream.next().await {
                Some(Ok(chunk)) => {
                    st.translator.framer.push(&chunk);
                    let result = st.translator.drain(&mut out);
                    if !out.is_empty() {
                        st.queue.push_back(Ok(out.freeze()));
                    }
                    if let Err(err) = result {
                        st.queue.push_back(Err(err));
                        st.ended = true;
                    }
                }
                Some(Err(err)) => {
                    st.queue.push_back(Err(err));
                    st.ended = true;
                }
                None => {
                    st.ended = true;
                    // A last event without its blank line still counts.
                    let tail = st.translator.framer.pending().to_vec();
                    let mut result = Ok(());
                    if !tail.iter().all(u8::is_ascii_whitespace) {
                        result = st.translator.event(&tail, &mut out);
                    }
                    if result.is_ok() && st.translator.any_finished() {
                        st.translator.finish(&mut out);
                    }
                    if !out.is_empty() {
                        st.queue.push_back(Ok(out.freeze()));
                    }
                    if let Err(err) = result {
                        st.queue.push_back(Err(err));
                    }
                }
            }
        }
    }))
}
