//! `GET /metrics`: Prometheus text with explicit histogram buckets, the request, upstream, retry,
//! breaker and limiter metrics, bounded label sets, and a Grafana dashboard that only queries
//! metrics that exist.
//!
//! The recorder is process-wide, so the tests in this file share it: each uses its own
//! deployment ids and asserts on its own series.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use weir_mock::server::MockServer;

/// A gateway with one model group `name` whose deployment `id` has `extra` settings.
async fn gateway(mock: &MockServer, name: &str, id: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
logging:
  level: warn
models:
  - name: {name}
    deployments:
      - id: {id}
        provider: openai
        base_url: {base}
        api_key: upstream-secret-key
{extra}
"#,
        base = mock.base_url()
    ))
    .await
}

async fn scrape(gw: &Gateway) -> String {
    let resp = http().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    resp.text().await.unwrap()
}

/// The value of the first series of `name` whose labels include every `label="value"` given.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn chat(gw: &Gateway, body: serde_json::Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn request_metrics_have_bounded_labels_and_explicit_buckets() {
    let mock = MockServer::start().await.unwrap();
    let gw = gateway(&mock, "metrics-core", "metrics-core-a", "").await;
    let ok = chat(
        &gw,
        json!({"model": "metrics-core", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let _ = ok.text().await;
    let stream = chat(
        &gw,
        json!({"model": "metrics-core", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let _ = stream.text().await;
    let failed = chat(
        &gw,
        json!({"model": "metrics-core", "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 400}}),
    )
    .await;
    assert_eq!(failed.status(), 400);
    let _ = failed.text().await;

    let text = scrape(&gw).await;
    let group = r#"model_group="metrics-core""#;
    let dep = r#"deployment="metrics-core-a""#;
    assert_eq!(
        value(
            &text,
            "weir_requests_total",
            &[group, dep, r#"provider="openai""#, r#"status_class="2xx""#]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "weir_requests_total", &[group, r#"status_class="4xx""#]),
        Some(1.0),
        "{text}"
    );
    // Histograms, with the configured buckets (not summaries: those cannot be aggregated).
    assert!(!text.contains("quantile="), "a summary was rendered:\n{text}");
    assert_eq!(
        value(
            &text,
            "weir_request_duration_seconds_count",
            &[group, r#"status_class="2xx""#]
        ),
        Some(2.0)
    );
    assert!(
        value(
            &text,
            "weir_request_duration_seconds_bucket",
            &[group, r#"le="0.005""#]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        value(
            &text,
            "weir_request_duration_seconds_bucket",
            &[group, r#"le="300""#]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "weir_upstream_attempt_duration_seconds_count",
            &[dep, r#"outcome="success""#]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "weir_upstream_attempt_duration_seconds_count",
            &[dep, r#"outcome="upstream_client_error""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "weir_time_to_first_token_seconds_count", &[group, dep]),
        Some(1.0),
        "{text}"
    );
    // Both answers reported usage (the stream in its last chunk).
    let input = value(&text, "weir_tokens_total", &[group, r#"direction="input""#]).unwrap();
    assert!(input > 0.0, "{text}");
    assert_eq!(
        value(
            &text,
            "weir_request_tokens_count",
            &[group, r#"direction="output""#]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "weir_errors_total",
            &[r#"error_type="upstream_client_error""#]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        value(&text, "weir_deployment_in_flight", &[dep]).is_some(),
        "{text}"
    );
    let upstream = format!(r#"upstream="127.0.0.1:{}""#, mock.addr().port());
    assert_eq!(
        value(&text, "weir_upstream_connections_active", &[&upstream]),
        Some(0.0),
        "{text}"
    );
    assert!(value(&text, "weir_upstream_connections_max", &[&upstream]).is_some());
    assert!(value(&text, "weir_requests_in_flight", &[]).is_some(), "{text}");
    assert!(text.contains("# HELP weir_requests_total"), "{text}");
}

/// Series made per request would exhaust Prometheus: random request ids, unknown model names
/// and client-chosen paths must not add any.
#[tokio::test]
async fn random_ids_and_unknown_models_do_not_create_series() {
    let mock = MockServer::start().await.unwrap();
    let gw = gateway(&mock, "metrics-card", "metrics-card-a", "").await;
    let burst = |n: usize| {
        let gw = &gw;
        async move {
            for _ in 0..n {
                let id = uuid_like();
                let resp = http()
                    .post(gw.url("/v1/chat/completions"))
                    .header("x-request-id", &id)
                    .json(&json!({"model": format!("no-such-model-{id}"), "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 404);
                let ok = http()
                    .post(gw.url("/v1/chat/completions"))
                    .header("x-request-id", &id)
                    .json(&json!({"model": "metrics-card", "messages": [{"role": "user", "content": id}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(ok.status(), 200);
                let _ = http()
                    .get(gw.url(&format!("/v1/unknown/{id}")))
                    .send()
                    .await
                    .unwrap();
                let _ = http()
                    .get(gw.url(&format!("/nowhere/{id}")))
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    let series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count()
    };
    burst(5).await;
    let before = scrape(&gw).await;
    burst(40).await;
    let after = scrape(&gw).await;
    // Other tests in this process may add their own series meanwhile: compare only ours and the
    // label-free ones that random input could touch.
    let ours = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.contains("metrics-card") || l.contains(r#"model_group="none""#))
            .count()
    };
    assert_eq!(ours(&before), ours(&after), "series grew:\n{after}");
    for needle in ["no-such-model", "/v1/unknown", "nowhere"] {
        assert!(!after.contains(needle), "`{needle}` became a label:\n{after}");
    }
    assert!(series(&after) < 2000, "{} series", series(&after));
}

fn uuid_like() -> String {
    format!("{:016x}{:016x}", fastrand_u64(), fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Retries, breaker state changes and rate-limit throttles are counted, and the state gauges
/// follow.
#[tokio::test]
async fn retries_breaker_changes_and_throttles_are_counted() {
    let mock = MockServer::start().await.unwrap();
    let gw = gateway(
        &mock,
        "metrics-res",
        "metrics-res-a",
        r#"        retry: { max_retries: 1, base_delay: 1ms, max_delay: 2ms }
        circuit_breaker: { failure_threshold: 2, open_timeout: 60s }
        rate_limits: { requests_per_minute: 3, mode: fail_fast }"#,
    )
    .await;
    // Fails twice (one retry): two failures open the breaker.
    let failed = chat(
        &gw,
        json!({"model": "metrics-res", "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 503}}),
    )
    .await;
    assert_eq!(failed.status(), 502, "an upstream 5xx is a 502 from the gateway");
    let _ = failed.text().await;
    // The breaker is open now: refused without calling the upstream.
    let refused = chat(
        &gw,
        json!({"model": "metrics-res", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(refused.status(), 503);
    let _ = refused.text().await;
    let text = scrape(&gw).await;
    let dep = r#"deployment="metrics-res-a""#;
    assert_eq!(
        value(
            &text,
            "weir_retries_total",
            &[dep, r#"error_type="upstream_server_error""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "weir_circuit_breaker_state_changes_total",
            &[dep, r#"from="closed""#, r#"to="open""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "weir_circuit_breaker_state", &[dep]),
        Some(2.0),
        "{text}"
    );
    // Two of the three requests per minute are used.
    assert_eq!(
        value(&text, "weir_rate_limit_remaining", &[dep, r#"limit="requests""#]),
        Some(1.0),
        "{text}"
    );

    // A second gateway whose limit refuses at once.
    let mock2 = MockServer::start().await.unwrap();
    let gw2 = gateway(
        &mock2,
        "metrics-throttle",
        "metrics-throttle-a",
        "        rate_limits: { requests_per_minute: 1, mode: fail_fast }",
    )
    .await;
    for expected in [200, 429] {
        let resp = chat(
            &gw2,
            json!({"model": "metrics-throttle", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(resp.status(), expected);
        let _ = resp.text().await;
    }
    let text = scrape(&gw2).await;
    assert_eq!(
        value(
            &text,
            "weir_rate_limit_throttled_total",
            &[r#"scope="deployment""#, r#"deployment="metrics-throttle-a""#]
        ),
        Some(1.0),
        "{text}"
    );
}

/// Every metric the Grafana dashboard queries exists in `/metrics` (after traffic that makes
/// every kind of event happen), so the dashboard cannot silently show "no data".
#[tokio::test]
async fn the_dashboard_queries_existing_metrics() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/weir.json"
    ))
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    collect_exprs(&parsed, &mut |expr| {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(pos) = expr[i..].find("weir_") {
            let start = i + pos;
            let end = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(expr.len(), |p| start + p);
            queried.insert(expr[start..end].to_owned());
            i = end;
        }
    });
    assert!(
        queried.len() >= 10,
        "the dashboard queries too little: {queried:?}"
    );

    let mock = MockServer::start().await.unwrap();
    let gw = gateway(
        &mock,
        "metrics-dash",
        "metrics-dash-a",
        r#"        model: gpt-4o-mini
        retry: { max_retries: 1, base_delay: 1ms, max_delay: 2ms }
        circuit_breaker: { failure_threshold: 2, open_timeout: 60s }
        rate_limits: { requests_per_minute: 100, mode: fail_fast }"#,
    )
    .await;
    let stream = chat(
        &gw,
        json!({"model": "metrics-dash", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let _ = stream.text().await;
    let failed = chat(
        &gw,
        json!({"model": "metrics-dash", "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 503}}),
    )
    .await;
    let _ = failed.text().await;
    let mock2 = MockServer::start().await.unwrap();
    let gw2 = gateway(
        &mock2,
        "metrics-dash-t",
        "metrics-dash-t-a",
        "        rate_limits: { requests_per_minute: 1, mode: fail_fast }",
    )
    .await;
    for _ in 0..2 {
        let resp = chat(
            &gw2,
            json!({"model": "metrics-dash-t", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let _ = resp.text().await;
    }
    let text = scrape(&gw).await;
    let present: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &queried {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            weir::telemetry::ALL.contains(&base),
            "the dashboard queries `{name}`, which Weir does not define"
        );
        assert!(
            present.contains(name.as_str()),
            "`{name}` is not in /metrics:\n{text}"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, f: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => f(s),
                    _ => collect_exprs(v, f),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, f)),
        _ => {}
    }
}
