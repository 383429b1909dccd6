//! # Weir
//!
//! A fast, resilient engine for calling LLM APIs: the core of the Weir gateway, usable in-process.
//!
//! - [`Client`]: typed OpenAI-style calls (chat, streaming chat, embeddings, images, models, any path).
//! - [`Engine`]: routing of raw requests to deployments; what the gateway and `Client` share.
//! - [`Config`]: YAML or zero-config (environment) setup, validated with field-and-line errors.
//! - [`provider`]: the upstream adapters (OpenAI-compatible, the offline mock).
//! - [`pool`]: pooled HTTP clients, one per distinct upstream setting, shared process-wide.
//!
//! Everything the gateway does lives here except HTTP serving and client authentication.

pub mod api;
pub(crate) mod body;
pub mod cache;
mod client;
pub mod config;
pub mod engine;
mod error;
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
pub use error::{Error, ErrorKind, Result, TimeoutPhase};
pub use request::{CacheDirectives, Endpoint, ProxyRequest, RequestFacts};
pub use response::{ProxyBody, ProxyResponse, ResponseStream, ServedBy};
