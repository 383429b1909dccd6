//! The `pricing:` section and the built-in price table: USD per million tokens per model.
//!
//! The built-in table is `crates/weir/data/pricing.yaml`, compiled into the library and parsed
//! once. The config's top-level `pricing:` section overrides entries or adds models (see
//! [`PriceTable::with_overrides`]); each override is merged with the built-in entry it replaces
//! when the file is loaded. What a response costs at these prices is `tokens::pricing`'s business.
//!
//! A model's price is found by its exact name, else by the longest table entry that is a prefix of
//! it ending at a `-`, `@` or `:` boundary: `gpt-4o-2024-08-06` is priced as `gpt-4o`,
//! `gpt-4o-mini-2024-07-18` as `gpt-4o-mini` (never as `gpt-4o`), and `gpt-5.3` (no entry, and
//! `gpt-5` followed by `.` is not a boundary) has no price rather than a wrong one. Fine-tune
//! prefixes and vendor paths are looked through (`openai/gpt-4o` is `gpt-4o`); names are
//! compared case-insensitively.

use std::{collections::BTreeMap, sync::LazyLock};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::FieldError;

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

impl Price {
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
        let name = base_model_name(model).to_ascii_lowercase();
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

/// The bare model name: without a fine-tune prefix (`ft:gpt-4o-mini:org::id` → `gpt-4o-mini`)
/// or a vendor path (`openai/gpt-4o`, `models/gemini-2.5-flash` → the last segment).
pub fn base_model_name(model: &str) -> &str {
    let model = model.trim();
    let model = match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    };
    model.rsplit('/').next().unwrap_or(model)
}

/// One entry of `pricing:` as written: USD per million tokens; omitted fields keep the built-in
/// entry's value.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    input: Option<f64>,
    output: Option<f64>,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
}

/// The `pricing:` section: each entry merged with the built-in entry of the same model (exact name
/// or longest prefix); a model with no built-in price must give at least `input`. Errors are
/// relative to the section (`gpt-4o.input`) and carry the entry's line.
pub(super) fn pricing(
    raw: &BTreeMap<String, Spanned<RawPrice>>,
) -> Result<BTreeMap<String, Price>, FieldError> {
    let mut out = BTreeMap::new();
    for (model, entry) in raw {
        let line = entry.referenced.line();
        if model.trim().is_empty() {
            return Err(FieldError::section("a model name cannot be empty").at_line(line));
        }
        let price = resolve(model, entry.value).map_err(|e| e.within(model).at_line(line))?;
        out.insert(model.clone(), price);
    }
    Ok(out)
}

/// One entry over the built-in price of `model`; errors are relative to the entry.
fn resolve(model: &str, p: RawPrice) -> Result<Price, FieldError> {
    let base = PriceTable::builtin().get(model).copied();
    let input = match (p.input, base) {
        (Some(input), _) => input,
        (None, Some(base)) => base.input,
        (None, None) => {
            return Err(FieldError::new(
                "input",
                format!("`{model}` has no built-in price: give at least `input` (USD per million tokens)"),
            ));
        }
    };
    let price = Price {
        input,
        output: p.output.or(base.map(|b| b.output)).unwrap_or(0.0),
        cached_input: p.cached_input.or(base.and_then(|b| b.cached_input)),
        cache_write: p.cache_write.or(base.and_then(|b| b.cache_write)),
    };
    for (name, value) in [
        ("input", Some(price.input)),
        ("output", Some(price.output)),
        ("cached_input", price.cached_input),
        ("cache_write", price.cache_write),
    ] {
        if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(FieldError::new(
                name,
                "must be a number >= 0 (USD per million tokens)",
            ));
        }
    }
    Ok(price)
}
