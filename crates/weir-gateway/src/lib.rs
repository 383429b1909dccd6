//! Weir's HTTP face: an OpenAI- and Anthropic-compatible gateway over the [`weir`] engine.
//!
//! This crate only serves HTTP and authenticates clients; routing, calling upstreams, pooling and
//! error semantics live in the `weir` library so that in-process users get exactly the same.
//!
//! # Running it
//!
//! Tests and the `weir` binary drive the real server with [`serve`]: it takes an already bound
//! listener (bind `127.0.0.1:0` in tests) and a shutdown future, as tokio's mini-redis does, and
//! drains in-flight requests and streams on shutdown.
//!
//! # Embedding it in your own axum app
//!
//! [`router()`] returns the whole gateway as a plain [`axum::Router`] with its state applied, so it
//! composes like any other: [`Router::merge`](axum::Router::merge) it next to your routes (or
//! [`nest`](axum::Router::nest) it under a prefix), and wrap the result in your own layers.
//!
//! ```no_run
//! use axum::{Router, middleware::map_response, response::Response, routing::get};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The built-in offline mock; load your YAML with `weir::Config::load` instead.
//! let config = weir::Config::from_env_with(|_| None)?;
//! let gateway = weir_gateway::AppState::new(config);
//! let app = Router::new()
//!     .route("/hello", get(|| async { "hello from my app" }))
//!     .merge(weir_gateway::router(gateway))
//!     // Your layers wrap the gateway's routes too.
//!     .layer(map_response(|mut resp: Response| async move {
//!         resp.headers_mut().insert("x-served-by", http::HeaderValue::from_static("my-app"));
//!         resp
//!     }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `crates/weir-gateway/examples/embed.rs` is a runnable version (`cargo run -p weir-gateway
//! --example embed -- --check` sends itself a chat request and exits). Things to know:
//!
//! - The gateway brings its own fallback (an OpenAI-shaped 404 for unknown URLs), and axum cannot
//!   merge two routers that both have one: give yours to the outer router *after* merging, or
//!   [`nest`](axum::Router::nest) the gateway under a prefix.
//! - Merge into a router without pending state (call `with_state` on yours first): the gateway's
//!   router has its own state applied already.
//! - Each API face answers errors in its API's shape (OpenAI's, or Anthropic's under
//!   `/v1/messages`), whatever the outer app does; [`ApiError`] renders a [`weir::Error`] the
//!   same way in handlers of your own.
//! - [`serve`] also sets `TCP_NODELAY` on accepted connections (without it, the end of each
//!   stream waits ~40 ms for the client's delayed ACK) and cuts off streams still running at the
//!   drain deadline (`server.shutdown_timeout`, by firing [`AppState::cut_off`]). Serving the
//!   router yourself, do the same if you need them.
//!
//! # Modules
//!
//! The router assembles the API faces (`faces::openai`, `faces::anthropic`), the admin API and
//! the health endpoints; they build on the HTTP plumbing (`http`: request context, key check,
//! body reading, the engine call, responses, errors), which builds on the shared [`AppState`].
//! Nothing imports a module above it.

// Items are `pub(crate)` unless users can reach them: the public API is what the crate re-exports.
#![warn(unreachable_pub)]

mod admin;
mod faces;
mod health;
mod http;
pub mod reload;
mod router;
mod server;
mod state;
pub mod telemetry;

pub use self::{
    http::error::{ApiError, ErrorShape},
    router::router,
    server::{serve, shutdown_signal},
    state::AppState,
};
