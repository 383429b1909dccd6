//! # Weir
//!
//! A fast, resilient engine for calling LLM APIs: the core of the Weir gateway, usable in-process.
//! Point it at OpenAI, Anthropic, Gemini, Azure OpenAI or any OpenAI-compatible server (vLLM,
//! Ollama...) and it balances across keys and providers, enforces rate limits, opens circuit
//! breakers, retries within a budget, falls back to other models, caches answers, counts tokens and
//! cost — the same engine the `weir` gateway serves over HTTP.
//!
//! ## Start here
//!
//! - [`Client`]: typed OpenAI-style calls (chat, streaming chat, embeddings, images, models, any
//!   path) over the engine. [`Client::from_env`] needs no file (provider keys from the
//!   environment, or the offline mock); [`Client::new`] takes a [`Config`].
//! - [`Config`]: the configuration — from YAML ([`Config::load`]), from the environment
//!   ([`Config::from_env`]), or in code — validated with errors that name the field and line.
//! - [`Engine`]: the pipeline both faces share; [`Engine::execute`] takes a [`ProxyRequest`] (raw
//!   bytes) and answers with a [`ProxyResponse`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir::Error> {
//! use weir::{Client, api::{ChatCompletionRequest, ChatMessage}};
//! let client = Client::from_env()?;
//! let reply = client
//!     .create_chat_completion(&ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello!")]))
//!     .await?;
//! println!("{:?}", reply.choices[0].message.text());
//! client.shutdown(std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! ## The pipeline, and your own layers
//!
//! Every request goes through one stack of tower layers: your layers, then the response cache
//! ([`cache::CacheLayer`]), admission (the model group, the request's deadline, the client's rate
//! limits), the router (balancing, retries, fallbacks) and, per deployment, its cooldown and
//! health gate, rate limits ([`policy::limit::RateLimitLayer`]), circuit breaker
//! ([`policy::breaker::CircuitBreakerLayer`]) and the upstream call. What a failure means for all
//! of them — retry, fall back, count against the breaker, refund the limits, cool down — is
//! decided once, by [`policy::disposition::classify`].
//!
//! Add layers of your own with [`EngineBuilder::layer`]: they see every [`ProxyRequest`] (the body,
//! and its [`RequestFacts`] parsed once) before the engine does and every answer after, and the
//! gateway can serve such an engine. `examples/custom_layer.rs` redacts e-mail addresses, refuses a
//! model and stamps answers.
//!
//! ## Modules
//!
//! - [`api`]: OpenAI wire types, and the one mapping from [`Error`] to an HTTP status and body.
//! - [`config`]: every setting, its defaults and its validation.
//! - [`request`], [`response`]: what the engine is asked and answers.
//! - [`policy`]: failure disposition, circuit breakers, rate limits, retries.
//! - [`cache`]: the response cache (memory and Redis).
//! - [`tokens`]: token counting, pricing and cost, the usage ledger.
//! - [`engine`]: the pipeline, deployment state and status snapshots.
//! - [`telemetry`]: metric names, the per-request summary, spans.
//! - [`sse`], [`messages`]: SSE framing and stream guarding; the Anthropic Messages translation.
//!
//! See `docs/architecture.md` in the repository for the module graph and where each policy lives.

// Items are `pub(crate)` unless users can reach them: the public API is what the crate re-exports.
#![warn(unreachable_pub)]

pub mod api;
pub(crate) mod body;
pub mod cache;
mod client;
pub mod config;
pub mod engine;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod messages;
pub mod path;
pub mod policy;
pub mod request;
pub mod response;
pub(crate) mod route;
pub mod sse;
pub mod telemetry;
pub mod tokens;
pub(crate) mod upstream;

pub use client::{ChatCompletionStream, Client};
pub use config::Config;
pub use engine::{Engine, EngineBuilder, EngineService};
pub use error::{Error, ErrorKind, Redactor, Result, TimeoutPhase};
pub use request::{CacheDirectives, Endpoint, ProxyRequest, RequestFacts};
pub use response::{ProxyBody, ProxyResponse, ResponseStream, ServedBy};
