//! Round trips through the gateway to the mock's Gemini and Azure OpenAI faces: the client speaks
//! OpenAI, the mock records what the upstream received (paths, auth headers, translated bodies).

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_mock::{
    content::DEFAULT_CONTENT,
    server::{MockConfig, MockServer},
};

const KEY: &str = "upstream-secret-key";

async fn mock() -> MockServer {
    MockServer::start_with(MockConfig {
        required_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// `gemini-*` and `text-embedding-004` on the mock's Gemini face, `azure-gpt` on its Azure face.
async fn gateway(mock: &MockServer) -> Gateway {
    let root = format!("http://{}", mock.addr());
    Gateway::start(&format!(
        r#"
logging:
  level: warn
upstream_defaults:
  retry: {{ base_delay: 1ms, max_delay: 5ms }}
models:
  - name: gemini-*
    deployments:
      - id: gem
        provider: gemini
        base_url: {root}
        api_key: {KEY}
  - name: embed
    deployments:
      - id: gem-embed
        provider: gemini
        base_url: {root}
        api_key: {KEY}
        model: text-embedding-004
  - name: azure-gpt
    deployments:
      - id: az
        provider: azure
        base_url: {root}
        api_key: {KEY}
        model: gpt4o-prod
        api_version: 2025-01-01-preview
"#
    ))
    .await
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    http().post(gw.url(path)).json(&body).send().await.unwrap()
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn unary_chat_is_translated_both_ways_with_the_key_in_a_header() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let resp = post(
        &gw,
        "/v1/chat/completions",
        chat("gemini-2.0-flash", json!({"temperature": 0.5})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["model"], "gemini-2.0-flash");

    let seen = mock.state().last_request().unwrap();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(seen.headers["x-goog-api-key"], KEY);
    assert!(seen.headers.get("authorization").is_none());
    assert!(
        !seen.path_and_query.contains(KEY),
        "the key must never be in the URL"
    );
    let sent = seen.json().unwrap();
    assert_eq!(
        sent,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
               "generationConfig": {"temperature": 0.5}})
    );
}

#[tokio::test]
async fn streams_become_openai_chunks_with_usage_and_done() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let body = chat(
        "gemini-2.0-flash",
        json!({"stream": true, "stream_options": {"include_usage": true}, "x_mock": {"chunks": 4}}),
    );
    let resp = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = events(&resp.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, DEFAULT_CONTENT);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            !c["choices"][0]["finish_reason"].is_null()
                && c["choices"].as_array().is_some_and(|a| !a.is_empty())
        })
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 2);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        mock.state().last_request().unwrap().path_and_query,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn function_calling_round_trip() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}
    }}]);
    let resp = post(
        &gw,
        "/v1/chat/completions",
        chat(
            "gemini-2.0-flash",
            json!({"tools": tools, "tool_choice": "required"}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock"}));
    let sent = mock.state().last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert!(
        sent["tools"][0]["functionDeclarations"][0]["parameters"]
            .get("additionalProperties")
            .is_none()
    );

    // The second turn carries the call and its result; the model answers in text.
    let messages = json!([
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}"}
    ]);
    let resp = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "gemini-2.0-flash", "messages": messages, "tools": tools}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    let sent = mock.state().last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"temp_c": 21}})
    );
}

#[tokio::test]
async fn embeddings_single_and_batch() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let resp = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "embed", "input": "hello world", "dimensions": 4}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let one: Value = resp.json().await.unwrap();
    assert_eq!(one["object"], "list");
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert!(one["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let seen = mock.state().last_request().unwrap();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/text-embedding-004:embedContent"
    );
    assert_eq!(seen.json().unwrap()["outputDimensionality"], 4);

    let resp = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "embed", "input": ["hello world", "bye"], "dimensions": 4}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let batch: Value = resp.json().await.unwrap();
    assert_eq!(batch["data"].as_array().unwrap().len(), 2);
    assert_eq!(batch["data"][1]["index"], 1);
    assert_eq!(batch["data"][0]["embedding"], one["data"][0]["embedding"]);
    assert_eq!(
        mock.state().last_request().unwrap().path_and_query,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );

    let resp = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "embed", "input": [1, 2, 3]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["param"], "input");
}

#[tokio::test]
async fn gemini_errors_map_to_openai_errors_and_retries() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    // RESOURCE_EXHAUSTED with RetryInfo: retried after the delay, then served.
    let resp = post(
        &gw,
        "/v1/chat/completions",
        chat(
            "gemini-2.0-flash",
            json!({"x_mock": {"status": 429, "retry_after": 0.05, "fail_times": 1, "fail_key": "q"}}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.state().request_count(), 2);

    // UNAVAILABLE is retried too.
    mock.state().reset();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        chat(
            "gemini-2.5-pro",
            json!({"x_mock": {"status": 503, "fail_times": 1, "fail_key": "u"}}),
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.state().request_count(), 2);

    // INVALID_ARGUMENT is the client's problem: passed on as a 400, not retried.
    mock.state().reset();
    let resp = post(
        &gw,
        "/v1/chat/completions",
        chat("gemini-2.0-flash", json!({"x_mock": {"status": 400}})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err = error_of(resp).await;
    assert_eq!(err["code"], "invalid_argument");
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(mock.state().request_count(), 1);

    // A translation error never reaches the upstream.
    mock.state().reset();
    let resp = post(
        &gw,
        "/v1/images/generations",
        json!({"model": "gemini-2.0-flash", "prompt": "a cat"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["code"], "unsupported_endpoint");
    let bad = json!({"model": "gemini-2.0-flash", "messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]});
    let resp = post(&gw, "/v1/chat/completions", bad).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["param"], "messages[0].tool_call_id");
    assert_eq!(mock.state().request_count(), 0);
}

#[tokio::test]
async fn a_stream_that_breaks_mid_way_ends_with_an_error_event() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    for fault in [json!({"drop_after_chunks": 2}), json!({"stop_after_chunks": 2})] {
        let body = chat("gemini-2.0-flash", json!({"stream": true, "x_mock": fault}));
        let resp = post(&gw, "/v1/chat/completions", body).await;
        assert_eq!(resp.status(), 200);
        let events = events(&resp.text().await.unwrap());
        assert!(events.iter().all(|e| e != "[DONE]"), "{fault}: {events:?}");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{fault}: {last}");
        assert!(
            events.len() >= 3,
            "{fault}: the first chunks were delivered: {events:?}"
        );
    }
}

#[tokio::test]
async fn models_are_listed_from_gemini() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let list: Value = http()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"gemini-2.0-flash") && ids.contains(&"gemini-2.5-pro"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"text-embedding-004"),
        "the wildcard only lists what it matches: {ids:?}"
    );
    assert!(
        mock.state()
            .recorded()
            .iter()
            .any(|r| r.path_and_query == "/v1beta/models?pageSize=1000")
    );
    let one = http()
        .get(gw.url("/v1/models/gemini-2.5-pro"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "gemini-2.5-pro");
    let missing = http().get(gw.url("/v1/models/gemini-0")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn azure_gets_its_path_api_version_and_api_key_header() {
    let mock = mock().await;
    let gw = gateway(&mock).await;
    let resp = post(&gw, "/v1/chat/completions", chat("azure-gpt", json!({}))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    let seen = mock.state().last_request().unwrap();
    assert_eq!(
        seen.path_and_query,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-01-01-preview"
    );
    assert_eq!(seen.headers["api-key"], KEY);
    assert!(seen.headers.get("authorization").is_none());
    // The body is OpenAI's, passed through (model rewritten to the deployment name).
    assert_eq!(seen.json().unwrap()["model"], "gpt4o-prod");

    let stream = post(
        &gw,
        "/v1/chat/completions",
        chat("azure-gpt", json!({"stream": true})),
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert!(stream.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn zero_config_routes_claude_gemini_and_the_rest_by_env_keys() {
    let mock = mock().await;
    let root = format!("http://{}", mock.addr());
    let vars = [
        ("ANTHROPIC_API_KEY", KEY.to_owned()),
        ("ANTHROPIC_BASE_URL", root.clone()),
        ("GEMINI_API_KEY", KEY.to_owned()),
        ("GEMINI_BASE_URL", root.clone()),
        ("OPENAI_API_KEY", KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.base_url()),
    ];
    let config =
        weir::Config::from_env_with(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let gw = Gateway::start_config(config).await;
    for (model, path, auth_header) in [
        ("claude-sonnet-4-5", "/v1/messages", "x-api-key"),
        (
            "gemini-2.0-flash",
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "x-goog-api-key",
        ),
        ("gpt-4o-mini", "/v1/chat/completions", "authorization"),
    ] {
        let resp = post(&gw, "/v1/chat/completions", chat(model, json!({}))).await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion", "{model}");
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{model}: {body}"
        );
        let seen = mock.state().last_request().unwrap();
        assert_eq!(seen.path_and_query, path, "{model}");
        assert!(seen.headers.get(auth_header).is_some(), "{model}");
    }

    // Only a Gemini key: other models are refused, naming the variable that would serve them.
    let only = |name: &str| match name {
        "GEMINI_API_KEY" => Some(KEY.to_owned()),
        "GEMINI_BASE_URL" => Some(root.clone()),
        _ => None,
    };
    let gw = Gateway::start_config(weir::Config::from_env_with(only).unwrap()).await;
    mock.state().reset();
    let resp = post(&gw, "/v1/chat/completions", chat("gpt-4o", json!({}))).await;
    assert_eq!(resp.status(), 404);
    assert!(
        error_of(resp).await["message"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );
    assert_eq!(mock.state().request_count(), 0);
    let resp = post(&gw, "/v1/chat/completions", chat("gemini-2.5-pro", json!({}))).await;
    assert_eq!(resp.status(), 200);
}
