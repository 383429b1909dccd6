//! Chaos mode over real sockets: faults drawn at the given rates, on every face, content
//! derived from the prompt, per-prompt call counts, latency rising with load.

// Test helpers: a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use weir_mock::content::derived_content;
use weir_mock::server::{ChaosConfig, MockConfig, MockServer};

async fn chaos(mix: &str) -> MockServer {
    let config = ChaosConfig {
        mix: mix.parse().unwrap(),
        derive_content: true,
        retry_after: 2.5,
        slow_headers: Duration::from_millis(10),
        ..ChaosConfig::default()
    };
    MockServer::start_chaos(MockConfig::default(), config)
        .await
        .unwrap()
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream})
}

async fn post(mock: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", mock.addr()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn no_faults_answers_with_derived_content_and_counts_calls() {
    let mock = chaos("").await;
    for _ in 0..2 {
        let v: Value = post(&mock, "/v1/chat/completions", &chat("p1", false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], derived_content("p1"));
    }
    let body = json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "p2"}]});
    let v: Value = post(&mock, "/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], derived_content("p2"));
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "p3"}]}]});
    let v: Value = post(&mock, "/v1beta/models/g:generateContent", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        derived_content("p3")
    );
    assert_eq!(mock.state().calls_for_prompt("p1"), 2);
    assert_eq!(mock.state().calls_for_prompt("p3"), 1);
    assert_eq!(mock.state().calls_for_prompt("never"), 0);
}

#[tokio::test]
async fn statuses_carry_retry_after_in_each_faces_shape() {
    let mock = chaos("429=1").await;
    let r = post(&mock, "/v1/chat/completions", &chat("x", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["retry-after-ms"], "2500");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let v: Value = post(&mock, "/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(v["type"], "error");
    // Model listings are never faulted.
    let r = reqwest::get(format!("{}/models", mock.base_url())).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn malformed_streams_carry_one_unparsable_event() {
    let mock = chaos("malformed=1").await;
    let text = post(&mock, "/v1/chat/completions", &chat("x", true))
        .await
        .text()
        .await
        .unwrap();
    let bad = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]" && serde_json::from_str::<Value>(data).is_err())
        .count();
    assert_eq!(bad, 1, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let unary = post(&mock, "/v1/chat/completions", &chat("x", false)).await;
    assert_eq!(unary.status(), 200);
    assert!(serde_json::from_slice::<Value>(&unary.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn truncate_and_disconnect_cut_streams() {
    let mock = chaos("truncate=1").await;
    let text = post(&mock, "/v1/chat/completions", &chat("x", true))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("[DONE]") && text.starts_with("data: {"), "{text}");
    let mock = chaos("disconnect=1").await;
    let r = post(&mock, "/v1/chat/completions", &chat("x", true)).await;
    assert!(r.bytes().await.is_err(), "an aborted body must fail to read");
}

#[tokio::test]
async fn stalls_hold_the_body_open() {
    let mock = chaos("stall=1").await;
    let r = post(&mock, "/v1/chat/completions", &chat("x", true)).await;
    assert_eq!(r.status(), 200);
    let read = tokio::time::timeout(Duration::from_millis(300), r.bytes()).await;
    assert!(read.is_err(), "a stalled body never finishes");
}

#[tokio::test]
async fn the_seed_fixes_the_sequence() {
    let statuses = |mix: &'static str| async move {
        let mock = chaos(mix).await;
        let mut out = Vec::new();
        for i in 0..40 {
            let r = post(&mock, "/v1/chat/completions", &chat(&format!("q{i}"), false)).await;
            out.push(r.status().as_u16());
        }
        (out, mock.state().injected_faults())
    };
    let (a, faults) = statuses("500=0.5").await;
    let (b, _) = statuses("500=0.5").await;
    assert_eq!(a, b);
    assert!(a.contains(&500) && a.contains(&200));
    let failed = a.iter().filter(|s| **s == 500).count() as u64;
    assert!(faults.contains(&("500".to_owned(), failed)), "{faults:?}");
}
