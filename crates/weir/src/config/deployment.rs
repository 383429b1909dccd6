//! The entries of `models[].deployments`: the deployment as written, the multi-key shorthand, and
//! the validation into [`DeploymentConfig`] with `upstream_defaults` laid under its sections.
//!
//! Errors are [`FieldError`]s relative to the deployment (`retry.factor`, `base_url`); the loader
//! prefixes the deployment's path (`models[0].deployments[1]`) and its line.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    DeploymentConfig, EnvString, FieldError, ProviderKind, RetryPolicy, Secret,
    breaker::RawBreaker,
    concurrency::RawAdaptiveConcurrency,
    limits::RawRateLimitsSpec,
    overlay::{Overlay, Switch},
    retry::RawRetry,
    routing::RawHealthCheck,
    upstream::{RawPool, RawTimeouts, RawUpstream, parse_base_url},
};

/// One entry of `models[].deployments` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeployment {
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
    #[serde(default)]
    adaptive_concurrency: RawAdaptiveConcurrency,
}

/// The multi-key shorthand: a deployment with `api_keys: [k1, k2, k3]` (and optionally `models` and
/// `rate_limits` lists of the same length) becomes one deployment per key, ids suffixed `-1`, `-2`...
/// Each comes with its path relative to this deployment's (`api_keys[1]`; empty when not expanded).
/// `group` and `index` name the deployments that have no `id`.
pub(super) fn expand_keys(
    dep: Spanned<RawDeployment>,
    group: &str,
    index: usize,
) -> Result<Vec<(Spanned<RawDeployment>, String)>, FieldError> {
    let Some(keys) = dep.value.api_keys.clone() else {
        if dep.value.models.is_some() {
            return Err(FieldError::new(
                "models",
                "`models` (a list) goes with `api_keys`; use `model` for one",
            ));
        }
        return Ok(vec![(dep, String::new())]);
    };
    if dep.value.api_key.is_some() {
        return Err(FieldError::new(
            "api_keys",
            "use either `api_key` or `api_keys`, not both",
        ));
    }
    if keys.is_empty() {
        return Err(FieldError::new("api_keys", "the list of keys is empty"));
    }
    let n = keys.len();
    if let Some(models) = &dep.value.models
        && models.len() != n
    {
        return Err(FieldError::new(
            "models",
            format!(
                "has {} entries but `api_keys` has {n}: give one model per key",
                models.len()
            ),
        ));
    }
    if let RawRateLimitsSpec::PerKey(limits) = &dep.value.rate_limits
        && limits.len() != n
    {
        return Err(FieldError::new(
            "rate_limits",
            format!(
                "has {} entries but `api_keys` has {n}: give one rate limit section per key",
                limits.len()
            ),
        ));
    }
    let base_id = dep.value.id.as_ref().map(checked_id).transpose()?;
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
            one.value.rate_limits = RawRateLimitsSpec::One(limits.get(k).cloned().unwrap_or_default());
        }
        let id = match &base_id {
            Some(base) => format!("{base}-{}", k + 1),
            None => format!("{}-{}", default_id(group, index), k + 1),
        };
        one.value.id = Some(Spanned::new(id, dep.referenced, dep.defined));
        out.push((one, format!("api_keys[{k}]")));
    }
    Ok(out)
}

/// A deployment id as written, if it is one (it appears in headers and metrics).
fn checked_id(id: &Spanned<String>) -> Result<String, FieldError> {
    check_id(&id.value).map_err(|e| e.at_line(id.referenced.line()))
}

/// A deployment id, trimmed, if it is one (the file's and [`super::ConfigBuilder`]'s rule).
pub(super) fn check_id(id: &str) -> Result<String, FieldError> {
    let value = id.trim().to_owned();
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        return Err(FieldError::new(
            "id",
            "use letters, digits and - _ . : / only (it appears in headers and metrics)",
        ));
    }
    Ok(value)
}

/// The id of a deployment that gives none: the group's name (without its `*` pattern) and the
/// deployment's position, e.g. `gpt-4o#1`.
pub(super) fn default_id(group: &str, index: usize) -> String {
    let stem = group.trim_end_matches('*').trim_end_matches('-');
    format!("{}#{index}", if stem.is_empty() { "default" } else { stem })
}

/// Validates one (expanded) deployment of group `group`, at position `index`, with `defaults`
/// (`upstream_defaults`) laid under its sections.
pub(super) fn deployment(
    dep: Spanned<RawDeployment>,
    defaults: &RawUpstream,
    group: &str,
    index: usize,
    id_checked: bool,
) -> Result<DeploymentConfig, FieldError> {
    let line = dep.referenced.line();
    let dep = dep.value;
    let own_limits = match dep.rate_limits {
        RawRateLimitsSpec::One(limits) => Some(limits),
        // `expand_keys` turned per-key lists into single sections; a list left here has no `api_keys`.
        RawRateLimitsSpec::PerKey(_) => None,
    };
    let sections = RawUpstream {
        timeouts: dep.timeouts,
        pool: dep.pool,
        retry: dep.retry,
        circuit_breaker: dep.circuit_breaker,
        rate_limits: own_limits.clone().unwrap_or_default(),
        health_check: dep.health_check,
    }
    .over(defaults);
    let timeouts = sections
        .timeouts
        .try_into()
        .map_err(|e: FieldError| e.within("timeouts"))?;
    let pool = sections
        .pool
        .try_into()
        .map_err(|e: FieldError| e.within("pool"))?;
    let retry: RetryPolicy = sections
        .retry
        .try_into()
        .map_err(|e: FieldError| e.within("retry"))?;
    let id = match dep.id {
        // The multi-key shorthand made this id from a checked one (or the group's default id).
        Some(id) if id_checked => id.value,
        Some(id) => checked_id(&id)?,
        None => default_id(group, index),
    };
    let mut config = super::mock_deployment(&id, timeouts, retry.max_retries).map_err(FieldError::section)?;
    config.weight = dep.weight.unwrap_or(1);
    config.health_check = sections
        .health_check
        .build()
        .map_err(|e| e.within("health_check"))?;
    config.priority = dep.priority.unwrap_or(0);
    config.retry = retry;
    config.circuit_breaker = sections
        .circuit_breaker
        .build()
        .map_err(|e| e.within("circuit_breaker"))?;
    if own_limits.is_none() {
        return Err(FieldError::new(
            "rate_limits",
            "a list of rate limits needs `api_keys` (one section per key)",
        ));
    }
    config.rate_limits = sections
        .rate_limits
        .build()
        .map_err(|e| e.within("rate_limits"))?;
    config.adaptive_concurrency = dep
        .adaptive_concurrency
        .build()
        .map_err(|e| e.within("adaptive_concurrency"))?;
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
        return Err(FieldError::new(
            "model",
            "azure needs model: the name of the Azure deployment (it goes into the URL path)",
        ));
    }
    if let Some(version) = &config.api_version {
        if dep.provider != ProviderKind::Azure {
            return Err(FieldError::new(
                "api_version",
                "api_version only applies to provider: azure",
            ));
        }
        if !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(FieldError::new(
                "api_version",
                format!("`{version}` is not an API version (e.g. 2024-10-21)"),
            ));
        }
    }
    let url_error = |url_line: u64| move |m: String| FieldError::new("base_url", m).at_line(url_line);
    match (dep.provider, dep.base_url) {
        (ProviderKind::OpenAi, Some(url)) => {
            config.base_url = parse_base_url(&url.value.0).map_err(url_error(url.referenced.line()))?;
        }
        (ProviderKind::OpenAi, None) => {
            let default = ProviderKind::OpenAi.default_base_url().unwrap_or_default();
            config.base_url = parse_base_url(default).map_err(url_error(line))?;
        }
        (ProviderKind::Mock, Some(url)) => {
            return Err(FieldError::new(
                "base_url",
                "the mock provider answers in-process and takes no base_url (to use `weir mock` over HTTP, \
                 use provider: openai with its URL)",
            )
            .at_line(url.referenced.line()));
        }
        (ProviderKind::Mock, None) => {}
        (ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Azure, url) => {
            let default = dep.provider.default_base_url();
            let text = match (&url, default) {
                (Some(url), _) => url.value.0.clone(),
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(FieldError::new(
                        "base_url",
                        "azure needs base_url: https://{resource}.openai.azure.com",
                    ));
                }
            };
            let url_line = url.as_ref().map_or(line, |u| u.referenced.line());
            config.base_url = parse_base_url(&text).map_err(url_error(url_line))?;
        }
    }
    // What the providers rely on (header values, the Azure path), so that building them from this
    // config cannot fail.
    config.validate()?;
    Ok(config)
}
