//! The response cache through `Engine::execute`, against the mock upstream over loopback and a
//! real Redis (our own `redis-server`, see `support/redis_server.rs`).
//!
//! Longer than the usual ~600 lines on purpose: one scenario per test, sharing the engine and
//! Redis helpers at the top; split by tier it would repeat them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/redis_server.rs"]
mod redis_server;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use redis_server::{RedisServer, unique_prefix};
use serde_json::{Value, json};
use weir::{
    Config, Endpoint, Engine, ProxyBody, ProxyRequest, ProxyResponse, cache::CacheDirectives, sse::GuardItem,
};
use weir_mock::server::MockServer;

const CHAT: &str = "/v1/chat/completions";

/// An engine with one group `chat` on the mock and the given `cache:` section (indented 2).
fn engine(mock: &MockServer, cache: &str) -> Arc<Engine> {
    let yaml = format!(
        "models:\n  - name: chat\n    deployments:\n      - id: mock-a\n        provider: openai\n        base_url: {}\n        api_key: k\n        retry: {{ max_retries: 0 }}\ncache:\n{cache}\n",
        mock.base_url()
    );
    Arc::new(Engine::new(Config::from_yaml(&yaml, None).unwrap()))
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "Hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn request(body: &Value) -> ProxyRequest {
    ProxyRequest::json(
        Endpoint::ChatCompletions,
        Bytes::from(serde_json::to_vec(body).unwrap()),
    )
}

fn with(body: &Value, directives: CacheDirectives) -> ProxyRequest {
    let mut req = request(body);
    req.cache = directives;
    req
}

fn status(resp: &ProxyResponse) -> &str {
    resp.headers
        .get("x-weir-cache")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("none")
}

async fn full(resp: ProxyResponse) -> Value {
    match resp.body {
        ProxyBody::Full(b) => serde_json::from_slice(&b).unwrap(),
        ProxyBody::Stream(_) => panic!("expected a whole answer"),
    }
}

/// The stream's items, each one chunk of bytes as the client would receive it.
async fn chunks(resp: ProxyResponse) -> Vec<Bytes> {
    match resp.body {
        ProxyBody::Stream(s) => {
            s.map(|item| match item {
                GuardItem::Events(b) => b,
                GuardItem::Failed(e, _) => panic!("stream failed: {e}"),
            })
            .collect()
            .await
        }
        ProxyBody::Full(_) => panic!("expected a stream"),
    }
}

/// Whole SSE events of a list of chunks.
fn events(chunks: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for c in chunks {
        weir::cache::entry::split_events(c, &mut out);
    }
    out
}

/// The text a stream delivered (its content deltas).
fn streamed_text(events: &[Bytes]) -> String {
    events
        .iter()
        .filter_map(|e| weir::sse::event_data(e))
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(&d).unwrap())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

fn calls(mock: &MockServer) -> u64 {
    mock.state().count_for_path(CHAT)
}

#[tokio::test]
async fn a_deterministic_request_is_a_miss_then_a_hit() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body = chat(json!({}));

    let first = engine.execute(request(&body)).await.unwrap();
    assert_eq!(status(&first), "miss");
    assert!(first.headers.get("age").is_none());
    let first = full(first).await;

    // Same request, other key order, another `user`: the same entry.
    let again = json!({"messages": [{"content": "Hello", "role": "user"}], "user": "bob", "temperature": 0.0, "model": "chat"});
    let second = engine.execute(request(&again)).await.unwrap();
    assert_eq!(status(&second), "hit");
    assert_eq!(second.headers.get("age").unwrap(), "0");
    assert_eq!(&*second.served_by.deployment, "mock-a");
    assert_eq!(full(second).await, first, "a hit returns the stored answer");
    assert_eq!(calls(&mock), 1);

    // Another message is another entry.
    let other = engine
        .execute(request(&chat(
            json!({"messages": [{"role": "user", "content": "Bye"}]}),
        )))
        .await
        .unwrap();
    assert_eq!(status(&other), "miss");
    assert_eq!(calls(&mock), 2);

    // Not deterministic (default temperature): the strategy bypasses it.
    let creative = json!({"model": "chat", "messages": [{"role": "user", "content": "Hello"}]});
    for _ in 0..2 {
        let resp = engine.execute(request(&creative)).await.unwrap();
        assert_eq!(status(&resp), "bypass");
    }
    assert_eq!(calls(&mock), 4);
    let stats = engine.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.bypasses), (1, 2, 2), "{stats:?}");
    assert_eq!(stats.memory_hits, 1);
    engine.cache().sync().await;
    let stats = engine.cache_stats();
    assert_eq!(stats.entries, 2);
    assert!(stats.bytes > 0);
}

#[tokio::test]
async fn without_a_cache_section_everything_bypasses() {
    let mock = MockServer::start().await.unwrap();
    let yaml = format!(
        "models:\n  - name: chat\n    deployments:\n      - provider: openai\n        base_url: {}\n        api_key: k\n",
        mock.base_url()
    );
    let engine = Engine::new(Config::from_yaml(&yaml, None).unwrap());
    for _ in 0..2 {
        let resp = engine.execute(request(&chat(json!({})))).await.unwrap();
        assert_eq!(status(&resp), "bypass");
    }
    assert_eq!(calls(&mock), 2);
    assert_eq!(engine.cache_stats().strategy, "disabled");
}

#[tokio::test]
async fn tenants_never_share_answers() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: aggressive");
    let body = chat(json!({}));
    let tenant = |t: &str| CacheDirectives {
        tenant: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(
        status(&engine.execute(with(&body, tenant("alice"))).await.unwrap()),
        "miss"
    );
    assert_eq!(
        status(&engine.execute(with(&body, tenant("bob"))).await.unwrap()),
        "miss"
    );
    assert_eq!(
        status(&engine.execute(with(&body, tenant("alice"))).await.unwrap()),
        "hit"
    );
    assert_eq!(
        status(&engine.execute(with(&body, tenant("bob"))).await.unwrap()),
        "hit"
    );
    // Without an explicit tenant, the client identity scopes the cache.
    let client = |c: &str| {
        let mut req = request(&body);
        req.client = Some(c.into());
        req
    };
    assert_eq!(status(&engine.execute(client("key-0")).await.unwrap()), "miss");
    assert_eq!(status(&engine.execute(client("key-1")).await.unwrap()), "miss");
    assert_eq!(status(&engine.execute(client("key-0")).await.unwrap()), "hit");
    assert_eq!(calls(&mock), 4);
}

#[tokio::test]
async fn cache_control_no_cache_no_store_and_max_age() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body = chat(json!({}));
    let directives = |header: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, header.parse().unwrap());
        CacheDirectives::from_headers(&h)
    };

    // no-store: answered, not stored.
    let r = engine.execute(with(&body, directives("no-store"))).await.unwrap();
    assert_eq!(status(&r), "miss");
    assert_eq!(
        status(&engine.execute(with(&body, directives("no-store"))).await.unwrap()),
        "miss"
    );
    assert_eq!(calls(&mock), 2);
    // Plain: a miss that stores; then a hit.
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "hit");
    assert_eq!(calls(&mock), 3);
    // no-cache: skips the read (goes upstream), refreshes the entry.
    let r = engine.execute(with(&body, directives("no-cache"))).await.unwrap();
    assert_eq!(status(&r), "bypass");
    assert_eq!(calls(&mock), 4);
    let fresh = full(r).await;
    let hit = engine.execute(request(&body)).await.unwrap();
    assert_eq!(
        full(hit).await["id"],
        fresh["id"],
        "no-cache stored the fresh answer"
    );
    // no-cache + no-store: the cache is not involved at all.
    let r = engine
        .execute(with(&body, directives("no-cache, no-store")))
        .await
        .unwrap();
    assert_eq!(status(&r), "bypass");
    assert_eq!(calls(&mock), 5);
    // max-age: a fresh entry is accepted; max-age=0 means "not from the cache".
    assert_eq!(
        status(
            &engine
                .execute(with(&body, directives("max-age=60")))
                .await
                .unwrap()
        ),
        "hit"
    );
    assert_eq!(
        status(
            &engine
                .execute(with(&body, directives("max-age=0")))
                .await
                .unwrap()
        ),
        "bypass"
    );
    assert_eq!(calls(&mock), 6);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl_and_max_age_refuses_old_ones() {
    // The in-process mock provider needs no sockets, so tokio's clock can be paused.
    let yaml = "models:\n  - name: chat\n    deployments:\n      - provider: mock\ncache:\n  strategy: conservative\n  ttl: 60s\n";
    let engine = Engine::new(Config::from_yaml(yaml, None).unwrap());
    let body = chat(json!({}));
    let max_age = |secs: u64| CacheDirectives {
        max_age: Some(Duration::from_secs(secs)),
        ..Default::default()
    };
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
    tokio::time::advance(Duration::from_secs(45)).await;
    let hit = engine.execute(request(&body)).await.unwrap();
    assert_eq!(status(&hit), "hit");
    assert_eq!(hit.headers.get("age").unwrap(), "45");
    // The entry is 45s old: a client accepting 30s at most gets a fresh answer.
    assert_eq!(
        status(&engine.execute(with(&body, max_age(30))).await.unwrap()),
        "miss"
    );
    // That refreshed the entry (age 0 now); past the TTL it is gone.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "hit");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
}

#[tokio::test]
async fn a_stream_is_stored_when_complete_and_replayed_chunk_by_chunk() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body =
        chat(json!({"stream": true, "stream_options": {"include_usage": true}, "x_mock": {"chunks": 4}}));

    let first = engine.execute(request(&body)).await.unwrap();
    assert_eq!(status(&first), "miss");
    let original = events(&chunks(first).await);
    assert!(original.len() >= 6, "{original:?}");

    let replay = engine.execute(request(&body)).await.unwrap();
    assert_eq!(status(&replay), "hit");
    assert_eq!(replay.headers.get("content-type").unwrap(), "text/event-stream");
    let replayed = chunks(replay).await;
    // One chunk per original event, byte for byte (usage chunk and [DONE] included).
    assert_eq!(replayed, original);
    assert!(weir::cache::entry::events_have_usage(&replayed));
    assert_eq!(calls(&mock), 1);

    // The same question asked without streaming is answered from the recorded stream.
    let whole_req = chat(json!({"x_mock": {"chunks": 4}}));
    let whole = engine.execute(request(&whole_req)).await.unwrap();
    assert_eq!(status(&whole), "hit");
    let whole = full(whole).await;
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(
        whole["choices"][0]["message"]["content"],
        streamed_text(&original)
    );
    assert!(whole["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // Streaming without include_usage: the usage chunk is left out of the replay.
    let no_usage = engine
        .execute(request(&chat(json!({"stream": true, "x_mock": {"chunks": 4}}))))
        .await
        .unwrap();
    assert_eq!(status(&no_usage), "hit");
    let no_usage = chunks(no_usage).await;
    assert_eq!(no_usage.len(), original.len() - 1);
    assert!(!weir::cache::entry::events_have_usage(&no_usage));
    assert_eq!(calls(&mock), 1);
}

#[tokio::test]
async fn a_whole_answer_is_replayed_as_a_stream() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let whole = full(engine.execute(request(&chat(json!({})))).await.unwrap()).await;
    let streamed = engine
        .execute(request(&chat(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )))
        .await
        .unwrap();
    assert_eq!(status(&streamed), "hit");
    let streamed = events(&chunks(streamed).await);
    assert_eq!(streamed.last().unwrap().as_ref(), b"data: [DONE]\n\n");
    assert_eq!(
        streamed_text(&streamed),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(weir::cache::entry::events_have_usage(&streamed));
    assert_eq!(calls(&mock), 1);
}

#[tokio::test]
async fn an_interrupted_stream_is_never_stored() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    // The upstream drops the connection after two chunks.
    let broken = chat(json!({"stream": true, "x_mock": {"chunks": 6, "drop_after_chunks": 2}}));
    for _ in 0..2 {
        let resp = engine.execute(request(&broken)).await.unwrap();
        assert_eq!(status(&resp), "miss");
        let ProxyBody::Stream(s) = resp.body else { panic!() };
        let items: Vec<GuardItem> = s.collect().await;
        assert!(matches!(items.last(), Some(GuardItem::Failed(..))));
    }
    assert_eq!(calls(&mock), 2, "the broken stream was not cached");

    // A client that goes away mid-stream: nothing stored either.
    let body = chat(json!({"stream": true, "x_mock": {"chunks": 6, "chunk_delay_ms": 20}}));
    let resp = engine.execute(request(&body)).await.unwrap();
    let ProxyBody::Stream(mut s) = resp.body else {
        panic!()
    };
    s.next().await.unwrap();
    drop(s);
    let resp = engine.execute(request(&body)).await.unwrap();
    assert_eq!(status(&resp), "miss");
    chunks(resp).await;
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "hit");
    assert_eq!(calls(&mock), 4);
}

#[tokio::test]
async fn answers_over_the_size_limit_are_not_stored() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative\n  max_entry_size: 2KiB");
    let big = chat(json!({"x_mock": {"content": "word ".repeat(1000)}}));
    for _ in 0..2 {
        assert_eq!(status(&engine.execute(request(&big)).await.unwrap()), "miss");
    }
    assert_eq!(engine.cache_stats().too_large, 2);
    assert_eq!(calls(&mock), 2);
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_upstream_call() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body = chat(json!({"x_mock": {"latency_ms": 300}}));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let engine = engine.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let resp = engine.execute(request(&body)).await.unwrap();
                let status = status(&resp).to_owned();
                (status, full(resp).await)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(calls(&mock), 1, "20 identical requests, one upstream call");
    let misses = answers.iter().filter(|(s, _)| s == "miss").count();
    assert_eq!(misses, 1);
    assert!(
        answers.iter().all(|(_, a)| a == &answers[0].1),
        "everyone got the same answer"
    );
    let stats = engine.cache_stats();
    assert_eq!(stats.hits, 19);
    assert!(stats.coalesced >= 1, "{stats:?}");
}

#[tokio::test]
async fn concurrent_identical_streams_share_one_upstream_call() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body = chat(json!({"stream": true, "x_mock": {"chunks": 5, "chunk_delay_ms": 30}}));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let engine = engine.clone();
            let body = body.clone();
            tokio::spawn(async move { events(&chunks(engine.execute(request(&body)).await.unwrap()).await) })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(streamed_text(&t.await.unwrap()));
    }
    assert_eq!(calls(&mock), 1);
    assert!(all.iter().all(|t| t == &all[0] && !t.is_empty()));
}

// === Redis ===

fn redis_cache(redis: &RedisServer, prefix: &str, extra: &str) -> String {
    format!(
        "  strategy: conservative\n  redis:\n    url: {}\n    key_prefix: {prefix}\n    timeout: 200ms\n{extra}",
        redis.url
    )
}

#[tokio::test]
async fn redis_serves_hits_to_another_engine_and_compresses_large_entries() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start().await.unwrap();
    let prefix = unique_prefix("shared");
    let a = engine(&mock, &redis_cache(&redis, &prefix, ""));
    let b = engine(
        &mock,
        &redis_cache(&redis, &prefix, "  memory: { enabled: false }"),
    );

    let small = chat(json!({}));
    let large = chat(json!({"x_mock": {"content": "the quick brown fox ".repeat(200)}}));
    let from_a = full(a.execute(request(&small)).await.unwrap()).await;
    let large_a = full(a.execute(request(&large)).await.unwrap()).await;

    // Engine b never saw these requests: both come from Redis, byte-identical.
    let hit = b.execute(request(&small)).await.unwrap();
    assert_eq!(status(&hit), "hit");
    assert_eq!(full(hit).await, from_a);
    let hit = b.execute(request(&large)).await.unwrap();
    assert_eq!(status(&hit), "hit");
    assert_eq!(full(hit).await, large_a);
    assert_eq!(b.cache_stats().redis_hits, 2);
    assert_eq!(calls(&mock), 2);

    // What is stored: small entries plain, large ones zstd-compressed, both with a TTL.
    let mut conn = redis.connection().await;
    let key = |body: &Value| {
        let k = weir::cache::request_key("anonymous", "chat", "chat/completions", body);
        format!("{prefix}:{}", k.hex())
    };
    let small_raw: Vec<u8> = redis::cmd("GET")
        .arg(key(&small))
        .query_async(&mut conn)
        .await
        .unwrap();
    let large_raw: Vec<u8> = redis::cmd("GET")
        .arg(key(&large))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(small_raw[4], 0, "below the threshold: not compressed");
    assert_eq!(large_raw[4], 1, "above the threshold: compressed");
    let large_len = serde_json::to_vec(&large_a).unwrap().len();
    assert!(
        large_raw.len() < large_len / 3,
        "{} vs {large_len}",
        large_raw.len()
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key(&small))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
    // Nothing in Redis names the tenant or the request.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn a_stream_recorded_on_one_engine_replays_from_redis_on_another() {
    let redis = RedisServer::start().await;
    let mock = MockServer::start().await.unwrap();
    let prefix = unique_prefix("stream");
    let only_redis = "  memory: { enabled: false }";
    let a = engine(&mock, &redis_cache(&redis, &prefix, only_redis));
    let b = engine(&mock, &redis_cache(&redis, &prefix, only_redis));
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let original = chunks(a.execute(request(&body)).await.unwrap()).await;
    let replay = b.execute(request(&body)).await.unwrap();
    assert_eq!(status(&replay), "hit");
    assert_eq!(chunks(replay).await, events(&original));
    assert_eq!(calls(&mock), 1);
}

#[tokio::test]
async fn a_dead_redis_is_a_miss_and_a_counted_error_never_a_failure() {
    let mut redis = RedisServer::start().await;
    let mock = MockServer::start().await.unwrap();
    let prefix = unique_prefix("killed");
    let engine = engine(
        &mock,
        &redis_cache(&redis, &prefix, "  memory: { enabled: false }"),
    );
    let body = chat(json!({}));
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "hit");
    assert_eq!(engine.cache_stats().redis_errors, 0);

    redis.kill().await;
    for i in 0..20 {
        let resp = engine
            .execute(request(&chat(
                json!({"messages": [{"role": "user", "content": format!("q{i}")}]}),
            )))
            .await
            .expect("requests keep succeeding without Redis");
        assert_eq!(status(&resp), "miss");
        full(resp).await;
    }
    let stats = engine.cache_stats();
    assert!(stats.redis_errors >= 1, "{stats:?}");
    assert_eq!(stats.redis_up, Some(false));
    // The backoff spares most requests the attempt.
    assert!(stats.redis_skipped >= 1, "{stats:?}");
    assert_eq!(calls(&mock), 21);
}

#[tokio::test]
async fn an_unreachable_redis_from_the_start_costs_nothing_but_misses() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mock = MockServer::start().await.unwrap();
    let engine = engine(
        &mock,
        &format!("  strategy: conservative\n  redis:\n    url: redis://127.0.0.1:{port}\n    timeout: 100ms"),
    );
    let body = chat(json!({}));
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
    // Memory still works in front of the dead Redis.
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "hit");
    assert!(engine.cache_stats().redis_errors >= 1);
}

#[tokio::test]
async fn a_reload_with_the_same_cache_settings_keeps_the_entries() {
    let mock = MockServer::start().await.unwrap();
    let engine = engine(&mock, "  strategy: conservative");
    let body = chat(json!({}));
    assert_eq!(status(&engine.execute(request(&body)).await.unwrap()), "miss");
    let same = engine.reload(engine.config().clone());
    assert_eq!(status(&same.execute(request(&body)).await.unwrap()), "hit");
    let mut changed = engine.config().clone();
    changed.cache.ttl = Duration::from_secs(5);
    let changed = engine.reload(changed);
    assert_eq!(status(&changed.execute(request(&body)).await.unwrap()), "miss");
}
