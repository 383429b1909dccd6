//! Configuration: YAML (or the environment, with no file) → [`Config`].
//!
//! Loading is two steps. Serde parses the text into `raw` types that mirror the file exactly
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key); [`Config::from_yaml`]
//! then validates cross-field rules and produces the typed [`Config`] the engine runs on. Every
//! error names the field path and, where the YAML parser knows it, the line.

mod raw;
mod values;

use std::{fmt, path::Path, time::Duration};

use url::Url;

use crate::{
    policy::retry::{RetryBudgetConfig, RetryPolicy},
    policy::{breaker::CircuitBreakerConfig, limit::RateLimitConfig},
    route::{balance::Strategy, health::HealthCheckConfig},
};
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
    /// the built-in entry it overrides; the engine lays them over [`crate::tokens::PriceTable::builtin`].
    pub pricing: std::collections::BTreeMap<String, crate::tokens::Price>,
    /// The response cache (off by default).
    pub cache: crate::cache::CacheConfig,
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

/// The gateway's HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests and streams may run after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Keys clients must present as `Authorization: Bearer <key>`. Empty: no authentication.
    pub api_keys: Vec<Secret>,
    /// Limits applied to each gateway key separately (all unauthenticated traffic shares one).
    pub client_rate_limits: Option<RateLimitConfig>,
    /// The key of the admin API (`/admin/*`); `None` disables it (it answers 404). Gateway keys
    /// never grant admin access. `WEIR_ADMIN_KEY` overrides it when the gateway loads its config.
    pub admin_key: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            max_body_bytes: 16 << 20,
            shutdown_timeout: Duration::from_secs(30),
            api_keys: Vec::new(),
            client_rate_limits: None,
            admin_key: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `warn`, `weir=debug,info`...
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf). Off unless `otlp_endpoint` is set here
/// or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables are.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's root URL (`/v1/traces` is appended), e.g. `http://localhost:4318`.
    pub otlp_endpoint: Option<url::Url>,
    /// Headers sent with every export (authentication for hosted collectors); values are secret.
    pub otlp_headers: Vec<(String, Secret)>,
    /// `service.name` of the spans; default `OTEL_SERVICE_NAME`, else `weir`.
    pub service_name: Option<String>,
    /// Fraction of traces sampled (when the client did not decide): 0 to 1, default 1.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            otlp_headers: Vec::new(),
            service_name: None,
            sample_ratio: 1.0,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For terminals.
    Human,
    /// For log pipelines.
    Json,
}

/// A public model name and its deployments.
#[derive(Debug, Clone)]
pub struct ModelGroupConfig {
    /// What clients send as `model`. A trailing `*` makes it a prefix pattern (`*` alone matches all).
    pub name: String,
    /// Where requests for it go.
    pub deployments: Vec<DeploymentConfig>,
    /// Groups tried, in order, when this group's deployments are all exhausted.
    pub fallbacks: Vec<String>,
    /// Larger-context groups tried when the upstream says the prompt is too long.
    pub context_window_fallbacks: Vec<String>,
    /// How requests are spread over the deployments (within a priority tier).
    pub strategy: Strategy,
}

impl ModelGroupConfig {
    /// Whether `model` belongs to this group.
    pub fn matches(&self, model: &str) -> bool {
        model_matches(&self.name, model)
    }
    /// Whether the name is a pattern rather than one model.
    pub fn is_wildcard(&self) -> bool {
        self.name.ends_with('*')
    }
}

/// Which adapter talks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq...).
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`): requests and responses are translated.
    Anthropic,
    /// Google's Gemini API (`generateContent`): requests and responses are translated.
    Gemini,
    /// Azure OpenAI (`/openai/deployments/{deployment}/...?api-version=`, `api-key` header).
    Azure,
    /// The built-in offline mock: canned answers, no network.
    Mock,
}

impl ProviderKind {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Mock => "mock",
        }
    }
}

/// One upstream: a provider, endpoint, key and model.
///
/// `PartialEq` lets a config reload keep the live state (breaker, limits, health) of deployments
/// whose settings did not change.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentConfig {
    /// Stable identifier, shown in logs, headers and health reports (never the key).
    pub id: String,
    /// Adapter.
    pub provider: ProviderKind,
    /// API root, e.g. `https://api.openai.com/v1`. Paths such as `chat/completions` are appended.
    pub base_url: Url,
    /// Sent as `Authorization: Bearer`. Optional for self-hosted servers.
    pub api_key: Option<Secret>,
    /// Upstream model name; `None` passes the client's model through unchanged.
    pub model: Option<String>,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Azure OpenAI's `api-version` query parameter (`None`: the provider's default GA version).
    pub api_version: Option<String>,
    /// Connect, read and total timeouts.
    pub timeouts: Timeouts,
    /// Connection pool limits.
    pub pool: PoolLimits,
    /// When and how to retry calls to this deployment.
    pub retry: RetryPolicy,
    /// The deployment's circuit breaker; `None` when disabled.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Limits for calls to this deployment (one upstream key); `None`: unlimited.
    pub rate_limits: Option<RateLimitConfig>,
    /// Share of traffic under the weighted strategy (relative to the group's other weights).
    pub weight: u32,
    /// Tier: 0 is used first; a higher tier only when every deployment of the lower tiers is unusable.
    pub priority: u32,
    /// Background probes of the upstream; `None` (the default) when off.
    pub health_check: Option<HealthCheckConfig>,
}

/// Settings that apply to a whole request rather than one deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResilienceConfig {
    /// Longest a request may take, retries and waits included. Clients may shorten it per request
    /// with `x-weir-timeout` (or OpenAI SDKs' `x-stainless-timeout`).
    pub request_deadline: Duration,
    /// Caps retries at a fraction of first attempts, per model group.
    pub retry_budget: RetryBudgetConfig,
    /// Output tokens reserved against token limits for a request without `max_tokens`
    /// (reconciled with real usage afterwards).
    pub default_output_tokens: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            request_deadline: Duration::from_secs(120),
            retry_budget: RetryBudgetConfig::default(),
            default_output_tokens: 1024,
        }
    }
}

/// Timeouts of upstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP + TLS connection establishment.
    pub connect: Duration,
    /// Longest silence while reading a response (headers or body). Bounds streams.
    pub read: Duration,
    /// Whole call, for non-streaming requests only: a total would cut long streams.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(60),
        }
    }
}

/// Limits of one upstream connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolLimits {
    /// Requests in flight over the pool at once (each holds one connection, or an HTTP/2 stream).
    pub max_connections: usize,
    /// The same, per upstream host; also the number of idle connections kept per host.
    pub max_connections_per_host: usize,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: 100,
            max_connections_per_host: 30,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// A config error: what is wrong, where (field path), and on which line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when loading from one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path such as `models[1].deployments[0].base_url`, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::error::Error {
    fn from(e: ConfigError) -> Self {
        crate::error::Error::Config(e.to_string())
    }
}

impl Config {
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
        raw::parse(text, file)
    }

    /// The zero-config setup, from provider keys in the environment: `claude-*` → Anthropic with
    /// `ANTHROPIC_API_KEY` (`ANTHROPIC_BASE_URL`, default `https://api.anthropic.com`), `gemini-*`
    /// → Gemini with `GEMINI_API_KEY` (`GEMINI_BASE_URL`, default
    /// `https://generativelanguage.googleapis.com`), every other model → OpenAI with
    /// `OPENAI_API_KEY` (honouring `OPENAI_BASE_URL`, `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`).
    /// `OPENAI_TIMEOUT` and `OPENAI_MAX_RETRIES` apply to every deployment. With no key at all,
    /// the built-in mock provider, so a fresh machine can run the gateway offline.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] with an injectable environment, for tests.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let env_error = |field: &str, message: String| ConfigError {
            file: None,
            line: None,
            field: Some(field.to_owned()),
            message,
        };
        let mut timeouts = Timeouts::default();
        if let Some(text) = var("OPENAI_TIMEOUT") {
            timeouts.total = parse_duration(&text).map_err(|m| env_error("OPENAI_TIMEOUT", m))?;
            // A read timeout longer than the total would never fire for unary calls.
            timeouts.read = timeouts.read.min(timeouts.total);
        }
        let max_retries = match var("OPENAI_MAX_RETRIES") {
            Some(text) => text.trim().parse::<u32>().map_err(|_| {
                env_error(
                    "OPENAI_MAX_RETRIES",
                    format!("`{text}` is not a whole number of retries"),
                )
            })?,
            None => 2,
        };
        // One deployment per provider key found; OPENAI_TIMEOUT and OPENAI_MAX_RETRIES apply to all.
        let env_deployment =
            |id: &str, provider: ProviderKind, key: String, url_var: &str, default_url: &str| {
                let base = var(url_var).unwrap_or_else(|| default_url.to_owned());
                let mut d = mock_deployment(id, timeouts, max_retries)?;
                d.base_url = raw::parse_base_url(&base).map_err(|m| env_error(url_var, m))?;
                d.provider = provider;
                d.api_key = Some(Secret::new(key));
                Ok::<_, ConfigError>(d)
            };
        let group = |name: &str, deployment: DeploymentConfig| ModelGroupConfig {
            name: name.to_owned(),
            deployments: vec![deployment],
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            strategy: Strategy::RoundRobin,
        };
        let mut models = Vec::new();
        let anthropic = var("ANTHROPIC_API_KEY");
        let gemini = var("GEMINI_API_KEY");
        let openai = var("OPENAI_API_KEY");
        let source = ConfigSource::Env {
            openai: openai.is_some(),
            anthropic: anthropic.is_some(),
            gemini: gemini.is_some(),
        };
        if let Some(key) = anthropic {
            let d = env_deployment(
                "anthropic",
                ProviderKind::Anthropic,
                key,
                "ANTHROPIC_BASE_URL",
                "https://api.anthropic.com",
            )?;
            models.push(group("claude-*", d));
        }
        if let Some(key) = gemini {
            let d = env_deployment(
                "gemini",
                ProviderKind::Gemini,
                key,
                "GEMINI_BASE_URL",
                "https://generativelanguage.googleapis.com",
            )?;
            models.push(group("gemini-*", d));
        }
        if let Some(key) = openai {
            let mut d = env_deployment(
                "openai",
                ProviderKind::OpenAi,
                key,
                "OPENAI_BASE_URL",
                "https://api.openai.com/v1",
            )?;
            d.organization = var("OPENAI_ORG_ID");
            d.project = var("OPENAI_PROJECT_ID");
            models.push(group("*", d));
        }
        let (source, default_model) = if models.is_empty() {
            models.push(group("*", mock_deployment("mock", timeouts, max_retries)?));
            (ConfigSource::BuiltinMock, Some("*".to_owned()))
        } else {
            // Pass-through calls that name no model are OpenAI's (files, batches...).
            let default = models.iter().any(|g| g.name == "*").then(|| "*".to_owned());
            (source, default)
        };
        Ok(Config {
            server: ServerConfig::default(),
            logging: LoggingConfig::default(),
            tracing: TracingConfig::default(),
            models,
            default_model,
            resilience: ResilienceConfig::default(),
            pricing: Default::default(),
            cache: Default::default(),
            source,
        })
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

/// A deployment on the built-in mock provider.
pub(crate) fn mock_deployment(
    id: &str,
    timeouts: Timeouts,
    max_retries: u32,
) -> Result<DeploymentConfig, ConfigError> {
    let retry = RetryPolicy {
        max_retries,
        ..RetryPolicy::default()
    };
    Ok(DeploymentConfig {
        id: id.to_owned(),
        provider: ProviderKind::Mock,
        // Never contacted: the mock answers in-process. A fixed, non-routable URL keeps the type simple.
        base_url: raw::parse_base_url("http://mock.invalid/v1").map_err(|message| ConfigError {
            file: None,
            line: None,
            field: None,
            message,
        })?,
        api_key: None,
        model: None,
        organization: None,
        project: None,
        api_version: None,
        timeouts,
        pool: PoolLimits::default(),
        retry,
        circuit_breaker: Some(CircuitBreakerConfig::default()),
        rate_limits: None,
        weight: 1,
        priority: 0,
        health_check: None,
    })
}

#[cfg(test)]
mod tests;
