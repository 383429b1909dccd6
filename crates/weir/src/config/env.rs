//! The zero-config setup: deployments from provider keys in the environment, or the built-in mock.

use super::{
    CircuitBreakerConfig, Config, ConfigError, ConfigSource, DeploymentConfig, LoggingConfig,
    ModelGroupConfig, PoolLimits, ProviderKind, ResilienceConfig, RetryPolicy, Secret, ServerConfig,
    Strategy, Timeouts, TracingConfig, parse_duration, upstream::parse_base_url,
};

impl Config {
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
                let mut d = mock_deployment(id, timeouts, max_retries).map_err(unplaced)?;
                d.base_url = parse_base_url(&base).map_err(|m| env_error(url_var, m))?;
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
            models.push(group(
                "*",
                mock_deployment("mock", timeouts, max_retries).map_err(unplaced)?,
            ));
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
}

/// An error with no place in a file.
fn unplaced(message: String) -> ConfigError {
    ConfigError {
        file: None,
        line: None,
        field: None,
        message,
    }
}

/// A deployment on the built-in mock provider: the starting point of every deployment. (It cannot
/// fail in practice: the error is the fixed placeholder URL's, kept only to stay panic-free.)
pub(super) fn mock_deployment(
    id: &str,
    timeouts: Timeouts,
    max_retries: u32,
) -> Result<DeploymentConfig, String> {
    let retry = RetryPolicy {
        max_retries,
        ..RetryPolicy::default()
    };
    Ok(DeploymentConfig {
        id: id.to_owned(),
        provider: ProviderKind::Mock,
        // Never contacted: the mock answers in-process. A fixed, non-routable URL keeps the type simple.
        base_url: parse_base_url("http://mock.invalid/v1")?,
        api_key: None,
        model: None,
        organization: None,
        project: None,
        api_version: None,
        timeouts,
        pool: PoolLimits::default(),
        retry,
        circuit_breaker: Some(CircuitBreakerConfig::for_deployments()),
        rate_limits: None,
        weight: 1,
        priority: 0,
        health_check: None,
        adaptive_concurrency: None,
    })
}
