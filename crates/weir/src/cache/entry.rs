//! A cached answer, its byte encoding (for Redis; zstd above a threshold), and the conversions
//! between a streamed chat answer and a whole one.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

use crate::sse::event_data;

/// What was cached: a whole body, or the SSE events of a stream in the order they came.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON answer.
    Full(Bytes),
    /// Whole SSE events (each with its blank line), ending with `data: [DONE]` for chat.
    Events(Vec<Bytes>),
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it was stored (wall clock, milliseconds since the Unix epoch: shared across instances).
    pub created_unix_ms: u64,
    /// How long it lives from `created_unix_ms`.
    pub ttl_ms: u64,
    /// The deployment that produced it.
    pub deployment: String,
    /// The answer's content type.
    pub content_type: Option<String>,
    /// The answer.
    pub payload: Payload,
}

const MAGIC: &[u8; 4] = b"WC1\0";
const FLAG_ZSTD: u8 = 1;
/// zstd level 3: the library default; fast enough that compressing costs far less than a network hop.
const ZSTD_LEVEL: i32 = 3;

impl Entry {
    /// Size of the answer itself (what `max_entry_size` and the memory bound count).
    pub fn payload_bytes(&self) -> usize {
        match &self.payload {
            Payload::Full(b) => b.len(),
            Payload::Events(events) => events.iter().map(Bytes::len).sum(),
        }
    }

    /// Approximate bytes held in memory, for the memory cache's weigher.
    pub fn weight(&self) -> u32 {
        let overhead = 128
            + self.deployment.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + match &self.payload {
                Payload::Full(_) => 0,
                Payload::Events(e) => e.len() * 32,
            };
        u32::try_from(self.payload_bytes() + overhead).unwrap_or(u32::MAX)
    }

    /// Encodes for Redis: a header, then the body, zstd-compressed if it is at least `threshold` bytes.
    pub fn encode(&self, threshold: usize) -> Result<Vec<u8>, String> {
        let mut body = BytesMut::with_capacity(self.payload_bytes() + 64);
        body.put_u64(self.created_unix_ms);
        body.put_u64(self.ttl_ms);
        put_str(&mut body, &self.deployment);
        put_str(&mut body, self.content_type.as_deref().unwrap_or(""));
        match &self.payload {
            Payload::Full(bytes) => {
                body.put_u8(0);
                put_bytes(&mut body, bytes);
            }
            Payload::Events(events) => {
                body.put_u8(1);
                body.put_u32(events.len() as u32);
                for event in events {
                    put_bytes(&mut body, event);
                }
            }
        }
        let mut out = Vec::with_capacity(body.len() / 2 + 8);
        out.extend_from_slice(MAGIC);
        if body.len() >= threshold {
            out.push(FLAG_ZSTD);
            let compressed = zstd::bulk::compress(&body, ZSTD_LEVEL).map_err(|e| e.to_string())?;
            out.extend_from_slice(&compressed);
        } else {
            out.push(0);
            out.extend_from_slice(&body);
        }
        Ok(out)
    }

    /// Decodes what [`Entry::encode`] wrote; `max_bytes` bounds decompression (a corrupt or hostile
    /// value can't make us allocate gigabytes).
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Entry, String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a weir cache entry")?;
        let (&flags, rest) = rest.split_first().ok_or("truncated entry")?;
        let body: Vec<u8> = if flags & FLAG_ZSTD != 0 {
            // The payload bound plus room for the header and per-event lengths.
            let limit = max_bytes.saturating_add(max_bytes / 8).saturating_add(64 * 1024);
            zstd::bulk::decompress(rest, limit).map_err(|e| format!("zstd: {e}"))?
        } else {
            rest.to_vec()
        };
        let mut buf = body.as_slice();
        let need = |buf: &[u8], n: usize| {
            if buf.remaining() < n {
                Err("truncated entry".to_owned())
            } else {
                Ok(())
            }
        };
        need(buf, 16)?;
        let created_unix_ms = buf.get_u64();
        let ttl_ms = buf.get_u64();
        let deployment = get_str(&mut buf)?;
        let content_type = Some(get_str(&mut buf)?).filter(|s| !s.is_empty());
        need(buf, 1)?;
        let payload = match buf.get_u8() {
            0 => Payload::Full(get_bytes(&mut buf)?),
            1 => {
                need(buf, 4)?;
                let n = buf.get_u32() as usize;
                let mut events = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    events.push(get_bytes(&mut buf)?);
                }
                Payload::Events(events)
            }
            other => return Err(format!("unknown payload kind {other}")),
        };
        Ok(Entry {
            created_unix_ms,
            ttl_ms,
            deployment,
            content_type,
            payload,
        })
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}

fn get_bytes(buf: &mut &[u8]) -> Result<Bytes, String> {
    if buf.remaining() < 4 {
        return Err("truncated entry".to_owned());
    }
    let n = buf.get_u32() as usize;
    if buf.remaining() < n {
        return Err("truncated entry".to_owned());
    }
    let out = Bytes::copy_from_slice(&buf[..n]);
    buf.advance(n);
    Ok(out)
}

fn get_str(buf: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(get_bytes(buf)?.to_vec()).map_err(|_| "invalid UTF-8 in entry".to_owned())
}

/// Splits SSE bytes into whole events.
pub fn split_events(bytes: &[u8], out: &mut Vec<Bytes>) {
    let mut framer = crate::sse::SseFramer::default();
    framer.push(bytes);
    while let Some(event) = framer.next_event() {
        out.push(event);
    }
}

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn data_json(event: &[u8]) -> Option<Value> {
    let data = event_data(event)?;
    serde_json::from_str(&data).ok()
}

/// Whether a recorded chat stream carries a usage object (its final chunk, with `include_usage`).
pub fn events_have_usage(events: &[Bytes]) -> bool {
    events
        .iter()
        .any(|e| data_json(e).is_some_and(|v| v.get("usage").is_some_and(|u| u.is_object())))
}

/// Whether an event is the usage-only chunk (`choices: []` and a usage object).
pub fn is_usage_only_chunk(event: &[u8]) -> bool {
    data_json(event).is_some_and(|v| {
        v.get("usage").is_some_and(Value::is_object)
            && v.get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
    })
}

/// A whole chat completion replayed as a stream: per choice a chunk with the role and the whole
/// message, then a chunk with its finish reason; then (if asked) a usage chunk; then `[DONE]`.
pub fn completion_to_events(body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let choices = completion.get("choices")?.as_array()?;
    let mut base = Map::new();
    for field in ["id", "created", "model", "system_fingerprint", "service_tier"] {
        if let Some(v) = completion.get(field) {
            base.insert(field.to_owned(), v.clone());
        }
    }
    base.insert("object".to_owned(), json!("chat.completion.chunk"));
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = base.clone();
        c.insert("choices".to_owned(), choices);
        if include_usage {
            c.insert("usage".to_owned(), usage.unwrap_or(Value::Null));
        }
        sse(&Value::Object(c))
    };
    let mut events = Vec::with_capacity(choices.len() * 2 + 2);
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").and_then(Value::as_object)?;
        let mut delta = Map::new();
        for (k, v) in message {
            if k == "tool_calls" {
                // Stream deltas number their tool calls.
                let calls: Vec<Value> = v
                    .as_array()
                    .map(|calls| {
                        calls
                            .iter()
                            .enumerate()
                            .map(|(n, call)| {
                                let mut call = call.clone();
                                if let Some(obj) = call.as_object_mut() {
                                    obj.insert("index".to_owned(), json!(n));
                                }
                                call
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                delta.insert(k.clone(), Value::Array(calls));
            } else if !v.is_null() {
                delta.insert(k.clone(), v.clone());
            }
        }
        let logprobs = choice.get("logprobs").cloned().unwrap_or(Value::Null);
        events.push(chunk(
            json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}]),
            None,
        ));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        events.push(chunk(
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]),
            None,
        ));
    }
    if include_usage {
        events.push(chunk(json!([]), completion.get("usage").cloned()));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Some(events)
}

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<Map<String, Value>>,
    finish_reason: Value,
    logprobs: Vec<Value>,
}

/// A recorded chat stream assembled into the whole completion it delivered. `None` when the
/// stream did not report usage (a whole answer always has it) or is not a chat stream.
pub fn events_to_completion(events: &[Bytes]) -> Option<Bytes> {
    let mut head: Option<Value> = None;
    let mut usage = None;
    let mut choices: Vec<(u64, Choice)> = Vec::new();
    for event in events {
        let Some(data) = event_data(event) else {
            continue;
        };
        if data.trim() == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).ok()?;
        if chunk.get("object").and_then(Value::as_str) != Some("chat.completion.chunk") {
            return None;
        }
        if head.is_none() {
            head = Some(chunk.clone());
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            usage = Some(u.clone());
        }
        for c in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let pos = match choices.iter().position(|(i, _)| *i == index) {
                Some(p) => p,
                None => {
                    choices.push((index, Choice::default()));
                    choices.len() - 1
                }
            };
            let (_, choice) = &mut choices[pos];
            if let Some(delta) = c.get("delta") {
                if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
                    choice.role = Some(role.clone());
                }
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    choice.content.get_or_insert_with(String::new).push_str(text);
                }
                if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                    choice.refusal.get_or_insert_with(String::new).push_str(text);
                }
                for call in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    merge_tool_call(&mut choice.tool_calls, call);
                }
            }
            if let Some(reason) = c.get("finish_reason").filter(|r| !r.is_null()) {
                choice.finish_reason = reason.clone();
            }
            if let Some(content) = c.pointer("/logprobs/content").and_then(Value::as_array) {
                choice.logprobs.extend(content.iter().cloned());
            }
        }
    }
    let head = head?;
    let usage = usage?;
    choices.sort_by_key(|(i, _)| *i);
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, c)| {
            let mut message = Map::new();
            message.insert("role".to_owned(), c.role.unwrap_or(json!("assistant")));
            message.insert(
                "content".to_owned(),
                c.content.map_or(Value::Null, Value::String),
            );
            if let Some(refusal) = c.refusal {
                message.insert("refusal".to_owned(), Value::String(refusal));
            }
            if !c.tool_calls.is_empty() {
                let calls = c
                    .tool_calls
                    .into_iter()
                    .map(|mut call| {
                        call.remove("index");
                        Value::Object(call)
                    })
                    .collect();
                message.insert("tool_calls".to_owned(), Value::Array(calls));
            }
            let logprobs = if c.logprobs.is_empty() {
                Value::Null
            } else {
                json!({"content": c.logprobs})
            };
            json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason})
        })
        .collect();
    let mut out = Map::new();
    out.insert("id".to_owned(), head.get("id").cloned().unwrap_or(Value::Null));
    out.insert("object".to_owned(), json!("chat.completion"));
    for field in ["created", "model", "system_fingerprint", "service_tier"] {
        if let Some(v) = head.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    out.insert("choices".to_owned(), Value::Array(choices));
    out.insert("usage".to_owned(), usage);
    serde_json::to_vec(&Value::Object(out)).ok().map(Bytes::from)
}

/// Tool call deltas: the first carries `id`, `type` and the function name; later ones append
/// argument text, matched by `index`.
fn merge_tool_call(calls: &mut Vec<Map<String, Value>>, delta: &Value) {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let pos = calls
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(index));
    let call = match pos {
        Some(p) => &mut calls[p],
        None => {
            let mut fresh = Map::new();
            fresh.insert("index".to_owned(), json!(index));
            fresh.insert("function".to_owned(), json!({"name": "", "arguments": ""}));
            calls.push(fresh);
            let last = calls.len() - 1;
            &mut calls[last]
        }
    };
    for field in ["id", "type"] {
        if let Some(v) = delta.get(field).filter(|v| !v.is_null()) {
            call.insert(field.to_owned(), v.clone());
        }
    }
    if let Some(function) = delta.get("function") {
        let target = call
            .entry("function")
            .or_insert_with(|| json!({"name": "", "arguments": ""}));
        for field in ["name", "arguments"] {
            if let Some(piece) = function.get(field).and_then(Value::as_str)
                && let Some(existing) = target.get_mut(field)
            {
                let joined = format!("{}{piece}", existing.as_str().unwrap_or(""));
                *existing = Value::String(joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: Payload) -> Entry {
        Entry {
            created_unix_ms: 1_700_000_000_000,
            ttl_ms: 60_000,
            deployment: "dep-a".to_owned(),
            content_type: Some("application/json".to_owned()),
            payload,
        }
    }

    #[test]
    fn encoding_round_trips_with_and_without_compression() {
        let big = Bytes::from(format!("{{\"x\":\"{}\"}}", "abc".repeat(2000)));
        for payload in [
            Payload::Full(Bytes::from_static(b"{\"small\":1}")),
            Payload::Full(big.clone()),
            Payload::Events(vec![
                Bytes::from_static(b"data: 1\n\n"),
                big.clone(),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ]),
        ] {
            let e = entry(payload);
            let encoded = e.encode(1024).unwrap();
            let compressed = encoded[4] & FLAG_ZSTD != 0;
            assert_eq!(
                compressed,
                e.payload_bytes() >= 1024,
                "threshold decides compression"
            );
            if compressed {
                assert!(
                    encoded.len() < e.payload_bytes() / 4,
                    "repetitive text compresses well"
                );
            }
            assert_eq!(Entry::decode(&encoded, 1 << 20).unwrap(), e);
        }
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        let encoded = entry(Payload::Full(Bytes::from_static(b"{}")))
            .encode(1024)
            .unwrap();
        for cut in 0..encoded.len() {
            assert!(Entry::decode(&encoded[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        assert!(Entry::decode(b"garbage", 1 << 20).is_err());
        // A compressed bomb beyond the bound is refused.
        let bomb = entry(Payload::Full(Bytes::from(vec![b'a'; 4 << 20])))
            .encode(1024)
            .unwrap();
        assert!(Entry::decode(&bomb, 1 << 20).is_err());
    }

    #[test]
    fn whole_and_streamed_chat_answers_convert_both_ways() {
        let completion = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        });
        let body = serde_json::to_vec(&completion).unwrap();
        let events = completion_to_events(&body, true).unwrap();
        assert!(events.last().unwrap().starts_with(b"data: [DONE]"));
        assert!(events_have_usage(&events));
        assert!(is_usage_only_chunk(&events[events.len() - 2]));
        let back: Value = serde_json::from_slice(&events_to_completion(&events).unwrap()).unwrap();
        assert_eq!(back, completion);
        // Without include_usage there is no usage chunk, and no whole answer can be rebuilt.
        let plain = completion_to_events(&body, false).unwrap();
        assert!(!events_have_usage(&plain));
        assert!(events_to_completion(&plain).is_none());
    }

    #[test]
    fn split_tool_call_deltas_are_merged() {
        let events: Vec<Bytes> = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        ]
        .iter()
        .map(|d| Bytes::from(format!("data: {d}\n\n")))
        .chain([Bytes::from_static(b"data: [DONE]\n\n")])
        .collect();
        let whole: Value = serde_json::from_slice(&events_to_completion(&events).unwrap()).unwrap();
        let call = &whole["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_9");
        assert_eq!(call["function"]["name"], "get");
        assert_eq!(call["function"]["arguments"], "{\"q\":1}");
        assert!(call.get("index").is_none());
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
    }
}
