//! Embedding: the gateway's router merged (or nested) into an application's own axum router,
//! with the application's routes and middleware, served on a real socket.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

// The example's own composition, so the example cannot drift from what is tested.
#[path = "../examples/embed.rs"]
#[allow(dead_code)]
mod embed;

use axum::{Router, routing::get};
use common::http;
use tokio::net::TcpListener;
use weir_gateway::AppState;

fn offline_gateway() -> AppState {
    embed::gateway(weir::Config::from_env_with(|_| None).unwrap()).unwrap()
}

/// Serves `app` on 127.0.0.1:0 until the test ends; returns its base URL.
async fn spawn(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn merged_into_an_app_with_its_own_route_and_middleware() {
    let base = spawn(embed::app(offline_gateway())).await;
    let http = http();

    let hello = http.get(format!("{base}/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.headers()[embed::SERVED_BY], "embed-example");
    assert_eq!(hello.text().await.unwrap(), "hello from the app\n");

    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    // The app's middleware ran around the gateway's route, and the gateway's own context still did.
    assert_eq!(chat.headers()[embed::SERVED_BY], "embed-example");
    assert!(chat.headers().contains_key("x-request-id"));
    let body: serde_json::Value = chat.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");

    // Unknown URLs still get the gateway's OpenAI-shaped 404, under the app's middleware.
    let missing = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()[embed::SERVED_BY], "embed-example");
    common::error_of(missing).await;

    // The example's own self-check passes against the same composition.
    embed::check(&base).await.unwrap();
}

#[tokio::test]
async fn nested_under_a_prefix() {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .nest("/llm", weir_gateway::router(offline_gateway()));
    let base = spawn(app).await;
    let http = http();

    assert_eq!(
        http.get(format!("{base}/hello")).send().await.unwrap().status(),
        200
    );
    let chat = http
        .post(format!("{base}/llm/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let messages = http
        .post(format!("{base}/llm/v1/messages"))
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(messages.status(), 200);
    let body: serde_json::Value = messages.json().await.unwrap();
    assert_eq!(body["type"], "message", "{body}");
}
