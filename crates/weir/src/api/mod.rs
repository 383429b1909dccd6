//! OpenAI wire types and the OpenAI error shape.
//!
//! Types are our own serde structs, checked against OpenAI's published spec. Each carries a
//! `#[serde(flatten)] extra` map so fields this crate does not know yet (new parameters, provider
//! extensions) survive a round trip instead of being silently dropped.

pub mod anthropic;
mod chat;
mod embeddings;
mod error;
pub mod gemini;
mod images;
mod models;

pub use chat::*;
pub use embeddings::*;
pub(crate) use error::parse_upstream_error;
pub use error::{ErrorBody, ErrorObject, ErrorResponse};
pub use images::*;
pub use models::*;

/// Unknown fields, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
