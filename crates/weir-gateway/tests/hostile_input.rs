//! What one client, or one careless upstream, must not be able to do to everyone else (issue 17,
//! defects 5 and 7): a body nested thousands deep is refused before it reaches the upstream (so it
//! can't make it fail and open the breaker), and no configured secret is ever relayed to a client
//! in an upstream's error text.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir::policy::breaker::StateKind;
use weir_mock::server::{MockConfig, MockServer};

/// `{"model": ..., "messages": [...], "tools": [[[[...1...]]]]}`, `depth` arrays deep.
fn deep_body(model_and_messages: &str, depth: usize) -> String {
    format!(
        "{{{model_and_messages},\"tools\":{}1{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[tokio::test]
async fn a_body_nested_100k_deep_is_a_400_on_both_faces_and_never_reaches_the_upstream() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(
        &mock,
        "        circuit_breaker: { failure_threshold: 2 }",
        "",
    ))
    .await;
    let chat = r#""model":"mock-model","messages":[{"role":"user","content":"hi"}]"#;
    for _ in 0..3 {
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(deep_body(chat, 100_000))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err = error_of(resp).await;
        assert_eq!(err["code"], "json_too_deep", "{err}");
        assert_eq!(err["param"], "tools", "{err}");
        assert_eq!(err["type"], "invalid_request_error", "{err}");
    }
    let messages = r#""model":"mock-model","max_tokens":5,"messages":[{"role":"user","content":"hi"}]"#;
    let resp = http()
        .post(gw.url("/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(deep_body(messages, 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("64 levels"),
        "{body}"
    );

    assert_eq!(
        mock.state().request_count(),
        0,
        "a poisonous body reached the upstream"
    );
    let breaker = gw
        .state
        .engine()
        .deployment("mock-a")
        .unwrap()
        .breaker()
        .unwrap()
        .state();
    assert_eq!(breaker.kind(), StateKind::Closed);
    // Ordinary nesting still passes.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(deep_body(chat, 20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A gateway with a gateway key in front of a mock that quotes the `Authorization` it received
/// in every error answer.
async fn echoing() -> (MockServer, Gateway) {
    let mock = MockServer::start().await.unwrap();
    mock.state().set_echo_auth(true);
    let gw = Gateway::start(&config_for(
        &mock,
        "        retry: { max_retries: 0 }",
        "server:\n  api_keys: [gw-secret-key-123]",
    ))
    .await;
    (mock, gw)
}

const SECRETS: [&str; 2] = ["upstream-secret-key", "gw-secret-key-123"];

#[tokio::test]
async fn relayed_upstream_400_and_429_messages_never_carry_a_configured_secret() {
    let (_mock, gw) = echoing().await;
    for status in [400, 429] {
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("gw-secret-key-123")
            .json(&chat_body(json!({"x_mock": {"status": status}})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        let err = error_of(resp).await;
        let text = err.to_string();
        assert!(
            text.contains("Authorization"),
            "the upstream's message is relayed: {text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
        for secret in SECRETS {
            assert!(!text.contains(secret), "`{secret}` relayed to the client: {text}");
        }
    }
    // The Anthropic face relays the same message, redacted the same way.
    let resp = http()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "gw-secret-key-123")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "mock-model", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 400}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("[redacted]") && !text.contains(SECRETS[0]),
        "{text}"
    );
}

#[tokio::test]
async fn health_upstreams_never_shows_a_configured_secret() {
    // The upstream wants another key; its 401 quotes the one the gateway sent.
    let mock = MockServer::start_with(MockConfig {
        required_api_key: Some("the-right-key".to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mock.state().set_echo_auth(true);
    let gw = Gateway::start(&config_for(&mock, "", "server:\n  api_keys: [gw-secret-key-123]")).await;
    let resp = http()
        .get(gw.url("/health/upstreams"))
        .bearer_auth("gw-secret-key-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.unwrap();
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "`{secret}` shown by /health/upstreams: {text}"
        );
    }
}
