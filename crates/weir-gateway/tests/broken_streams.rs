//! Streams whose upstream sends a malformed event (issue 17, defects 1–3): on both faces the client
//! gets an error event where the broken event was, never a clean end, the request counts as an
//! error, and the cache never keeps such a stream to replay it.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

/// The mock's stream with a cut-off JSON event inserted after its second event; the rest (and
/// `[DONE]`) follows as usual.
const MALFORMED: &str = r#"{"malformed_after_chunks": 2}"#;

fn x_mock() -> Value {
    serde_json::from_str(MALFORMED).unwrap()
}

fn cached(mock: &MockServer) -> String {
    format!("{}\ncache:\n  strategy: conservative\n", config_for(mock, "", ""))
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    http()
        .post(gw.url(path))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The SSE events of a body: `(event name, data)`.
fn events(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned);
            let data: String = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (name, data)
        })
        .collect()
}

fn messages_body(stream: bool) -> Value {
    json!({"model": "mock-model", "max_tokens": 50, "stream": stream, "temperature": 0,
        "messages": [{"role": "user", "content": "Hello"}], "x_mock": x_mock()})
}

fn chat_stream_body() -> Value {
    chat_body(json!({"stream": true, "temperature": 0, "x_mock": x_mock()}))
}

async fn scrape_errors(gw: &Gateway, error_type: &str) -> f64 {
    let text = http()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = format!("error_type=\"{error_type}\"");
    text.lines()
        .filter(|l| l.starts_with("weir_errors_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn messages_stream_with_a_malformed_event_ends_with_an_error_event_not_message_stop() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = post(&gw, "/v1/messages", &messages_body(true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = events(&text);
    let names: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.last(), Some(&"error"), "{text}");
    assert!(
        !names.contains(&"message_stop"),
        "a broken stream ended cleanly: {text}"
    );
    assert!(!names.contains(&"message_delta"), "{text}");
    let (_, last) = events.last().unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert!(last["error"]["message"].is_string(), "{last}");
}

#[tokio::test]
async fn chat_stream_with_a_malformed_event_ends_with_an_error_event_and_counts_as_an_error() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let before = scrape_errors(&gw, "bad_upstream_response").await;
    let resp = post(&gw, "/v1/chat/completions", &chat_stream_body()).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = events(&text);
    // Every event the client gets is JSON its SDK can decode; the last one is the error.
    for (_, data) in &events {
        assert!(
            serde_json::from_str::<Value>(data).is_ok(),
            "undecodable event `{data}` in {text}"
        );
    }
    let (_, last) = events.last().unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{last}");
    assert!(!text.contains("[DONE]"), "no [DONE] after the error: {text}");
    assert!(
        events.len() >= 3,
        "the two events before the broken one were delivered: {text}"
    );
    assert!(
        scrape_errors(&gw, "bad_upstream_response").await >= before + 1.0,
        "the request was not counted as an error"
    );
}

#[tokio::test]
async fn broken_streams_are_never_cached_on_either_face() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&cached(&mock)).await;
    for (path, body) in [
        ("/v1/chat/completions", chat_stream_body()),
        ("/v1/messages", messages_body(true)),
    ] {
        let calls = mock.state().request_count();
        for _ in 0..2 {
            let resp = post(&gw, path, &body).await;
            assert_eq!(resp.status(), 200);
            let verdict = resp.headers()["x-weir-cache"].to_str().unwrap().to_owned();
            assert_ne!(
                verdict, "hit",
                "{path}: a broken stream was replayed from the cache"
            );
            resp.text().await.unwrap();
        }
        assert_eq!(mock.state().request_count(), calls + 2, "{path}");
    }
    // The same request without the fault is cached as before: the rule is about broken streams.
    let good = chat_body(json!({"stream": true, "temperature": 0}));
    post(&gw, "/v1/chat/completions", &good)
        .await
        .text()
        .await
        .unwrap();
    let again = post(&gw, "/v1/chat/completions", &good).await;
    assert_eq!(again.headers()["x-weir-cache"], "hit");
}
