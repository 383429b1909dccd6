//! Routing within a model group: strategies, weights, priority tiers and health checks, end to end.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::{MockConfig, MockServer};

fn two(mock_a: &MockServer, mock_b: &MockServer, group_extra: &str, a_extra: &str, b_extra: &str) -> String {
    format!(
        "models:\n  - name: m\n{group_extra}    deployments:\n      - id: a\n        provider: openai\n        base_url: {}\n{a_extra}      - id: b\n        provider: openai\n        base_url: {}\n{b_extra}",
        mock_a.base_url(),
        mock_b.base_url()
    )
}

async fn ask(gw: &Gateway, extra: Value) -> reqwest::Response {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn weights_three_to_one_give_about_three_to_one() {
    let (a, b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let yaml = two(
        &a,
        &b,
        "    strategy: weighted\n",
        "        weight: 3\n",
        "        weight: 1\n",
    );
    let gw = Gateway::start(&yaml).await;
    let n = 2000;
    for _ in 0..n {
        assert_eq!(ask(&gw, json!({})).await.status(), 200);
    }
    let share = a.state().request_count() as f64 / n as f64;
    // Expected 0.75; one binomial standard deviation is sqrt(0.75·0.25/2000) ≈ 0.0097, so ±0.05 is
    // five of them: a failure here means the weights are wrong, not bad luck.
    assert!(
        (0.70..=0.80).contains(&share),
        "share of the weight-3 deployment: {share}"
    );
}

#[tokio::test]
async fn least_busy_sends_new_requests_to_the_idle_deployment() {
    let (a, b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let gw = Gateway::start(&two(&a, &b, "    strategy: least_busy\n", "", "")).await;
    // A slow stream keeps one deployment busy...
    let slow = ask(
        &gw,
        json!({"stream": true, "x_mock": {"chunks": 10, "chunk_delay_ms": 100}}),
    )
    .await;
    let busy = slow.headers()["x-weir-deployment"].to_str().unwrap().to_owned();
    let mut body = slow.bytes_stream();
    body.next().await.unwrap().unwrap();
    // ...so every other request meanwhile goes to the idle one.
    for _ in 0..5 {
        let resp = ask(&gw, json!({})).await;
        assert_ne!(resp.headers()["x-weir-deployment"].to_str().unwrap(), busy);
    }
    while body.next().await.is_some() {}
}

#[tokio::test]
async fn when_a_tier_is_down_the_next_tier_serves() {
    let (a, b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let a_extra = "        priority: 0\n        model: \"mock:status=503\"\n";
    let gw = Gateway::start(&two(&a, &b, "", a_extra, "        priority: 1\n")).await;
    for _ in 0..3 {
        let resp = ask(&gw, json!({})).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-weir-deployment"], "b");
    }
    // Tier 0 is always tried first while usable; the retry then takes tier 1.
    assert_eq!((a.state().request_count(), b.state().request_count()), (3, 3));

    // While tier 0 is healthy, tier 1 gets nothing.
    let (a, b) = (
        MockServer::start().await.unwrap(),
        MockServer::start().await.unwrap(),
    );
    let gw = Gateway::start(&two(&a, &b, "", "        priority: 0\n", "        priority: 1\n")).await;
    for _ in 0..5 {
        ask(&gw, json!({})).await;
    }
    assert_eq!((a.state().request_count(), b.state().request_count()), (5, 0));
}

#[tokio::test]
async fn failing_health_checks_take_a_deployment_out_of_rotation() {
    // `a`'s upstream rejects our key, so its `GET /models` probes fail.
    let a = MockServer::start_with(MockConfig {
        required_api_key: Some("other".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let b = MockServer::start().await.unwrap();
    let check = "        health_check: { interval: 50ms, timeout: 1s, unhealthy_threshold: 1 }\n";
    let gw = Gateway::start(&two(&a, &b, "", check, "")).await;
    let a_health = gw.state.engine().deployment("a").unwrap().health().clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while a_health.is_healthy() {
        assert!(
            tokio::time::Instant::now() < until,
            "the probes never marked `a` unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.state().reset();
    for _ in 0..6 {
        let resp = ask(&gw, json!({})).await;
        assert_eq!(resp.headers()["x-weir-deployment"], "b");
    }
    assert_eq!(a.state().count_for_path("/v1/chat/completions"), 0);

    let report: Value = http()
        .get(gw.url("/health/upstreams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_report = &report["deployments"][0];
    assert_eq!(a_report["deployment"], "a");
    assert_eq!(a_report["background_check"]["healthy"], false);
    assert!(a_report["background_check"]["checks"].as_u64().unwrap() >= 1);
    assert_eq!(a_report["breaker"], "closed");
    assert_eq!(
        report["deployments"][1]["background_check"],
        Value::Null,
        "checks are off for `b`"
    );
}

#[tokio::test]
async fn unknown_strategies_are_config_errors_naming_the_line() {
    let text = "models:\n  - name: m\n    strategy: fastest\n    deployments: [{provider: mock}]\n";
    let err = weir::Config::from_yaml(text, Some("r.yaml")).unwrap_err();
    assert_eq!(
        (err.field.as_deref(), err.line),
        (Some("models[0].strategy"), Some(3)),
        "{err}"
    );
    assert!(
        err.message.contains("least_busy"),
        "the valid names are listed: {err}"
    );
}
