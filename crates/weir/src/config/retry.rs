//! Retries: the `retry:` section of a deployment ([`RetryPolicy`]) and the request-wide
//! `resilience:` section (deadline and [`RetryBudgetConfig`]). The retry decisions that read them
//! are `policy::retry`.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigDuration, FieldError, overlay::section};

/// Retry settings of one deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff.
    pub base_delay: Duration,
    /// Backoff multiplier per retry.
    pub factor: f64,
    /// Largest backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` we are willing to wait; a longer one fails the request at once
    /// (with the `Retry-After` passed on to the client) rather than hold it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Budget settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per first attempt (0.2 = at most 20 % extra upstream calls).
    pub ratio: f64,
    /// Retries per second always allowed, so low-traffic services can still retry.
    pub min_per_second: f64,
    /// How far back first attempts and retries are counted.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
        }
    }
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

section! {
    /// `retry:` as written (in a deployment or in `upstream_defaults`).
    pub(super) struct RawRetry {
        pub(super) max_retries: Option<u32>,
        pub(super) base_delay: Option<ConfigDuration>,
        pub(super) factor: Option<f64>,
        pub(super) max_delay: Option<ConfigDuration>,
        pub(super) max_retry_after: Option<ConfigDuration>,
    }
}

impl TryFrom<RawRetry> for RetryPolicy {
    type Error = FieldError;

    fn try_from(raw: RawRetry) -> Result<Self, FieldError> {
        let d = RetryPolicy::default();
        let policy = RetryPolicy {
            max_retries: raw.max_retries.unwrap_or(d.max_retries),
            base_delay: raw.base_delay.map_or(d.base_delay, |v| v.0),
            factor: raw.factor.unwrap_or(d.factor),
            max_delay: raw.max_delay.map_or(d.max_delay, |v| v.0),
            max_retry_after: raw.max_retry_after.map_or(d.max_retry_after, |v| v.0),
        };
        if !(policy.factor.is_finite() && policy.factor >= 1.0) {
            return Err(FieldError::new("factor", "must be a number of at least 1"));
        }
        if policy.max_delay < policy.base_delay {
            return Err(FieldError::new(
                "max_delay",
                "must not be shorter than base_delay",
            ));
        }
        Ok(policy)
    }
}

/// `resilience:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResilience {
    request_deadline: Option<ConfigDuration>,
    default_output_tokens: Option<u64>,
    #[serde(default)]
    retry_budget: RawRetryBudget,
}

/// `resilience.retry_budget:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryBudget {
    ratio: Option<f64>,
    min_per_second: Option<f64>,
    window: Option<ConfigDuration>,
}

impl TryFrom<RawResilience> for ResilienceConfig {
    type Error = FieldError;

    fn try_from(raw: RawResilience) -> Result<Self, FieldError> {
        let d = ResilienceConfig::default();
        let request_deadline = raw.request_deadline.map_or(d.request_deadline, |v| v.0);
        if request_deadline.is_zero() {
            return Err(FieldError::new("request_deadline", "must be greater than zero"));
        }
        Ok(ResilienceConfig {
            request_deadline,
            retry_budget: RetryBudgetConfig::try_from(raw.retry_budget)
                .map_err(|e| e.within("retry_budget"))?,
            default_output_tokens: raw.default_output_tokens.unwrap_or(d.default_output_tokens),
        })
    }
}

impl TryFrom<RawRetryBudget> for RetryBudgetConfig {
    type Error = FieldError;

    fn try_from(raw: RawRetryBudget) -> Result<Self, FieldError> {
        let d = RetryBudgetConfig::default();
        let budget = RetryBudgetConfig {
            ratio: raw.ratio.unwrap_or(d.ratio),
            min_per_second: raw.min_per_second.unwrap_or(d.min_per_second),
            window: raw.window.map_or(d.window, |v| v.0),
        };
        if !(budget.ratio.is_finite() && budget.ratio >= 0.0) {
            return Err(FieldError::new(
                "ratio",
                "must be a number >= 0 (0.2 = 20 % extra calls)",
            ));
        }
        if !(budget.min_per_second.is_finite() && budget.min_per_second >= 0.0) {
            return Err(FieldError::new("min_per_second", "must be a number >= 0"));
        }
        if budget.window < Duration::from_millis(100) {
            return Err(FieldError::new("window", "must be at least 100ms"));
        }
        Ok(budget)
    }
}
