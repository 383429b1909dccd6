//! Rate limits through the gateway: per deployment and per client key, reserved from estimates
//! and reconciled with real usage, refusing with OpenAI-style 429s.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

async fn chat_as(gw: &Gateway, key: Option<&str>, extra: Value) -> reqwest::Response {
    let mut req = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(extra));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_deployment_limit_refuses_with_openai_style_429() {
    let mock = MockServer::start().await.unwrap();
    let limits = "        rate_limits: { requests_per_minute: 3, mode: fail_fast }";
    let gw = Gateway::start(&config_for(&mock, limits, "")).await;
    for _ in 0..3 {
        assert_eq!(chat_as(&gw, None, json!({})).await.status(), 200);
    }
    let refused = chat_as(&gw, None, json!({})).await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    assert_eq!(headers["x-ratelimit-limit-requests"], "3");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert!(headers.contains_key("x-ratelimit-reset-requests"));
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    let err = error_of(refused).await;
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert!(err["message"].as_str().unwrap().contains("mock-a"), "{err}");
    assert_eq!(
        mock.state().request_count(),
        3,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn full_keys_are_skipped_for_keys_with_room() {
    let (mock_a, mock_b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: a\n        provider: openai\n        base_url: {}\n        rate_limits: {{ requests_per_minute: 2, mode: fail_fast }}\n      - id: b\n        provider: openai\n        base_url: {}\n        rate_limits: {{ requests_per_minute: 3, mode: fail_fast }}\n",
        mock_a.base_url(),
        mock_b.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let ask = || {
        http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(ask().await.unwrap().status(), 200);
    }
    assert_eq!(
        (mock_a.state().request_count(), mock_b.state().request_count()),
        (2, 3)
    );
    assert_eq!(ask().await.unwrap().status(), 429, "both keys are full");
}

#[tokio::test]
async fn each_client_key_has_its_own_limit() {
    let mock = MockServer::start().await.unwrap();
    let server = "server:\n  api_keys: [tenant-a-key, tenant-b-key]\n  client_rate_limits: { requests_per_minute: 2, mode: fail_fast }";
    let gw = Gateway::start(&config_for(&mock, "", server)).await;
    let first = chat_as(&gw, Some("tenant-a-key"), json!({})).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(chat_as(&gw, Some("tenant-a-key"), json!({})).await.status(), 200);
    let refused = chat_as(&gw, Some("tenant-a-key"), json!({})).await;
    assert_eq!(refused.status(), 429);
    let err = error_of(refused).await;
    assert!(err["message"].as_str().unwrap().contains("client key-0"), "{err}");
    assert!(
        !err["message"].as_str().unwrap().contains("tenant-a-key"),
        "the key leaked: {err}"
    );
    // The other tenant is untouched.
    assert_eq!(chat_as(&gw, Some("tenant-b-key"), json!({})).await.status(), 200);
    assert_eq!(mock.state().request_count(), 3);
}

#[tokio::test]
async fn output_reservations_are_reconciled_with_real_usage() {
    let mock = MockServer::start().await.unwrap();
    // 100 output tokens a minute. Each request reserves its max_tokens (60) but the mock answers
    // with ~9: after reconciliation the unused 51 come back, so a second request fits.
    let limits = "        rate_limits: { output_tokens_per_minute: 100, mode: fail_fast }";
    let gw = Gateway::start(&config_for(&mock, limits, "")).await;
    assert_eq!(chat_as(&gw, None, json!({"max_tokens": 60})).await.status(), 200);
    assert_eq!(
        chat_as(&gw, None, json!({"max_tokens": 60})).await.status(),
        200,
        "the reservation was not reconciled"
    );

    // Streams reconcile from their final usage chunk.
    let resp = chat_as(
        &gw,
        None,
        json!({"max_tokens": 60, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    while body.next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(50)).await;
    let snapshot = gw
        .state
        .engine()
        .deployment("mock-a")
        .unwrap()
        .limiter()
        .unwrap()
        .snapshot();
    let used = 100 - snapshot.output_tokens.unwrap().remaining;
    assert!(
        used < 60,
        "three requests should have used ~27 output tokens, not {used}"
    );

    // A request that could never fit is a 400, not a 429 to retry forever.
    let too_big = chat_as(&gw, None, json!({"max_tokens": 1000})).await;
    assert_eq!(too_big.status(), 400);
    assert_eq!(error_of(too_big).await["code"], "request_too_large_for_limit");
}

#[tokio::test]
async fn in_wait_mode_requests_queue_for_the_bucket_instead_of_failing() {
    let mock = MockServer::start().await.unwrap();
    let limits = "        rate_limits: { requests_per_second: 5, burst: 1, mode: wait, max_wait: 5s }";
    let gw = Gateway::start(&config_for(&mock, limits, "")).await;
    let started = tokio::time::Instant::now();
    let all = futures::future::join_all((0..4).map(|_| chat_as(&gw, None, json!({})))).await;
    assert!(all.iter().all(|r| r.status() == 200));
    // 1 at once, then one every 200 ms: the last waits about 600 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mock.state().request_count(), 4);
}

#[tokio::test]
async fn streams_that_fail_before_their_first_event_give_their_tokens_back() {
    let mock = MockServer::start().await.unwrap();
    let server = "server:\n  client_rate_limits: { output_tokens_per_minute: 3000, mode: fail_fast }";
    let gw = Gateway::start(&config_for(&mock, "        retry: { max_retries: 0 }", server)).await;
    for _ in 0..3 {
        let resp = chat_as(
            &gw,
            None,
            json!({"max_tokens": 1000, "stream": true, "x_mock": {"drop_after_chunks": 0}}),
        )
        .await;
        assert_eq!(resp.status(), 502);
    }
    // Had the three failed streams kept their 1,000-token reservations, this would be refused.
    assert_eq!(
        chat_as(&gw, None, json!({"max_tokens": 1000})).await.status(),
        200
    );
}
