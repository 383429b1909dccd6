//! Configuring in code: `Config::builder()` and `Client::builder()` give the same config a YAML
//! file gives (same defaults, same checks, errors naming the field), and a client built in code
//! serves calls through the mock over loopback, with a layer of its own.

// Test helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use tower::ServiceExt;
use weir::{
    Client, Config, EngineService, ProxyRequest,
    api::{ChatCompletionRequest, ChatMessage},
    config::{CircuitBreakerConfig, Deployment, RateLimitConfig, RetryPolicy, Strategy},
};
use weir_mock::server::MockServer;

#[test]
fn builder_defaults_are_the_files_defaults() {
    let yaml = "models:\n  - name: chat\n    deployments:\n      - provider: openai\n        \
                base_url: http://127.0.0.1:9/v1\n        api_key: k\n        id: one\n";
    let from_file = Config::from_yaml(yaml, None).unwrap();
    let in_code = Config::builder()
        .model(
            "chat",
            Deployment::openai_compatible("http://127.0.0.1:9/v1")
                .api_key("k")
                .id("one"),
        )
        .build()
        .unwrap();
    assert_eq!(in_code.models[0].deployments, from_file.models[0].deployments);
    assert_eq!(in_code.default_model, from_file.default_model);
    assert_eq!(
        in_code.resilience.request_deadline,
        from_file.resilience.request_deadline
    );
    let d = &in_code.models[0].deployments[0];
    // The product's defaults: the deployments' breaker (open for 30 s); 2 retries; 10 s / 30 s / 60 s.
    assert_eq!(
        d.circuit_breaker.as_ref().unwrap(),
        &CircuitBreakerConfig::for_deployments()
    );
    assert_eq!(
        d.circuit_breaker.as_ref().unwrap().open_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(d.retry.max_retries, 2);
    assert_eq!(d.timeouts.connect, Duration::from_secs(10));
    assert_eq!(d.timeouts.total, Duration::from_secs(60));
    assert_eq!(d.pool.max_connections_per_host, 30);
}

#[test]
fn defaults_lie_under_each_deployment_and_its_own_settings_win() {
    let config = Config::builder()
        .model("a", Deployment::mock().id("a1"))
        .model(
            "a",
            Deployment::mock()
                .id("a2")
                .retry(RetryPolicy {
                    max_retries: 0,
                    ..Default::default()
                })
                .circuit_breaker(None),
        )
        .model("b", Deployment::mock())
        .retry(RetryPolicy {
            max_retries: 4,
            ..Default::default()
        })
        .rate_limits(RateLimitConfig {
            requests_per_minute: Some(100),
            ..Default::default()
        })
        .strategy("a", Strategy::LeastBusy)
        .fallbacks("a", ["b"])
        .build()
        .unwrap();
    let a = &config.models[0];
    assert_eq!(a.strategy, Strategy::LeastBusy);
    assert_eq!(a.fallbacks, ["b"]);
    assert_eq!(a.deployments[0].retry.max_retries, 4);
    assert_eq!(a.deployments[1].retry.max_retries, 0);
    assert!(a.deployments[1].circuit_breaker.is_none());
    assert_eq!(
        a.deployments[1].rate_limits.as_ref().unwrap().requests_per_minute,
        Some(100)
    );
    assert_eq!(config.models[1].deployments[0].id, "b#0");
    assert_eq!(config.default_model, None, "two models: no implicit default");
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(weir::config::ConfigBuilder, &str)> = vec![
        (
            Config::builder()
                .model("a", Deployment::mock().id("x"))
                .model("a", Deployment::mock().id("x")),
            "models[0].deployments[1].id",
        ),
        (
            Config::builder()
                .model("a", Deployment::mock())
                .fallbacks("a", ["nope"]),
            "models[0].fallbacks[0]",
        ),
        (
            Config::builder().model(
                "a",
                Deployment::mock().rate_limits(Some(RateLimitConfig {
                    requests_per_minute: Some(0),
                    ..Default::default()
                })),
            ),
            "models[0].deployments[0].rate_limits",
        ),
        (
            Config::builder().model(
                "a",
                Deployment::mock().circuit_breaker(Some(CircuitBreakerConfig {
                    failure_threshold: 0,
                    ..Default::default()
                })),
            ),
            "models[0].deployments[0].circuit_breaker",
        ),
        (
            Config::builder().model("a", Deployment::openai_compatible("ftp://x/v1")),
            "models[0].deployments[0].base_url",
        ),
        (
            Config::builder().model("a", Deployment::openai("")),
            "models[0].deployments[0].api_key",
        ),
        (
            Config::builder().model("a", Deployment::mock().id("no spaces")),
            "models[0].deployments[0].id",
        ),
        (
            Config::builder()
                .model("a", Deployment::mock())
                .default_model("b"),
            "default_model",
        ),
        (
            Config::builder()
                .model("a", Deployment::mock())
                .strategy("b", Strategy::LeastBusy),
            "models[1].deployments",
        ),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
        assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
    }
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let builder = Config::builder().model("a", Deployment::openai("sk-very-secret"));
    assert!(!format!("{builder:?}").contains("sk-very-secret"));
    let client = Client::builder().model("a", Deployment::openai("sk-very-secret"));
    assert!(!format!("{client:?}").contains("sk-very-secret"));
}

#[tokio::test]
async fn a_client_built_in_code_serves_calls_through_its_layers() {
    let mock = MockServer::start().await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let counting = tower::layer::layer_fn(move |inner: EngineService| {
        let counter = counter.clone();
        tower::service_fn(move |req: ProxyRequest| {
            counter.fetch_add(1, Ordering::SeqCst);
            inner.clone().oneshot(req)
        })
    });
    let client = Client::builder()
        .model(
            "chat",
            Deployment::openai_compatible(mock.base_url()).model("gpt-4o-mini"),
        )
        .retry(RetryPolicy {
            max_retries: 0,
            ..Default::default()
        })
        .layer(counting)
        .build()
        .unwrap();
    let reply = client
        .create_chat_completion(&ChatCompletionRequest::new(
            "chat",
            vec![ChatMessage::user("Hello")],
        ))
        .await
        .unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the layer saw the call");
    assert_eq!(
        mock.state().last_request().unwrap().json().unwrap()["model"],
        "gpt-4o-mini"
    );
    client.shutdown(Duration::from_secs(1)).await.unwrap();
    let refused = client
        .create_chat_completion(&ChatCompletionRequest::new(
            "chat",
            vec![ChatMessage::user("Hello")],
        ))
        .await;
    assert!(refused.is_err(), "a shut-down client refuses new calls");
}
