//! Weir's gateway inside your own axum app: one route of the app's own (`/hello`), the gateway's
//! routes (`/v1/...`, `/health`, `/metrics`...) next to it, and a middleware of the app's
//! (adding an `x-served-by` header) around both. The engine behind the gateway carries a tower
//! layer of the app's too (typed: it sees each `ProxyRequest` and `ProxyResponse`, and here
//! stamps answers with `x-weir-layer`). Offline: the gateway answers from the built-in mock
//! provider.
//!
//! Run: `cargo run -p weir-gateway --example embed` serves until Ctrl-C (try
//! `curl -i http://ADDR/hello` and a chat completion on `http://ADDR/v1/chat/completions`).
//! With `-- --check` (or `WEIR_EMBED_CHECK=1`) it sends itself a chat request through the gateway
//! and a request to `/hello`, checks both answered with the app's header, and exits: 0 if so.
//!
//! The gateway's tests include this file (`tests/embed.rs`), so the composition shown here is the
//! one they check.

// An example prints where it listens and what it checked.
#![allow(clippy::print_stdout)]

use anyhow::{Context, ensure};
use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::get,
    serve::ListenerExt,
};
use http::HeaderValue;
use tokio::net::TcpListener;

/// The header the app's own middleware puts on every response, the gateway's included.
pub const SERVED_BY: &str = "x-served-by";

/// The header the app's engine layer puts on every answer the engine gives.
pub const ENGINE_LAYER: &str = "x-weir-layer";

/// The gateway's state: an engine for `config` with the app's own layer around its pipeline.
pub fn gateway(config: weir::Config) -> anyhow::Result<weir_gateway::AppState> {
    use tower::ServiceExt as _;
    let stamp = tower::layer::layer_fn(|inner: weir::EngineService| {
        tower::service_fn(move |req: weir::ProxyRequest| {
            let inner = inner.clone();
            async move {
                let mut resp = inner.oneshot(req).await?;
                resp.headers
                    .insert(ENGINE_LAYER, HeaderValue::from_static("embed-example"));
                Ok::<_, weir::Error>(resp)
            }
        })
    });
    let engine = weir::Engine::builder(config).layer(stamp).build();
    Ok(weir_gateway::AppState::from_engine(engine))
}

/// The app: its own route, the gateway's routes, and the app's middleware around both.
pub fn app(gateway: weir_gateway::AppState) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .merge(weir_gateway::router(gateway))
        .layer(middleware::from_fn(served_by))
}

/// The app's own route.
async fn hello() -> &'static str {
    "hello from the app\n"
}

/// The app's own middleware: a header on every response.
async fn served_by(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(SERVED_BY, HeaderValue::from_static("embed-example"));
    resp
}

/// Sends one chat completion through the gateway at `base` and one request to `/hello`; fails
/// unless both succeed and carry the app's header.
pub async fn check(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let hello = http.get(format!("{base}/hello")).send().await?;
    ensure!(hello.status() == 200, "/hello answered {}", hello.status());
    ensure!(
        hello.headers().contains_key(SERVED_BY),
        "/hello lacks {SERVED_BY}"
    );
    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "What is a weir?"}],
        }))
        .send()
        .await?;
    ensure!(chat.status() == 200, "chat answered {}", chat.status());
    ensure!(
        chat.headers().contains_key(SERVED_BY),
        "the chat answer lacks {SERVED_BY}"
    );
    ensure!(
        chat.headers().contains_key(ENGINE_LAYER),
        "the chat answer lacks {ENGINE_LAYER} (the engine layer did not run)"
    );
    let body: serde_json::Value = chat.json().await?;
    let reply = body
        .pointer("/choices/0/message/content")
        .and_then(serde_json::Value::as_str)
        .context("the chat answer has no message")?;
    println!("chat reply: {reply}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let check_only =
        std::env::args().skip(1).any(|a| a == "--check") || std::env::var_os("WEIR_EMBED_CHECK").is_some();
    // No environment consulted: the built-in offline mock. `weir::Config::load(path)` reads YAML.
    let config = weir::Config::from_env_with(|_| None)?;
    let gateway = gateway(config)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // As `weir_gateway::serve` does: without TCP_NODELAY the end of each stream waits for the
    // client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on http://{addr}");
    let server = axum::serve(listener, app(gateway));
    if check_only {
        let server = tokio::spawn(std::future::IntoFuture::into_future(server));
        let checked = check(&format!("http://{addr}")).await;
        server.abort();
        checked?;
        println!("check passed");
        return Ok(());
    }
    server
        .with_graceful_shutdown(weir_gateway::shutdown_signal())
        .await?;
    Ok(())
}
