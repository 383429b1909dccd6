//! Golden tests: each translation against fixtures built from Google's documented examples
//! (`crates/weir/tests/fixtures/gemini/*.json`, each naming its source).

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use super::*;
use crate::api::gemini::GenerateContentResponse;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/gemini/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces what is random or time-dependent: synthesised ids (24 random characters) and
/// `created`.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), &*v) {
                    ("created", Value::Number(_)) => *v = Value::from(0),
                    ("id", Value::String(id)) => *v = Value::String(normalise_id(id)),
                    _ => normalise(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn normalise_id(id: &str) -> String {
    for prefix in ["call_", "chatcmpl-"] {
        if let Some(rest) = id.strip_prefix(prefix) {
            let (random, tail) = rest.split_at(rest.len().min(24));
            if random.len() == 24 && random.chars().all(|c| c.is_ascii_alphanumeric()) {
                return format!("{prefix}*{tail}");
            }
        }
    }
    id.to_owned()
}

fn translate_request(openai: &Value) -> Value {
    let req: ChatCompletionRequest = serde_json::from_value(openai.clone()).unwrap();
    serde_json::to_value(chat_request(&req).unwrap()).unwrap()
}

#[test]
fn golden_requests() {
    for name in [
        "request_system_instruction.json",
        "request_function_calling.json",
        "request_images_and_config.json",
    ] {
        let f = fixture(name);
        assert_eq!(translate_request(&f["openai"]), f["gemini"], "{name}");
    }
}

fn translate_response(gemini: &Value, model: &str) -> Value {
    let resp: GenerateContentResponse = serde_json::from_value(gemini.clone()).unwrap();
    let mut out = serde_json::to_value(chat_completion(&resp, &ReplyContext::new(model))).unwrap();
    normalise(&mut out);
    out
}

#[test]
fn golden_responses() {
    let f = fixture("response_text.json");
    assert_eq!(translate_response(&f["gemini"], "gemini-2.5-flash"), f["openai"]);
    let f = fixture("response_function_call.json");
    assert_eq!(translate_response(&f["gemini"], "gemini-pro"), f["openai"]);
    for (i, case) in fixture("response_blocked_and_safety.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(
            translate_response(&case["gemini"], "gemini-2.0-flash"),
            case["openai"],
            "case {i}"
        );
    }
}

/// Runs the stream translation over the fixture's events, sent in 7-byte pieces (so events
/// straddle reads) with Google's CRLF framing, and returns the OpenAI events.
async fn translate_stream(f: &Value) -> Vec<Value> {
    let mut wire = Vec::new();
    for event in f["gemini_events"].as_array().unwrap() {
        wire.extend_from_slice(format!("data: {event}\r\n\r\n").as_bytes());
    }
    let pieces: Vec<Result<Bytes, Error>> = wire.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let upstream: crate::upstream::ByteStream = Box::pin(futures::stream::iter(pieces));
    let ctx = ReplyContext::new(f["model"].as_str().unwrap());
    let include_usage = f["include_usage"].as_bool().unwrap();
    let out: Vec<Result<Bytes, Error>> = stream::translate(upstream, ctx, include_usage).collect().await;
    let text: String = out
        .into_iter()
        .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
        .collect();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            let mut v = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()));
            normalise(&mut v);
            v
        })
        .collect()
}

#[tokio::test]
async fn golden_streams() {
    for name in ["stream_text.json", "stream_function_call.json"] {
        let f = fixture(name);
        let events = translate_stream(&f).await;
        assert_eq!(Value::Array(events), f["openai_events"], "{name}");
    }
}

#[tokio::test]
async fn a_stream_cut_before_its_finish_has_no_done_and_error_events_fail_it() {
    let cut = Bytes::from_static(
        b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"index\":0}]}\r\n\r\n",
    );
    let upstream: crate::upstream::ByteStream = Box::pin(futures::stream::iter([Ok(cut.clone())]));
    let out: Vec<_> = stream::translate(upstream, ReplyContext::new("m"), true)
        .collect()
        .await;
    let text: String = out
        .iter()
        .map(|r| String::from_utf8(r.as_ref().unwrap().to_vec()).unwrap())
        .collect();
    assert!(text.contains("\"Hi\"") && !text.contains("[DONE]"), "{text}");

    let error = Bytes::from_static(
        b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n",
    );
    let upstream: crate::upstream::ByteStream = Box::pin(futures::stream::iter([Ok(cut), Ok(error)]));
    let out: Vec<_> = stream::translate(upstream, ReplyContext::new("m"), false)
        .collect()
        .await;
    assert!(out[0].is_ok());
    match out.last() {
        Some(Err(Error::Upstream { status, message, .. })) => {
            assert_eq!(status.as_u16(), 503);
            assert_eq!(message, "The model is overloaded.");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn thought_signatures_ride_in_tool_call_ids_and_come_back() {
    let f = fixture("response_function_call.json");
    let mut gemini = f["gemini"].clone();
    gemini["candidates"][0]["content"]["parts"][0]["thoughtSignature"] = Value::from("c2ln");
    let resp: GenerateContentResponse = serde_json::from_value(gemini).unwrap();
    let out = chat_completion(&resp, &ReplyContext::new("m"));
    let calls = out.choices[0].message.tool_calls.clone().unwrap();
    let id = calls[0]["id"].as_str().unwrap().to_owned();
    assert!(id.ends_with("__thought__c2ln"), "{id}");
    let next = serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": id, "content": "sunny"}
        ]
    });
    let gemini = translate_request(&next);
    assert_eq!(gemini["contents"][1]["parts"][0]["thoughtSignature"], "c2ln");
    assert_eq!(
        gemini["contents"][2]["parts"][0]["functionResponse"],
        serde_json::json!({"name": "find_theaters", "response": {"output": "sunny"}})
    );
}

#[test]
fn bad_requests_are_400s_naming_the_field() {
    let cases = [
        (
            serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}),
            "messages",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            serde_json::json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
    ];
    for (body, param) in cases {
        let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        match chat_request(&req) {
            Err(Error::InvalidRequest { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}
