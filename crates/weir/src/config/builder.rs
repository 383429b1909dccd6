//! [`ConfigBuilder`]: a [`Config`] in code, without YAML.
//!
//! The builder starts from the defaults a YAML file gets (timeouts 10 s connect / 30 s read / 60 s
//! total, 100 connections with 30 per host, 2 retries with jittered exponential backoff, the deployments'
//! breaker of [`CircuitBreakerConfig::for_deployments`], no rate limits) and checks the same rules the loader
//! checks, so [`ConfigBuilder::build`] either gives a config the engine runs as it is, or a
//! [`ConfigError`] that names the field (`models[0].deployments[1].rate_limits: …`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{
    CacheConfig, CircuitBreakerConfig, Config, ConfigError, ConfigSource, DeploymentConfig,
    HealthCheckConfig, LoggingConfig, ModelGroupConfig, PoolLimits, Price, ProviderKind, RateLimitConfig,
    RedisConfig, ResilienceConfig, RetryBudgetConfig, RetryPolicy, Secret, ServerConfig, Strategy, Timeouts,
    TracingConfig,
    deployment::{check_id, default_id},
    upstream::parse_base_url,
};

/// One upstream deployment, as [`ConfigBuilder::model`] takes it: a provider, its URL and key,
/// and settings of its own over the builder's defaults.
///
/// ```
/// use weir::config::Deployment;
/// let primary = Deployment::openai("sk-…").id("openai-main").weight(3);
/// let local = Deployment::openai_compatible("http://127.0.0.1:11434/v1").model("llama3.1");
/// ```
#[derive(Debug, Clone)]
pub struct Deployment {
    provider: ProviderKind,
    base_url: Option<String>,
    api_key: Option<Secret>,
    id: Option<String>,
    model: Option<String>,
    organization: Option<String>,
    project: Option<String>,
    api_version: Option<String>,
    weight: u32,
    priority: u32,
    sections: Sections,
}

/// The per-deployment sections, each `None` until set (then the builder's default applies).
#[derive(Debug, Clone, Default)]
struct Sections {
    timeouts: Option<Timeouts>,
    pool: Option<PoolLimits>,
    retry: Option<RetryPolicy>,
    circuit_breaker: Option<Option<CircuitBreakerConfig>>,
    rate_limits: Option<Option<RateLimitConfig>>,
    health_check: Option<Option<HealthCheckConfig>>,
}

impl Deployment {
    fn new(provider: ProviderKind, base_url: Option<&str>, api_key: Option<String>) -> Deployment {
        Deployment {
            provider,
            base_url: base_url.map(str::to_owned),
            api_key: api_key.filter(|k| !k.is_empty()).map(Secret::new),
            id: None,
            model: None,
            organization: None,
            project: None,
            api_version: None,
            weight: 1,
            priority: 0,
            sections: Sections::default(),
        }
    }

    /// OpenAI (`https://api.openai.com/v1`) with this key.
    pub fn openai(api_key: impl Into<String>) -> Deployment {
        Self::new(ProviderKind::OpenAi, None, Some(api_key.into()))
    }

    /// An OpenAI-compatible server (Ollama, vLLM, LM Studio, `weir mock`…) at `base_url`, without
    /// a key (add one with [`Deployment::api_key`]).
    pub fn openai_compatible(base_url: impl Into<String>) -> Deployment {
        Self::new(ProviderKind::OpenAi, Some(&base_url.into()), None)
    }

    /// Anthropic (`https://api.anthropic.com`), spoken to in OpenAI's format.
    pub fn anthropic(api_key: impl Into<String>) -> Deployment {
        Self::new(ProviderKind::Anthropic, None, Some(api_key.into()))
    }

    /// Gemini (`https://generativelanguage.googleapis.com`), spoken to in OpenAI's format.
    pub fn gemini(api_key: impl Into<String>) -> Deployment {
        Self::new(ProviderKind::Gemini, None, Some(api_key.into()))
    }

    /// Azure OpenAI: the resource's URL (`https://{resource}.openai.azure.com`), its key and the
    /// Azure deployment name (it goes into the URL path).
    pub fn azure(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        deployment: impl Into<String>,
    ) -> Deployment {
        Self::new(ProviderKind::Azure, Some(&base_url.into()), Some(api_key.into())).model(deployment)
    }

    /// The built-in offline mock provider (canned answers, no network).
    pub fn mock() -> Deployment {
        Self::new(ProviderKind::Mock, None, None)
    }

    /// Another base URL for the provider (a proxy, a regional endpoint).
    pub fn base_url(mut self, url: impl Into<String>) -> Deployment {
        self.base_url = Some(url.into());
        self
    }

    /// The key sent upstream.
    pub fn api_key(mut self, key: impl Into<String>) -> Deployment {
        self.api_key = Some(Secret::new(key));
        self
    }

    /// The id in headers, metrics and the admin API (default: the model's name and position).
    pub fn id(mut self, id: impl Into<String>) -> Deployment {
        self.id = Some(id.into());
        self
    }

    /// The model name sent upstream instead of the one the client asked for.
    pub fn model(mut self, model: impl Into<String>) -> Deployment {
        self.model = Some(model.into());
        self
    }

    /// OpenAI's `OpenAI-Organization` and `OpenAI-Project` headers.
    pub fn organization(mut self, organization: impl Into<String>, project: Option<String>) -> Deployment {
        self.organization = Some(organization.into());
        self.project = project;
        self
    }

    /// Azure's `api-version` (default `2024-10-21`).
    pub fn api_version(mut self, version: impl Into<String>) -> Deployment {
        self.api_version = Some(version.into());
        self
    }

    /// Share of the traffic under the weighted strategy (default 1).
    pub fn weight(mut self, weight: u32) -> Deployment {
        self.weight = weight;
        self
    }

    /// Priority tier: 0 is served first, higher tiers only when lower ones are unavailable.
    pub fn priority(mut self, priority: u32) -> Deployment {
        self.priority = priority;
        self
    }

    /// Connect, read and total timeouts of this deployment.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Deployment {
        self.sections.timeouts = Some(timeouts);
        self
    }

    /// Connection pool limits of this deployment.
    pub fn pool(mut self, pool: PoolLimits) -> Deployment {
        self.sections.pool = Some(pool);
        self
    }

    /// Retry policy of this deployment.
    pub fn retry(mut self, retry: RetryPolicy) -> Deployment {
        self.sections.retry = Some(retry);
        self
    }

    /// Circuit breaker of this deployment; `None` turns it off.
    pub fn circuit_breaker(mut self, breaker: Option<CircuitBreakerConfig>) -> Deployment {
        self.sections.circuit_breaker = Some(breaker);
        self
    }

    /// Rate limits of this deployment (mirror the provider's limits for its key); `None`: none.
    pub fn rate_limits(mut self, limits: Option<RateLimitConfig>) -> Deployment {
        self.sections.rate_limits = Some(limits);
        self
    }

    /// Background health checks of this deployment; `None`: none.
    pub fn health_check(mut self, check: Option<HealthCheckConfig>) -> Deployment {
        self.sections.health_check = Some(check);
        self
    }
}

/// Builds a [`Config`] in code. Get one with [`Config::builder`].
///
/// ```
/// use std::time::Duration;
/// use weir::config::{Config, Deployment, RateLimitConfig, Strategy};
///
/// let config = Config::builder()
///     .model("gpt-4o-mini", Deployment::openai("sk-one").id("key-one"))
///     .model("gpt-4o-mini", Deployment::openai("sk-two").id("key-two"))
///     .model("claude-*", Deployment::anthropic("sk-ant-…"))
///     .strategy("gpt-4o-mini", Strategy::LeastBusy)
///     .fallbacks("gpt-4o-mini", ["claude-*"])
///     .rate_limits(RateLimitConfig { requests_per_minute: Some(500), ..Default::default() })
///     .request_deadline(Duration::from_secs(90))
///     .build()?;
/// assert_eq!(config.models[0].deployments.len(), 2);
/// # Ok::<(), weir::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    groups: Vec<Group>,
    defaults: Sections,
    server: ServerConfig,
    resilience: ResilienceConfig,
    cache: CacheConfig,
    pricing: BTreeMap<String, Price>,
    default_model: Option<String>,
    redis: Option<RedisConfig>,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    deployments: Vec<Deployment>,
    fallbacks: Vec<String>,
    context_window_fallbacks: Vec<String>,
    strategy: Strategy,
}

impl ConfigBuilder {
    fn group(&mut self, name: &str) -> &mut Group {
        let index = match self.groups.iter().position(|g| g.name == name) {
            Some(index) => index,
            None => {
                self.groups.push(Group {
                    name: name.to_owned(),
                    deployments: Vec::new(),
                    fallbacks: Vec::new(),
                    context_window_fallbacks: Vec::new(),
                    strategy: Strategy::default(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    /// Serves the model `name` (or a pattern such as `gpt-*`) with `deployment`, beside the
    /// deployments already added for it.
    pub fn model(mut self, name: impl AsRef<str>, deployment: Deployment) -> Self {
        self.group(name.as_ref()).deployments.push(deployment);
        self
    }

    /// How the model's requests are spread over its deployments (default round-robin).
    pub fn strategy(mut self, name: impl AsRef<str>, strategy: Strategy) -> Self {
        self.group(name.as_ref()).strategy = strategy;
        self
    }

    /// Models tried, in order, when every deployment of `name` has failed.
    pub fn fallbacks<S: Into<String>>(
        mut self,
        name: impl AsRef<str>,
        to: impl IntoIterator<Item = S>,
    ) -> Self {
        self.group(name.as_ref()).fallbacks = to.into_iter().map(Into::into).collect();
        self
    }

    /// Larger-context models tried when the upstream says the prompt is too long.
    pub fn context_window_fallbacks<S: Into<String>>(
        mut self,
        name: impl AsRef<str>,
        to: impl IntoIterator<Item = S>,
    ) -> Self {
        self.group(name.as_ref()).context_window_fallbacks = to.into_iter().map(Into::into).collect();
        self
    }

    /// The model for pass-through calls that name none (default: the only model, if one).
    pub fn default_model(mut self, name: impl Into<String>) -> Self {
        self.default_model = Some(name.into());
        self
    }

    /// Timeouts of every deployment without its own.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.defaults.timeouts = Some(timeouts);
        self
    }

    /// Connection pool limits of every deployment without its own.
    pub fn pool(mut self, pool: PoolLimits) -> Self {
        self.defaults.pool = Some(pool);
        self
    }

    /// Retry policy of every deployment without its own.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.defaults.retry = Some(retry);
        self
    }

    /// Circuit breaker of every deployment without its own; `None` turns breakers off.
    pub fn circuit_breaker(mut self, breaker: Option<CircuitBreakerConfig>) -> Self {
        self.defaults.circuit_breaker = Some(breaker);
        self
    }

    /// Rate limits of every deployment without its own.
    pub fn rate_limits(mut self, limits: RateLimitConfig) -> Self {
        self.defaults.rate_limits = Some(Some(limits));
        self
    }

    /// Health checks of every deployment without its own.
    pub fn health_check(mut self, check: HealthCheckConfig) -> Self {
        self.defaults.health_check = Some(Some(check));
        self
    }

    /// Limits per client key (the gateway's `server.client_rate_limits`; in-process calls count
    /// as one client).
    pub fn client_rate_limits(mut self, limits: RateLimitConfig) -> Self {
        self.server.client_rate_limits = Some(limits);
        self
    }

    /// The longest a request may take, retries and fallbacks included (default 120 s).
    pub fn request_deadline(mut self, deadline: Duration) -> Self {
        self.resilience.request_deadline = deadline;
        self
    }

    /// The share of retries allowed over first attempts (default 20 %, at least 1/s).
    pub fn retry_budget(mut self, budget: RetryBudgetConfig) -> Self {
        self.resilience.retry_budget = budget;
        self
    }

    /// The response cache (default off).
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// A price (USD per million tokens) over the built-in table.
    pub fn price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.pricing.insert(model.into(), price);
        self
    }

    /// The Redis that instances share their rate limits and cooldowns through (see
    /// docs/scaling.md); without it every limit is this process's own.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.redis = Some(redis);
        self
    }

    /// The gateway's server settings (ignored in-process).
    pub fn server(mut self, server: ServerConfig) -> Self {
        self.server = server;
        self
    }

    /// Checks every rule a YAML file is checked against and gives the config.
    pub fn build(self) -> Result<Config, ConfigError> {
        let error = |field: String, message: String| ConfigError {
            file: None,
            line: None,
            field: Some(field),
            message,
        };
        if let Some(limits) = &self.server.client_rate_limits {
            limits
                .validate()
                .map_err(|m| error("server.client_rate_limits".to_owned(), m))?;
        }
        self.cache
            .validate()
            .map_err(|e| error(e.path_under("cache"), e.message))?;
        if let Some(redis) = &self.redis {
            redis
                .validate()
                .map_err(|e| error(e.path_under("redis"), e.message))?;
        }
        let names: HashSet<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        let mut ids = HashSet::new();
        let mut models = Vec::with_capacity(self.groups.len());
        for (gi, group) in self.groups.iter().enumerate() {
            let path = format!("models[{gi}]");
            let name = group.name.trim();
            if name.is_empty() || name[..name.len() - 1].contains('*') {
                return Err(error(
                    format!("{path}.name"),
                    format!("`{name}` is not a model name or a prefix pattern such as `gpt-*`"),
                ));
            }
            for (field, list) in [
                ("fallbacks", &group.fallbacks),
                ("context_window_fallbacks", &group.context_window_fallbacks),
            ] {
                for (i, to) in list.iter().enumerate() {
                    if !names.contains(to.as_str()) || to == name {
                        return Err(error(
                            format!("{path}.{field}[{i}]"),
                            format!("`{to}` is not another model of this config"),
                        ));
                    }
                }
            }
            if group.deployments.is_empty() {
                return Err(error(
                    format!("{path}.deployments"),
                    format!("model `{name}` needs at least one deployment"),
                ));
            }
            let mut deployments = Vec::with_capacity(group.deployments.len());
            for (di, dep) in group.deployments.iter().enumerate() {
                let dpath = format!("{path}.deployments[{di}]");
                let dep = self
                    .deployment(dep, name, di)
                    .map_err(|(field, m)| error(format!("{dpath}.{field}"), m))?;
                if !ids.insert(dep.id.clone()) {
                    return Err(error(
                        format!("{dpath}.id"),
                        format!("deployment id `{}` is used twice", dep.id),
                    ));
                }
                deployments.push(dep);
            }
            models.push(ModelGroupConfig {
                name: name.to_owned(),
                deployments,
                fallbacks: group.fallbacks.clone(),
                context_window_fallbacks: group.context_window_fallbacks.clone(),
                strategy: group.strategy,
            });
        }
        if let Some(model) = &self.default_model
            && !names.contains(model.as_str())
        {
            return Err(error(
                "default_model".to_owned(),
                format!("`{model}` is not one of the models"),
            ));
        }
        let default_model = match (self.default_model, models.as_slice()) {
            (Some(model), _) => Some(model),
            (None, [only]) => Some(only.name.clone()),
            (None, _) => None,
        };
        Ok(Config {
            server: self.server,
            logging: LoggingConfig::default(),
            tracing: TracingConfig::default(),
            models,
            default_model,
            resilience: self.resilience,
            pricing: self.pricing,
            cache: self.cache,
            redis: self.redis,
            source: ConfigSource::Code,
        })
    }

    /// One deployment with the defaults under it; an error is (field, message).
    fn deployment(
        &self,
        dep: &Deployment,
        group: &str,
        index: usize,
    ) -> Result<DeploymentConfig, (String, String)> {
        let fail = |field: &str, message: String| (field.to_owned(), message);
        let (own, defaults) = (&dep.sections, &self.defaults);
        let id = match &dep.id {
            Some(id) => check_id(id).map_err(|e| (e.field, format!("`{id}`: {}", e.message)))?,
            None => default_id(group, index),
        };
        let retry = pick(&own.retry, &defaults.retry).unwrap_or_default();
        let mut config = super::mock_deployment(
            &id,
            pick(&own.timeouts, &defaults.timeouts).unwrap_or_default(),
            retry.max_retries,
        )
        .map_err(|m| fail("base_url", m))?;
        for (field, value) in [
            ("connect", config.timeouts.connect),
            ("read", config.timeouts.read),
            ("total", config.timeouts.total),
        ] {
            if value.is_zero() {
                return Err(fail(
                    &format!("timeouts.{field}"),
                    "must be greater than zero".to_owned(),
                ));
            }
        }
        config.retry = retry;
        config.pool = pick(&own.pool, &defaults.pool).unwrap_or_default();
        if config.pool.max_connections == 0 || config.pool.max_connections_per_host == 0 {
            return Err(fail(
                "pool",
                "connection limits must be greater than zero".to_owned(),
            ));
        }
        config.circuit_breaker = pick(&own.circuit_breaker, &defaults.circuit_breaker)
            .unwrap_or(Some(CircuitBreakerConfig::for_deployments()));
        if let Some(breaker) = &config.circuit_breaker {
            breaker.validate().map_err(|m| fail("circuit_breaker", m))?;
        }
        config.rate_limits = pick(&own.rate_limits, &defaults.rate_limits).flatten();
        if let Some(limits) = &config.rate_limits {
            limits.validate().map_err(|m| fail("rate_limits", m))?;
        }
        config.health_check = pick(&own.health_check, &defaults.health_check).flatten();
        if let Some(check) = &config.health_check {
            check.validate().map_err(|m| fail("health_check", m))?;
        }
        config.provider = dep.provider;
        config.weight = dep.weight;
        config.priority = dep.priority;
        config.api_key = dep.api_key.clone();
        config.model = dep.model.clone();
        config.organization = dep.organization.clone();
        config.project = dep.project.clone();
        config.api_version = dep.api_version.clone();
        match (
            dep.provider,
            dep.base_url.as_deref().or(dep.provider.default_base_url()),
        ) {
            (ProviderKind::Mock, None) => {}
            (ProviderKind::Mock, Some(_)) => {
                return Err(fail(
                    "base_url",
                    "the mock provider answers in-process and takes no base_url".to_owned(),
                ));
            }
            (_, None) => {
                return Err(fail(
                    "base_url",
                    "azure needs base_url: https://{resource}.openai.azure.com".to_owned(),
                ));
            }
            (_, Some(url)) => config.base_url = parse_base_url(url).map_err(|m| fail("base_url", m))?,
        }
        config.validate().map_err(|e| (e.field, e.message))?;
        Ok(config)
    }
}

/// A deployment's own setting, else the builder's default.
fn pick<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
    own.clone().or_else(|| default.clone())
}

impl Config {
    /// A config in code: see [`ConfigBuilder`].
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}
