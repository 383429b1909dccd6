//! Golden tests of the Anthropic translations, both directions, from fixtures built on
//! Anthropic's documented examples (each fixture names its source page).
//!
//! Every `tests/fixtures/anthropic/*.json` has `kind`, `input` and `expected`; the translation of
//! `input` must equal `expected` (`created` timestamps are removed first). To regenerate after an
//! intended change: `WEIR_BLESS=1 cargo test -p weir golden_tests`, then review the diff.

use super::{request, response, stream};
use crate::messages;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

fn fixtures() -> Vec<(std::path::PathBuf, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "fixtures missing");
    out
}

fn strip_created(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("created");
            for value in map.values_mut() {
                *value = strip_created(value.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = strip_created(item.take());
            }
        }
        _ => {}
    }
    v
}

/// The data payloads of an SSE byte string: JSON values, or the raw string (`[DONE]`).
fn sse_data(bytes: &[u8]) -> Vec<Value> {
    let mut framer = crate::sse::SseFramer::default();
    framer.push(bytes);
    let mut out = Vec::new();
    while let Some(event) = framer.next_event() {
        let text = std::str::from_utf8(&event).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned);
        let data = crate::sse::event_data(&event).unwrap();
        let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
        // Anthropic events carry their name twice; check they agree.
        if let Some(name) = name {
            assert_eq!(value["type"], json!(name), "event name and type differ");
        }
        out.push(value);
    }
    out
}

async fn translate(kind: &str, fixture: &Value) -> Value {
    let input = &fixture["input"];
    let body = || Bytes::from(serde_json::to_vec(input).unwrap());
    match kind {
        "outbound_request" => {
            let translated = request::to_anthropic(&body()).unwrap();
            json!({
                "body": serde_json::to_value(&translated.request).unwrap(),
                "stream": translated.stream,
                "include_usage": translated.include_usage,
            })
        }
        "outbound_response" => serde_json::from_slice(&response::chat_completion(&body()).unwrap()).unwrap(),
        "outbound_stream" => {
            // One event per upstream read, as Anthropic sends them.
            let events: Vec<Result<Bytes, crate::error::Error>> = input
                .as_array()
                .unwrap()
                .iter()
                .map(|e| Ok(Bytes::from(e.as_str().unwrap().to_owned())))
                .collect();
            let include_usage = fixture["include_usage"].as_bool().unwrap_or(false);
            let translated = stream::translate(
                Box::pin(futures::stream::iter(events)),
                stream::Translator::new(include_usage),
            );
            let out: Vec<Bytes> = translated.map(|r| r.unwrap()).collect().await;
            Value::Array(sse_data(&out.concat()))
        }
        "inbound_request" => {
            let inbound = messages::to_openai(&body()).unwrap();
            json!({
                "body": serde_json::from_slice::<Value>(&inbound.body).unwrap(),
                "stream": inbound.stream,
            })
        }
        "inbound_response" => serde_json::from_slice(&messages::to_message(&body()).unwrap()).unwrap(),
        "inbound_stream" => {
            let mut translator = messages::EventTranslator::new();
            let mut out = Vec::new();
            for event in input.as_array().unwrap() {
                out.extend_from_slice(&translator.on_events(event.as_str().unwrap().as_bytes()));
            }
            assert!(translator.is_finished());
            Value::Array(sse_data(&out))
        }
        other => panic!("unknown fixture kind {other}"),
    }
}

#[tokio::test]
async fn golden_translations() {
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut failures = Vec::new();
    for (path, mut fixture) in fixtures() {
        let kind = fixture["kind"].as_str().unwrap().to_owned();
        let actual = strip_created(translate(&kind, &fixture).await);
        if bless {
            fixture["expected"] = actual;
            let text = serde_json::to_string_pretty(&fixture).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        } else if fixture["expected"] != actual {
            failures.push(format!(
                "{}:\nexpected {}\n  actual {}",
                path.display(),
                fixture["expected"],
                actual
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What Anthropic cannot honour is refused with a 400 naming the field, before any call.
#[test]
fn unsupported_openai_fields_are_refused_by_name() {
    let hi = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0]"),
        (json!({"stop": 5}), "stop"),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "[1,2"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
            "messages",
        ),
    ];
    for (extra, param) in cases {
        let mut body = json!({"model": "claude", "messages": hi});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let err = request::to_anthropic(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        let mapped = crate::api::ErrorResponse::from_error(&err);
        assert_eq!(mapped.status, 400, "{body}");
        assert_eq!(mapped.body.error.param.as_deref(), Some(param), "{body}: {err}");
    }
    // Accepted and mapped: `response_format: text`, `logprobs: false`, `n: 1`.
    let ok = json!({"model": "claude", "messages": hi, "n": 1, "logprobs": false, "response_format": {"type": "text"}});
    assert!(request::to_anthropic(&serde_json::to_vec(&ok).unwrap()).is_ok());
}

/// Anthropic's documented model list (`GET /v1/models`) in OpenAI's shape.
#[test]
fn model_list_translation() {
    let page = json!({
        "data": [{"created_at": "2025-02-19T00:00:00Z", "display_name": "Claude Sonnet 3.7",
                  "id": "claude-3-7-sonnet-20250219", "type": "model"}],
        "first_id": "claude-3-7-sonnet-20250219", "has_more": false, "last_id": "claude-3-7-sonnet-20250219",
    });
    let list: Value =
        serde_json::from_slice(&response::model_list(&serde_json::to_vec(&page).unwrap()).unwrap()).unwrap();
    assert_eq!(
        list,
        json!({"object": "list", "data": [{"id": "claude-3-7-sonnet-20250219", "object": "model",
            "created": 1_739_923_200, "owned_by": "anthropic"}]})
    );
}

/// An Anthropic error body in OpenAI's shape, and inbound errors in Anthropic's.
#[test]
fn error_shapes_both_ways() {
    let body = response::error_body(
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": "overloaded_error"}})
    );
    let err = crate::error::Error::Upstream {
        status: http::StatusCode::from_u16(529).unwrap(),
        message: "Overloaded".into(),
        error_type: Some("overloaded_error".into()),
        code: None,
        param: None,
        retry_after: None,
    };
    assert!(crate::policy::retry::should_retry(&err), "529 must be retryable");
    let (status, body) = messages::error_body(&err);
    assert_eq!(status, 502);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("529"));
}
