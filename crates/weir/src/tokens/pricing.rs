//! The cost of a response at a model's [`Price`].
//!
//! The prices themselves, the built-in table (`crates/weir/data/pricing.yaml`) and its lookup rules
//! are configuration: see `crate::config::pricing`. [`PriceTable::with_overrides`] lays the
//! config's `pricing:` section over the built-in table.

use serde::Serialize;

use crate::api::Usage;
// The prices and their table are configuration (`pricing:` and the shipped defaults); re-exported
// here, where costs are computed.
pub use crate::config::{Price, PriceTable};

/// The cost of one response, in USD, split by what was billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    /// The total.
    pub usd: f64,
    /// Input tokens billed at the input price.
    pub input_tokens: u64,
    /// Input tokens billed at the cached-input price.
    pub cached_tokens: u64,
    /// Input tokens billed at the cache-write price.
    pub cache_write_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// How a response's `usage` splits into billed token kinds.
///
/// `prompt_tokens` is the whole input, as OpenAI reports it: it includes
/// `prompt_tokens_details.cached_tokens` (cache reads) and, for Anthropic-translated usage,
/// `prompt_tokens_details.cache_creation_tokens` (cache writes). What remains is uncached input.
pub fn split_usage(usage: &Usage) -> (u64, u64, u64, u64) {
    let details = usage.extra.get("prompt_tokens_details");
    let detail = |key: &str| {
        details
            .and_then(|d| d.get(key))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let cached = detail("cached_tokens").min(usage.prompt_tokens);
    let writes = detail("cache_creation_tokens").min(usage.prompt_tokens - cached);
    let fresh = usage.prompt_tokens - cached - writes;
    (fresh, cached, writes, usage.completion_tokens)
}

impl Price {
    /// The cost of `usage` at this price (cache reads at `cached_input`, cache writes at
    /// `cache_write`; see [`split_usage`]).
    pub fn cost(&self, usage: &Usage) -> Cost {
        let (fresh, cached, writes, output) = split_usage(usage);
        let per_token = |price: f64| price / 1_000_000.0;
        let usd = fresh as f64 * per_token(self.input)
            + cached as f64 * per_token(self.cached_input.unwrap_or(self.input))
            + writes as f64 * per_token(self.cache_write.unwrap_or(self.input))
            + output as f64 * per_token(self.output);
        Cost {
            usd,
            input_tokens: fresh,
            cached_tokens: cached,
            cache_write_tokens: writes,
            output_tokens: output,
        }
    }
}
