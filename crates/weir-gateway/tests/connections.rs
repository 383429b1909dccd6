//! Connections that misbehave below HTTP (issue 17, defects 4 and 7): clients that never finish
//! their headers or sit idle are closed after `server.header_read_timeout` / `idle_timeout` while
//! the gateway goes on answering, and requests hyper itself refuses (431, 414, a duplicate
//! Content-Length, a NUL in a header) are answered in the OpenAI error shape, not with an empty body.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weir_mock::server::MockServer;

const LIMITS: &str = "server:\n  header_read_timeout: 2s\n  idle_timeout: 5s";

/// Whether the server closed `tcp` within `within` (paused time: advanced, not waited).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A response (to the keep-alive client's request): keep reading for the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn slow_header_and_idle_clients_are_closed_while_health_still_answers() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", LIMITS)).await;

    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\nX-Slow: a")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(gw.addr).await.unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\n\r\n")
        .await
        .unwrap();

    // While they hang on, the gateway answers others.
    let health = http().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // One second in, everyone is still connected.
    assert!(!closed_within(&mut slow, Duration::from_secs(1)).await);
    // The trickling client is cut at its header deadline (2 s), before the idle ones (5 s).
    assert!(
        closed_within(&mut slow, Duration::from_secs(2)).await,
        "slow headers kept open"
    );
    assert!(!closed_within(&mut silent, Duration::from_millis(500)).await);
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "silent client kept open"
    );
    assert!(
        closed_within(&mut kept_alive, Duration::from_secs(5)).await,
        "idle keep-alive connection kept open"
    );

    let health = http().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_is_never_timed_out_by_the_connection_limits() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", LIMITS)).await;
    // The upstream takes 20 s: four idle timeouts. The connection waits for it.
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(serde_json::json!({"x_mock": {"latency_ms": 20000}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn max_connections_bounds_what_is_served_at_once() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "server:\n  max_connections: 2")).await;
    let _a = TcpStream::connect(gw.addr).await.unwrap();
    let _b = TcpStream::connect(gw.addr).await.unwrap();
    // The third waits in the backlog: connected by the kernel, not served.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served"
    );
    drop(_a);
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Sends raw bytes and reads the whole answer (the server closes after a rejection).
async fn raw(gw: &Gateway, request: &[u8]) -> (u16, serde_json::Value) {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    // A rejected request may be refused before all of it is read: a failed write is fine.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("no answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("body not JSON ({e}): {text:?}"));
    (status, json)
}

#[tokio::test]
async fn http_level_rejections_answer_in_the_openai_error_shape() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: weir\r\nX-Big: {}\r\n\r\n",
        "a".repeat(600_000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: weir\r\n\r\n", "a".repeat(70_000));
    let cases: [(&[u8], u16, &str); 4] = [
        (huge_header.as_bytes(), 431, "request_header_fields_too_large"),
        (long_uri.as_bytes(), 414, "uri_too_long"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: weir\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
            "invalid_http_request",
        ),
        (
            b"GET /health HTTP/1.1\r\nHost: weir\r\nX-Nul: a\0b\r\n\r\n",
            400,
            "invalid_http_request",
        ),
    ];
    for (request, want, code) in cases {
        let (status, body) = raw(&gw, request).await;
        assert_eq!(status, want, "{body}");
        let err = &body["error"];
        for key in ["message", "type", "param", "code"] {
            assert!(err.get(key).is_some(), "error lacks `{key}`: {body}");
        }
        assert_eq!(err["code"], code, "{body}");
        assert_eq!(err["type"], "invalid_request_error", "{body}");
    }
    // The gateway is fine afterwards.
    assert_eq!(http().get(gw.url("/health")).send().await.unwrap().status(), 200);
}
