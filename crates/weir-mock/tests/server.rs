//! The mock server over real loopback sockets: endpoints, streaming, every fault directive,
//! precedence, counters, recording and the required API key. Longer than the usual ~600 lines:
//! one short test per directive, all on the same server helpers.
#![cfg(feature = "server")]
// Helpers outside #[test] fns are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use weir_mock::server::{MockConfig, MockServer, RECORD_LIMIT};

/// Upper bound for anything that should be quick, so a bug fails the test instead of hanging it.
const QUICK: Duration = Duration::from_secs(5);

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello mock"}],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

async fn post(mock: &MockServer, path: &str, body: Value) -> Response {
    Client::new()
        .post(format!("{}/{path}", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_json(mock: &MockServer, path: &str, body: Value) -> (StatusCode, Value) {
    let response = post(mock, path, body).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Splits an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap())
        .collect()
}

/// Reads body frames until the body ends (`Ok`) or fails (`Err` with what arrived before).
async fn read_frames(response: &mut Response) -> Result<Vec<u8>, Vec<u8>> {
    let mut received = Vec::new();
    loop {
        match timeout(QUICK, response.chunk()).await.unwrap() {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => return Ok(received),
            Err(_) => return Err(received),
        }
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + QUICK;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// === endpoints ===

#[tokio::test]
async fn chat_completion_shape() {
    let mock = MockServer::start().await.unwrap();
    let response = post(&mock, "chat/completions", chat(json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let v: Value = response.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        weir_mock::content::DEFAULT_CONTENT
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 11);

    let (status, v) = post_json(&mock, "chat/completions", json!({"model": "m"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
}

#[tokio::test]
async fn embeddings_images_models_and_echo() {
    let mock = MockServer::start().await.unwrap();
    let (status, v) = post_json(
        &mock,
        "embeddings",
        json!({"model": "text-embedding-3-small", "input": ["a", "b c"], "dimensions": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let (status, v) = post_json(
        &mock,
        "images/generations",
        json!({"prompt": "a weir", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"][0]["b64_json"], weir_mock::content::PNG_1X1_BASE64);

    let client = Client::new();
    let v: Value = client
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 5);
    let response = client
        .get(format!("{}/models/unknown-model", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    // Passthrough: unmodelled paths echo method, relative path with query, and body.
    let (status, v) = post_json(&mock, "files/abc?purpose=batch", json!({"x": [1, 2]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"object": "mock.echo", "method": "POST", "path": "files/abc?purpose=batch", "body": {"x": [1, 2]}})
    );
    let response = client
        .delete(format!("{}/assistants/1", mock.base_url()))
        .send()
        .await
        .unwrap();
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["method"], "DELETE");
    assert_eq!(v["body"], Value::Null);

    // Outside /v1 is a 404 in the OpenAI shape, but still counted.
    let response = client
        .get(format!("http://{}/health", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (GET /health)");
    assert_eq!(mock.state().count_for_path("/health"), 1);
}

// === streaming ===

#[tokio::test]
async fn stream_full_sequence() {
    let mock = MockServer::start().await.unwrap();
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"chunks": 3, "content": "one two three four"}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let body = response.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.len(), 1 + 3 + 1 + 1);
    assert_eq!(data.last().copied(), Some("[DONE]"));
    let chunks: Vec<Value> = data[..5]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three four");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn stream_include_usage() {
    let mock = MockServer::start().await.unwrap();
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    let body = response.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.len(), 1 + 5 + 1 + 1 + 1);
    let usage: Value = serde_json::from_str(data[7]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    assert_eq!(usage["usage"]["total_tokens"], 11);
    for d in &data[..7] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["usage"], Value::Null);
    }
    assert_eq!(data[8], "[DONE]");
}

#[tokio::test]
async fn first_event_arrives_before_the_rest_is_sent() {
    let mock = MockServer::start().await.unwrap();
    // A minute between events: only an event flushed on its own can reach the client.
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"chunk_delay_ms": 60_000}})),
    )
    .await;
    let first = timeout(QUICK, response.chunk()).await.unwrap().unwrap().unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert_eq!(sse_data(&first).len(), 1);
    assert!(first.contains(r#""role":"assistant""#));
    assert!(
        timeout(Duration::from_millis(50), response.chunk())
            .await
            .is_err(),
        "the second event must wait for chunk_delay_ms"
    );
    assert_eq!(mock.state().in_flight(), 1);
    // The client going away drops the paced body.
    drop(response);
    eventually("the paced stream to be dropped", || mock.state().in_flight() == 0).await;
}

#[tokio::test]
async fn paced_events_arrive_spread_out() {
    let mock = MockServer::start().await.unwrap();
    let start = Instant::now();
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"chunk_delay_ms": 20, "chunks": 3}})),
    )
    .await;
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(chunk) = timeout(QUICK, response.chunk()).await.unwrap().unwrap() {
        arrivals.push(start.elapsed());
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).unwrap();
    // role + 3 pieces + finish + [DONE]: 5 gaps of 20 ms.
    assert_eq!(sse_data(&body).len(), 6);
    assert!(arrivals.len() >= 2, "events were coalesced: {arrivals:?}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(80), "{arrivals:?}");
}

// === faults ===

#[tokio::test]
async fn status_fault_with_retry_after() {
    let mock = MockServer::start().await.unwrap();
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"status": 429}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["retry-after-ms"], "1000");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");

    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"status": 503, "retry_after": 2.5}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["retry-after-ms"], "2500");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    // By model name, on any path; no Retry-After for a plain 500.
    let response = post(
        &mock,
        "embeddings",
        json!({"model": "mock:status=500", "input": "x"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().get("retry-after").is_none());
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"status": 401}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn fail_times_then_success() {
    let mock = MockServer::start().await.unwrap();
    let faulty = |key: &str| chat(json!({"x_mock": {"status": 429, "fail_times": 2, "fail_key": key}}));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(&mock, "chat/completions", faulty("a"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [429, 429, 200, 200]);
    // Another key has its own counter; the default status is 500.
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"fail_times": 1, "fail_key": "b"}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(mock.state().fail_key_count("a"), 4);
    assert_eq!(mock.state().fail_key_count("b"), 1);
    // reset() starts the script over.
    mock.state().reset();
    let response = post(&mock, "chat/completions", faulty("a")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn latency_delays_the_headers() {
    let mock = MockServer::start().await.unwrap();
    let start = Instant::now();
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"latency_ms": 60}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(60));
    // Latency applies to faults too.
    let start = Instant::now();
    let response = Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-latency-ms", "30")
        .header("x-mock-status", "502")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[tokio::test]
async fn stop_after_chunks_ends_cleanly_without_done() {
    let mock = MockServer::start().await.unwrap();
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"stop_after_chunks": 3}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = read_frames(&mut response).await.expect("a clean end");
    let body = String::from_utf8(body).unwrap();
    let data = sse_data(&body);
    assert_eq!(data.len(), 3);
    assert!(!body.contains("[DONE]"));
    assert!(!body.contains(r#""finish_reason":"stop""#));
}

#[tokio::test]
async fn drop_after_chunks_aborts_the_body() {
    let mock = MockServer::start().await.unwrap();
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"drop_after_chunks": 2}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = read_frames(&mut response).await.expect_err("an aborted body");
    let received = String::from_utf8(received).unwrap();
    assert_eq!(sse_data(&received).len(), 2, "{received:?}");
    // Also when pacing is on, and drop wins over stop.
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"stream": true, "x_mock": {"drop_after_chunks": 1, "stop_after_chunks": 3, "chunk_delay_ms": 1}})),
    )
    .await;
    let received = read_frames(&mut response).await.expect_err("an aborted body");
    assert_eq!(sse_data(std::str::from_utf8(&received).unwrap()).len(), 1);
    eventually("in_flight to settle", || mock.state().in_flight() == 0).await;
}

#[tokio::test]
async fn drop_mid_body_aborts_a_json_body() {
    let mock = MockServer::start().await.unwrap();
    let full = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"content": "same"}})),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let mut response = post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"drop_mid_body": true, "content": "same"}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = read_frames(&mut response).await.expect_err("an aborted body");
    assert!(
        !received.is_empty() && received.len() < full.len(),
        "{}",
        received.len()
    );
    assert!(serde_json::from_slice::<Value>(&received).is_err());
    assert!(
        post(
            &mock,
            "chat/completions",
            chat(json!({"x_mock": {"drop_mid_body": true}}))
        )
        .await
        .text()
        .await
        .is_err()
    );
}

#[tokio::test]
async fn hang_times_out_the_client_and_is_cancelled_on_disconnect() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = client
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat(json!({"model": "mock:hang"})))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(mock.state().request_count(), 1);
    eventually("the hung handler to be dropped", || mock.state().in_flight() == 0).await;
}

#[tokio::test]
async fn shutdown_ends_hung_requests() {
    let mock = MockServer::start().await.unwrap();
    let url = format!("{}/chat/completions", mock.base_url());
    let request = tokio::spawn(async move {
        Client::new()
            .post(url)
            .header("x-mock-hang", "true")
            .json(&chat(json!({})))
            .send()
            .await
    });
    let state = mock.state().clone();
    eventually("the hang to arrive", || state.in_flight() == 1).await;
    timeout(QUICK, mock.shutdown()).await.unwrap().unwrap();
    let response = timeout(QUICK, request).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let mock = MockServer::start().await.unwrap();
    let addr = mock.addr();
    drop(mock);
    let deadline = Instant::now() + QUICK;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// === directives ===

#[tokio::test]
async fn directive_precedence() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new();
    let url = format!("{}/chat/completions", mock.base_url());
    // model < x_mock < header
    let response = client
        .post(&url)
        .header("x-mock-status", "429")
        .json(&chat(
            json!({"model": "mock:status=500", "x_mock": {"status": 503}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = post(
        &mock,
        "chat/completions",
        chat(json!({"model": "mock:status=500", "x_mock": {"status": 503}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A status below 400 cancels a lower-precedence fault.
    let (status, v) = post_json(
        &mock,
        "chat/completions",
        chat(json!({"model": "mock:status=500,content=model", "x_mock": {"status": 200}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["choices"][0]["message"]["content"], "model");
    assert_eq!(v["model"], "mock:status=500,content=model");
    let v: Value = client
        .post(&url)
        .header("x-mock-content", "from header")
        .json(&chat(
            json!({"model": "mock:content=model", "x_mock": {"content": "from body"}}),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from header");
    // Header-driven chunk count on a stream.
    let body = client
        .post(&url)
        .header("x-mock-chunks", "7")
        .json(&chat(json!({"stream": true})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sse_data(&body).len(), 1 + 7 + 1 + 1);
}

#[tokio::test]
async fn invalid_directives_are_rejected() {
    let mock = MockServer::start().await.unwrap();
    let (status, v) = post_json(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"latncy_ms": 5}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid_mock_directive");
    assert!(v["error"]["message"].as_str().unwrap().contains("latncy_ms"));
    let response = Client::new()
        .get(format!("{}/models", mock.base_url()))
        .header("x-mock-status", "teapot")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

// === counters, recording, auth ===

#[tokio::test]
async fn counters_and_recording() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new();
    post(
        &mock,
        "chat/completions",
        chat(json!({"x_mock": {"status": 500}})),
    )
    .await;
    post(&mock, "chat/completions?trace=1", chat(json!({}))).await;
    client
        .get(format!("{}/models", mock.base_url()))
        .header("x-test", "yes")
        .send()
        .await
        .unwrap();
    let state = mock.state();
    assert_eq!(state.request_count(), 3);
    assert_eq!(state.count_for_path("/v1/chat/completions"), 2);
    assert_eq!(state.count_for_path("/v1/models"), 1);
    assert_eq!(state.count_for_path("/v1/embeddings"), 0);
    assert_eq!(state.in_flight(), 0);
    let recorded = state.recorded();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].json().unwrap()["x_mock"]["status"], 500);
    assert_eq!(recorded[1].path_and_query, "/v1/chat/completions?trace=1");
    let last = state.last_request().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.headers["x-test"], "yes");
    assert!(last.body.is_empty());

    state.reset();
    assert_eq!(state.request_count(), 0);
    assert_eq!(state.count_for_path("/v1/chat/completions"), 0);
    assert!(state.recorded().is_empty());
    assert!(state.last_request().is_none());

    // Recording is bounded, oldest dropped first.
    // One client: building a TLS-capable client per request would dominate the test's time.
    for i in 0..RECORD_LIMIT + 4 {
        client
            .post(format!("{}/echo", mock.base_url()))
            .json(&json!({"i": i}))
            .send()
            .await
            .unwrap();
    }
    let recorded = state.recorded();
    assert_eq!(recorded.len(), RECORD_LIMIT);
    assert_eq!(recorded[0].json().unwrap()["i"], 4);
    assert_eq!(state.request_count(), (RECORD_LIMIT + 4) as u64);
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let mock = MockServer::start_with(MockConfig {
        record_bodies: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    post(&mock, "chat/completions", chat(json!({}))).await;
    assert_eq!(mock.state().request_count(), 1);
    assert!(mock.state().recorded().is_empty());
    assert!(mock.state().last_request().is_none());
}

#[tokio::test]
async fn required_api_key() {
    let mock = MockServer::start_with(MockConfig {
        required_api_key: Some("sk-right".to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new();
    let url = format!("{}/chat/completions", mock.base_url());
    let response = client.post(&url).json(&chat(json!({}))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let response = client
        .post(&url)
        .bearer_auth("sk-wrong-secret")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.text().await.unwrap();
    assert!(!body.contains("sk-wrong-secret"));
    assert!(!body.contains("sk-right"));

    let response = client
        .post(&url)
        .bearer_auth("sk-right")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Rejected requests are still counted and recorded.
    assert_eq!(mock.state().request_count(), 3);
    assert_eq!(mock.state().recorded().len(), 3);
    assert!(!format!("{:?}", mock.state().config()).contains("sk-right"));
}

#[tokio::test]
async fn http2_streams_and_aborts() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("{}/chat/completions", mock.base_url());
    let response = client
        .post(&url)
        .json(&chat(json!({"stream": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let body = response.text().await.unwrap();
    assert_eq!(sse_data(&body).last().copied(), Some("[DONE]"));
    // On HTTP/2 an abort resets the stream; the client still sees an incomplete body.
    let mut response = client
        .post(&url)
        .json(&chat(json!({"stream": true, "x_mock": {"drop_after_chunks": 2}})))
        .send()
        .await
        .unwrap();
    let received = read_frames(&mut response).await.expect_err("an aborted body");
    assert_eq!(sse_data(std::str::from_utf8(&received).unwrap()).len(), 2);
}
