//! A stand-in for the mock in the load generator's tests, so they exercise real HTTP without
//! needing a `weir` binary.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::request::{Target, build_client};

/// A minimal keep-alive HTTP/1.1 server standing in for the mock: answers every POST with a
/// JSON completion, or an SSE stream when the body asks for one; `/fail` answers 500.
pub(super) async fn fake_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut tmp = [0u8; 4096];
                        let n = sock.read(&mut tmp).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        let mut tmp = [0u8; 4096];
                        let n = sock.read(&mut tmp).await.unwrap();
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    buf.drain(..head_end + len);
                    assert!(head.contains("authorization: bearer bench-key"));
                    let (status, ctype, payload) = if head.starts_with("post /fail") {
                        ("500 Internal Server Error", "application/json", "{}".to_owned())
                    } else if body.contains("\"stream\":true") {
                        (
                            "200 OK",
                            "text/event-stream",
                            "data: {\"choices\":[]}\n\ndata: [DONE]\n\n".to_owned(),
                        )
                    } else {
                        ("200 OK", "application/json", "{\"choices\":[]}".to_owned())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{payload}",
                        payload.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{}", addr.port())
}

/// A `direct` target at `base` with a client like the bench's.
pub(super) fn target(base: &str) -> Target {
    Target::new("direct", base, build_client(64, Duration::from_secs(5)).unwrap())
}
