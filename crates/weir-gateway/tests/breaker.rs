//! Circuit breaking end to end: a failing upstream is cut off after consecutive failures, requests
//! then fail fast without reaching it, and it recovers through half-open probes.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir::policy::breaker::StateKind;
use weir_mock::server::MockServer;

const BREAKER: &str = "        retry: { max_retries: 0 }\n        circuit_breaker: { failure_threshold: 5, open_timeout: 300ms, success_threshold: 1 }";

async fn chat(gw: &Gateway, extra: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(extra))
        .send()
        .await
        .unwrap()
}

fn breaker_state(gw: &Gateway) -> StateKind {
    gw.state
        .engine()
        .deployment("mock-a")
        .unwrap()
        .breaker()
        .unwrap()
        .state()
        .kind()
}

#[tokio::test]
async fn five_failures_open_it_then_requests_fail_fast_then_it_recovers() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, BREAKER, "")).await;
    for _ in 0..5 {
        assert_eq!(chat(&gw, json!({"x_mock": {"status": 500}})).await.status(), 502);
    }
    assert_eq!(breaker_state(&gw), StateKind::Open);

    // The sixth request never reaches the upstream.
    let started = tokio::time::Instant::now();
    let sixth = chat(&gw, json!({})).await;
    assert_eq!(sixth.status(), 503);
    assert!(sixth.headers().contains_key("retry-after"));
    let err = error_of(sixth).await;
    assert_eq!(err["code"], "no_available_deployment");
    assert!(
        err["message"].as_str().unwrap().contains("circuit breaker open"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "an open breaker must reject at once"
    );
    assert_eq!(mock.state().request_count(), 5);

    // After open_timeout it lets a probe through; the probe succeeds and it closes.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(chat(&gw, json!({})).await.status(), 200);
    assert_eq!(breaker_state(&gw), StateKind::Closed);
    assert_eq!(mock.state().request_count(), 6);
}

#[tokio::test]
async fn client_errors_and_rate_limits_never_trip_it() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, BREAKER, "")).await;
    for status in [400, 404, 422, 400, 400, 400] {
        chat(&gw, json!({"x_mock": {"status": status}})).await;
    }
    assert_eq!(breaker_state(&gw), StateKind::Closed);
    for _ in 0..6 {
        chat(&gw, json!({"x_mock": {"status": 429, "retry_after": 0.001}})).await;
    }
    assert_eq!(breaker_state(&gw), StateKind::Closed);
}

#[tokio::test]
async fn streams_cut_midway_count_as_failures() {
    let mock = MockServer::start().await.unwrap();
    let extra = "        retry: { max_retries: 0 }\n        circuit_breaker: { failure_threshold: 2 }";
    let gw = Gateway::start(&config_for(&mock, extra, "")).await;
    for _ in 0..2 {
        let resp = chat(&gw, json!({"stream": true, "x_mock": {"drop_after_chunks": 2}})).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        while body.next().await.is_some() {}
    }
    assert_eq!(breaker_state(&gw), StateKind::Open);
}

#[tokio::test]
async fn the_library_api_forces_it_open_and_closed() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, BREAKER, "")).await;
    let breaker = gw
        .state
        .engine()
        .deployment("mock-a")
        .unwrap()
        .breaker()
        .unwrap()
        .clone();
    breaker.force_open();
    assert_eq!(chat(&gw, json!({})).await.status(), 503);
    assert_eq!(mock.state().request_count(), 0);
    breaker.reset();
    assert_eq!(chat(&gw, json!({})).await.status(), 200);
    breaker.force_closed();
    for _ in 0..8 {
        chat(&gw, json!({"x_mock": {"status": 500}})).await;
    }
    assert_eq!(
        breaker_state(&gw),
        StateKind::ForcedClosed,
        "forced closed ignores failures"
    );
}

#[tokio::test]
async fn with_two_deployments_traffic_moves_off_the_broken_one() {
    let (mock_a, mock_b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: a\n        provider: openai\n        base_url: {}\n        model: \"mock:status=500\"\n        retry: {{ max_retries: 0 }}\n        circuit_breaker: {{ failure_threshold: 2 }}\n      - id: b\n        provider: openai\n        base_url: {}\n",
        mock_a.base_url(),
        mock_b.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let mut served_by_b = 0;
    for _ in 0..20 {
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            served_by_b += 1;
        }
    }
    // `a` fails twice, then its breaker keeps it out of rotation for 30 s.
    assert_eq!(mock_a.state().request_count(), 2);
    assert_eq!(served_by_b, 18);
}

#[tokio::test]
async fn a_hung_upstream_trips_it_but_a_client_shortened_deadline_does_not() {
    let (_mock, gw) = hung_upstream_gateway().await;
    // A client's own short deadline: not evidence against the upstream.
    for _ in 0..3 {
        assert_eq!(ask_hung(&gw, Some(("x-weir-timeout", "100ms"))).await, 504);
    }
    assert_eq!(breaker_state(&gw), StateKind::Closed);
    // The configured deadline passing on a hung upstream is.
    for _ in 0..2 {
        assert_eq!(ask_hung(&gw, None).await, 504);
    }
    assert_eq!(breaker_state(&gw), StateKind::Open);
}

#[tokio::test]
async fn a_streaming_probe_frees_the_half_open_slot_at_its_first_event() {
    let mock = MockServer::start().await.unwrap();
    let extra = "        retry: { max_retries: 0 }\n        circuit_breaker: { failure_threshold: 1, open_timeout: 200ms, success_threshold: 2, half_open_max_probes: 1 }";
    let gw = Gateway::start(&config_for(&mock, extra, "")).await;
    assert_eq!(chat(&gw, json!({"x_mock": {"status": 500}})).await.status(), 502);
    assert_eq!(breaker_state(&gw), StateKind::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe: a slow stream (about 2 s).
    let probe = chat(
        &gw,
        json!({"stream": true, "x_mock": {"chunks": 10, "chunk_delay_ms": 200}}),
    )
    .await;
    assert_eq!(probe.status(), 200);
    let mut body = probe.bytes_stream();
    body.next().await.unwrap().unwrap();
    // While it still streams, the next request is admitted as the second probe and closes it.
    assert_eq!(chat(&gw, json!({})).await.status(), 200);
    assert_eq!(breaker_state(&gw), StateKind::Closed);
    while body.next().await.is_some() {}
}

#[tokio::test]
async fn sdk_timeout_headers_longer_than_the_deadline_do_not_hide_a_hung_upstream() {
    let (_mock, gw) = hung_upstream_gateway().await;
    // OpenAI's SDKs send x-stainless-timeout on every request; 600 s does not shorten 300 ms.
    for _ in 0..2 {
        assert_eq!(ask_hung(&gw, Some(("x-stainless-timeout", "600"))).await, 504);
    }
    assert_eq!(breaker_state(&gw), StateKind::Open);
}

/// A gateway whose upstream will hang, with a 300 ms request deadline and a breaker that opens
/// after 2 failures.
async fn hung_upstream_gateway() -> (MockServer, Gateway) {
    let mock = MockServer::start().await.unwrap();
    let extra = "        retry: { max_retries: 0 }\n        circuit_breaker: { failure_threshold: 2 }";
    let gw = Gateway::start(&config_for(
        &mock,
        extra,
        "resilience:\n  request_deadline: 300ms",
    ))
    .await;
    (mock, gw)
}

/// A request the upstream never answers, with an optional deadline header; returns the status.
async fn ask_hung(gw: &Gateway, header: Option<(&str, &str)>) -> u16 {
    let mut req = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({"x_mock": {"hang": true}})));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.send().await.unwrap().status().as_u16()
}
