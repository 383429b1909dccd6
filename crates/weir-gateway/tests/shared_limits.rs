//! Rate limits shared by several gateway instances through one Redis (`redis:`): three real
//! gateways on loopback, one real mock upstream, and our own `redis-server` on a free port.
//!
//! Real clock: the limits run on Redis's clock, which cannot be paused (see
//! `policy::limit::tests::shared`).

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../weir/tests/support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use redis_server::{RedisServer, unique_prefix};
use serde_json::{Value, json};
use weir_mock::server::MockServer;

/// The `redis:` section (plus `rest`, e.g. a `server:` section) for `config_for`'s top. The
/// timeout is generous: 300 concurrent requests in a debug build on a busy machine can keep a
/// reply waiting that long, and these tests are about the limits, not Redis's latency (the
/// outage tests shorten it).
fn redis_section(redis: &RedisServer, prefix: &str, on_error: &str, rest: &str) -> String {
    format!(
        "redis:\n  url: {}\n  key_prefix: {prefix}\n  timeout: 1s\n  max_backoff: 2s\n  on_error: {on_error}\n{rest}",
        redis.url
    )
}

async fn three_gateways(yaml: &str) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start(yaml).await);
    }
    gateways
}

/// Sends `n` chat requests at once, spread round-robin over `gateways`; returns each status and
/// `Retry-After` (seconds), and each body.
async fn burst(
    gateways: &[Gateway],
    n: usize,
    key: Option<&str>,
    extra: Value,
) -> Vec<(u16, Option<u64>, Value)> {
    let client = http();
    let calls = (0..n).map(|i| {
        let mut req = client
            .post(gateways[i % gateways.len()].url("/v1/chat/completions"))
            .json(&chat_body(extra.clone()));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let streamed = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
            let body = if streamed {
                stream_usage(resp).await
            } else {
                resp.json::<Value>().await.unwrap_or(Value::Null)
            };
            (status, retry_after, body)
        }
    });
    futures::future::join_all(calls).await
}

/// Reads a stream to its end; returns its usage chunk's `usage` (or null).
async fn stream_usage(resp: reqwest::Response) -> Value {
    let mut text = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|event| event.get("usage").filter(|u| !u.is_null()).cloned())
        .map_or(Value::Null, |usage| json!({ "usage": usage }))
}

fn assert_refusals_say_when(results: &[(u16, Option<u64>, Value)]) {
    for (status, retry_after, body) in results {
        match status {
            200 => {}
            429 => {
                let retry_after = retry_after.unwrap_or_else(|| panic!("a 429 without Retry-After: {body}"));
                assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
}

#[tokio::test]
async fn three_instances_share_one_deployment_limit() {
    let (mock, redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-deployment");
    let limits = "        rate_limits: { requests_per_minute: 60, mode: fail_fast }";
    let yaml = config_for(&mock, limits, &redis_section(&redis, &prefix, "fail_closed", ""));
    let gateways = three_gateways(&yaml).await;
    let results = burst(&gateways, 300, None, json!({})).await;
    let upstream = mock.state().request_count();
    let errors: Vec<u64> = gateways
        .iter()
        .map(|g| g.state.engine().shared_limits().unwrap().errors())
        .collect();
    assert!(
        (58..=60).contains(&upstream),
        "{upstream} requests reached the upstream (Redis errors per instance: {errors:?})"
    );
    let ok = results.iter().filter(|(s, ..)| *s == 200).count();
    assert_eq!(ok as u64, upstream);
    assert_refusals_say_when(&results);
    // Every instance decided through Redis, none fell back.
    for gateway in &gateways {
        let engine = gateway.state.engine();
        let redis = engine.shared_limits().unwrap();
        assert!(redis.is_up() && redis.errors() == 0 && redis.fallbacks() == 0);
    }
}

#[tokio::test]
async fn three_instances_share_one_client_key_limit() {
    let (mock, redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-client");
    let server = "server:\n  api_keys: [tenant-key, other-key]\n  client_rate_limits: { requests_per_minute: 60, mode: fail_fast }\n";
    let yaml = config_for(&mock, "", &redis_section(&redis, &prefix, "fail_closed", server));
    let gateways = three_gateways(&yaml).await;
    let results = burst(&gateways, 300, Some("tenant-key"), json!({})).await;
    let upstream = mock.state().request_count();
    assert!(
        (58..=60).contains(&upstream),
        "{upstream} requests reached the upstream"
    );
    assert_eq!(
        results.iter().filter(|(s, ..)| *s == 200).count() as u64,
        upstream
    );
    assert_refusals_say_when(&results);
    // Another key has its own limit.
    let other = burst(&gateways, 3, Some("other-key"), json!({})).await;
    assert!(other.iter().all(|(s, ..)| *s == 200));
    // The key itself is in no Redis key (a hash of it is).
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| !k.contains("tenant-key")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn three_instances_share_token_limits_reconciled_from_streamed_usage() {
    let (mock, redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-tokens");
    // Each request reserves its max_tokens (100) but uses a few: reconciliation from the stream's
    // usage chunk gives the rest back, on every instance. Whatever the interleaving, what all
    // three admitted stays within the limit: each admission saw what the others held.
    let limits = "        rate_limits: { input_tokens_per_minute: 2000, output_tokens_per_minute: 1000, mode: fail_fast }";
    let yaml = config_for(&mock, limits, &redis_section(&redis, &prefix, "fail_closed", ""));
    let gateways = three_gateways(&yaml).await;
    let extra = json!({"max_tokens": 100, "stream": true, "stream_options": {"include_usage": true}});
    let results = burst(&gateways, 300, None, extra).await;
    assert_refusals_say_when(&results);
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, ..)| *s == 200)
        .map(|(.., b)| b)
        .collect();
    let sum = |field: &str| -> u64 { ok.iter().map(|b| b["usage"][field].as_u64().unwrap()).sum() };
    let (input, output) = (sum("prompt_tokens"), sum("completion_tokens"));
    assert!(
        output <= 1000 && input <= 2000,
        "admitted {input} input and {output} output tokens"
    );
    // At least the limit's worth of estimates was admitted, and more once reconciled.
    assert!(ok.len() >= 10, "only {} admitted", ok.len());
    assert_eq!(mock.state().request_count(), ok.len() as u64);
    assert!(results.iter().any(|(s, ..)| *s == 429), "300 requests all fit?");
}

/// Kills Redis mid-run and starts it again: `on_error` decides meanwhile, bounded by the timeout
/// (no request hangs), and the shared limit resumes once Redis answers (counted as a recovery).
async fn redis_outage(on_error: &str) -> (Vec<u16>, Vec<u16>) {
    let (mock, mut redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-outage");
    let limits = "        rate_limits: { requests_per_minute: 5, mode: fail_fast }";
    let section = format!(
        "redis:\n  url: {}\n  key_prefix: {prefix}\n  timeout: 200ms\n  max_backoff: 300ms\n  on_error: {on_error}\n",
        redis.url
    );
    let gateways = three_gateways(&config_for(&mock, limits, &section)).await;
    let before: Vec<u16> = burst(&gateways, 8, None, json!({}))
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(before.iter().filter(|s| **s == 200).count(), 5, "{before:?}");

    redis.kill().await;
    let during = tokio::time::timeout(Duration::from_secs(10), burst(&gateways, 9, None, json!({})))
        .await
        .expect("a request hung while Redis was down");
    assert_refusals_say_when(&during);
    let during: Vec<u16> = during.iter().map(|r| r.0).collect();

    redis.restart().await;
    let engine = gateways[0].state.engine();
    let shared = engine.shared_limits().unwrap();
    assert!(!shared.is_up() && shared.fallbacks() > 0);
    // Within max_backoff the gate lets a probe through; the empty Redis then counts afresh.
    let mut resumed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if gateways
            .iter()
            .all(|g| g.state.engine().shared_limits().unwrap().is_up())
        {
            resumed = true;
            break;
        }
        for gateway in &gateways {
            let _ = burst(std::slice::from_ref(gateway), 1, None, json!({"max_tokens": 1})).await;
        }
    }
    assert!(resumed, "shared limits did not resume after Redis came back");
    assert!(
        gateways
            .iter()
            .all(|g| g.state.engine().shared_limits().unwrap().recoveries() >= 1)
    );
    let after: Vec<u16> = burst(&gateways, 12, None, json!({}))
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    (during, after)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn redis_down_fail_open_admits_and_limits_resume() {
    let (during, after) = redis_outage("fail_open").await;
    assert_eq!(count(&during, 200), 9, "{during:?}");
    // The fresh Redis has seen at most the probes (up to 5); the limit holds again.
    assert!(count(&after, 200) <= 5 && count(&after, 429) >= 7, "{after:?}");
}

#[tokio::test]
async fn redis_down_fail_closed_refuses_and_limits_resume() {
    let (during, after) = redis_outage("fail_closed").await;
    assert_eq!(count(&during, 429), 9, "{during:?}");
    assert!(count(&after, 200) <= 5 && count(&after, 429) >= 7, "{after:?}");
}

#[tokio::test]
async fn redis_down_local_enforces_each_instances_share_and_limits_resume() {
    let (during, after) = redis_outage("local").await;
    // Three instances (redis.instances: 1, the default) each enforce the whole limit of 5 in
    // process: 3 requests each, all admitted.
    assert_eq!(count(&during, 200), 9, "{during:?}");
    assert!(count(&after, 200) <= 5 && count(&after, 429) >= 7, "{after:?}");
}

#[tokio::test]
async fn redis_down_local_with_instances_splits_the_limit() {
    let (mock, mut redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-local-split");
    let limits = "        rate_limits: { requests_per_minute: 6, mode: fail_fast }";
    let section = format!(
        "redis:\n  url: {}\n  key_prefix: {prefix}\n  timeout: 200ms\n  on_error: local\n  instances: 3\n",
        redis.url
    );
    let gateways = three_gateways(&config_for(&mock, limits, &section)).await;
    redis.kill().await;
    // 2 per instance (6 / 3) while Redis is down: 6 of 12, spread evenly.
    let during = burst(&gateways, 12, None, json!({})).await;
    assert_refusals_say_when(&during);
    assert_eq!(during.iter().filter(|r| r.0 == 200).count(), 6);
    assert_eq!(mock.state().request_count(), 6);
}

#[tokio::test]
async fn a_429_seen_by_one_instance_rests_the_deployment_on_all() {
    let (mock, redis) = (MockServer::start().await.unwrap(), RedisServer::start().await);
    let prefix = unique_prefix("gw-shared-cooldown");
    let deployment = "        retry: { max_retries: 0, max_retry_after: 5s }";
    let yaml = config_for(
        &mock,
        deployment,
        &redis_section(&redis, &prefix, "fail_open", ""),
    );
    let (a, b) = (Gateway::start(&yaml).await, Gateway::start(&yaml).await);
    let client = http();
    // A's call meets the upstream's 429 with Retry-After: 30.
    let first = client
        .post(a.url("/v1/chat/completions"))
        .json(&chat_body(
            json!({"x_mock": {"status": 429, "retry_after": 30, "fail_times": 1, "fail_key": "cd"}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 429);
    assert_eq!(mock.state().request_count(), 1);
    // The cooldown is published in the background: wait until Redis has it.
    let mut conn = redis.connection().await;
    let key = format!("{prefix}:cd:{{dep:mock-a}}:v1");
    let mut ttl = -2i64;
    for _ in 0..100 {
        ttl = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        if ttl > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ttl > 25_000 && ttl <= 30_000, "PTTL {ttl}");
    // B never saw a 429, yet sends nothing to that deployment: it answers at once, saying why.
    for _ in 0..5 {
        let resp = client
            .post(b.url("/v1/chat/completions"))
            .json(&chat_body(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((25..=30).contains(&retry_after), "{retry_after}");
        let err = error_of(resp).await;
        assert!(err["message"].as_str().unwrap().contains("cooling down"), "{err}");
    }
    assert_eq!(
        mock.state().request_count(),
        1,
        "B called a deployment A saw rate-limited"
    );
    // B now rests it locally too, without asking Redis again.
    let rest = b
        .state
        .engine()
        .deployment("mock-a")
        .unwrap()
        .cooldown_remaining()
        .unwrap();
    assert!(
        rest > Duration::from_secs(25) && rest <= Duration::from_secs(30),
        "{rest:?}"
    );
    // The other group's deployment is not affected.
    let other = client
        .post(b.url("/v1/chat/completions"))
        .json(&json!({"model": "renamed", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}
