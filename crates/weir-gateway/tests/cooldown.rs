//! A 429 rests the deployment for its Retry-After instead of tripping anything: traffic moves to the
//! group's other deployments, and when none is left the client is told why and for how long.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use weir_mock::server::MockServer;

fn two_deployments(mock_a: &MockServer, mock_b: &MockServer, a_model: &str, a_extra: &str) -> String {
    format!(
        "models:\n  - name: m\n    deployments:\n      - id: a\n        provider: openai\n        base_url: {}\n        api_key: k\n        model: \"{a_model}\"\n{a_extra}      - id: b\n        provider: openai\n        base_url: {}\n        api_key: k\n",
        mock_a.base_url(),
        mock_b.base_url()
    )
}

async fn ask(gw: &Gateway) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rate_limited_key_leaves_rotation_and_traffic_moves_on() {
    // `a`'s upstream model name scripts the mock: every call to it answers 429, Retry-After 30 s.
    let (mock_a, mock_b, gw) = traffic_moves_off_a(30, 10).await;
    assert_eq!(
        mock_a.state().request_count(),
        1,
        "a cooling deployment was called again"
    );
    assert_eq!(mock_b.state().request_count(), 10);
    let a = gw.state.engine().deployment("a").unwrap().clone();
    let rest = a.cooldown_remaining().unwrap();
    assert!(rest.as_secs() > 25 && rest.as_secs() <= 30, "{rest:?}");
}

#[tokio::test]
async fn when_every_deployment_rests_the_client_gets_503_with_the_reason() {
    let mock = MockServer::start().await.unwrap();
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: only\n        provider: openai\n        base_url: {}\n        api_key: k\n        model: \"mock:status=429,retry_after=30\"\n        retry: {{ max_retry_after: 5s }}\n",
        mock.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    // First: the upstream's 429, passed on (30 s is more than this deployment will wait).
    let first = ask(&gw).await;
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after"], "30");
    // Then: the deployment is resting, so the gateway answers without calling it.
    let second = ask(&gw).await;
    assert_eq!(second.status(), 503);
    let retry_after: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((25..=30).contains(&retry_after), "{retry_after}");
    let err = error_of(second).await;
    assert_eq!(err["code"], "no_available_deployment");
    assert!(err["message"].as_str().unwrap().contains("cooling down"), "{err}");
    assert_eq!(mock.state().request_count(), 1);
}

#[tokio::test]
async fn a_short_cooldown_is_waited_out_within_the_request() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    // One 429 with Retry-After 0.3 s, then success: the request waits the cooldown and succeeds.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(
            json!({"x_mock": {"status": 429, "retry_after": 0.3, "fail_times": 1, "fail_key": "c"}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.state().request_count(), 2);
    assert!(
        gw.state
            .engine()
            .deployment("mock-a")
            .unwrap()
            .cooldown_remaining()
            .is_none()
    );
}

#[tokio::test]
async fn a_long_retry_after_still_moves_the_request_to_a_free_key() {
    // 120 s is longer than any request would wait (max_retry_after 60 s): move on, don't give up.
    let (mock_a, _mock_b, _gw) = traffic_moves_off_a(120, 4).await;
    assert_eq!(mock_a.state().request_count(), 1);
}

/// Two deployments where `a` answers every call with 429 and this Retry-After (seconds): sends
/// `requests` requests and checks that every one is served by `b`.
async fn traffic_moves_off_a(retry_after: u32, requests: usize) -> (MockServer, MockServer, Gateway) {
    let (mock_a, mock_b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let a_model = format!("mock:status=429,retry_after={retry_after}");
    let gw = Gateway::start(&two_deployments(&mock_a, &mock_b, &a_model, "")).await;
    for _ in 0..requests {
        let resp = ask(&gw).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-weir-deployment"], "b");
    }
    (mock_a, mock_b, gw)
}
