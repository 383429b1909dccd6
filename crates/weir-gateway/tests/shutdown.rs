//! Graceful shutdown: in-flight streams finish, new connections are refused, and the binary
//! handles SIGTERM the same way.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::*;
use futures::StreamExt;
use serde_json::json;
use weir_mock::server::MockServer;

fn slow_stream_body() -> serde_json::Value {
    chat_body(json!({"stream": true, "x_mock": {"chunks": 8, "chunk_delay_ms": 100}}))
}

async fn read_to_end(resp: reqwest::Response) -> String {
    let mut text = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    text
}

#[tokio::test]
async fn in_flight_stream_completes_during_drain() {
    let mock = MockServer::start().await.unwrap();
    let mut gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&slow_stream_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    let server = gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        gw.state.draining.load(Ordering::Relaxed),
        "readiness reports draining"
    );
    // New connections are refused while the old stream goes on.
    assert!(
        http().get(gw.url("/health")).send().await.is_err(),
        "still accepting during drain"
    );

    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "stream was cut: {rest}"
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn drain_deadline_cuts_what_is_left() {
    let mock = MockServer::start().await.unwrap();
    let mut gw = Gateway::start(&config_for(&mock, "", "server:\n  shutdown_timeout: 200ms")).await;
    // A 10 s stream, far longer than the 200 ms the drain allows.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(
            json!({"stream": true, "x_mock": {"chunks": 50, "chunk_delay_ms": 200}}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    let server = gw.begin_shutdown();
    // The client's stream ends soon after the deadline, visibly: an error event, no [DONE].
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("stream not cut")
    {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut after {:?}",
        started.elapsed()
    );
    assert!(rest.contains("shutting down"), "{rest}");
    assert!(!rest.contains("data: [DONE]"), "{rest}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_binary_finish_its_stream_then_exit_zero() {
    let mock = MockServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("weir-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_for(&mock, "", "")).unwrap();

    let (mut child, base) = spawn_weir(&config, &[], false).await;

    let resp = http()
        .post(format!("{base}/v1/chat/completions"))
        .json(&slow_stream_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());

    let text = read_to_end(resp).await;
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "stream was cut at SIGTERM: {text}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn requests_still_waiting_for_upstream_headers_at_the_deadline_get_a_shaped_503() {
    let mock = MockServer::start().await.unwrap();
    let mut gw = Gateway::start(&config_for(&mock, "", "server:\n  shutdown_timeout: 200ms")).await;
    // The upstream takes 30 s to send its headers: far past the 200 ms the drain allows.
    let slow = json!({"x_mock": {"latency_ms": 30000}});
    let chat = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(slow.clone()))
        .send();
    let messages = http()
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "mock-model", "max_tokens": 5, "stream": true,
            "messages": [{"role": "user", "content": "hi"}], "x_mock": slow["x_mock"]}))
        .send();
    let pending = tokio::spawn(async move { tokio::join!(chat, messages) });
    // Both requests are in flight, waiting for the mock.
    while mock.state().request_count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = gw.begin_shutdown();
    let (chat, messages) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the waiting requests got no answer")
        .unwrap();

    let chat = chat.expect("the OpenAI-face request got no HTTP response");
    assert_eq!(chat.status(), 503);
    let err = error_of(chat).await;
    assert_eq!(err["code"], "service_unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("shutting down"),
        "{err}"
    );

    let messages = messages.expect("the Anthropic-face request got no HTTP response");
    assert_eq!(messages.status(), 503);
    let body: serde_json::Value = messages.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{body}"
    );
    server.await.unwrap().unwrap();
}
