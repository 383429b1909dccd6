//! Tokens and cost: exact BPE counts for OpenAI models, estimates for the rest, prices, and the
//! usage ledger.
//!
//! - [`Encoding`] and [`encoding_for_model`]: which tokenizer a model uses (longest known prefix).
//! - [`count`]: token counts of chat requests (with OpenAI's per-message framing) and embedding
//!   inputs, read from the raw request body without copying it.
//! - [`estimate`]: what the engine reserves against rate limits before the upstream's `usage` is
//!   known — exact for models with a public tokenizer, an `o200k_base` count times a documented
//!   safety factor for the others (Claude, Gemini, unknown). Every estimate is reconciled with
//!   the upstream's reported `usage` when the call ends (see the engine's settlement).
//! - [`pricing`]: USD per million tokens per model, from the shipped `data/pricing.yaml` and the
//!   config's `pricing:` section; [`pricing::Price::cost`] prices a response's real usage.
//! - [`ledger`]: request, error, token and cost totals by model, deployment and client key.
//!
//! Counting uses the `bpe-openai` crate: the same vocabularies and pre-tokenization as OpenAI's
//! `tiktoken`, but a byte-pair algorithm that stays linear on hostile input (a megabyte of one
//! letter is one pre-token; tiktoken's merge loop is quadratic in a pre-token's length).

pub mod count;
pub mod estimate;
pub mod ledger;
pub mod pricing;

#[cfg(test)]
mod tests;

pub use count::{count_chat, count_embedding_input, count_text};
pub(crate) use estimate::estimate_fields;
pub use estimate::{Estimate, estimate_input};
pub use ledger::{UsageLedger, UsageSnapshot, UsageTotals};
pub use pricing::{Cost, Price, PriceTable};

/// The response header carrying a complete response's cost in USD (a decimal number). Streams
/// can't carry it: their usage arrives with the last event, long after the headers; their cost
/// goes to the [`UsageLedger`].
pub use crate::response::COST_HEADER;

/// Sets [`COST_HEADER`] to `cost`, in plain decimal notation (no exponent), to the nano-dollar.
pub fn set_cost_header(headers: &mut http::HeaderMap, cost: &Cost) {
    let text = format!("{:.9}", cost.usd.max(0.0));
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text.is_empty() { "0" } else { text };
    if let Ok(value) = http::HeaderValue::from_str(text) {
        headers.insert(http::HeaderName::from_static(COST_HEADER), value);
    }
}

/// A tokenizer vocabulary of OpenAI models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series (o1, o3, o4), chatgpt-4o, gpt-oss.
    O200kBase,
    /// GPT-4, GPT-4 Turbo, GPT-3.5 Turbo, text-embedding-3-*, text-embedding-ada-002.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's name as OpenAI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The tokenizer (loaded on first use: a few tens of milliseconds, once per process).
    pub(crate) fn tokenizer(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }
}

/// Loads both vocabularies on a background thread, so the first request that needs a count does
/// not pay for it (a few hundred milliseconds in a release build: the vocabularies are
/// deserialised and indexed on first use). Idempotent; without threads, the first count loads them.
pub fn warm_up() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("weir-tokens-warmup".to_owned())
            .spawn(|| {
                for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
                    std::hint::black_box(count_text(encoding, "warm up"));
                }
            });
        if let Err(err) = spawned {
            tracing::debug!(error = %err, "could not warm up the tokenizers in the background");
        }
    });
}

/// Model-name prefixes and their encodings. The longest matching prefix wins, so `gpt-4o-mini`
/// is `o200k_base` (via `gpt-4o`) although `gpt-4` alone is `cl100k_base`.
const ENCODINGS: &[(&str, Encoding)] = &[
    ("gpt-5", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-oss", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    ("codex-mini", Encoding::O200kBase),
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5", Encoding::Cl100kBase),
    // Azure's spelling of the model name in deployment names.
    ("gpt-35", Encoding::Cl100kBase),
    ("text-embedding-3", Encoding::Cl100kBase),
    ("text-embedding-ada-002", Encoding::Cl100kBase),
];

// Model names are looked up by the price table too, which is configuration.
pub use crate::config::base_model_name;

/// The encoding of an OpenAI model, by the longest known prefix of its name (case-insensitive;
/// fine-tunes and vendor paths are looked through). `None` for models without a public tokenizer
/// (Claude, Gemini, open models) and unknown names.
pub fn encoding_for_model(model: &str) -> Option<Encoding> {
    let name = base_model_name(model);
    ENCODINGS
        .iter()
        .filter(|(prefix, _)| {
            name.len() >= prefix.len()
                && name.is_char_boundary(prefix.len())
                && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, encoding)| *encoding)
}
