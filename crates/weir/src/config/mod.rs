//! Configuration: YAML (or the environment, with no file) → [`Config`].
//!
//! Loading is two steps. Serde parses the text into `Raw…` types that mirror the file exactly
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key); each section then
//! validates itself into its typed settings (`TryFrom<Raw…>`, reporting a [`FieldError`] relative
//! to the section), and the loader checks the rules that span sections and places every error
//! ([`ConfigError`]: file, line, full field path). [`Config::from_yaml`] gives the typed [`Config`]
//! the engine runs on; `Engine::new` expects a config that passed this validation (a config built
//! by hand should be checked with the sections' `validate` methods).
//!
//! `upstream_defaults` is laid under each deployment's `timeouts`, `pool`, `retry`,
//! `circuit_breaker`, `rate_limits` and `health_check` by one mechanism: the sections are declared
//! with `section!`, which derives their key-by-key `Overlay`.
//!
//! The configuration sits below the runtime policies in the module graph: it imports nothing but
//! the error types, and the policies (`policy`, `route`, `tokens`, `cache`) import their settings
//! from here.
//!
//! | Module       | Sections and settings                                                        |
//! |--------------|------------------------------------------------------------------------------|
//! | `server`     | `server:`, `logging:`, `tracing:`                                            |
//! | `upstream`   | model groups, deployments, `timeouts:`, `pool:`; `upstream_defaults`          |
//! | `deployment` | `models[].deployments[]` as written, the multi-key shorthand                 |
//! | `retry`      | `retry:`, `resilience:` (deadline, retry budget)                             |
//! | `breaker`    | `circuit_breaker:`                                                           |
//! | `limits`     | `rate_limits:`, `server.client_rate_limits`                                  |
//! | `routing`    | `strategy`, `health_check:`                                                  |
//! | `pricing`    | `pricing:` and the built-in price table                                      |
//! | `cache`      | `cache:`                                                                     |
//! | `env`        | the zero-config setup from the environment                                   |
//! | `load`       | the file as a whole: walking it, cross-section rules, placing errors         |

mod breaker;
mod cache;
mod concurrency;
mod deployment;
mod env;
mod error;
mod limits;
mod load;
mod overlay;
mod pricing;
mod retry;
mod routing;
mod server;
mod upstream;
mod values;

use std::{fmt, path::Path};

pub use breaker::CircuitBreakerConfig;
pub use cache::{CacheConfig, CacheStrategy, MemoryCacheConfig, RedisCacheConfig};
pub use concurrency::AdaptiveConcurrencyConfig;
use env::mock_deployment;
pub use error::{ConfigError, FieldError};
pub use limits::{DEFAULT_BURST, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT, LimitMode, RateLimitConfig};
pub use pricing::{Price, PriceTable, base_model_name};
pub use retry::{ResilienceConfig, RetryBudgetConfig, RetryPolicy};
pub use routing::{HealthCheckConfig, Strategy, UnknownStrategy};
pub use server::{LogFormat, LoggingConfig, ServerConfig, TracingConfig};
pub use upstream::{DeploymentConfig, ModelGroupConfig, PoolLimits, ProviderKind, Timeouts};
pub use values::{ByteSize, ConfigDuration, EnvString, Secret, interpolate, parse_byte_size, parse_duration};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server settings (the gateway only).
    pub server: ServerConfig,
    /// Log format and level.
    pub logging: LoggingConfig,
    /// OpenTelemetry trace export (the gateway's; off unless an endpoint is configured).
    pub tracing: TracingConfig,
    /// Public model names and the deployments that serve them.
    pub models: Vec<ModelGroupConfig>,
    /// The model group used for pass-through requests that name no model (e.g. `GET /v1/files`).
    pub default_model: Option<String>,
    /// Request-level resilience: deadline and retry budget.
    pub resilience: ResilienceConfig,
    /// Model prices (USD per million tokens) from the `pricing:` section, each already merged with
    /// the built-in entry it overrides; the engine lays them over [`PriceTable::builtin`].
    pub pricing: std::collections::BTreeMap<String, Price>,
    /// The response cache (off by default).
    pub cache: CacheConfig,
    /// Where this config came from, for the first log line and `weir check`.
    pub source: ConfigSource,
}

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file.
    File(String),
    /// No file; provider keys in the environment: `claude-*` goes to Anthropic when
    /// `ANTHROPIC_API_KEY` is set, `gemini-*` to Gemini with `GEMINI_API_KEY`, every other model to
    /// OpenAI (or `OPENAI_BASE_URL`) with `OPENAI_API_KEY`.
    Env {
        /// `OPENAI_API_KEY` is set.
        openai: bool,
        /// `ANTHROPIC_API_KEY` is set.
        anthropic: bool,
        /// `GEMINI_API_KEY` is set.
        gemini: bool,
    },
    /// No file and no key: the built-in offline mock provider.
    BuiltinMock,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "config file {path}"),
            ConfigSource::Env {
                openai,
                anthropic,
                gemini,
            } => {
                let mut routes = Vec::new();
                if *anthropic {
                    routes.push("claude-* to Anthropic (ANTHROPIC_API_KEY)");
                }
                if *gemini {
                    routes.push("gemini-* to Gemini (GEMINI_API_KEY)");
                }
                if *openai {
                    routes.push("every other model to OpenAI (OPENAI_API_KEY)");
                }
                write!(f, "zero-config from the environment: {}", routes.join(", "))?;
                if !openai {
                    f.write_str("; other models are not served (set OPENAI_API_KEY to proxy them to OpenAI)")?;
                }
                Ok(())
            }
            ConfigSource::BuiltinMock => f.write_str(
                "zero-config: no config file and no OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, serving \
                 the built-in offline mock provider (answers are canned; set a key or pass --config for real models)",
            ),
        }
    }
}

impl Config {
    /// A [`Redactor`](crate::error::Redactor) for every secret this config holds: upstream API
    /// keys, gateway keys, the admin key and OTLP header values.
    pub fn redactor(&self) -> crate::error::Redactor {
        let deployments = self.models.iter().flat_map(|g| &g.deployments);
        let secrets = deployments
            .filter_map(|d| d.api_key.as_ref())
            .chain(&self.server.api_keys)
            .chain(&self.server.admin_key)
            .chain(self.tracing.otlp_headers.iter().map(|(_, v)| v))
            .map(|s| s.expose().to_owned());
        crate::error::Redactor::new(secrets)
    }

    /// Reads and validates a YAML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(name.clone()),
            line: None,
            field: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::from_yaml(&text, Some(&name))
    }

    /// Parses and validates YAML text. `file` names it in errors.
    pub fn from_yaml(text: &str, file: Option<&str>) -> Result<Config, ConfigError> {
        load::parse(text, file)
    }

    /// The error for a model no group serves. Zero-config without `OPENAI_API_KEY` says which
    /// variable would serve it, rather than only that it does not exist.
    pub fn model_not_found(&self, model: &str) -> crate::error::Error {
        match &self.source {
            ConfigSource::Env { openai: false, .. } => crate::error::Error::NotFound {
                message: format!(
                    "The model `{model}` is not served: without a config file, claude-* models go to \
                     Anthropic (ANTHROPIC_API_KEY), gemini-* models to Gemini (GEMINI_API_KEY), and other \
                     models to OpenAI only when OPENAI_API_KEY is set."
                ),
            },
            _ => crate::error::Error::ModelNotFound {
                model: model.to_owned(),
            },
        }
    }

    /// The group serving `model`: an exact name wins over patterns, the longest pattern over shorter ones.
    pub fn group_for(&self, model: &str) -> Option<&ModelGroupConfig> {
        self.group_index(model).and_then(|i| self.models.get(i))
    }

    /// The position in `models` of the group serving `model` (see [`Config::group_for`]).
    pub fn group_index(&self, model: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, group) in self.models.iter().enumerate() {
            if !model_matches(&group.name, model) {
                continue;
            }
            if !group.is_wildcard() {
                return Some(i);
            }
            if best.is_none_or(|(_, len)| group.name.len() > len) {
                best = Some((i, group.name.len()));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Whether `model` is served by a group named `pattern`: the exact name, or with a trailing `*`,
/// any model starting with what precedes it.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

#[cfg(test)]
mod tests;
