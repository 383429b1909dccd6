//! OpenTelemetry traces of a real `weir serve` run (the tracing subscriber is process-wide, so
//! these run the binary): spans exported over OTLP/HTTP to an in-test receiver, linked to the
//! client's `traceparent` and passed on to the upstream; and no secret anywhere in what a run
//! emits (logs at debug level, `/metrics`, exported spans).

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{Router, body::Bytes, extract::State, routing::post};
use common::*;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value::Value},
    trace::v1::Span,
};
use parking_lot::Mutex;
use prost::Message;
use serde_json::json;
use tokio::io::AsyncReadExt;
use weir_mock::server::MockServer;

/// What the receiver got: the raw export bodies (to grep for secrets) and the decoded spans.
#[derive(Default)]
struct Received {
    bodies: Vec<Bytes>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1:0; returns its root URL.
async fn otlp_receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(rx): State<Arc<Mutex<Received>>>, body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body.clone()).expect("an OTLP protobuf body");
                let mut rx = rx.lock();
                rx.bodies.push(body);
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        rx.spans.extend(scope.spans);
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn stop(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("weir did not stop")
        .unwrap();
}

struct Run {
    dir: std::path::PathBuf,
}

impl Run {
    fn new(name: &str) -> Run {
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Run { dir }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn spans_follow_the_clients_trace_and_reach_the_upstream() {
    let mock = MockServer::start().await.unwrap();
    let (collector, received) = otlp_receiver().await;
    let run = Run::new("otlp");
    let config = run.dir.join("config.yaml");
    let yaml = format!(
        "{}tracing:\n  otlp_endpoint: {collector}\n  service_name: weir-test\n",
        config_for(&mock, "", "")
    );
    std::fs::write(&config, yaml).unwrap();
    let (mut child, base) = spawn_weir(&config, &[], false).await;

    let resp = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "renamed", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.text().await.unwrap();
    // Spans are exported in batches; shutting down flushes them.
    stop(&mut child).await;

    let spans = received.lock().spans.clone();
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE_ID).collect();
    let by_name: HashMap<&str, &Span> = ours.iter().map(|s| (s.name.as_str(), *s)).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let request = by_name
        .get("POST /v1/chat/completions")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    let route = by_name
        .get("route")
        .unwrap_or_else(|| panic!("no route span in {names:?}"));
    let upstream = by_name
        .get("chat gpt-4o-mini")
        .unwrap_or_else(|| panic!("no upstream span in {names:?}"));

    // The request span continues the client's trace; routing and the attempt hang below it.
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(route.parent_span_id, request.span_id);
    assert_eq!(upstream.parent_span_id, route.span_id);
    // Kinds: server for the request, client for the upstream call.
    assert_eq!(request.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(upstream.kind, 3, "SPAN_KIND_CLIENT");

    // GenAI and HTTP conventions.
    assert_eq!(
        int_attr(request, "http.response.status_code"),
        Some(200),
        "{:?}",
        request.attributes
    );
    assert_eq!(str_attr(request, "gen_ai.request.model"), Some("renamed"));
    assert_eq!(str_attr(upstream, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(str_attr(upstream, "gen_ai.provider.name"), Some("openai"));
    assert_eq!(str_attr(upstream, "gen_ai.system"), Some("openai"));
    assert_eq!(str_attr(upstream, "gen_ai.request.model"), Some("gpt-4o-mini"));
    assert!(str_attr(upstream, "gen_ai.response.model").is_some());
    assert!(int_attr(upstream, "gen_ai.usage.input_tokens").is_some_and(|n| n > 0));
    assert!(int_attr(upstream, "gen_ai.usage.output_tokens").is_some_and(|n| n > 0));
    assert_eq!(str_attr(upstream, "server.address"), Some("127.0.0.1"));
    assert_eq!(int_attr(upstream, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(upstream, "weir.deployment"), Some("mock-renamed"));

    // The upstream received the trace, with the attempt span as its parent.
    let seen = mock.state().last_request().unwrap();
    let traceparent = seen.headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&upstream.span_id)),
        "the upstream's traceparent"
    );
}

#[tokio::test]
async fn a_failed_attempt_is_an_error_span() {
    let mock = MockServer::start().await.unwrap();
    let (collector, received) = otlp_receiver().await;
    let run = Run::new("otlp-err");
    let config = run.dir.join("config.yaml");
    let yaml = format!(
        "{}tracing:\n  otlp_endpoint: {collector}\n",
        config_for(&mock, "        retry: { max_retries: 0 }", "")
    );
    std::fs::write(&config, yaml).unwrap();
    let (mut child, base) = spawn_weir(&config, &[], false).await;
    let resp = http()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502, "an upstream 5xx is a 502 from the gateway");
    stop(&mut child).await;
    let spans = received.lock().spans.clone();
    let upstream = spans
        .iter()
        .find(|s| s.name == "chat mock-model")
        .unwrap_or_else(|| {
            panic!(
                "no upstream span: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(str_attr(upstream, "error.type"), Some("upstream_server_error"));
    assert_eq!(int_attr(upstream, "http.response.status_code"), Some(500));
    assert_eq!(
        upstream.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap();
    assert_eq!(str_attr(request, "error.type"), Some("upstream_server_error"));
    // Without a client traceparent, the request span is a root.
    assert!(request.parent_span_id.is_empty());
}

/// Everything a run emits — stdout, stderr at debug level in JSON, `/metrics`, the exported
/// spans — is free of the keys it used: the gateway key, a wrong key a client tried, the
/// upstream key, and a key in the OTLP headers.
#[tokio::test]
async fn no_secret_in_any_output() {
    let mock = MockServer::start().await.unwrap();
    let (collector, received) = otlp_receiver().await;
    let run = Run::new("redaction");
    let config = run.dir.join("config.yaml");
    let yaml = format!(
        "{}tracing:\n  otlp_endpoint: {collector}\n  otlp_headers:\n    x-collector-token: collector-secret-789\n",
        config_for(&mock, "", "server:\n  api_keys: [gw-secret-key-123]")
    )
    .replace("level: warn", "level: debug");
    std::fs::write(&config, yaml).unwrap();
    let (mut child, base) = spawn_weir(&config, &["--log-format", "json"], true).await;
    // (stdout carries only the `listening on` line, read by `spawn_weir`.)
    let mut stderr = child.stderr.take().unwrap();
    let c = http();
    let send = |key: &'static str, body: serde_json::Value| {
        c.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let hello = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        send("gw-secret-key-123", hello.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        send("wrong-secret-key-456", hello.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    let mut failing = hello.clone();
    failing["x_mock"] = json!({"status": 401});
    assert_eq!(send("gw-secret-key-123", failing).await.unwrap().status(), 500);
    let mut streamed = hello.clone();
    streamed["stream"] = json!(true);
    let s = send("gw-secret-key-123", streamed).await.unwrap();
    let _ = s.text().await;
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("weir_requests_total"), "{metrics}");
    stop(&mut child).await;

    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.unwrap();
    let received = received.lock();
    assert!(!received.spans.is_empty(), "no spans were exported");
    let exported: Vec<u8> = received.bodies.iter().flat_map(|b| b.iter().copied()).collect();
    for secret in [
        "gw-secret-key-123",
        "wrong-secret-key-456",
        "upstream-secret-key",
        "collector-secret-789",
    ] {
        for (what, text) in [
            ("stderr", logs.as_bytes()),
            ("/metrics", metrics.as_bytes()),
            ("OTLP", &exported[..]),
        ] {
            assert!(
                !text.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "`{secret}` leaked into {what}"
            );
        }
    }
    // The end-of-request line carries the fields the docs promise.
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "request served" && e["model"] == "mock-model")
        .unwrap_or_else(|| panic!("no end-of-request line:\n{logs}"));
    for field in [
        "trace_id",
        "model_group",
        "deployment",
        "status",
        "attempts",
        "latency_ms",
        "input_tokens",
        "output_tokens",
    ] {
        assert!(line.get(field).is_some(), "no `{field}` in {line}");
    }
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["deployment"], "mock-a");
}
