//! Your own tower layers around the engine: redact e-mail addresses from prompts, refuse a model,
//! and stamp every answer with a header.
//!
//! Run: `cargo run -p weir --example custom_layer` — offline, on the built-in mock provider. The
//! mock echoes requests to unknown paths, so the output shows what the upstream received.
//!
//! A layer wraps the engine's pipeline (`weir::EngineService`, a `tower::Service` of
//! [`ProxyRequest`]s) and sees every request before the cache, limits and routing do, and every
//! answer after. The same engine serves the gateway: `weir_gateway::AppState::from_engine`.

// An example prints its results.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt};
use weir::{Client, Config, Engine, EngineService, Error, ProxyRequest, ProxyResponse};

/// Replaces anything that looks like an e-mail address in the request's string values.
#[derive(Clone, Copy)]
struct RedactEmails;

impl<S> Layer<S> for RedactEmails {
    type Service = Redact<S>;
    fn layer(&self, inner: S) -> Redact<S> {
        Redact { inner }
    }
}

#[derive(Clone)]
struct Redact<S> {
    inner: S,
}

impl<S> Service<ProxyRequest> for Redact<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ProxyResponse;
    type Error = Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<ProxyResponse, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ProxyRequest) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            // The body's facts are parsed once and shared with the rest of the pipeline; after
            // `set_body` they are parsed again from the new body.
            if let Some(mut body) = req.facts()?.json().cloned()
                && redact(&mut body)
            {
                req.set_body(Bytes::from(body.to_string()));
            }
            inner.oneshot(req).await
        })
    }
}

/// Redacts every string in `value`; whether anything changed.
fn redact(value: &mut Value) -> bool {
    match value {
        Value::String(text) => {
            let redacted: Vec<String> = text
                .split(' ')
                .map(|word| match word.split_once('@') {
                    Some((user, domain)) if !user.is_empty() && domain.contains('.') => "[email]".to_owned(),
                    _ => word.to_owned(),
                })
                .collect();
            let redacted = redacted.join(" ");
            let changed = redacted != *text;
            *text = redacted;
            changed
        }
        // Every element is visited (no short-circuit): each may hold an address.
        Value::Array(items) => items.iter_mut().map(redact).filter(|changed| *changed).count() > 0,
        Value::Object(map) => map.values_mut().map(redact).filter(|changed| *changed).count() > 0,
        _ => false,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Small layers can be closures: refuse a model, whatever the config would route.
    let refuse_gpt4 = tower::layer::layer_fn(|inner: EngineService| {
        tower::service_fn(move |req: ProxyRequest| {
            let inner = inner.clone();
            async move {
                if req.facts()?.model() == Some("gpt-4") {
                    return Err(Error::invalid_param("model", "gpt-4 is not allowed here", None));
                }
                inner.oneshot(req).await
            }
        })
    });
    // ...and stamp every answer.
    let stamp = tower::layer::layer_fn(|inner: EngineService| {
        tower::service_fn(move |req: ProxyRequest| {
            let inner = inner.clone();
            async move {
                let mut resp = inner.oneshot(req).await?;
                resp.headers.insert(
                    "x-reviewed-by",
                    http::HeaderValue::from_static("custom-layer-example"),
                );
                Ok::<_, Error>(resp)
            }
        })
    });

    // No config file and no key: the built-in offline mock.
    let config = Config::from_env_with(|_| None)?;
    let engine = Engine::builder(config)
        .layer(stamp)
        .layer(refuse_gpt4)
        .layer(RedactEmails)
        .build();
    let client = Client::from_engine(Arc::new(engine));

    // The mock echoes unknown paths: this shows what the upstream was sent.
    let echo = client
        .call_api(
            http::Method::POST,
            "echo",
            Some(&json!({"model": "gpt-4o-mini", "note": "call ada@example.com tomorrow"})),
        )
        .await?;
    println!("the upstream received: {}", echo["body"]);

    let refused = client
        .create_chat_completion(&weir::api::ChatCompletionRequest::new(
            "gpt-4",
            vec![weir::api::ChatMessage::user("Hello")],
        ))
        .await;
    println!(
        "gpt-4: {}",
        refused.err().map_or("allowed".to_owned(), |e| e.to_string())
    );

    let resp = client
        .engine()
        .execute(ProxyRequest::json(
            weir::Endpoint::ChatCompletions,
            Bytes::from(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}).to_string(),
            ),
        ))
        .await?;
    println!("x-reviewed-by: {:?}", resp.headers.get("x-reviewed-by"));
    client.shutdown(std::time::Duration::from_secs(5)).await?;
    Ok(())
}
