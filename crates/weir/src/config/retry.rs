//! Retries: the `retry:` section of a deployment ([`RetryPolicy`]) and the request-wide
//! `resilience:` section (deadline and [`RetryBudgetConfig`]). The retry decisions that read them
//! are `policy::retry`.

use std::time::Duration;

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
