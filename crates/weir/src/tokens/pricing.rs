//! Model prices and the cost of a response.
//!
//! The built-in table is `crates/weir/data/pricing.yaml`, compiled into the library and parsed
//! once. The config's top-level `pricing:` section overrides entries or adds models (see
//! [`PriceTable::with_overrides`]).
//!
//! A model's price is found by its exact name, else by the longest table entry that is a prefix of
//! it ending at a `-`, `@` or `:` boundary: `gpt-4o-2024-08-06` is priced as `gpt-4o`,
//! `gpt-4o-mini-2024-07-18` as `gpt-4o-mini` (never as `gpt-4o`), and `gpt-5.3` (no entry, and
//! `gpt-5` followed by `.` is not a boundary) has no price rather than a wrong one. Fine-tune
//! prefixes and vendor paths are looked through (`openai/gpt-4o` is `gpt-4o`); names are
//! compared case-insensitively.

use std::{collections::BTreeMap, sync::LazyLock};

use serde::{Deserialize, Serialize};

use crate::api::Usage;

/// USD per million tokens for one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens (reasoning tokens included: they are billed as output).
    #[serde(default)]
    pub output: f64,
    /// Input tokens read from the provider's prompt cache; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Input tokens written to the provider's prompt cache (Anthropic bills these above the input
    /// price: 1.25× for the default 5-minute cache); the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

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

    /// Whether every price is a finite number ≥ 0.
    pub fn is_valid(&self) -> bool {
        [
            Some(self.input),
            Some(self.output),
            self.cached_input,
            self.cache_write,
        ]
        .into_iter()
        .flatten()
        .all(|p| p.is_finite() && p >= 0.0)
    }
}

/// The shipped data file.
const PRICING_YAML: &str = include_str!("../../data/pricing.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    /// When the prices were last checked against the providers' pages.
    checked: String,
    #[allow(dead_code)]
    #[serde(default)]
    sources: Vec<String>,
    models: BTreeMap<String, Price>,
}

/// Prices by model name, looked up by exact name then longest prefix (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Lowercased names, sorted.
    entries: BTreeMap<String, Price>,
    checked: Option<String>,
}

static BUILTIN: LazyLock<PriceTable> = LazyLock::new(|| match PriceTable::parse(PRICING_YAML) {
    Ok(table) => table,
    Err(message) => {
        // A test parses the file, so this is unreachable in a released build; without prices,
        // costs are simply not reported.
        tracing::error!(error = %message, "the built-in pricing table does not parse");
        PriceTable::default()
    }
});

impl PriceTable {
    /// The table shipped with Weir (`data/pricing.yaml`).
    pub fn builtin() -> &'static PriceTable {
        &BUILTIN
    }

    /// Parses a pricing file (`checked:`, `sources:`, `models: {name: {input, output,
    /// cached_input, cache_write}}`).
    pub fn parse(yaml: &str) -> Result<PriceTable, String> {
        let file: PricingFile = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        let mut table = PriceTable {
            entries: BTreeMap::new(),
            checked: Some(file.checked),
        };
        for (name, price) in file.models {
            if !price.is_valid() {
                return Err(format!("`{name}`: prices must be numbers >= 0"));
            }
            table.entries.insert(name.trim().to_ascii_lowercase(), price);
        }
        Ok(table)
    }

    /// This table with `overrides` replacing or adding entries.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a String, &'a Price)>,
    ) -> PriceTable {
        let mut table = self.clone();
        for (name, price) in overrides {
            table.entries.insert(name.trim().to_ascii_lowercase(), *price);
        }
        table
    }

    /// When the built-in prices were checked (the data file's `checked:`).
    pub fn checked(&self) -> Option<&str> {
        self.checked.as_deref()
    }

    /// Every entry, by lowercased name.
    pub fn entries(&self) -> &BTreeMap<String, Price> {
        &self.entries
    }

    /// The price of `model`: exact name, else the longest entry that is a prefix of it ending at a
    /// `-`, `@` or `:` boundary.
    pub fn get(&self, model: &str) -> Option<&Price> {
        let name = super::base_model_name(model).to_ascii_lowercase();
        if let Some(price) = self.entries.get(&name) {
            return Some(price);
        }
        let mut end = name.len();
        // Shorten at each boundary, longest first.
        while let Some(cut) = name[..end].rfind(['-', '@', ':']) {
            if let Some(price) = self.entries.get(&name[..cut]) {
                return Some(price);
            }
            end = cut;
        }
        None
    }
}
