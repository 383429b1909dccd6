//! Retries: at most `max_retries + 1` upstream calls per client request, only for failures another
//! attempt could fix, obeying `Retry-After`, and never once a stream has started.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

async fn chat(gw: &Gateway, extra: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(extra))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_429_with_retry_after_then_success_is_one_200_and_two_calls() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let started = tokio::time::Instant::now();
    let resp = chat(
        &gw,
        json!({"x_mock": {"status": 429, "retry_after": 0.3, "fail_times": 1, "fail_key": "a"}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.state().request_count(), 2);
    assert!(started.elapsed().as_millis() >= 300, "Retry-After was not obeyed");
}

#[tokio::test]
async fn a_dead_upstream_gets_exactly_max_retries_plus_one_calls() {
    let mock = MockServer::start().await.unwrap();
    // The default is 2 retries; retry_after keeps the test fast without changing the count.
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = chat(&gw, json!({"x_mock": {"status": 500, "retry_after": 0.01}})).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(mock.state().request_count(), 3);

    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "        retry: { max_retries: 4 }", "")).await;
    let resp = chat(&gw, json!({"x_mock": {"status": 503, "retry_after": 0.01}})).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(mock.state().request_count(), 5);

    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "        retry: { max_retries: 0 }", "")).await;
    assert_eq!(chat(&gw, json!({"x_mock": {"status": 500}})).await.status(), 502);
    assert_eq!(mock.state().request_count(), 1);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for status in [400, 401, 404, 422] {
        mock.state().reset();
        let resp = chat(&gw, json!({"x_mock": {"status": status}})).await;
        assert!(
            resp.status().is_client_error() || resp.status() == 500,
            "{status}"
        );
        assert_eq!(mock.state().request_count(), 1, "upstream {status} was retried");
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_maximum_is_passed_to_the_client_instead() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = chat(&gw, json!({"x_mock": {"status": 429, "retry_after": 120}})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "120");
    assert_eq!(mock.state().request_count(), 1);
}

#[tokio::test]
async fn a_stream_is_retried_before_its_first_byte_but_never_after() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = chat(
        &gw,
        json!({"stream": true, "x_mock": {"status": 500, "retry_after": 0.01, "fail_times": 1, "fail_key": "s"}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(mock.state().request_count(), 2);

    mock.state().reset();
    let resp = chat(&gw, json!({"stream": true, "x_mock": {"drop_after_chunks": 2}})).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(mock.state().request_count(), 1, "a started stream was retried");
}

#[tokio::test]
async fn retries_move_to_the_next_deployment() {
    // `a` refuses connections (bind, then drop the listener); `b` is healthy.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mock_b = MockServer::start().await.unwrap();
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: a\n        provider: openai\n        base_url: http://{dead}/v1\n        api_key: k\n      - id: b\n        provider: openai\n        base_url: {}\n        api_key: k\n",
        mock_b.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..4 {
        // Round-robin alternates the first attempt between `a` and `b`; whenever it lands on `a`,
        // the retry moves on to `b`. Either way the client sees `b`'s answer.
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-weir-deployment"], "b");
    }
    assert_eq!(mock_b.state().request_count(), 4);
}

#[tokio::test]
async fn a_dead_upstream_under_load_gets_no_more_than_the_retry_budget() {
    let mock = MockServer::start().await.unwrap();
    let server = "resilience:\n  retry_budget: { ratio: 0.2, min_per_second: 0, window: 60s }";
    // The breaker would cut this off after 5 failures; here we test the budget on its own.
    let extra = "        retry: { max_retries: 2 }\n        circuit_breaker: { enabled: false }";
    let gw = Gateway::start(&config_for(&mock, extra, server)).await;
    let requests = 50;
    let calls = futures::future::join_all(
        (0..requests).map(|_| chat(&gw, json!({"x_mock": {"status": 500, "retry_after": 0.001}}))),
    )
    .await;
    assert!(calls.iter().all(|r| r.status() == 502));
    let upstream_calls = mock.state().request_count();
    // Without a budget: 50 × 3 = 150 calls. With 20 %: at most 50 + 10.
    assert!(
        upstream_calls <= requests + requests / 5,
        "{upstream_calls} upstream calls for {requests} requests"
    );
    assert!(
        upstream_calls > requests,
        "the budget should still allow some retries ({upstream_calls})"
    );
}

#[tokio::test]
async fn the_client_can_shorten_the_deadline() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let started = tokio::time::Instant::now();
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .header("x-weir-timeout", "300ms")
        .json(&chat_body(json!({"x_mock": {"latency_ms": 5000}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let err = error_of(resp).await;
    assert!(err["message"].as_str().unwrap().contains("deadline"), "{err}");
    assert!(
        started.elapsed().as_secs() < 3,
        "the client's deadline was ignored"
    );
}

#[tokio::test]
async fn no_retry_is_started_that_would_end_after_the_deadline() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "resilience:\n  request_deadline: 1s")).await;
    // The upstream asks for 5 s; the deadline leaves 1 s: fail now with the upstream's error.
    let resp = chat(&gw, json!({"x_mock": {"status": 503, "retry_after": 5}})).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(mock.state().request_count(), 1);
}
