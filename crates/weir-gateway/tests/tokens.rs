//! Tokens and cost through the gateway: the cost header on complete responses, the usage ledger
//! (streams included), and exact input counts in rate-limit reservations.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use weir_mock::server::MockServer;

/// `mock-model` priced at $1 / $2 per million input / output tokens through the config.
fn priced_config(mock: &MockServer) -> String {
    let mut yaml = config_for(mock, "", "server:\n  api_keys: [gw-key-1, gw-key-2]");
    yaml.push_str("pricing:\n  mock-model: { input: 1.0, output: 2.0 }\n");
    yaml
}

async fn chat(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    http()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn complete_responses_carry_their_cost_and_the_ledger_counts_them() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&priced_config(&mock)).await;
    let resp = chat(&gw, "gw-key-2", chat_body(json!({}))).await;
    assert_eq!(resp.status(), 200);
    let header: f64 = resp.headers()["x-weir-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let (input, output) = (
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        body["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert!(input > 0 && output > 0, "{body}");
    let expected = (input as f64 * 1.0 + output as f64 * 2.0) / 1e6;
    assert!((header - expected).abs() < 1e-9, "{header} vs {expected}");

    // A failed request counts as an error for the model and the client.
    let failed = chat(
        &gw,
        "gw-key-2",
        chat_body(json!({"model": "mock-model", "x_mock": {"status": 400}})),
    )
    .await;
    assert_eq!(failed.status(), 400);

    let usage = gw.state.engine().usage();
    let model = &usage.by_model["mock-model"];
    assert_eq!((model.requests, model.errors), (2, 1));
    assert_eq!((model.input_tokens, model.output_tokens), (input, output));
    assert!((model.cost_usd - expected).abs() < 1e-9, "{usage:?}");
    let client = &usage.by_client["key-1"];
    assert_eq!(
        (client.requests, client.errors, client.input_tokens),
        (2, 1, input)
    );
    let deployment = &usage.by_deployment["mock-a"];
    assert_eq!((deployment.requests, deployment.errors), (2, 1));
    assert_eq!(deployment.output_tokens, output);
    assert!((usage.total.cost_usd - expected).abs() < 1e-9);
}

#[tokio::test]
async fn unpriced_models_get_no_cost_header_but_their_tokens_count() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = chat(&gw, "unused", chat_body(json!({}))).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-weir-cost-usd"));
    let usage = gw.state.engine().usage();
    assert_eq!(usage.total.unpriced_responses, 1);
    assert!(usage.total.input_tokens > 0);
    assert_eq!(usage.by_client["anonymous"].requests, 1);
}

#[tokio::test]
async fn a_streams_cost_lands_in_the_ledger_when_it_ends() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&priced_config(&mock)).await;
    let resp = chat(
        &gw,
        "gw-key-1",
        chat_body(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        !resp.headers().contains_key("x-weir-cost-usd"),
        "a stream's headers leave before its usage exists"
    );
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let usage_event: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|v| v["usage"].is_object())
        .unwrap();
    let (input, output) = (
        usage_event["usage"]["prompt_tokens"].as_u64().unwrap(),
        usage_event["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let expected = (input as f64 + output as f64 * 2.0) / 1e6;
    // The stream's end callback runs as the body finishes; give the server task a moment.
    let mut usage = gw.state.engine().usage();
    for _ in 0..100 {
        if usage.total.output_tokens > 0 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        usage = gw.state.engine().usage();
    }
    let client = &usage.by_client["key-0"];
    assert_eq!((client.input_tokens, client.output_tokens), (input, output));
    assert!((client.cost_usd - expected).abs() < 1e-9, "{usage:?}");
}

#[tokio::test]
async fn rate_limit_reservations_use_exact_input_counts() {
    let mock = MockServer::start().await.unwrap();
    // The upstream model is gpt-4o-mini (o200k_base): "hello " × n is about n tokens, while the
    // old bytes / 4 estimate would be about 1.5 n.
    let yaml = format!(
        "models:\n  - name: m\n    deployments:\n      - id: d\n        provider: openai\n        base_url: {}\n        model: gpt-4o-mini\n        rate_limits: {{ input_tokens_per_minute: 1200, mode: fail_fast }}\n",
        mock.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let body = |words: usize| json!({"model": "m", "messages": [{"role": "user", "content": "hello ".repeat(words)}]});
    let fits = body(1000);
    let exact = weir::tokens::count_chat(
        weir::tokens::Encoding::O200kBase,
        &weir::RequestFacts::parse(weir::Endpoint::Passthrough, None, fits.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(
        exact < 1200 && fits.to_string().len() as u64 / 4 > 1200,
        "{exact}"
    );
    let resp = chat(&gw, "unused", fits).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Twice as many words: over the limit on its own, refused before reaching the upstream.
    let refused = chat(&gw, "unused", body(2000)).await;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let err = error_of(refused).await;
    assert!(err["message"].as_str().unwrap().contains("input"), "{err}");
    assert_eq!(mock.state().request_count(), 1);
}

#[tokio::test]
async fn requests_refused_by_a_client_limit_count_as_errors() {
    let mock = MockServer::start().await.unwrap();
    let server =
        "server:\n  api_keys: [gw-key-1]\n  client_rate_limits: { requests_per_minute: 1, mode: fail_fast }";
    let gw = Gateway::start(&config_for(&mock, "", server)).await;
    assert_eq!(chat(&gw, "gw-key-1", chat_body(json!({}))).await.status(), 200);
    assert_eq!(chat(&gw, "gw-key-1", chat_body(json!({}))).await.status(), 429);
    let usage = gw.state.engine().usage();
    let client = &usage.by_client["key-0"];
    assert_eq!((client.requests, client.errors), (2, 1), "{usage:?}");
    assert_eq!(usage.by_model["mock-model"].errors, 1);
    assert_eq!(
        usage.by_deployment["mock-a"].requests, 1,
        "the refused one never left"
    );
}
