//! `POST chat/completions`: a deterministic assistant reply, whole or as an SSE stream.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    DEFAULT_CHUNKS, DEFAULT_CONTENT, DONE_EVENT, Directives, Reply, ReplyBody, error, next_id, ok_json,
    unix_now, word_count,
};

/// OpenAI's own ceiling for `n`.
const MAX_N: u64 = 128;

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    x_mock: Option<Value>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<MessageContent>,
}

/// Only text matters for the prompt estimate; anything else is accepted and ignored, so odd
/// but legal messages (tool calls, audio parts) never turn into a 400.
#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize, Clone, Copy)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u64,
    message: ResponseMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ResponseMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<&'a str>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless `include_usage`; then `null` on every chunk but the last (OpenAI's shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u64,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Clone, Copy, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

const FINGERPRINT: &str = "fp_weir_mock";

pub(super) fn respond(body: &[u8], overrides: &Directives) -> Reply {
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return error::from_serde(&err),
    };
    let Some(model) = request.model.as_deref() else {
        return error::missing("model");
    };
    let messages = match request.messages.as_deref() {
        None => return error::missing("messages"),
        Some([]) => {
            return error::invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an \
                 empty array instead.",
                Some("messages"),
                Some("empty_array"),
            );
        }
        Some(messages) => messages,
    };
    let mut directives = match Directives::from_parts(Some(model), request.x_mock.as_ref()) {
        Ok(directives) => directives,
        Err(err) => return error::from_directive(&err),
    };
    directives.overlay(overrides);

    let n = request.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return error::invalid(
            &format!("Invalid 'n': expected a value between 1 and {MAX_N}, got {n}."),
            Some("n"),
            Some("integer_out_of_range"),
        );
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    if max_tokens == Some(0) {
        return error::invalid(
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.",
            Some("max_tokens"),
            Some("integer_below_min_value"),
        );
    }

    let full = directives.content.as_deref().unwrap_or(DEFAULT_CONTENT);
    let (text, finish_reason) = truncate(full, max_tokens);
    let prompt_tokens = messages.iter().map(prompt_words).sum::<u64>().max(1);
    let completion_tokens = (word_count(&text).max(1)) * n;
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: 0,
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: 0,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    };
    let id = format!("chatcmpl-mock-{}", next_id());
    let created = unix_now();

    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let stream = Stream {
            id: &id,
            created,
            model,
            n,
            include_usage,
        };
        let chunks = directives.chunks.unwrap_or(DEFAULT_CHUNKS);
        return Reply {
            status: 200,
            body: ReplyBody::Events(stream.events(&text, chunks, finish_reason, usage)),
        };
    }

    let choices = (0..n)
        .map(|index| Choice {
            index,
            message: ResponseMessage {
                role: "assistant",
                content: &text,
                refusal: None,
                annotations: [],
            },
            logprobs: None,
            finish_reason,
        })
        .collect();
    ok_json(&Completion {
        id: &id,
        object: "chat.completion",
        created,
        model,
        choices,
        usage,
        system_fingerprint: FINGERPRINT,
    })
}

/// Cuts `text` to `max_tokens` words (our token estimate), reporting `length` when it did.
pub(super) fn truncate(text: &str, max_tokens: Option<u64>) -> (String, &'static str) {
    let Some(max) = max_tokens.and_then(|max| usize::try_from(max).ok()) else {
        return (text.to_owned(), "stop");
    };
    if text.split_whitespace().nth(max).is_none() {
        return (text.to_owned(), "stop");
    }
    (
        text.split_whitespace().take(max).collect::<Vec<_>>().join(" "),
        "length",
    )
}

fn prompt_words(message: &Message) -> u64 {
    match &message.content {
        Some(MessageContent::Text(text)) => word_count(text),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|part| part.text.as_deref())
            .map(word_count)
            .sum(),
        Some(MessageContent::Other(_)) | None => 0,
    }
}

/// What every chunk of one stream shares.
struct Stream<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    n: u64,
    include_usage: bool,
}

impl Stream<'_> {
    /// Role chunk, `pieces` content chunks, finish chunk, optional usage chunk, `[DONE]`.
    fn events(&self, text: &str, pieces: usize, finish_reason: &'static str, usage: Usage) -> Vec<Bytes> {
        let mut events = Vec::with_capacity(pieces + 4);
        let role = Delta {
            role: Some("assistant"),
            content: Some(""),
        };
        events.push(self.event(role, None, None));
        for piece in split_even(text, pieces) {
            let delta = Delta {
                role: None,
                content: Some(piece),
            };
            events.push(self.event(delta, None, None));
        }
        events.push(self.event(Delta::default(), Some(finish_reason), None));
        if self.include_usage {
            events.push(self.serialise(&[], Some(Some(usage))));
        }
        events.push(Bytes::from_static(DONE_EVENT));
        events
    }

    /// One chunk carrying the same delta for each of the `n` choices.
    fn event(&self, delta: Delta<'_>, finish_reason: Option<&'static str>, usage: Option<Usage>) -> Bytes {
        let choices: Vec<ChunkChoice<'_>> = (0..self.n)
            .map(|index| ChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason,
            })
            .collect();
        let usage = self.include_usage.then_some(usage);
        self.serialise(&choices, usage)
    }

    fn serialise(&self, choices: &[ChunkChoice<'_>], usage: Option<Option<Usage>>) -> Bytes {
        let chunk = Chunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        };
        let mut out = BytesMut::with_capacity(256).writer();
        out.get_mut().put_slice(b"data: ");
        // Writing into memory cannot fail for our plain structs; an empty object keeps the event
        // well formed if that invariant were ever broken.
        if serde_json::to_writer(&mut out, &chunk).is_err() {
            out.get_mut().put_slice(b"{}");
        }
        out.get_mut().put_slice(b"\n\n");
        out.into_inner().freeze()
    }
}

/// Splits `text` into exactly `pieces` parts of near-equal character counts (some may be empty
/// when there are more pieces than characters), so `chunks` always means the number of events.
pub(super) fn split_even(text: &str, pieces: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = bounds.len() - 1;
    (0..pieces)
        .map(|i| {
            let start = bounds.get(i * chars / pieces).copied().unwrap_or(text.len());
            let end = bounds
                .get((i + 1) * chars / pieces)
                .copied()
                .unwrap_or(text.len());
            text.get(start..end).unwrap_or("")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::respond as content_respond;
    use super::*;
    use serde_json::json;

    fn call(body: Value) -> (u16, Value) {
        let reply = content_respond("POST", "chat/completions", body.to_string().as_bytes());
        assert!(!reply.is_stream());
        (reply.status, serde_json::from_slice(&reply.to_bytes()).unwrap())
    }

    fn events(body: Value) -> Vec<String> {
        let reply = content_respond("POST", "chat/completions", body.to_string().as_bytes());
        assert_eq!(reply.status, 200);
        let ReplyBody::Events(events) = reply.body else {
            panic!("not a stream")
        };
        events
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    fn data(event: &str) -> Value {
        let json = event
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn completion_shape() {
        let (status, v) = call(json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "one two three"}],
        }));
        assert_eq!(status, 200);
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], "gpt-4o-mini");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        assert_eq!(choices[0]["finish_reason"], "stop");
        assert_eq!(choices[0]["logprobs"], Value::Null);
        assert_eq!(choices[0]["message"]["role"], "assistant");
        assert_eq!(choices[0]["message"]["content"], DEFAULT_CONTENT);
        assert_eq!(choices[0]["message"]["refusal"], Value::Null);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert_eq!(v["usage"]["completion_tokens"], 9);
        assert_eq!(v["usage"]["total_tokens"], 12);
    }

    #[test]
    fn validation_errors() {
        let reply = content_respond("POST", "chat/completions", b"{not json");
        assert_eq!(reply.status, 400);
        let v: Value = serde_json::from_slice(&reply.to_bytes()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], Value::Null);

        let (status, v) = call(json!({"messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["param"], "model");
        let (status, v) = call(json!({"model": "m"}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], "missing_required_parameter");
        let (status, v) = call(json!({"model": "m", "messages": []}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["param"], "messages");
        let (status, _) = call(json!({"model": "m", "messages": "hi"}));
        assert_eq!(status, 400);
        let (status, v) = call(json!({"model": "m", "messages": [{"role": "user"}], "n": 0}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["param"], "n");
        let (status, v) = call(json!({"model": "mock:chunks=zero", "messages": [{"role": "user"}]}));
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "invalid_mock_directive");
    }

    #[test]
    fn lenient_message_contents() {
        let (status, v) = call(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "tool", "content": 42},
            ],
        }));
        assert_eq!(status, 200);
        assert_eq!(v["usage"]["prompt_tokens"], 2);
    }

    #[test]
    fn n_and_max_tokens() {
        let (_, v) = call(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3, "max_tokens": 2,
        }));
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        assert_eq!(choices[2]["index"], 2);
        assert_eq!(choices[1]["message"]["content"], "This is");
        assert_eq!(choices[1]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 6);
        // max_completion_tokens wins over max_tokens; enough room means a normal stop.
        let (_, v) = call(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 1, "max_completion_tokens": 100,
        }));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn content_directive_from_x_mock_and_model() {
        let (_, v) = call(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}], "x_mock": {"content": "hey there"},
        }));
        assert_eq!(v["choices"][0]["message"]["content"], "hey there");
        assert_eq!(v["usage"]["completion_tokens"], 2);
        let (_, v) = call(json!({"model": "mock:content=yo", "messages": [{"role": "user"}]}));
        assert_eq!(v["choices"][0]["message"]["content"], "yo");
        assert_eq!(v["model"], "mock:content=yo");
    }

    #[test]
    fn stream_shape() {
        let events = events(json!({
            "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": true,
        }));
        // role + 5 pieces + finish + [DONE]
        assert_eq!(events.len(), 8);
        assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = events[..7].iter().map(|e| data(e)).collect();
        let id = chunks[0]["id"].clone();
        for chunk in &chunks {
            assert_eq!(chunk["id"], id);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "gpt-4o");
            assert_eq!(chunk["created"], chunks[0]["created"]);
            assert!(chunk.get("usage").is_none());
        }
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text: String = chunks[1..6]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
                c["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(text, DEFAULT_CONTENT);
        assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn stream_include_usage_and_chunks() {
        let events = events(json!({
            "model": "m", "messages": [{"role": "user", "content": "a b"}], "stream": true,
            "stream_options": {"include_usage": true}, "x_mock": {"chunks": 2, "content": "hello world"},
        }));
        assert_eq!(events.len(), 1 + 2 + 1 + 1 + 1);
        let usage_chunk = data(&events[4]);
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["prompt_tokens"], 2);
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 2);
        for event in &events[..4] {
            assert_eq!(data(event)["usage"], Value::Null);
            assert!(data(event).as_object().unwrap().contains_key("usage"));
        }
        assert_eq!(data(&events[1])["choices"][0]["delta"]["content"], "hello");
        assert_eq!(data(&events[2])["choices"][0]["delta"]["content"], " world");
    }

    #[test]
    fn split_even_is_exact() {
        assert_eq!(split_even("abcdef", 3), vec!["ab", "cd", "ef"]);
        assert_eq!(split_even("ab", 4).concat(), "ab");
        assert_eq!(split_even("ab", 4).len(), 4);
        assert_eq!(split_even("héllo wörld", 3).concat(), "héllo wörld");
        assert_eq!(split_even("", 2), vec!["", ""]);
    }
}
