//! Every endpoint over real loopback sockets, through the gateway to the mock upstream.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

#[tokio::test]
async fn chat_completion_round_trip() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "mock-a");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-model");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().len() > 5);
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // The upstream saw our key, not anything from the client.
    let seen = mock.state().last_request().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer upstream-secret-key");
}

#[tokio::test]
async fn unknown_fields_arrive_untouched_and_only_model_is_rewritten() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    // Field order, number formatting and escapes must survive: this is compared byte for byte.
    let raw = r#"{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"model":"renamed","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}],"response_format":{"type":"json_object"},"logprobs":true,"top_logprobs":2,"brand_new_param":{"x":[1.50,2e3]}}"#;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["model"], "gpt-4o-mini",
        "the upstream answered for the rewritten model"
    );
    let seen = mock.state().last_request().unwrap();
    let expected = raw.replace(r#""model":"renamed""#, r#""model":"gpt-4o-mini""#);
    assert_eq!(std::str::from_utf8(&seen.body).unwrap(), expected);

    // Without a rename the bytes are forwarded exactly as sent.
    let raw = r#"{"model":"mock-model",  "messages":[{"role":"user","content":"x"}], "seed": 7}"#;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        std::str::from_utf8(&mock.state().last_request().unwrap().body).unwrap(),
        raw
    );
}

#[tokio::test]
async fn streaming_arrives_chunk_by_chunk_with_usage() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let body = chat_body(json!({
        "stream": true,
        "stream_options": {"include_usage": true},
        "x_mock": {"chunks": 6, "chunk_delay_ms": 150}
    }));
    let started = tokio::time::Instant::now();
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if first_at.is_none() && !chunk.is_empty() {
            first_at = Some(started.elapsed());
        }
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let total = started.elapsed();
    // The upstream paces ~7 events 150 ms apart: the first must reach us long before the last is sent.
    let first_at = first_at.unwrap();
    assert!(
        first_at * 3 < total,
        "first chunk at {first_at:?} of {total:?}: the gateway buffered the stream"
    );
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.contains("mock"), "{content}");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn embeddings_images_and_models() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let c = http();
    let emb: Value = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "mock-model", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(emb["object"], "list");
    assert_eq!(emb["data"].as_array().unwrap().len(), 2);
    assert!(emb["data"][0]["embedding"].as_array().unwrap().len() > 1);

    let img = c
        .post(gw.url("/v1/images/generations"))
        .json(&json!({"model": "mock-model", "prompt": "a weir at dawn", "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(img.status(), 200);
    let img: Value = img.json().await.unwrap();
    assert_eq!(img["data"].as_array().unwrap().len(), 2);

    let models: Value = c
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock-model", "renamed"]);

    let one = c.get(gw.url("/v1/models/renamed")).send().await.unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "renamed");
    let missing = c.get(gw.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_of(missing).await["code"], "model_not_found");
}

#[tokio::test]
async fn passthrough_forwards_other_paths_with_query() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "default_model: mock-model")).await;
    let resp = http()
        .get(gw.url("/v1/files/file-123/content?limit=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["object"], "mock.echo");
    assert_eq!(
        mock.state().last_request().unwrap().path_and_query,
        "/v1/files/file-123/content?limit=2"
    );

    // A body with a model routes by it (and rewrites it), like the typed endpoints.
    let resp = http()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "renamed", "input": "hi", "new_thing": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.state().last_request().unwrap();
    assert_eq!(seen.path_and_query, "/v1/responses");
    assert_eq!(
        seen.json().unwrap(),
        json!({"model": "gpt-4o-mini", "input": "hi", "new_thing": true})
    );
}

#[tokio::test]
async fn passthrough_paths_cannot_escape_the_upstream_root() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "default_model: mock-model")).await;
    let before = mock.state().request_count();
    // Raw request lines, so no client library normalises the paths for us.
    for path in [
        "/v1/../admin",
        "/v1/files/../../secret",
        "/v1/%2e%2e/secret",
        "/v1/files%2f..%2fsecret",
        "/v1//evil.example/x",
        "/v1/http://evil.example/x",
        "/v1/files/..%5csecret",
        "/v1/chat%2Fcompletions",
        "/v1/files/..;/secret",
        "/v1/%FF",
        "/v1/models/%C0",
    ] {
        let (status, body) = raw_get(gw.addr, path).await;
        assert!(status == 404 || status == 400, "{path} gave {status}");
        assert!(
            body.contains("\"error\""),
            "{path}: not an OpenAI-shaped error: {body}"
        );
    }
    // Absolute-form request target naming another host.
    let status = raw_get_status(gw.addr, "http://evil.example/v1/models").await;
    assert!(status != 0);
    assert_eq!(
        mock.state().request_count(),
        before,
        "an escaping path reached the upstream"
    );
}

async fn raw_get_status(addr: std::net::SocketAddr, target: &str) -> u16 {
    raw_get(addr, target).await.0
}

async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn duplicate_keys_are_refused_before_reaching_the_upstream() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    // Routed as the first `model`, an upstream would run the last one.
    let body = r#"{"model":"mock-model","messages":[{"role":"user","content":"x"}],"model":"gpt-4o"}"#;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err = error_of(resp).await;
    assert!(
        err["message"].as_str().unwrap().contains("duplicate key `model`"),
        "{err}"
    );
    assert_eq!(mock.state().request_count(), 0);
}

#[tokio::test]
async fn model_deletion_passes_through() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "default_model: mock-model")).await;
    let resp = http()
        .delete(gw.url("/v1/models/ft:gpt-4o-mini:acme:x:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.state().last_request().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("DELETE", "/v1/models/ft:gpt-4o-mini:acme:x:1")
    );
}

#[tokio::test]
async fn health_ready_and_upstream_probe() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let c = http();
    assert_eq!(c.get(gw.url("/health")).send().await.unwrap().status(), 200);
    let ready: Value = c
        .get(gw.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let up = c.get(gw.url("/health/upstreams")).send().await.unwrap();
    assert_eq!(up.status(), 200);
    let up: Value = up.json().await.unwrap();
    assert_eq!(up["status"], "healthy");
    assert_eq!(up["deployments"].as_array().unwrap().len(), 2);
    assert!(!up.to_string().contains("upstream-secret-key"));
    assert_eq!(mock.state().count_for_path("/v1/models"), 2);

    // A dead upstream shows as unhealthy, and the endpoint says so with 503.
    drop(mock);
    let up = c.get(gw.url("/health/upstreams")).send().await.unwrap();
    assert_eq!(up.status(), 503);
    let up: Value = up.json().await.unwrap();
    assert_eq!(up["deployments"][0]["status"], "unhealthy");
    assert!(up["deployments"][0]["error"].as_str().unwrap().len() > 3);
}

#[tokio::test]
async fn request_ids_are_taken_returned_and_forwarded() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "client-id-42")
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    assert_eq!(
        mock.state().last_request().unwrap().headers["x-request-id"],
        "client-id-42"
    );

    // Without one (or with an unsafe one) the gateway makes one, returns it and forwards it.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "bad id with spaces")
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(
        mock.state().last_request().unwrap().headers["x-request-id"],
        id.as_str()
    );
    // Errors carry the id too.
    let resp = http().get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn gateway_keys_are_required_when_configured_and_never_forwarded() {
    let mock = MockServer::start().await.unwrap();
    let server = "server:\n  api_keys: [gw-key-1, gw-key-2]";
    let gw = Gateway::start(&config_for(&mock, "", server)).await;
    let c = http();
    let none = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(error_of(none).await["code"], "invalid_api_key");
    let wrong = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("gw-key-wrong")
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        !wrong.text().await.unwrap().contains("gw-key-wrong"),
        "the presented key was echoed"
    );
    assert_eq!(mock.state().request_count(), 0);
    let ok = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("gw-key-2")
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        mock.state().last_request().unwrap().headers["authorization"],
        "Bearer upstream-secret-key"
    );
    // Liveness and readiness stay open for probes; the upstream probe (it calls every upstream) does not.
    assert_eq!(c.get(gw.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/ready")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(gw.url("/health/upstreams")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(gw.url("/health/upstreams"))
            .bearer_auth("gw-key-1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn organization_and_project_headers_are_sent_upstream() {
    let mock = MockServer::start().await.unwrap();
    let extra = "        organization: org-acme\n        project: proj_weir";
    let gw = Gateway::start(&config_for(&mock, extra, "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.state().last_request().unwrap();
    assert_eq!(seen.headers["openai-organization"], "org-acme");
    assert_eq!(seen.headers["openai-project"], "proj_weir");
}
