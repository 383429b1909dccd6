//! The library's `Client` against the mock upstream over loopback, and offline on the built-in mock.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use http::Method;
use serde_json::json;
use weir::{
    Client, Config, Error,
    api::{ChatCompletionRequest, ChatMessage, EmbeddingRequest, ImageRequest},
};
use weir_mock::server::MockServer;

fn config(mock: &MockServer) -> Config {
    let yaml = format!(
        "models:\n  - name: chat\n    deployments:\n      - provider: openai\n        base_url: {}\n        api_key: k\n        model: gpt-4o-mini\n        retry: {{ max_retries: 0 }}\n",
        mock.base_url()
    );
    Config::from_yaml(&yaml, None).unwrap()
}

fn hello(model: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new(
        model,
        vec![ChatMessage::system("Be brief."), ChatMessage::user("Hello")],
    )
}

#[tokio::test]
async fn typed_calls_round_trip() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new(config(&mock));

    let mut req = hello("chat");
    req.extra.insert("future_param".into(), json!({"kept": true}));
    let reply = client.create_chat_completion(&req).await.unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    assert!(reply.choices[0].message.text().unwrap().contains("mock"));
    assert!(reply.usage.unwrap().total_tokens > 0);
    let sent = mock.state().last_request().unwrap().json().unwrap();
    assert_eq!(sent["future_param"], json!({"kept": true}));
    assert_eq!(sent["model"], "gpt-4o-mini");

    let emb = client
        .create_embedding(&EmbeddingRequest::new(
            "chat",
            vec!["a".to_owned(), "b".to_owned()],
        ))
        .await
        .unwrap();
    assert_eq!(emb.data.len(), 2);

    let img = client
        .create_image(&ImageRequest {
            model: "chat".into(),
            prompt: "a weir".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(img.data.len(), 1);

    let models = client.list_models().await.unwrap();
    assert_eq!(
        models.data.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["chat"]
    );

    let echo = client
        .call_api(Method::GET, "/v1/batches?limit=1", None)
        .await
        .unwrap();
    assert_eq!(echo["object"], "mock.echo");
    assert_eq!(
        mock.state().last_request().unwrap().path_and_query,
        "/v1/batches?limit=1"
    );
    let escape = client
        .call_api(Method::GET, "../secrets", None)
        .await
        .unwrap_err();
    assert!(matches!(escape, Error::NotFound { .. }), "{escape:?}");
}

#[tokio::test]
async fn streaming_yields_typed_chunks_then_ends() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new(config(&mock));
    let mut req = hello("chat");
    req.stream_options = Some(weir::api::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let mut stream = client.create_chat_completion_stream(&req).await.unwrap();
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in &chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    assert!(text.contains("mock"), "{text}");
    assert!(usage.unwrap().completion_tokens > 0);
}

#[tokio::test]
async fn a_broken_stream_ends_with_an_error_not_silence() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new(config(&mock));
    let mut req = hello("chat");
    req.extra.insert("x_mock".into(), json!({"stop_after_chunks": 2}));
    let mut stream = client.create_chat_completion_stream(&req).await.unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 2);
    assert!(items.last().unwrap().is_err(), "the last item must be the error");
}

#[tokio::test]
async fn errors_are_typed() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new(config(&mock));
    let err = client.create_chat_completion(&hello("nope")).await.unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }));
    let mut limited = hello("chat");
    limited
        .extra
        .insert("x_mock".into(), json!({"status": 429, "retry_after": 3}));
    match client.create_chat_completion(&limited).await.unwrap_err() {
        Error::Upstream {
            status, retry_after, ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn offline_mock_needs_no_network() {
    let client = Client::new(Config::from_env_with(|_| None).unwrap());
    let reply = client.create_chat_completion(&hello("any-model")).await.unwrap();
    assert_eq!(reply.model, "any-model");
    let mut stream = client
        .create_chat_completion_stream(&hello("any-model"))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        n += 1;
    }
    assert!(n >= 3);
}

#[tokio::test]
async fn shutdown_refuses_new_calls_and_waits_for_running_streams() {
    let mock = MockServer::start().await.unwrap();
    let client = Client::new(config(&mock));
    let mut req = hello("chat");
    // Five chunks 40 ms apart: the stream is still running when shutdown begins.
    req.extra.insert("x_mock".into(), json!({"chunk_delay_ms": 40}));
    let mut stream = client.create_chat_completion_stream(&req).await.unwrap();
    assert_eq!(client.engine().in_flight(), 1);
    let reader = tokio::spawn(async move {
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
            chunks += 1;
        }
        chunks
    });
    let mut shutdown = Box::pin(client.shutdown(std::time::Duration::from_secs(10)));
    // Polled once, shutdown has begun (the stream is still running): new calls are refused.
    assert!(futures::poll!(&mut shutdown).is_pending());
    let refused = client.create_chat_completion(&hello("chat")).await.unwrap_err();
    assert!(matches!(refused, Error::Unavailable { .. }), "{refused:?}");
    assert!(
        shutdown.await.is_ok(),
        "the running stream finished within the grace"
    );
    assert!(reader.await.unwrap() > 1, "the stream was served to its end");
    assert_eq!(client.engine().in_flight(), 0);

    // A grace too short for a running stream says how many were left.
    let client = Client::new(config(&mock));
    let _held = client.create_chat_completion_stream(&req).await.unwrap();
    let err = client
        .shutdown(std::time::Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 request"), "{err}");
}
