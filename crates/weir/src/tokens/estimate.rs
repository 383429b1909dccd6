//! Input-token estimates for rate-limit reservations, before the upstream's `usage` is known.
//!
//! - Models with a public tokenizer (see [`super::encoding_for_model`]): the exact count of
//!   [`super::count`], framing included.
//! - Claude (`claude-*`): the `o200k_base` count × [`CLAUDE_FACTOR`]. Anthropic publishes no
//!   tokenizer for its current models; their vocabulary is smaller than `o200k_base`, so the same
//!   text takes more tokens (roughly a fifth to a third more on English and code).
//! - Gemini (`gemini-*`, `gemma-*`): the `o200k_base` count × [`GEMINI_FACTOR`]. Gemini's
//!   SentencePiece vocabulary is about as large as `o200k_base`; counts are close.
//! - Anything else: the `o200k_base` count × [`UNKNOWN_FACTOR`].
//!
//! An estimate is never the last word: the engine reconciles every reservation with the usage the
//! upstream reports (non-streaming bodies, and the final usage chunk of streams).

use super::{Encoding, count, encoding_for_model};
use crate::{
    body::RawObject,
    request::{Endpoint, RequestFacts},
};

/// Safety factor over the `o200k_base` count for Claude models.
pub const CLAUDE_FACTOR: f64 = 1.3;
/// Safety factor over the `o200k_base` count for Gemini and Gemma models.
pub const GEMINI_FACTOR: f64 = 1.15;
/// Safety factor over the `o200k_base` count for models of unknown tokenizers.
pub const UNKNOWN_FACTOR: f64 = 1.25;

/// Requests whose `messages` (or `input`) JSON is larger than this are not counted: counting runs
/// on the request's task at roughly 15–30 MB/s (see docs/benchmarks.md), so 128 KiB costs a few
/// milliseconds and a 10 MB body would hold a runtime thread for most of a second. The engine
/// falls back to its byte estimate for them, which the upstream's usage then corrects.
pub const MAX_COUNTED_BYTES: usize = 128 * 1024;

/// An input-token estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Input tokens (rounded up).
    pub tokens: u64,
    /// Whether it is the model's exact count (known encoding) rather than a scaled estimate.
    pub exact: bool,
    /// The encoding counted with.
    pub encoding: Encoding,
}

/// The encoding to count `model` with, and the factor to scale that count by.
pub fn counting_rule(model: &str) -> (Encoding, f64, bool) {
    if let Some(encoding) = encoding_for_model(model) {
        return (encoding, 1.0, true);
    }
    let name = super::base_model_name(model).to_ascii_lowercase();
    let factor = if name.starts_with("claude") {
        CLAUDE_FACTOR
    } else if name.starts_with("gemini") || name.starts_with("gemma") {
        GEMINI_FACTOR
    } else {
        UNKNOWN_FACTOR
    };
    (Encoding::O200kBase, factor, false)
}

/// The input tokens of a chat completion or embeddings request for `model`; `None` for other
/// endpoints and for bodies whose `messages`/`input` have an unexpected shape (the caller keeps
/// its byte-based estimate then; validating the request is the upstream's job), and for inputs
/// over [`MAX_COUNTED_BYTES`].
pub fn estimate_input(endpoint: Endpoint, model: &str, body: &RequestFacts) -> Option<Estimate> {
    estimate_fields(endpoint, model, body.object()?)
}

/// [`estimate_input`] on the body's raw top-level fields.
pub(crate) fn estimate_fields(endpoint: Endpoint, model: &str, body: &RawObject) -> Option<Estimate> {
    let counted = match endpoint {
        Endpoint::ChatCompletions => body.get("messages")?,
        Endpoint::Embeddings => body.get("input")?,
        Endpoint::ImageGenerations | Endpoint::Passthrough => return None,
    };
    if counted.get().len() > MAX_COUNTED_BYTES {
        return None;
    }
    let (encoding, factor, exact) = counting_rule(model);
    let tokens = match endpoint {
        Endpoint::ChatCompletions => count::count_chat_fields(encoding, body)?,
        Endpoint::Embeddings => count::count_embedding_input(encoding, body.get("input")?)?,
        Endpoint::ImageGenerations | Endpoint::Passthrough => return None,
    };
    let tokens = if exact {
        tokens
    } else {
        (tokens as f64 * factor).ceil() as u64
    };
    Some(Estimate {
        tokens,
        exact,
        encoding,
    })
}
