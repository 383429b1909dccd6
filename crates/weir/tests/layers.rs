//! Users' own tower layers around the engine (`Engine::builder(..).layer(..)`), against the mock
//! upstream over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use serde_json::{Value, json};
use tower::{ServiceExt, layer::layer_fn, service_fn};
use weir::{Config, Endpoint, Engine, EngineService, Error, ProxyBody, ProxyRequest};
use weir_mock::server::MockServer;

fn config(mock: &MockServer) -> Config {
    let yaml = format!(
        "models:\n  - name: chat\n    deployments:\n      - id: mock-a\n        provider: openai\n        base_url: {base}\n        api_key: k\n  - name: other\n    deployments:\n      - id: mock-b\n        provider: openai\n        base_url: {base}\n        api_key: k\n        model: renamed-upstream\n",
        base = mock.base_url()
    );
    Config::from_yaml(&yaml, None).unwrap()
}

fn chat(model: &str, text: &str) -> ProxyRequest {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    ProxyRequest::json(Endpoint::ChatCompletions, Bytes::from(body.to_string()))
}

/// A layer that appends `tag` to a request header list kept in the request's extensions, and to
/// the response's `x-trail` header, so the order layers run in is visible.
fn trail(tag: &'static str) -> impl tower::Layer<EngineService, Service = EngineService> + Clone {
    layer_fn(move |inner: EngineService| {
        EngineService::new(service_fn(move |mut req: ProxyRequest| {
            let inner = inner.clone();
            async move {
                let mut seen: Vec<&'static str> = req
                    .extensions
                    .get::<Vec<&'static str>>()
                    .cloned()
                    .unwrap_or_default();
                seen.push(tag);
                req.extensions.insert(seen.clone());
                let mut resp = inner.oneshot(req).await?;
                let before = resp
                    .headers
                    .get("x-trail")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                resp.headers
                    .insert("x-trail", format!("{before}{tag}").parse().unwrap());
                // The innermost layer saw the whole trail; outer ones keep its header.
                if !resp.headers.contains_key("x-request-trail") {
                    resp.headers
                        .insert("x-request-trail", seen.join(",").parse().unwrap());
                }
                Ok(resp)
            }
        }))
    })
}

#[tokio::test]
async fn layers_see_typed_requests_and_answers_in_builder_order() {
    let mock = MockServer::start().await.unwrap();
    let engine = Engine::builder(config(&mock))
        .layer(trail("outer"))
        .layer(trail("inner"))
        .build();
    let resp = engine.execute(chat("chat", "hi")).await.unwrap();
    // Requests pass the first-added layer first; answers come back through it last.
    assert_eq!(resp.headers["x-request-trail"], "outer,inner");
    assert_eq!(resp.headers["x-trail"], "innerouter");
    assert_eq!(&*resp.served_by.deployment, "mock-a");
}

#[tokio::test]
async fn a_layer_can_veto_a_request_before_any_upstream_call() {
    let mock = MockServer::start().await.unwrap();
    let veto = layer_fn(|inner: EngineService| {
        EngineService::new(service_fn(move |req: ProxyRequest| {
            let inner = inner.clone();
            async move {
                if req.facts()?.model() == Some("other") {
                    return Err(Error::invalid_param(
                        "model",
                        "`other` is not allowed for this team",
                        None,
                    ));
                }
                inner.oneshot(req).await
            }
        }))
    });
    let engine = Engine::builder(config(&mock)).layer(veto).build();
    let err = engine.execute(chat("other", "hi")).await.unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert_eq!(mock.state().count_for_path("/v1/chat/completions"), 0);
    assert!(engine.execute(chat("chat", "hi")).await.is_ok());
    assert_eq!(mock.state().count_for_path("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn a_layer_that_rewrites_the_body_is_routed_and_forwarded_by_the_new_body() {
    let mock = MockServer::start().await.unwrap();
    // Redacts e-mail addresses in the prompt and moves the request to the `other` group.
    let rewrite = layer_fn(|inner: EngineService| {
        EngineService::new(service_fn(move |mut req: ProxyRequest| {
            let inner = inner.clone();
            async move {
                let mut body: Value = req.facts()?.json().cloned().unwrap();
                let text = body["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .replace("ada@example.com", "[email]");
                body["messages"][0]["content"] = Value::String(text);
                body["model"] = json!("other");
                req.set_body(Bytes::from(body.to_string()));
                inner.oneshot(req).await
            }
        }))
    });
    let engine = Engine::builder(config(&mock)).layer(rewrite).build();
    let resp = engine
        .execute(chat("chat", "mail ada@example.com"))
        .await
        .unwrap();
    assert_eq!(
        &*resp.served_by.deployment, "mock-b",
        "routed by the rewritten model"
    );
    assert!(matches!(resp.body, ProxyBody::Full(_)));
    let last = mock.state().last_request().unwrap().json().unwrap();
    assert_eq!(last["messages"][0]["content"], "mail [email]");
    assert_eq!(
        last["model"], "renamed-upstream",
        "the deployment's own name upstream"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_layers() {
    let mock = MockServer::start().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let count = layer_fn(move |inner: EngineService| {
        let counted = counted.clone();
        EngineService::new(service_fn(move |req: ProxyRequest| {
            counted.fetch_add(1, Ordering::SeqCst);
            inner.clone().oneshot(req)
        }))
    });
    let engine = Engine::builder(config(&mock)).layer(count).build();
    engine.execute(chat("chat", "hi")).await.unwrap();
    let reloaded = engine.reload(config(&mock));
    reloaded.execute(chat("chat", "hi")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
