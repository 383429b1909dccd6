//! Upstreams: the deployments of a model group ([`DeploymentConfig`]), their provider, and the
//! `timeouts:` and `pool:` sections every network call reads.

use std::time::Duration;

use url::Url;

use crate::path::ApiPath;

use super::{
    CircuitBreakerConfig, ConfigDuration, FieldError, HealthCheckConfig, RateLimitConfig, RetryPolicy,
    Secret, Strategy, breaker::RawBreaker, limits::RawRateLimits, model_matches, overlay::section,
    retry::RawRetry, routing::RawHealthCheck,
};

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
    /// The API root a deployment of this provider talks to when it names none (`None`: it must
    /// name one, or, for the mock, takes none).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Azure | ProviderKind::Mock => None,
        }
    }

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
    /// An adaptive limit on calls in flight, following the upstream's latency; `None` (the
    /// default) for no limit.
    pub adaptive_concurrency: Option<super::AdaptiveConcurrencyConfig>,
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

impl DeploymentConfig {
    /// Checks what building the deployment's provider relies on, naming the field relative to the
    /// deployment: the key, `organization` and `project` must be valid HTTP header values (they
    /// are sent as headers; the mock provider sends none), and an Azure deployment needs a `model`
    /// (its deployment name) that fits in a URL path.
    ///
    /// Config loading runs this with the other deployment rules; call it on a deployment built by
    /// hand. The providers do not re-check: a header that is not valid makes every call fail.
    pub fn validate(&self) -> Result<(), FieldError> {
        let invalid =
            |field: &str| FieldError::new(field, "has invalid characters (it is sent as an HTTP header)");
        let is_header = |value: &str| http::HeaderValue::from_str(value).is_ok();
        if self.provider != ProviderKind::Mock
            && let Some(key) = &self.api_key
            && !is_header(key.expose())
        {
            return Err(invalid("api_key"));
        }
        // Only the OpenAI adapter sends these two.
        if self.provider == ProviderKind::OpenAi {
            for (field, value) in [("organization", &self.organization), ("project", &self.project)] {
                if value.as_deref().is_some_and(|v| !is_header(v)) {
                    return Err(invalid(field));
                }
            }
        }
        if self.provider == ProviderKind::OpenAi
            && self.api_key.is_none()
            && self.base_url.host_str() == Some("api.openai.com")
        {
            return Err(FieldError::new(
                "api_key",
                "api.openai.com needs an api_key (e.g. api_key: ${OPENAI_API_KEY})",
            ));
        }
        if self.provider == ProviderKind::Azure {
            let Some(model) = &self.model else {
                return Err(FieldError::new(
                    "model",
                    "azure needs model: the name of the Azure deployment (it goes into the URL path)",
                ));
            };
            if ApiPath::parse(&format!("openai/deployments/{model}")).is_err() {
                return Err(FieldError::new(
                    "model",
                    format!("`{model}` is not a valid Azure deployment name"),
                ));
            }
        }
        Ok(())
    }
}

section! {
    /// `timeouts:` as written (in a deployment or in `upstream_defaults`).
    pub(super) struct RawTimeouts {
        pub(super) connect: Option<ConfigDuration>,
        pub(super) read: Option<ConfigDuration>,
        pub(super) total: Option<ConfigDuration>,
    }
}

impl TryFrom<RawTimeouts> for Timeouts {
    type Error = FieldError;

    fn try_from(raw: RawTimeouts) -> Result<Self, FieldError> {
        let d = Timeouts::default();
        let t = Timeouts {
            connect: raw.connect.map_or(d.connect, |v| v.0),
            read: raw.read.map_or(d.read, |v| v.0),
            total: raw.total.map_or(d.total, |v| v.0),
        };
        for (name, value) in [("connect", t.connect), ("read", t.read), ("total", t.total)] {
            if value.is_zero() {
                return Err(FieldError::new(name, "must be greater than zero"));
            }
        }
        Ok(t)
    }
}

section! {
    /// `pool:` as written (in a deployment or in `upstream_defaults`).
    pub(super) struct RawPool {
        pub(super) max_connections: Option<usize>,
        pub(super) max_connections_per_host: Option<usize>,
        pub(super) idle_timeout: Option<ConfigDuration>,
    }
}

impl TryFrom<RawPool> for PoolLimits {
    type Error = FieldError;

    fn try_from(raw: RawPool) -> Result<Self, FieldError> {
        let d = PoolLimits::default();
        let p = PoolLimits {
            max_connections: raw.max_connections.unwrap_or(d.max_connections),
            max_connections_per_host: raw.max_connections_per_host.unwrap_or(d.max_connections_per_host),
            idle_timeout: raw.idle_timeout.map_or(d.idle_timeout, |v| v.0),
        };
        if p.max_connections == 0 || p.max_connections_per_host == 0 {
            return Err(FieldError::section("connection limits must be greater than zero"));
        }
        Ok(p)
    }
}

section! {
    /// The sections every deployment layers over `upstream_defaults` (which is written as one of
    /// these); a deployment's own keys win, key by key.
    pub(super) struct RawUpstream {
        #[serde(default)]
        pub(super) timeouts: RawTimeouts,
        #[serde(default)]
        pub(super) pool: RawPool,
        #[serde(default)]
        pub(super) retry: RawRetry,
        #[serde(default)]
        pub(super) circuit_breaker: RawBreaker,
        #[serde(default)]
        pub(super) rate_limits: RawRateLimits,
        #[serde(default)]
        pub(super) health_check: RawHealthCheck,
    }
}

/// Validates an upstream API root: http(s), a host, no credentials, query or fragment.
pub(crate) fn parse_base_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed: use api_key".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query string or fragment"));
    }
    // Normalise to no trailing slash, so joining with `/chat/completions` is unambiguous.
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}
