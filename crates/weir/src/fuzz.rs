//! Entry points for fuzzing: each takes arbitrary bytes, runs one parser or translation the
//! gateway applies to untrusted input (a client's body, an upstream's answer or events, a config
//! file), and returns what it produced. None may panic, hang or allocate without bound; the
//! targets in `fuzz/` (libFuzzer, built on stable) also check invariants on the results, and
//! `tests/fuzz_corpus.rs` replays the seed corpus and every input a fuzzer ever crashed on.
//!
//! Not a stable API: hidden from the docs, for the fuzzers and their regression tests only.

use bytes::Bytes;
use futures::StreamExt as _;
use http::HeaderValue;

use crate::api::ChatCompletionRequest;
use crate::api::gemini::GenerateContentResponse;
use crate::body::RawObject;
use crate::request::{Endpoint, RequestFacts};
use crate::sse::{ByteStream, SseFramer, event_data, usage_in};
use crate::upstream::{anthropic, gemini};

/// Splits `data` at positions drawn from its first byte, so a target sees the same bytes in
/// pieces of varying sizes (an SSE event across reads is where framers break).
fn pieces(data: &[u8]) -> Vec<Bytes> {
    let Some((&seed, rest)) = data.split_first() else {
        return Vec::new();
    };
    let step = usize::from(seed % 17) + 1;
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0usize;
    while at < rest.len() {
        let len = (step + k % 5).min(rest.len() - at);
        out.push(Bytes::copy_from_slice(&rest[at..at + len]));
        at += len;
        k += 1;
    }
    out
}

/// Drives a translated stream to its end in place (the translators are synchronous inside).
fn drain(stream: ByteStream) -> Vec<Result<Bytes, String>> {
    futures::executor::block_on(stream.map(|item| item.map_err(|e| e.to_string())).collect())
}

fn upstream_stream(data: &[u8]) -> ByteStream {
    let chunks: Vec<Result<Bytes, crate::error::Error>> = pieces(data).into_iter().map(Ok).collect();
    Box::pin(futures::stream::iter(chunks))
}

/// The SSE framer fed `data` in pieces: the whole events it cut (with their `data` and usage
/// read), the bytes left pending, and the events it cuts from the same bytes pushed at once
/// (which must be the same).
pub fn sse_framer(data: &[u8]) -> (Vec<Bytes>, Vec<u8>, Vec<Bytes>) {
    let mut framer = SseFramer::default();
    let mut events = Vec::new();
    for piece in pieces(data) {
        framer.push(&piece);
        while let Some(event) = framer.next_event() {
            if let Some(text) = event_data(&event) {
                let _ = usage_in(text.as_bytes());
            }
            events.push(event);
        }
    }
    let mut whole = SseFramer::default();
    whole.push(data.get(1..).unwrap_or_default());
    let mut at_once = Vec::new();
    while let Some(event) = whole.next_event() {
        at_once.push(event);
    }
    (events, framer.pending().to_vec(), at_once)
}

/// The request body peek: the typed endpoints' facts, and the `model` rewrite of a body that
/// parsed (`None` when it did not).
pub fn request_body(data: &[u8]) -> Option<Bytes> {
    let json = HeaderValue::from_static("application/json");
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Embeddings,
        Endpoint::ImageGenerations,
        Endpoint::Passthrough,
    ] {
        if let Ok(facts) = RequestFacts::parse(endpoint, Some(&json), data) {
            let _ = (facts.model(), facts.stream(), facts.json());
        }
    }
    let object = RawObject::parse(data).ok()?;
    object.to_bytes_with_str("model", "fuzz-model").ok()
}

/// Chat completion request → Anthropic Messages request (serialised), as the Anthropic provider
/// sends it.
pub fn anthropic_request(data: &[u8]) -> Option<Vec<u8>> {
    let translated = anthropic::request::to_anthropic(data).ok()?;
    serde_json::to_vec(&translated.request).ok()
}

/// Anthropic answer → chat completion, error body and model list, as the provider relays them.
pub fn anthropic_response(data: &[u8]) -> Option<Bytes> {
    let _ = anthropic::response::error_body(data);
    let _ = anthropic::response::model_list(data);
    let _ = anthropic::response::model(data);
    anthropic::response::chat_completion(data).ok()
}

/// Anthropic event stream (in pieces) → chat completion chunks.
pub fn anthropic_stream(data: &[u8]) -> Vec<Result<Bytes, String>> {
    let include_usage = data.first().is_some_and(|b| b & 1 == 1);
    drain(anthropic::stream::translate(
        upstream_stream(data),
        anthropic::stream::Translator::new(include_usage),
    ))
}

/// Chat completion request → Gemini `generateContent` request (serialised).
pub fn gemini_request(data: &[u8]) -> Option<Vec<u8>> {
    let chat: ChatCompletionRequest = serde_json::from_slice(data).ok()?;
    let translated = gemini::chat_request(&chat).ok()?;
    serde_json::to_vec(&translated).ok()
}

/// Gemini answer → chat completion (serialised).
pub fn gemini_response(data: &[u8]) -> Option<Vec<u8>> {
    let gemini: GenerateContentResponse = serde_json::from_slice(data).ok()?;
    let chat = gemini::chat_completion(&gemini, &gemini::ReplyContext::new("fuzz-model"));
    serde_json::to_vec(&chat).ok()
}

/// Gemini event stream (in pieces) → chat completion chunks.
pub fn gemini_stream(data: &[u8]) -> Vec<Result<Bytes, String>> {
    let include_usage = data.first().is_some_and(|b| b & 1 == 1);
    drain(gemini::translate_stream(
        upstream_stream(data),
        gemini::ReplyContext::new("fuzz-model"),
        include_usage,
    ))
}

/// Anthropic Messages request (the `/v1/messages` face) → chat completion request.
pub fn messages_request(data: &[u8]) -> Option<Bytes> {
    crate::messages::to_openai(data).ok().map(|inbound| inbound.body)
}

/// Chat completion answer → Anthropic message.
pub fn messages_response(data: &[u8]) -> Option<Bytes> {
    crate::messages::to_message(data).ok()
}

/// Chat completion chunks (in pieces) → Anthropic events, ended as a broken stream would be.
pub fn messages_stream(data: &[u8]) -> Vec<Bytes> {
    let mut translator = crate::messages::EventTranslator::new();
    let mut out = Vec::new();
    for piece in pieces(data) {
        out.push(translator.on_events(&piece));
    }
    if !translator.is_finished() {
        out.push(translator.on_error(&crate::error::Error::Transport {
            message: "fuzz: stream ended".to_owned(),
        }));
    }
    out
}

/// The config loader on arbitrary text (YAML, `${ENV}` interpolation, every section).
pub fn config(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    crate::config::Config::from_yaml(text, Some("fuzz.yaml"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
