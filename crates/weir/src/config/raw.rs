//! The YAML file as written, and its validation into [`Config`].

use std::collections::HashSet;

use serde::Deserialize;
use serde_saphyr::Spanned;
use url::Url;

use super::{
    ByteSize, CircuitBreakerConfig, Config, ConfigDuration, ConfigError, ConfigSource, DeploymentConfig,
    EnvString, HealthCheckConfig, LimitMode, LogFormat, LoggingConfig, ModelGroupConfig, PoolLimits, Price,
    PriceTable, ProviderKind, RateLimitConfig, ResilienceConfig, RetryBudgetConfig, RetryPolicy, Secret,
    ServerConfig, Strategy, Timeouts, TracingConfig,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    logging: RawLogging,
    /// OpenTelemetry trace export (see `crate::config::TracingConfig`).
    #[serde(default)]
    tracing: RawTracing,
    /// Timeouts, pool limits and retries every deployment starts from.
    #[serde(default)]
    upstream_defaults: RawUpstream,
    #[serde(default)]
    models: Vec<Spanned<RawModelGroup>>,
    default_model: Option<Spanned<String>>,
    #[serde(default)]
    resilience: RawResilience,
    /// Model prices overriding or adding to the built-in table.
    #[serde(default)]
    pricing: std::collections::BTreeMap<String, Spanned<RawPrice>>,
    cache: Option<Spanned<super::cache::RawCache>>,
}

/// USD per million tokens; omitted fields keep the built-in entry's value.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: Option<f64>,
    output: Option<f64>,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResilience {
    request_deadline: Option<ConfigDuration>,
    default_output_tokens: Option<u64>,
    #[serde(default)]
    retry_budget: RawRetryBudget,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryBudget {
    ratio: Option<f64>,
    min_per_second: Option<f64>,
    window: Option<ConfigDuration>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    mode: Option<RawLimitMode>,
    max_wait: Option<ConfigDuration>,
    max_queue: Option<usize>,
    requests_per_minute: Option<u64>,
    input_tokens_per_minute: Option<u64>,
    output_tokens_per_minute: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawLimitMode {
    Wait,
    FailFast,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    enabled: Option<bool>,
    interval: Option<ConfigDuration>,
    timeout: Option<ConfigDuration>,
    unhealthy_threshold: Option<u32>,
    healthy_threshold: Option<u32>,
}

impl RawHealthCheck {
    fn any_set(&self) -> bool {
        self.interval.is_some()
            || self.timeout.is_some()
            || self.unhealthy_threshold.is_some()
            || self.healthy_threshold.is_some()
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    enabled: Option<bool>,
    failure_threshold: Option<u32>,
    failure_rate_threshold: Option<f64>,
    min_requests: Option<u32>,
    window: Option<ConfigDuration>,
    open_timeout: Option<ConfigDuration>,
    half_open_max_probes: Option<u32>,
    success_threshold: Option<u32>,
    reset_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_retries: Option<u32>,
    base_delay: Option<ConfigDuration>,
    factor: Option<f64>,
    max_delay: Option<ConfigDuration>,
    max_retry_after: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<String>,
    port: Option<u16>,
    max_body_size: Option<ByteSize>,
    shutdown_timeout: Option<ConfigDuration>,
    #[serde(default)]
    api_keys: Vec<Spanned<Secret>>,
    #[serde(default)]
    client_rate_limits: RawRateLimits,
    admin_key: Option<Spanned<Secret>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    otlp_endpoint: Option<Spanned<EnvString>>,
    #[serde(default)]
    otlp_headers: std::collections::BTreeMap<String, Secret>,
    service_name: Option<EnvString>,
    sample_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    circuit_breaker: RawBreaker,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    health_check: RawHealthCheck,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<ConfigDuration>,
    read: Option<ConfigDuration>,
    total: Option<ConfigDuration>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    max_connections: Option<usize>,
    max_connections_per_host: Option<usize>,
    idle_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelGroup {
    name: Spanned<String>,
    #[serde(default)]
    deployments: Vec<Spanned<RawDeployment>>,
    /// Groups tried, in order, when this one's deployments are all exhausted.
    #[serde(default)]
    fallbacks: Vec<Spanned<String>>,
    /// Larger-context groups tried when the upstream says the prompt is too long.
    #[serde(default)]
    context_window_fallbacks: Vec<Spanned<String>>,
    /// How requests are spread over the deployments.
    strategy: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    id: Option<Spanned<String>>,
    provider: ProviderKind,
    base_url: Option<Spanned<EnvString>>,
    api_key: Option<Secret>,
    /// Shorthand: one deployment per key (with `models` / `rate_limits` lists of the same length).
    api_keys: Option<Vec<Secret>>,
    model: Option<String>,
    /// With `api_keys`: the upstream model of each key's deployment.
    models: Option<Vec<String>>,
    weight: Option<u32>,
    priority: Option<u32>,
    organization: Option<EnvString>,
    project: Option<EnvString>,
    /// Azure only: the `api-version` query parameter.
    api_version: Option<EnvString>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    circuit_breaker: RawBreaker,
    #[serde(default)]
    rate_limits: RawRateLimitsSpec,
    #[serde(default)]
    health_check: RawHealthCheck,
}

/// A deployment's `rate_limits`: one section, or (with `api_keys`) one per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawRateLimitsSpec {
    One(RawRateLimits),
    PerKey(Vec<RawRateLimits>),
}

impl Default for RawRateLimitsSpec {
    fn default() -> Self {
        RawRateLimitsSpec::One(RawRateLimits::default())
    }
}

pub(super) fn parse(text: &str, file: Option<&str>) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e, file))?;
    validate(raw, file)
}

/// serde-saphyr renders a snippet with the location; we keep its message and pull out the line.
fn syntax_error(err: &serde_saphyr::Error, file: Option<&str>) -> ConfigError {
    let line = err.location().map(|loc| loc.line() as usize).filter(|l| *l > 0);
    let text = err.to_string();
    // The parser's message starts with its own "error: "; ours adds the location before it.
    let message = text.strip_prefix("error: ").unwrap_or(&text).to_owned();
    ConfigError {
        file: file.map(str::to_owned),
        line,
        field: None,
        message,
    }
}

struct Ctx<'a> {
    file: Option<&'a str>,
}

impl Ctx<'_> {
    fn error(&self, line: u64, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.map(str::to_owned),
            line: Some(line as usize).filter(|l| *l > 0),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

fn validate(raw: RawConfig, file: Option<&str>) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let defaults = ServerConfig::default();
    let mut api_keys = Vec::with_capacity(raw.server.api_keys.len());
    for (i, key) in raw.server.api_keys.into_iter().enumerate() {
        if key.value.expose().trim().is_empty() {
            return Err(ctx.error(
                key.referenced.line(),
                format!("server.api_keys[{i}]"),
                "a gateway key cannot be empty",
            ));
        }
        api_keys.push(key.value);
    }
    let admin_key = match raw.server.admin_key {
        Some(key) if key.value.expose().trim().is_empty() => {
            return Err(ctx.error(
                key.referenced.line(),
                "server.admin_key",
                "the admin key cannot be empty (omit it to disable the admin API)",
            ));
        }
        // A client key that also opened the admin API would make every client an admin.
        Some(key) if api_keys.contains(&key.value) => {
            return Err(ctx.error(
                key.referenced.line(),
                "server.admin_key",
                "must differ from every server.api_keys entry",
            ));
        }
        Some(key) => Some(key.value),
        None => None,
    };
    let server = ServerConfig {
        host: raw.server.host.unwrap_or(defaults.host),
        port: raw.server.port.unwrap_or(defaults.port),
        max_body_bytes: raw.server.max_body_size.map_or(defaults.max_body_bytes, |b| b.0),
        shutdown_timeout: raw
            .server
            .shutdown_timeout
            .map_or(defaults.shutdown_timeout, |d| d.0),
        api_keys,
        admin_key,
        client_rate_limits: rate_limits(
            &ctx,
            0,
            "server.client_rate_limits",
            &RawRateLimits::default(),
            &raw.server.client_rate_limits,
        )?,
    };
    if server.max_body_bytes == 0 {
        return Err(ctx.error(0, "server.max_body_size", "must be greater than zero"));
    }
    let logging = LoggingConfig {
        format: raw.logging.format.unwrap_or(LogFormat::Human),
        level: raw.logging.level.unwrap_or_else(|| "info".to_owned()),
    };
    let tracing = tracing_config(&ctx, raw.tracing)?;

    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let mut models = Vec::with_capacity(raw.models.len());
    let mut pending_fallbacks = Vec::with_capacity(raw.models.len());
    for (gi, group) in raw.models.into_iter().enumerate() {
        let group_line = group.referenced.line();
        let group = group.value;
        let name = group.name.value.trim().to_owned();
        let path = format!("models[{gi}]");
        if name.is_empty() {
            return Err(ctx.error(
                group.name.referenced.line(),
                format!("{path}.name"),
                "a model name cannot be empty",
            ));
        }
        if name[..name.len() - 1].contains('*') {
            return Err(ctx.error(
                group.name.referenced.line(),
                format!("{path}.name"),
                format!("`{name}`: `*` is only allowed at the end (a prefix pattern such as `gpt-*`)"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ctx.error(
                group.name.referenced.line(),
                format!("{path}.name"),
                format!("model `{name}` is defined twice"),
            ));
        }
        if group.deployments.is_empty() {
            return Err(ctx.error(
                group_line,
                format!("{path}.deployments"),
                format!("model `{name}` needs at least one deployment"),
            ));
        }
        let mut deployments = Vec::with_capacity(group.deployments.len());
        let mut expanded = Vec::with_capacity(group.deployments.len());
        for (di, dep) in group.deployments.into_iter().enumerate() {
            let dpath = format!("{path}.deployments[{di}]");
            for (one, one_path) in expand_keys(&ctx, dep, &dpath, &name, di)? {
                expanded.push((one, one_path, di));
            }
        }
        for (dep, dpath, di) in expanded {
            let dep = deployment(&ctx, &raw.upstream_defaults, dep, &dpath, &name, di)?;
            if !ids.insert(dep.id.clone()) {
                return Err(ctx.error(
                    0,
                    format!("{dpath}.id"),
                    format!("deployment id `{}` is used twice", dep.id),
                ));
            }
            deployments.push(dep);
        }
        let names_of = |list: Vec<Spanned<String>>| {
            list.into_iter()
                .map(|n| (n.value.trim().to_owned(), n.referenced.line()))
                .collect::<Vec<_>>()
        };
        let strategy = match &group.strategy {
            None => Strategy::default(),
            Some(text) => text
                .value
                .parse::<Strategy>()
                .map_err(|e| ctx.error(text.referenced.line(), format!("{path}.strategy"), e.to_string()))?,
        };
        models.push(ModelGroupConfig {
            name,
            deployments,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            strategy,
        });
        pending_fallbacks.push((
            names_of(group.fallbacks),
            names_of(group.context_window_fallbacks),
            path,
        ));
    }

    // Fallbacks name other groups, so they are checked once every group is known.
    for (group, (fallbacks, context, path)) in models.iter_mut().zip(pending_fallbacks) {
        for (field, list, target) in [
            ("fallbacks", fallbacks, &mut group.fallbacks),
            (
                "context_window_fallbacks",
                context,
                &mut group.context_window_fallbacks,
            ),
        ] {
            for (i, (name, line)) in list.into_iter().enumerate() {
                if !names.contains(name.as_str()) {
                    return Err(ctx.error(
                        line,
                        format!("{path}.{field}[{i}]"),
                        format!("`{name}` is not one of the models defined under `models`"),
                    ));
                }
                if name == group.name {
                    return Err(ctx.error(
                        line,
                        format!("{path}.{field}[{i}]"),
                        "a model cannot fall back to itself",
                    ));
                }
                target.push(name);
            }
        }
    }

    let default_model = match raw.default_model {
        Some(dm) => {
            if !names.contains(dm.value.as_str()) {
                return Err(ctx.error(
                    dm.referenced.line(),
                    "default_model",
                    format!("`{}` is not one of the models defined under `models`", dm.value),
                ));
            }
            Some(dm.value)
        }
        // One model group is an unambiguous default; with several, pass-through needs a `model`.
        None if models.len() == 1 => models.first().map(|g| g.name.clone()),
        None => None,
    };

    let resilience = resilience(&ctx, &raw.resilience)?;
    let pricing = pricing(&ctx, &raw.pricing)?;
    let cache = match raw.cache {
        None => Default::default(),
        Some(section) => super::cache::validate(section.value)
            .map_err(|(field, message)| ctx.error(section.referenced.line(), field, message))?,
    };
    Ok(Config {
        cache,
        server,
        logging,
        tracing,
        models,
        default_model,
        resilience,
        pricing,
        source: ConfigSource::File(file.unwrap_or("<inline>").to_owned()),
    })
}

fn deployment(
    ctx: &Ctx<'_>,
    defaults: &RawUpstream,
    dep: Spanned<RawDeployment>,
    path: &str,
    group: &str,
    index: usize,
) -> Result<DeploymentConfig, ConfigError> {
    let line = dep.referenced.line();
    let dep = dep.value;
    let timeouts = timeouts(ctx, line, path, &defaults.timeouts, &dep.timeouts)?;
    let pool = pool(ctx, line, path, &defaults.pool, &dep.pool)?;
    let retry = retry(ctx, line, path, &defaults.retry, &dep.retry)?;
    let id = match dep.id {
        Some(id) => {
            let value = id.value.trim().to_owned();
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            {
                return Err(ctx.error(
                    id.referenced.line(),
                    format!("{path}.id"),
                    "use letters, digits and - _ . : / only (it appears in headers and metrics)",
                ));
            }
            value
        }
        None => format!(
            "{}#{index}",
            group
                .trim_end_matches('*')
                .trim_end_matches('-')
                .if_empty("default")
        ),
    };
    let mut config = super::mock_deployment(&id, timeouts, retry.max_retries)?;
    config.weight = dep.weight.unwrap_or(1);
    config.health_check = health_check(ctx, line, path, &defaults.health_check, &dep.health_check)?;
    config.priority = dep.priority.unwrap_or(0);
    config.retry = retry;
    config.circuit_breaker = breaker(ctx, line, path, &defaults.circuit_breaker, &dep.circuit_breaker)?;
    let own_limits = match &dep.rate_limits {
        RawRateLimitsSpec::One(limits) => *limits,
        // `expand_keys` turned per-key lists into single sections; a list left here has no `api_keys`.
        RawRateLimitsSpec::PerKey(_) => {
            return Err(ctx.error(
                line,
                format!("{path}.rate_limits"),
                "a list of rate limits needs `api_keys` (one section per key)",
            ));
        }
    };
    config.rate_limits = rate_limits(
        ctx,
        line,
        &format!("{path}.rate_limits"),
        &defaults.rate_limits,
        &own_limits,
    )?;
    config.provider = dep.provider;
    config.model = dep.model.filter(|m| !m.trim().is_empty());
    config.organization = dep.organization.map(|s| s.0).filter(|s| !s.is_empty());
    config.project = dep.project.map(|s| s.0).filter(|s| !s.is_empty());
    config.api_key = dep.api_key.filter(|k| !k.expose().is_empty());
    config.api_version = dep
        .api_version
        .map(|s| s.0.trim().to_owned())
        .filter(|s| !s.is_empty());
    config.pool = pool;
    if dep.provider == ProviderKind::Azure && config.model.is_none() {
        return Err(ctx.error(
            line,
            format!("{path}.model"),
            "azure needs model: the name of the Azure deployment (it goes into the URL path)",
        ));
    }
    if let Some(version) = &config.api_version {
        if dep.provider != ProviderKind::Azure {
            return Err(ctx.error(
                line,
                format!("{path}.api_version"),
                "api_version only applies to provider: azure",
            ));
        }
        if !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ctx.error(
                line,
                format!("{path}.api_version"),
                format!("`{version}` is not an API version (e.g. 2024-10-21)"),
            ));
        }
    }
    match (dep.provider, dep.base_url) {
        (ProviderKind::OpenAi, Some(url)) => {
            config.base_url = parse_base_url(&url.value.0)
                .map_err(|m| ctx.error(url.referenced.line(), format!("{path}.base_url"), m))?;
        }
        (ProviderKind::OpenAi, None) => {
            config.base_url = parse_base_url("https://api.openai.com/v1")
                .map_err(|m| ctx.error(line, format!("{path}.base_url"), m))?;
        }
        (ProviderKind::Mock, Some(url)) => {
            return Err(ctx.error(
                url.referenced.line(),
                format!("{path}.base_url"),
                "the mock provider answers in-process and takes no base_url (to use `weir mock` over HTTP, \
                 use provider: openai with its URL)",
            ));
        }
        (ProviderKind::Mock, None) => {}
        (ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Azure, url) => {
            let default = match dep.provider {
                ProviderKind::Anthropic => Some("https://api.anthropic.com"),
                ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
                _ => None,
            };
            let text = match (&url, default) {
                (Some(url), _) => url.value.0.clone(),
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(ctx.error(
                        line,
                        format!("{path}.base_url"),
                        "azure needs base_url: https://{resource}.openai.azure.com",
                    ));
                }
            };
            let url_line = url.as_ref().map_or(line, |u| u.referenced.line());
            config.base_url =
                parse_base_url(&text).map_err(|m| ctx.error(url_line, format!("{path}.base_url"), m))?;
        }
    }
    if dep.provider == ProviderKind::OpenAi
        && config.api_key.is_none()
        && config.base_url.host_str() == Some("api.openai.com")
    {
        return Err(ctx.error(
            line,
            format!("{path}.api_key"),
            "api.openai.com needs an api_key (e.g. api_key: ${OPENAI_API_KEY})",
        ));
    }
    Ok(config)
}

/// The multi-key shorthand: a deployment with `api_keys: [k1, k2, k3]` (and optionally `models` and
/// `rate_limits` lists of the same length) becomes one deployment per key, ids suffixed `-1`, `-2`...
fn expand_keys(
    ctx: &Ctx<'_>,
    dep: Spanned<RawDeployment>,
    path: &str,
    group: &str,
    index: usize,
) -> Result<Vec<(Spanned<RawDeployment>, String)>, ConfigError> {
    let line = dep.referenced.line();
    let Some(keys) = dep.value.api_keys.clone() else {
        if dep.value.models.is_some() {
            return Err(ctx.error(
                line,
                format!("{path}.models"),
                "`models` (a list) goes with `api_keys`; use `model` for one",
            ));
        }
        return Ok(vec![(dep, path.to_owned())]);
    };
    if dep.value.api_key.is_some() {
        return Err(ctx.error(
            line,
            format!("{path}.api_keys"),
            "use either `api_key` or `api_keys`, not both",
        ));
    }
    if keys.is_empty() {
        return Err(ctx.error(line, format!("{path}.api_keys"), "the list of keys is empty"));
    }
    let n = keys.len();
    if let Some(models) = &dep.value.models
        && models.len() != n
    {
        return Err(ctx.error(
            line,
            format!("{path}.models"),
            format!(
                "has {} entries but `api_keys` has {n}: give one model per key",
                models.len()
            ),
        ));
    }
    if let RawRateLimitsSpec::PerKey(limits) = &dep.value.rate_limits
        && limits.len() != n
    {
        return Err(ctx.error(
            line,
            format!("{path}.rate_limits"),
            format!(
                "has {} entries but `api_keys` has {n}: give one rate limit section per key",
                limits.len()
            ),
        ));
    }
    let base_id = dep.value.id.as_ref().map(|id| id.value.trim().to_owned());
    let mut out = Vec::with_capacity(n);
    for (k, key) in keys.into_iter().enumerate() {
        let mut one = dep.clone();
        one.value.api_key = Some(key);
        one.value.api_keys = None;
        if let Some(models) = &dep.value.models {
            one.value.model = models.get(k).cloned();
        }
        one.value.models = None;
        if let RawRateLimitsSpec::PerKey(limits) = &dep.value.rate_limits {
            one.value.rate_limits = RawRateLimitsSpec::One(limits.get(k).copied().unwrap_or_default());
        }
        let id = match &base_id {
            Some(base) => format!("{base}-{}", k + 1),
            None => format!(
                "{}#{index}-{}",
                group
                    .trim_end_matches('*')
                    .trim_end_matches('-')
                    .if_empty("default"),
                k + 1
            ),
        };
        one.value.id = Some(Spanned::new(id, dep.referenced, dep.defined));
        out.push((one, format!("{path}.api_keys[{k}]")));
    }
    Ok(out)
}

fn timeouts(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawTimeouts,
    own: &RawTimeouts,
) -> Result<Timeouts, ConfigError> {
    let d = Timeouts::default();
    let pick = |own: Option<ConfigDuration>, base: Option<ConfigDuration>, default| {
        own.or(base).map_or(default, |v| v.0)
    };
    let t = Timeouts {
        connect: pick(own.connect, base.connect, d.connect),
        read: pick(own.read, base.read, d.read),
        total: pick(own.total, base.total, d.total),
    };
    for (name, value) in [("connect", t.connect), ("read", t.read), ("total", t.total)] {
        if value.is_zero() {
            return Err(ctx.error(
                line,
                format!("{path}.timeouts.{name}"),
                "must be greater than zero",
            ));
        }
    }
    Ok(t)
}

fn pool(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawPool,
    own: &RawPool,
) -> Result<PoolLimits, ConfigError> {
    let d = PoolLimits::default();
    let p = PoolLimits {
        max_connections: own
            .max_connections
            .or(base.max_connections)
            .unwrap_or(d.max_connections),
        max_connections_per_host: own
            .max_connections_per_host
            .or(base.max_connections_per_host)
            .unwrap_or(d.max_connections_per_host),
        idle_timeout: own
            .idle_timeout
            .or(base.idle_timeout)
            .map_or(d.idle_timeout, |v| v.0),
    };
    if p.max_connections == 0 || p.max_connections_per_host == 0 {
        return Err(ctx.error(
            line,
            format!("{path}.pool"),
            "connection limits must be greater than zero",
        ));
    }
    Ok(p)
}

fn retry(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawRetry,
    own: &RawRetry,
) -> Result<RetryPolicy, ConfigError> {
    let d = RetryPolicy::default();
    let policy = RetryPolicy {
        max_retries: own.max_retries.or(base.max_retries).unwrap_or(d.max_retries),
        base_delay: own.base_delay.or(base.base_delay).map_or(d.base_delay, |v| v.0),
        factor: own.factor.or(base.factor).unwrap_or(d.factor),
        max_delay: own.max_delay.or(base.max_delay).map_or(d.max_delay, |v| v.0),
        max_retry_after: own
            .max_retry_after
            .or(base.max_retry_after)
            .map_or(d.max_retry_after, |v| v.0),
    };
    if !(policy.factor.is_finite() && policy.factor >= 1.0) {
        return Err(ctx.error(
            line,
            format!("{path}.retry.factor"),
            "must be a number of at least 1",
        ));
    }
    if policy.max_delay < policy.base_delay {
        return Err(ctx.error(
            line,
            format!("{path}.retry.max_delay"),
            "must not be shorter than base_delay",
        ));
    }
    Ok(policy)
}

fn breaker(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawBreaker,
    own: &RawBreaker,
) -> Result<Option<CircuitBreakerConfig>, ConfigError> {
    if !own.enabled.or(base.enabled).unwrap_or(true) {
        return Ok(None);
    }
    let d = CircuitBreakerConfig::default();
    let dur = |o: Option<ConfigDuration>, b: Option<ConfigDuration>, d: std::time::Duration| {
        o.or(b).map_or(d, |v| v.0)
    };
    let config = CircuitBreakerConfig {
        failure_threshold: own
            .failure_threshold
            .or(base.failure_threshold)
            .unwrap_or(d.failure_threshold),
        failure_rate_threshold: own
            .failure_rate_threshold
            .or(base.failure_rate_threshold)
            .or(d.failure_rate_threshold),
        min_requests: own.min_requests.or(base.min_requests).unwrap_or(d.min_requests),
        window: dur(own.window, base.window, d.window),
        open_timeout: dur(own.open_timeout, base.open_timeout, d.open_timeout),
        half_open_max_probes: own
            .half_open_max_probes
            .or(base.half_open_max_probes)
            .unwrap_or(d.half_open_max_probes),
        success_threshold: own
            .success_threshold
            .or(base.success_threshold)
            .unwrap_or(d.success_threshold),
        reset_timeout: dur(own.reset_timeout, base.reset_timeout, d.reset_timeout),
    };
    // The breaker's own validation names the field; we add where it is.
    config
        .validate()
        .map_err(|m| ctx.error(line, format!("{path}.circuit_breaker"), m))?;
    Ok(Some(config))
}

/// Merges a rate-limit section over its defaults, key by key; `None` when no limit is set.
fn rate_limits(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawRateLimits,
    own: &RawRateLimits,
) -> Result<Option<RateLimitConfig>, ConfigError> {
    let d = RateLimitConfig::default();
    let mode = match own.mode.or(base.mode) {
        Some(RawLimitMode::FailFast) => LimitMode::FailFast,
        Some(RawLimitMode::Wait) | None => match own.max_wait.or(base.max_wait) {
            Some(max_wait) => LimitMode::Wait { max_wait: max_wait.0 },
            None => d.mode,
        },
    };
    let config = RateLimitConfig {
        requests_per_second: own.requests_per_second.or(base.requests_per_second),
        burst: own.burst.or(base.burst),
        mode,
        max_queue: own.max_queue.or(base.max_queue).unwrap_or(d.max_queue),
        requests_per_minute: own.requests_per_minute.or(base.requests_per_minute),
        input_tokens_per_minute: own.input_tokens_per_minute.or(base.input_tokens_per_minute),
        output_tokens_per_minute: own.output_tokens_per_minute.or(base.output_tokens_per_minute),
    };
    if !config.is_limited() {
        return Ok(None);
    }
    config.validate().map_err(|m| ctx.error(line, path, m))?;
    Ok(Some(config))
}

/// Background health checks: off unless `enabled: true` or any setting is given (probing costs
/// money on paid upstreams).
fn health_check(
    ctx: &Ctx<'_>,
    line: u64,
    path: &str,
    base: &RawHealthCheck,
    own: &RawHealthCheck,
) -> Result<Option<HealthCheckConfig>, ConfigError> {
    let enabled = own
        .enabled
        .or(base.enabled)
        .unwrap_or(own.any_set() || base.any_set());
    if !enabled {
        return Ok(None);
    }
    let d = HealthCheckConfig::default();
    let config = HealthCheckConfig {
        interval: own.interval.or(base.interval).map_or(d.interval, |v| v.0),
        timeout: own.timeout.or(base.timeout).map_or(d.timeout, |v| v.0),
        unhealthy_threshold: own
            .unhealthy_threshold
            .or(base.unhealthy_threshold)
            .unwrap_or(d.unhealthy_threshold),
        healthy_threshold: own
            .healthy_threshold
            .or(base.healthy_threshold)
            .unwrap_or(d.healthy_threshold),
    };
    config
        .validate()
        .map_err(|m| ctx.error(line, format!("{path}.health_check"), m))?;
    Ok(Some(config))
}

/// The `pricing:` overrides, each merged with the built-in entry of the same model (exact name or
/// longest prefix); a model with no built-in price must give at least `input`.
fn pricing(
    ctx: &Ctx<'_>,
    raw: &std::collections::BTreeMap<String, Spanned<RawPrice>>,
) -> Result<std::collections::BTreeMap<String, Price>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for (model, entry) in raw {
        let line = entry.referenced.line();
        let field = |name: &str| format!("pricing.{model}{name}");
        if model.trim().is_empty() {
            return Err(ctx.error(line, "pricing", "a model name cannot be empty"));
        }
        let p = entry.value;
        let base = PriceTable::builtin().get(model).copied();
        let input = match (p.input, base) {
            (Some(input), _) => input,
            (None, Some(base)) => base.input,
            (None, None) => {
                return Err(ctx.error(
                    line,
                    field(".input"),
                    format!(
                        "`{model}` has no built-in price: give at least `input` (USD per million tokens)"
                    ),
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
            (".input", Some(price.input)),
            (".output", Some(price.output)),
            (".cached_input", price.cached_input),
            (".cache_write", price.cache_write),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(ctx.error(
                    line,
                    field(name),
                    "must be a number >= 0 (USD per million tokens)",
                ));
            }
        }
        out.insert(model.clone(), price);
    }
    Ok(out)
}

fn resilience(ctx: &Ctx<'_>, raw: &RawResilience) -> Result<ResilienceConfig, ConfigError> {
    let d = ResilienceConfig::default();
    let b = &raw.retry_budget;
    let config = ResilienceConfig {
        default_output_tokens: raw.default_output_tokens.unwrap_or(d.default_output_tokens),
        request_deadline: raw.request_deadline.map_or(d.request_deadline, |v| v.0),
        retry_budget: RetryBudgetConfig {
            ratio: b.ratio.unwrap_or(d.retry_budget.ratio),
            min_per_second: b.min_per_second.unwrap_or(d.retry_budget.min_per_second),
            window: b.window.map_or(d.retry_budget.window, |v| v.0),
        },
    };
    if config.request_deadline.is_zero() {
        return Err(ctx.error(0, "resilience.request_deadline", "must be greater than zero"));
    }
    let budget = &config.retry_budget;
    if !(budget.ratio.is_finite() && budget.ratio >= 0.0) {
        return Err(ctx.error(
            0,
            "resilience.retry_budget.ratio",
            "must be a number >= 0 (0.2 = 20 % extra calls)",
        ));
    }
    if !(budget.min_per_second.is_finite() && budget.min_per_second >= 0.0) {
        return Err(ctx.error(
            0,
            "resilience.retry_budget.min_per_second",
            "must be a number >= 0",
        ));
    }
    if budget.window < std::time::Duration::from_millis(100) {
        return Err(ctx.error(0, "resilience.retry_budget.window", "must be at least 100ms"));
    }
    Ok(config)
}

/// Validates an upstream API root: http(s), a host, no credentials, query or fragment.
/// The `tracing:` section: an OTLP/HTTP endpoint (the collector's root, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`), headers for it, the service name and a sampling ratio.
fn tracing_config(ctx: &Ctx<'_>, raw: RawTracing) -> Result<TracingConfig, ConfigError> {
    let otlp_endpoint = match raw.otlp_endpoint {
        None => None,
        Some(url) => {
            let text = url.value.0.trim();
            let parsed = Url::parse(text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    ctx.error(
                        url.referenced.line(),
                        "tracing.otlp_endpoint",
                        format!("`{text}` is not an http(s) URL such as http://localhost:4318"),
                    )
                })?;
            Some(parsed)
        }
    };
    for name in raw.otlp_headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ctx.error(
                0,
                format!("tracing.otlp_headers.{name}"),
                "not a valid HTTP header name",
            ));
        }
    }
    let sample_ratio = match raw.sample_ratio {
        None => 1.0,
        Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
        Some(r) => {
            return Err(ctx.error(
                r.referenced.line(),
                "tracing.sample_ratio",
                "must be between 0 and 1",
            ));
        }
    };
    Ok(TracingConfig {
        otlp_endpoint,
        otlp_headers: raw.otlp_headers.into_iter().collect(),
        service_name: raw.service_name.map(|s| s.0).filter(|s| !s.trim().is_empty()),
        sample_ratio,
    })
}

pub(super) fn parse_base_url(text: &str) -> Result<Url, String> {
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

trait IfEmpty {
    fn if_empty<'a>(&'a self, fallback: &'a str) -> &'a str;
}

impl IfEmpty for str {
    fn if_empty<'a>(&'a self, fallback: &'a str) -> &'a str {
        if self.is_empty() { fallback } else { self }
    }
}
