//! One request: the HTTP client every target gets, the chat-completion body, a send read to the
//! end and classified (success, HTTP status, transport error, incomplete stream), and the
//! preflight that checks a target works before any load is measured against it.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use reqwest::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::stats::{ErrorKind, Sample};

/// API key the bench uses for both the mock and the gateway.
pub const API_KEY: &str = "bench-key";
/// Model name configured in the gateway and accepted by the mock.
pub const MODEL: &str = "mock-model";
/// Prompt sent in every request.
const PROMPT: &str = "Say hello in one short sentence.";
/// `max_tokens` of every request.
const MAX_TOKENS: u64 = 32;
/// Bytes of a stream's tail kept to check for the `[DONE]` terminator.
const TAIL_KEEP: usize = 64;

/// Builds the HTTP client used for one target. Both targets get identical settings: HTTP/1.1
/// only, no proxy, Nagle off, a keep-alive pool big enough for every in-flight request.
pub fn build_client(pool_size: usize, request_timeout: Duration) -> Result<Client> {
    Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .build()
        .context("building HTTP client")
}

/// Body of a chat-completion request. The mock's pacing directives travel in the body as `x_mock`
/// (the gateway forwards unknown fields but not client headers), and only when non-zero.
pub fn request_body(stream: bool, upstream_latency_ms: u64, chunk_delay_ms: u64) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if upstream_latency_ms > 0 || chunk_delay_ms > 0 {
        body["x_mock"] = json!({"latency_ms": upstream_latency_ms, "chunk_delay_ms": chunk_delay_ms});
    }
    body
}

/// One load target: a name, the chat-completions URL and its dedicated client.
#[derive(Debug, Clone)]
pub struct Target {
    /// `direct` or `gateway`.
    pub name: &'static str,
    /// `{base_url}/v1/chat/completions`.
    pub url: String,
    /// Shared client for every request to this target.
    pub client: Client,
}

impl Target {
    /// A target with its own client.
    pub fn new(name: &'static str, base_url: &str, client: Client) -> Self {
        let url = format!("{}/v1/chat/completions", base_url.trim_end_matches('/'));
        Self { name, url, client }
    }
}

/// A serialized request, shared by every send.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// JSON body bytes.
    pub body: Bytes,
    /// Whether it asks for an SSE stream.
    pub stream: bool,
}

impl RequestTemplate {
    /// Serializes the body once.
    pub fn new(stream: bool, upstream_latency_ms: u64, chunk_delay_ms: u64) -> Result<Self> {
        let body = serde_json::to_vec(&request_body(stream, upstream_latency_ms, chunk_delay_ms))
            .context("serializing request body")?;
        Ok(Self {
            body: Bytes::from(body),
            stream,
        })
    }
}

/// Sends one request and reads the response body to the end. Times are measured from `origin`.
pub async fn send_one(target: &Target, req: &RequestTemplate, origin: Instant) -> Sample {
    let result = target
        .client
        .post(&target.url)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer bench-key"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(req.body.clone())
        .send()
        .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => return Sample::Err(ErrorKind::from_reqwest(&e)),
    };
    let status = resp.status();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if ttfb.is_none() {
                    ttfb = Some(origin.elapsed());
                }
                if req.stream {
                    tail.extend_from_slice(&chunk);
                    if tail.len() > TAIL_KEEP {
                        tail.drain(..tail.len() - TAIL_KEEP);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                if !status.is_success() {
                    return Sample::Err(ErrorKind::Status(status.as_u16()));
                }
                return Sample::Err(ErrorKind::from_reqwest(&e));
            }
        }
    }
    let total = origin.elapsed();
    if !status.is_success() {
        return Sample::Err(ErrorKind::Status(status.as_u16()));
    }
    if req.stream {
        if !contains(&tail, b"[DONE]") {
            return Sample::Err(ErrorKind::StreamIncomplete);
        }
        Sample::Ok { total, ttfb }
    } else {
        Sample::Ok { total, ttfb: None }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one request and fails unless it succeeds; used to check a target works before loading it.
pub async fn preflight(target: &Target, req: &RequestTemplate) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let resp = target
            .client
            .post(&target.url)
            .header(AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(CONTENT_TYPE, "application/json")
            .body(req.body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.context("reading preflight body")?;
                if req.stream && !contains(&body, b"[DONE]") {
                    last = format!("stream without data: [DONE]: {}", snippet(&body));
                    continue;
                }
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                last = format!("HTTP {status}: {}", snippet(&body));
            }
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(anyhow!(
        "preflight request to {} ({}) failed: {last}",
        target.name,
        target.url
    ))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::load::fake::{fake_upstream, target};

    #[test]
    fn body_shape() {
        let unary = request_body(false, 0, 0);
        assert_eq!(unary["model"], "mock-model");
        assert_eq!(unary["max_tokens"], 32);
        assert_eq!(unary["messages"][0]["role"], "user");
        assert_eq!(
            unary["messages"][0]["content"],
            "Say hello in one short sentence."
        );
        assert!(unary.get("stream").is_none());
        assert!(unary.get("x_mock").is_none());

        let stream = request_body(true, 5, 2);
        assert_eq!(stream["stream"], true);
        assert_eq!(stream["stream_options"]["include_usage"], true);
        assert_eq!(stream["x_mock"]["latency_ms"], 5);
        assert_eq!(stream["x_mock"]["chunk_delay_ms"], 2);
    }

    #[tokio::test]
    async fn send_one_unary_and_stream() {
        let base = fake_upstream().await;
        let t = target(&base);
        let unary = RequestTemplate::new(false, 0, 0).unwrap();
        let stream = RequestTemplate::new(true, 0, 0).unwrap();
        preflight(&t, &unary).await.unwrap();
        preflight(&t, &stream).await.unwrap();
        match send_one(&t, &unary, Instant::now()).await {
            Sample::Ok { ttfb: None, .. } => {}
            other => panic!("{other:?}"),
        }
        match send_one(&t, &stream, Instant::now()).await {
            Sample::Ok {
                ttfb: Some(ttfb),
                total,
            } => assert!(ttfb <= total),
            other => panic!("{other:?}"),
        }
        let failing = Target::new("direct", &format!("{base}/fail"), t.client.clone());
        // URL becomes {base}/fail/v1/chat/completions, which the fake answers with 500.
        assert_eq!(
            send_one(&failing, &unary, Instant::now()).await,
            Sample::Err(ErrorKind::Status(500))
        );
        assert!(preflight(&failing, &unary).await.is_err());
    }

    #[tokio::test]
    async fn connect_errors_are_transport_errors() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = target(&format!("http://127.0.0.1:{port}"));
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        match send_one(&t, &req, Instant::now()).await {
            Sample::Err(ErrorKind::Connect | ErrorKind::Transport) => {}
            other => panic!("{other:?}"),
        }
    }
}
