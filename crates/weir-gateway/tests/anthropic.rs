//! Anthropic both ways, over real sockets: OpenAI clients → gateway → Anthropic (the mock's
//! `/v1/messages`), and Anthropic clients → the gateway's `POST /v1/messages` → an OpenAI upstream
//! or an Anthropic one (translated twice). Streaming, tool calls, 529 retries, mid-stream errors.
//! Longer than the usual ~600 lines: both directions share the request and stream helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, http};
use serde_json::{Value, json};
use weir_mock::{content::DEFAULT_CONTENT, server::MockServer};

const UPSTREAM_KEY: &str = "sk-ant-upstream-secret";
const GATEWAY_KEY: &str = "gw-key-1";

/// `claude` → the mock as an Anthropic upstream; `gpt` → the same mock as an OpenAI upstream;
/// `claude-*` a wildcard group on the Anthropic side. Fast retries.
fn config(mock: &MockServer) -> String {
    format!(
        r#"
server:
  api_keys: ["{GATEWAY_KEY}"]
logging:
  level: warn
models:
  - name: claude
    deployments:
      - id: anthropic-a
        provider: anthropic
        base_url: http://{addr}
        api_key: {UPSTREAM_KEY}
        model: claude-sonnet-4-5
        retry: {{ max_retries: 2, base_delay: 5ms, max_delay: 10ms }}
  - name: claude-*
    deployments:
      - id: anthropic-wild
        provider: anthropic
        base_url: http://{addr}
        api_key: {UPSTREAM_KEY}
  - name: gpt
    deployments:
      - id: openai-a
        provider: openai
        base_url: http://{addr}/v1
        api_key: openai-upstream-key
        retry: {{ max_retries: 2, base_delay: 5ms, max_delay: 10ms }}
"#,
        addr = mock.addr()
    )
}

async fn setup() -> (MockServer, Gateway) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock)).await;
    (mock, gw)
}

async fn chat(gw: &Gateway, body: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn messages(gw: &Gateway, body: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", GATEWAY_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `(event name, data)` of every SSE event; `data` parsed as JSON when it is JSON.
async fn events(resp: reqwest::Response) -> Vec<(Option<String>, Value)> {
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned);
            let data: String = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (name, serde_json::from_str(&data).unwrap_or(Value::String(data)))
        })
        .collect()
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
    ])
}

// === OpenAI client → Anthropic upstream ===

#[tokio::test]
async fn openai_chat_reaches_anthropic_translated_with_its_headers() {
    let (mock, gw) = setup().await;
    let resp = chat(&gw, json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        ],
    }))
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "anthropic-a");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 9);

    let sent = mock.state().last_request().unwrap();
    assert_eq!(sent.path_and_query, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    let sent = sent.json().unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["system"], "Be brief.");
    // Two user turns merged into one (the mock refuses repeated roles).
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent["messages"][0]["content"][1]["type"], "image");
}

#[tokio::test]
async fn streamed_tool_calls_keep_their_index_and_id() {
    let (_mock, gw) = setup().await;
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
            "tools": weather_tools(),
        }),
    )
    .await;
    let events = events(resp).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new(); // (id, name, arguments) by index
    let mut finish = None;
    let mut usage = None;
    for (_, chunk) in &events[..events.len() - 1] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, calls.len(), "a new call takes the next index");
                calls.push((
                    id.to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(text, DEFAULT_CONTENT);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(calls[1].1, "get_time");
    assert!(calls[0].0.starts_with("toolu_mock_") && calls[0].0 != calls[1].0);
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).unwrap(),
        json!({"location": "mock"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].2).unwrap(),
        json!({"tz": "mock"})
    );
    let usage = usage.expect("include_usage asked for a usage chunk");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_tool_round_trip_is_accepted_by_anthropic() {
    let (_mock, gw) = setup().await;
    let first: Value = chat(&gw, json!({
        "model": "claude", "tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }))
    .await
    .json()
    .await
    .unwrap();
    let message = &first["choices"][0]["message"];
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    // Send the assistant turn and the tool's answer back: the mock checks the tool_result ids.
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "tools": weather_tools(),
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                message,
                {"role": "tool", "tool_call_id": call["id"], "content": "15 degrees"},
            ],
        }),
    )
    .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn overloaded_529_is_retried() {
    let (mock, gw) = setup().await;
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "messages": [{"role": "user", "content": "hi"}],
            "x_mock": {"status": 529, "fail_times": 1, "fail_key": "overload"},
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.state().count_for_path("/v1/messages"), 2);

    // Always overloaded: every attempt made, then a 5xx in OpenAI's shape naming the cause.
    mock.state().reset();
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "messages": [{"role": "user", "content": "hi"}], "x_mock": {"status": 529},
        }),
    )
    .await;
    assert_eq!(resp.status(), 502);
    let err = common::error_of(resp).await;
    assert!(err["message"].as_str().unwrap().contains("529"), "{err}");
    assert_eq!(mock.state().count_for_path("/v1/messages"), 3);
}

#[tokio::test]
async fn anthropic_client_errors_keep_their_status_and_message() {
    let (mock, gw) = setup().await;
    // The translation refuses what Anthropic cannot do, before any upstream call.
    let resp = chat(
        &gw,
        json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(common::error_of(resp).await["param"], "n");
    // An upstream 400 comes back with Anthropic's message, not retried.
    let resp = chat(
        &gw,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err = common::error_of(resp).await;
    assert!(err["message"].as_str().unwrap().contains("max_tokens"), "{err}");
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(mock.state().count_for_path("/v1/messages"), 1);
    // Endpoints Anthropic lacks: a clear 400.
    let resp = http()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "claude", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err = common::error_of(resp).await;
    assert!(
        err["message"].as_str().unwrap().contains("does not support"),
        "{err}"
    );
}

#[tokio::test]
async fn a_mid_stream_error_event_is_surfaced_not_a_clean_end() {
    let (_mock, gw) = setup().await;
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "x_mock": {"error_after_chunks": 4},
        }),
    )
    .await;
    let events = events(resp).await;
    let (_, last) = events.last().unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("Overloaded"),
        "{last}"
    );
    assert!(!events.iter().any(|(_, d)| d == "[DONE]"));
    assert!(events.len() > 1, "the chunks before the error were delivered");
}

#[tokio::test]
async fn a_stream_failing_before_its_first_event_is_retried() {
    let (mock, gw) = setup().await;
    let resp = chat(
        &gw,
        json!({
            "model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "x_mock": {"error_after_chunks": 0},
        }),
    )
    .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(mock.state().count_for_path("/v1/messages"), 3);
}

#[tokio::test]
async fn models_and_health_go_through_the_anthropic_adapter() {
    let (mock, gw) = setup().await;
    let list: Value = http()
        .get(gw.url("/v1/models"))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = |id: &str| list["data"].as_array().unwrap().iter().any(|m| m["id"] == id);
    assert!(listed("claude") && listed("gpt"), "{list}");
    // The wildcard group lists what Anthropic's /v1/models has (the mock's catalogue).
    let sonnet = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "claude-sonnet-4-5");
    assert_eq!(sonnet.unwrap()["owned_by"], "anthropic", "{list}");
    assert_eq!(sonnet.unwrap()["created"], 1_759_104_000);
    assert!(
        mock.state()
            .recorded()
            .iter()
            .any(|r| r.path_and_query == "/v1/models?limit=1000"),
        "the wildcard group asked Anthropic's model list"
    );
    let health = http()
        .get(gw.url("/health/upstreams"))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

// === Anthropic client → /v1/messages ===

#[tokio::test]
async fn messages_endpoint_serves_an_openai_upstream() {
    let (mock, gw) = setup().await;
    let resp = messages(
        &gw,
        json!({
            "model": "gpt", "max_tokens": 1024,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": "Hello, Claude"}],
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], json!([{"type": "text", "text": DEFAULT_CONTENT}]));
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(msg["usage"]["output_tokens"], 9);
    let sent = mock.state().last_request().unwrap();
    assert_eq!(sent.path_and_query, "/v1/chat/completions");
    let sent = sent.json().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(sent["max_tokens"], 1024);

    let resp = messages(
        &gw,
        json!({
            "model": "gpt", "max_tokens": 1024, "stream": true,
            "messages": [{"role": "user", "content": "Hello"}],
        }),
    )
    .await;
    let events = events(resp).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, DEFAULT_CONTENT);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 9);
    assert!(delta["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn messages_endpoint_through_anthropic_upstream_keeps_tool_ids() {
    let (_mock, gw) = setup().await;
    let tools = json!([
        {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]);
    let request = json!({
        "model": "claude", "max_tokens": 256, "tools": tools,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}},
            {"type": "text", "text": "Weather here?"},
        ]}],
    });
    let msg: Value = messages(&gw, request.clone()).await.json().await.unwrap();
    assert_eq!(msg["stop_reason"], "tool_use", "{msg}");
    let blocks = msg["content"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "text");
    assert_eq!(blocks[1]["type"], "tool_use");
    assert!(blocks[1]["id"].as_str().unwrap().starts_with("toolu_mock_"));
    assert_eq!(blocks[1]["input"], json!({"location": "mock"}));
    assert_eq!(blocks[2]["name"], "get_time");

    // Streamed: blocks open and close in order, tool input arrives as JSON pieces.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = events(messages(&gw, streamed).await).await;
    let mut inputs: std::collections::BTreeMap<u64, String> = Default::default();
    let mut starts = Vec::new();
    for (name, data) in &events {
        match name.as_deref() {
            Some("content_block_start") => {
                starts.push((data["index"].as_u64().unwrap(), data["content_block"].clone()))
            }
            Some("content_block_delta") if data["delta"]["type"] == "input_json_delta" => {
                inputs
                    .entry(data["index"].as_u64().unwrap())
                    .or_default()
                    .push_str(data["delta"]["partial_json"].as_str().unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(starts.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(starts[1].1["name"], "get_weather");
    assert!(starts[1].1["id"].as_str().unwrap().starts_with("toolu_mock_"));
    assert_eq!(
        serde_json::from_str::<Value>(&inputs[&1]).unwrap(),
        json!({"location": "mock"})
    );

    // The tool's answer goes back in Anthropic's shape.
    let mut follow_up = request;
    follow_up["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": msg["content"]}),
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": blocks[1]["id"], "content": [{"type": "text", "text": "15 degrees"}]},
            {"type": "tool_result", "tool_use_id": blocks[2]["id"], "content": "noon", "is_error": false},
        ]}),
    ]);
    let resp = messages(&gw, follow_up).await;
    let status = resp.status();
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["stop_reason"], "end_turn");
}

#[tokio::test]
async fn messages_endpoint_errors_are_anthropic_shaped() {
    let (_mock, gw) = setup().await;
    let check = |status: u16, kind: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), status);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    check(400, "invalid_request_error")(messages(&gw, json!({"model": "gpt", "messages": hi})).await).await;
    check(404, "not_found_error")(
        messages(&gw, json!({"model": "nope", "max_tokens": 5, "messages": hi})).await,
    )
    .await;
    let no_key = http()
        .post(gw.url("/v1/messages"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    check(401, "authentication_error")(no_key).await;
    // A stream that breaks mid-way ends with Anthropic's error event.
    let resp = messages(
        &gw,
        json!({"model": "claude", "max_tokens": 50, "stream": true, "messages": hi,
        "x_mock": {"error_after_chunks": 4}}),
    )
    .await;
    let events = events(resp).await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(data["type"], "error");
    assert!(
        data["error"]["message"].as_str().unwrap().contains("Overloaded"),
        "{data}"
    );
    assert!(!events.iter().any(|(n, _)| n.as_deref() == Some("message_stop")));

    // Last: the 429 rests the deployment. A Retry-After beyond the gateway's maximum wait is
    // passed on rather than waited out.
    let resp = messages(&gw, json!({"model": "claude", "max_tokens": 5, "messages": hi, "x_mock": {"status": 429, "retry_after": 120}})).await;
    assert_eq!(resp.headers()["retry-after"], "120");
    check(429, "rate_limit_error")(resp).await;
}

#[tokio::test]
async fn count_tokens_counts_without_calling_an_upstream() {
    let (mock, gw) = setup().await;
    let count = |model: &'static str| {
        let gw = &gw;
        async move {
            let resp = http()
                .post(gw.url("/v1/messages/count_tokens"))
                .header("x-api-key", GATEWAY_KEY)
                .json(&json!({"model": model, "system": "You are a scientist",
                    "messages": [{"role": "user", "content": "Hello, Claude"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["input_tokens"]
                .as_u64()
                .unwrap()
        }
    };
    let gpt = count("gpt-4o").await;
    let claude = count("claude-sonnet-4-5").await;
    assert!(gpt > 5, "{gpt}");
    assert!(claude > gpt, "Claude's estimate is scaled up: {claude} vs {gpt}");
    assert_eq!(mock.state().request_count(), 0);
}

#[tokio::test]
async fn a_messages_stream_cut_by_the_drain_ends_with_an_anthropic_error_event() {
    use futures::StreamExt;
    let mock = MockServer::start().await.unwrap();
    let yaml = config(&mock).replace("server:\n", "server:\n  shutdown_timeout: 200ms\n");
    let mut gw = Gateway::start(&yaml).await;
    // A 10 s stream, far longer than the 200 ms the drain allows.
    let resp = messages(
        &gw,
        json!({"model": "gpt", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}], "x_mock": {"chunks": 50, "chunk_delay_ms": 200}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let server = gw.begin_shutdown();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("stream not cut")
    {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let last = rest.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("event: error\ndata: {\"type\":\"error\""),
        "{rest}"
    );
    assert!(last.contains("shutting down"), "{last}");
    assert!(!rest.contains("message_stop"), "{rest}");
    server.await.unwrap().unwrap();
}
