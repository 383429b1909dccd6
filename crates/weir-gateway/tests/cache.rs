//! The response cache through the gateway: headers, Cache-Control, tenants by gateway key,
//! coalescing, and two gateway instances sharing one Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../weir/tests/support/redis_server.rs"]
mod redis_server;

use common::{Gateway, chat_body, config_for, http};
use redis_server::{RedisServer, unique_prefix};
use serde_json::{Value, json};
use weir_mock::server::MockServer;

const CHAT: &str = "/v1/chat/completions";

fn cached(mock: &MockServer, server: &str, cache: &str) -> String {
    format!("{}\ncache:\n{cache}\n", config_for(mock, "", server))
}

async fn post(
    gw: &Gateway,
    key: Option<&str>,
    body: &Value,
    cache_control: Option<&str>,
) -> reqwest::Response {
    let mut req = http().post(gw.url(CHAT)).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(cc) = cache_control {
        req = req.header("cache-control", cc);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

fn cache_status(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-weir-cache")
        .expect("every response says x-weir-cache")
        .to_str()
        .unwrap()
        .to_owned()
}

fn deterministic() -> Value {
    chat_body(json!({"temperature": 0}))
}

#[tokio::test]
async fn responses_say_hit_miss_or_bypass() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&cached(&mock, "", "  strategy: conservative")).await;

    let first = post(&gw, None, &deterministic(), None).await;
    assert_eq!(cache_status(&first), "miss");
    assert!(first.headers().get("age").is_none());
    let first: Value = first.json().await.unwrap();

    let second = post(&gw, None, &deterministic(), None).await;
    assert_eq!(cache_status(&second), "hit");
    assert_eq!(second.headers().get("age").unwrap(), "0");
    assert_eq!(second.headers().get("x-weir-deployment").unwrap(), "mock-a");
    assert_eq!(second.json::<Value>().await.unwrap(), first);

    let creative = post(&gw, None, &chat_body(json!({})), None).await;
    assert_eq!(cache_status(&creative), "bypass");
    assert_eq!(mock.state().count_for_path(CHAT), 2);

    // Cache-Control passes through the gateway.
    let no_cache = post(&gw, None, &deterministic(), Some("no-cache")).await;
    assert_eq!(cache_status(&no_cache), "bypass");
    assert_eq!(mock.state().count_for_path(CHAT), 3);
    let no_store = post(
        &gw,
        None,
        &chat_body(json!({"temperature": 0, "seed": 1})),
        Some("no-store"),
    )
    .await;
    assert_eq!(cache_status(&no_store), "miss");
    let again = post(&gw, None, &chat_body(json!({"temperature": 0, "seed": 1})), None).await;
    assert_eq!(cache_status(&again), "miss", "no-store kept it out of the cache");

    // A streamed request is served from the whole answer, as SSE.
    let streamed = post(
        &gw,
        None,
        &chat_body(json!({"temperature": 0, "stream": true})),
        None,
    )
    .await;
    assert_eq!(cache_status(&streamed), "hit");
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = streamed.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(mock.state().count_for_path(CHAT), 5);

    let stats = gw.state.engine().cache_stats();
    assert_eq!(stats.hits, 2, "{stats:?}");
}

#[tokio::test]
async fn clients_with_different_keys_never_share_answers() {
    let mock = MockServer::start().await.unwrap();
    let server = "server:\n  api_keys: [key-alpha, key-beta]";
    let gw = Gateway::start(&cached(&mock, server, "  strategy: conservative")).await;
    assert_eq!(
        cache_status(&post(&gw, Some("key-alpha"), &deterministic(), None).await),
        "miss"
    );
    assert_eq!(
        cache_status(&post(&gw, Some("key-beta"), &deterministic(), None).await),
        "miss"
    );
    assert_eq!(
        cache_status(&post(&gw, Some("key-alpha"), &deterministic(), None).await),
        "hit"
    );
    assert_eq!(
        cache_status(&post(&gw, Some("key-beta"), &deterministic(), None).await),
        "hit"
    );
    assert_eq!(mock.state().count_for_path(CHAT), 2);
}

#[tokio::test]
async fn twenty_concurrent_identical_requests_make_one_upstream_call() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&cached(&mock, "", "  strategy: conservative")).await;
    let body = chat_body(json!({"temperature": 0, "x_mock": {"latency_ms": 300}}));
    let requests = (0..20).map(|_| {
        let body = body.clone();
        let url = gw.url(CHAT);
        async move {
            let resp = http().post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let status = cache_status(&resp);
            (status, resp.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(mock.state().count_for_path(CHAT), 1);
    assert_eq!(answers.iter().filter(|(s, _)| s == "miss").count(), 1);
    assert!(answers.iter().all(|(_, a)| a == &answers[0].1));
}

#[tokio::test]
async fn two_gateways_share_one_redis_cache() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start().await.unwrap();
    let prefix = unique_prefix("gateways");
    // The keys are listed in different orders: the cache follows the key, not its position.
    let cache = format!(
        "  strategy: conservative\n  redis:\n    url: {}\n    key_prefix: {prefix}\n    timeout: 200ms",
        redis.url
    );
    let one = Gateway::start(&cached(
        &mock,
        "server:\n  api_keys: [key-alpha, key-beta]",
        &cache,
    ))
    .await;
    let two = Gateway::start(&cached(
        &mock,
        "server:\n  api_keys: [key-beta, key-alpha]",
        &cache,
    ))
    .await;

    let first = post(&one, Some("key-alpha"), &deterministic(), None).await;
    assert_eq!(cache_status(&first), "miss");
    let first: Value = first.json().await.unwrap();
    let from_two = post(&two, Some("key-alpha"), &deterministic(), None).await;
    assert_eq!(cache_status(&from_two), "hit");
    assert_eq!(from_two.json::<Value>().await.unwrap(), first);
    assert_eq!(two.state.engine().cache_stats().redis_hits, 1);
    // Another key on the other instance: not its answer.
    assert_eq!(
        cache_status(&post(&two, Some("key-beta"), &deterministic(), None).await),
        "miss"
    );

    // A stream recorded by one instance is replayed by the other.
    let stream = chat_body(
        json!({"temperature": 0, "stream": true, "stream_options": {"include_usage": true}, "x_mock": {"chunks": 3}}),
    );
    let recorded = post(&two, Some("key-beta"), &stream, None).await;
    assert_eq!(cache_status(&recorded), "miss");
    let recorded = recorded.text().await.unwrap();
    let replayed = post(&one, Some("key-beta"), &stream, None).await;
    assert_eq!(cache_status(&replayed), "hit");
    assert_eq!(replayed.text().await.unwrap(), recorded);
    assert_eq!(mock.state().count_for_path(CHAT), 3);
}
