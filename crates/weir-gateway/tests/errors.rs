//! The error matrix: every failure reaches the client as an OpenAI-shaped error with the right status.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

/// These tests check how one failed attempt is reported; retries are tested in `retries.rs`.
const NO_RETRIES: &str = "        retry: { max_retries: 0 }";

#[tokio::test]
async fn client_errors_name_the_field() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let c = http();
    let post = |body: &'static str| {
        c.post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let bad = post("{not json").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(error_of(bad).await["code"], "invalid_json");

    let no_model = post(r#"{"messages":[{"role":"user","content":"x"}]}"#)
        .await
        .unwrap();
    assert_eq!(no_model.status(), 400);
    assert_eq!(error_of(no_model).await["param"], "model");

    let no_messages = post(r#"{"model":"mock-model"}"#).await.unwrap();
    assert_eq!(no_messages.status(), 400);
    assert_eq!(error_of(no_messages).await["param"], "messages");

    let wrong_type = post(r#"{"model":42,"messages":[]}"#).await.unwrap();
    assert_eq!(wrong_type.status(), 400);
    assert_eq!(error_of(wrong_type).await["param"], "model");

    let unknown = post(r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let err = error_of(unknown).await;
    assert_eq!(err["code"], "model_not_found");
    assert!(err["message"].as_str().unwrap().contains("no-such-model"));

    let no_input = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "mock-model"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_input.status(), 400);
    assert_eq!(error_of(no_input).await["param"], "input");

    assert_eq!(
        mock.state().request_count(),
        0,
        "invalid requests must not reach the upstream"
    );
}

#[tokio::test]
async fn body_limit_gives_413_with_and_without_content_length() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "server:\n  max_body_size: 1KiB")).await;
    let big = json!({"model": "mock-model", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(error_of(resp).await["code"], "request_too_large");

    // Chunked upload (no Content-Length): the limit still holds while reading.
    let chunks = futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])));
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let small = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        http()
            .post(gw.url("/v1/chat/completions"))
            .json(&small)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(mock.state().request_count(), 1);
}

async fn status_and_error(gw: &Gateway, x_mock: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({"x_mock": x_mock})))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, error_of(resp).await)
}

#[tokio::test]
async fn upstream_statuses_map_to_the_documented_matrix() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, NO_RETRIES, "")).await;

    let (status, _, err) = status_and_error(&gw, json!({"status": 400})).await;
    assert_eq!(status, 400);
    assert!(
        !err["message"].as_str().unwrap().is_empty(),
        "the upstream's message is passed on"
    );

    for upstream in [401, 403] {
        let (status, _, err) = status_and_error(&gw, json!({"status": upstream})).await;
        assert_eq!(status, 500, "upstream {upstream}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains("credentials"), "{msg}");
        assert!(!msg.contains("upstream-secret-key"));
        assert_eq!(err["code"], "upstream_auth_failed");
    }

    for upstream in [500, 503] {
        let (status, _, err) = status_and_error(&gw, json!({"status": upstream})).await;
        assert_eq!(status, 502, "upstream {upstream}");
        assert_eq!(err["type"], "upstream_error");
    }

    // Last: a 429 also rests the (only) deployment for its Retry-After, which later requests would wait out.
    let (status, headers, err) = status_and_error(&gw, json!({"status": 429, "retry_after": 7})).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(err["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn upstream_auth_failure_with_real_key_check_never_leaks_the_key() {
    let mock = MockServer::start_with(weir_mock::server::MockConfig {
        required_api_key: Some("the-right-key".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("upstream-secret-key") && !text.contains("the-right-key"),
        "{text}"
    );
}

#[tokio::test]
async fn timeouts_give_504() {
    let mock = MockServer::start().await.unwrap();
    let extra = "        timeouts: { total: 300ms, read: 300ms }\n        retry: { max_retries: 0 }";
    let gw = Gateway::start(&config_for(&mock, extra, "")).await;
    let (status, _, err) = status_and_error(&gw, json!({"hang": true})).await;
    assert_eq!(status, 504);
    assert_eq!(err["code"], "upstream_timeout");

    // A stream whose upstream goes silent before its first event also gets a 504.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({"stream": true, "x_mock": {"hang": true}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn connection_refused_and_reset_give_502() {
    // Bind then drop: nothing listens on this port any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "models:\n  - name: dead\n    deployments:\n      - provider: openai\n        base_url: http://{dead}/v1\n        api_key: k\n        retry: {{ max_retries: 0 }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "dead", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let err = error_of(resp).await;
    assert!(err["message"].as_str().unwrap().contains("connect"), "{err}");
    // Issue 18: the error names the deployment and its host:port, never the URL (path, query,
    // credentials).
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("deployment `dead#0` ({dead})")),
        "{err}"
    );
    assert!(
        !message.contains("http://") && !message.contains("/v1"),
        "upstream URLs stay private: {err}"
    );

    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, NO_RETRIES, "")).await;
    let (status, _, _) = status_and_error(&gw, json!({"drop_mid_body": true})).await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    for directive in [json!({"stop_after_chunks": 3}), json!({"drop_after_chunks": 3})] {
        let resp = http()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body(json!({"stream": true, "x_mock": directive})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{directive}");
        let mut text = String::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            text.push_str(
                std::str::from_utf8(
                    &chunk.expect("the gateway ends the stream cleanly after the error event"),
                )
                .unwrap(),
            );
        }
        let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(
            data.len(),
            4,
            "three upstream events then one error event: {text}"
        );
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"].as_str().unwrap().len() > 5,
            "{directive}: {text}"
        );
        assert!(
            !data.contains(&"[DONE]"),
            "a broken stream must not look complete"
        );
    }
}
