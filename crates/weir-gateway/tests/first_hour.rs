//! What a new user meets in the first hour (issue 18), over real sockets: `/ready` with nothing
//! to serve, a JSON body sent with curl's default form content type, errors that name their
//! upstream, a breaker an admin forced open.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir::Config;
use weir_mock::server::MockServer;

#[tokio::test]
async fn ready_is_503_with_a_reason_when_no_model_is_configured() {
    let empty = Config::from_yaml("server:\n  port: 0\n", Some("empty.yaml")).unwrap();
    let gw = Gateway::start_config(empty).await;
    let resp = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not_ready", "{body}");
    assert!(body["reason"].as_str().unwrap().contains("no models"), "{body}");

    // With a model it is ready.
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "")).await;
    let resp = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// `curl -d` labels a JSON body `application/x-www-form-urlencoded`. On a pass-through path the
/// body must still be read as JSON: its model routes (and is rewritten), it goes upstream as
/// JSON, and `stream: true` is streamed (not buffered whole under `timeouts.total`).
#[tokio::test]
async fn a_json_body_labelled_as_a_form_is_json() {
    let mock = MockServer::start().await.unwrap();
    // Pass-through `/v1/completions` lands on the mock's streaming chat route: the deployment's
    // root is `/v1/chat`. `timeouts.total` is shorter than the paced stream: a stream is bounded
    // by the read (idle) timeout only.
    let yaml = format!(
        r#"
logging:
  level: warn
models:
  - name: form-model
    deployments:
      - id: form
        provider: openai
        base_url: {base}/chat
        api_key: upstream-secret-key
        model: upstream-model
        timeouts: {{ total: 1s, read: 5s }}
  - name: other
    deployments:
      - provider: mock
"#,
        base = mock.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let body = json!({
        "model": "form-model",
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
        "x_mock": {"chunks": 4, "chunk_delay_ms": 400},
    });
    let resp = http()
        .post(gw.url("/v1/completions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-weir-deployment"], "form");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        resp.headers()
    );
    assert!(
        resp.headers().get("content-length").is_none(),
        "a stream was buffered: {:?}",
        resp.headers()
    );
    let text = resp.text().await.unwrap();
    assert!(text.matches("data: ").count() >= 4, "{text}");
    let seen = mock.state().last_request().unwrap();
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.json().unwrap()["model"], "upstream-model");
}

#[tokio::test]
async fn upstream_errors_name_the_deployment_and_host_and_carry_its_header() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        r#"
logging:
  level: warn
models:
  - name: dead-model
    deployments:
      - id: dead
        provider: openai
        base_url: http://127.0.0.1:{port}/v1
        api_key: upstream-secret-key
        retry: {{ max_retries: 0 }}
"#
    );
    let gw = Gateway::start(&yaml).await;
    let mut body = chat_body(json!({}));
    body["model"] = json!("dead-model");
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-weir-deployment"], "dead");
    let err = error_of(resp).await;
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("deployment `dead`") && message.contains(&format!("127.0.0.1:{port}")),
        "{message}"
    );
    assert!(
        !message.contains("upstream-secret-key") && !message.contains("/v1"),
        "{message}"
    );

    // The Anthropic face says the same in its own shape.
    let resp = http()
        .post(gw.url("/v1/messages"))
        .json(
            &json!({"model": "dead-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-weir-deployment"], "dead");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deployment `dead`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_breaker_forced_open_says_it_stays_open_until_reset() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config_for(&mock, "", "server:\n  admin_key: admin-secret-1")).await;
    let resp = http()
        .post(gw.url("/admin/deployments/mock-a/open"))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "no time can be promised: {:?}",
        resp.headers()
    );
    let err = error_of(resp).await;
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("until reset"), "{message}");
    assert!(!message.contains("next usable"), "{message}");
}
