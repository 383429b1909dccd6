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
//! # Modules
//!
//! The router assembles the API faces (`faces::openai`, `faces::anthropic`), the admin API and
//! the health endpoints; they build on the HTTP plumbing (`http`: request context, key check,
//! body reading, the engine call, responses, errors), which builds on the shared [`AppState`].
//! Nothing imports a module above it.

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
