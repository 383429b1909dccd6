//! Read-only snapshots of the engine's live state: what `/health/upstreams` and the admin API
//! report. Taking one touches each deployment's small locks once and calls no upstream.

use std::time::Duration;

use serde::Serialize;

use super::{BackgroundCheck, Deployment, Engine};
use crate::{
    config::ProviderKind,
    policy::{
        breaker::BreakerState,
        limit::{LimitStatus, RateLimitSnapshot},
    },
};

/// One deployment and its routing state, as routing sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    /// Deployment id.
    pub deployment: String,
    /// Its model group.
    pub model_group: String,
    /// Provider kind.
    pub provider: &'static str,
    /// API root (never contains a key).
    pub base_url: String,
    /// Circuit breaker state (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`, `off`).
    pub breaker: &'static str,
    /// How long it still rests after a 429, if it does.
    pub cooldown_remaining_ms: Option<u64>,
    /// What background health checks say (`null` when they are off).
    pub background_check: Option<BackgroundCheck>,
    /// Requests in flight right now.
    pub in_flight: u64,
    /// The balancer's decaying latency estimate of real traffic.
    pub latency_estimate_ms: Option<f64>,
}

/// Everything the engine knows about one deployment: its [`DeploymentStatus`] plus the
/// breaker's counters, rate-limit usage, latency quantiles and connection pool use.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStats {
    /// Routing state.
    #[serde(flatten)]
    pub status: DeploymentStatus,
    /// The breaker's details; `null` when it is disabled.
    pub breaker_detail: Option<BreakerDetail>,
    /// Use of its rate limits; `null` when it has none.
    pub rate_limits: Option<RateLimitUsage>,
    /// Time to the answer (to the first event of a stream) of successful attempts.
    pub latency: LatencySummary,
    /// Its connection pool (shared with deployments of equal pool settings); `null` for the
    /// in-process mock.
    pub pool: Option<PoolUsage>,
}

/// A circuit breaker's state and counters.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerDetail {
    /// Until probes are let through, when open.
    pub open_remaining_ms: Option<u64>,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Counted calls in the sliding window while closed.
    pub window_calls: u32,
    /// Failures among them.
    pub window_failures: u32,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// How many times it opened (by itself or by hand).
    pub times_opened: u64,
    /// The configured run of failures that opens it.
    pub failure_threshold: u32,
    /// How long it stays open before probing.
    pub open_timeout_ms: u64,
}

/// What a deployment's rate limits have left.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitUsage {
    /// `requests_per_second`, when set.
    pub requests_per_second: Option<f64>,
    /// Requests queued for the per-second bucket.
    pub waiting: usize,
    /// `requests_per_minute`, when set.
    pub requests_per_minute: Option<LimitUsage>,
    /// `input_tokens_per_minute`, when set.
    pub input_tokens_per_minute: Option<LimitUsage>,
    /// `output_tokens_per_minute`, when set.
    pub output_tokens_per_minute: Option<LimitUsage>,
}

/// One per-minute limit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LimitUsage {
    /// The limit per 60 s.
    pub limit: u64,
    /// Counted against it in the last 60 s.
    pub used: u64,
    /// What is left.
    pub remaining: u64,
    /// Until everything counted now has expired.
    pub reset_ms: u64,
}

/// Latency quantiles over the last one to two minutes (two rotating one-minute windows).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Samples in the window.
    pub samples: u64,
    /// Median, when there are samples.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Slowest.
    pub max_ms: Option<f64>,
}

/// A connection pool's use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoolUsage {
    /// Requests holding a connection permit now.
    pub in_flight: usize,
    /// The cap.
    pub max_connections: usize,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Deployment {
    /// Its routing state now.
    pub fn status(&self) -> DeploymentStatus {
        DeploymentStatus {
            deployment: self.id().to_owned(),
            model_group: self.model_group.to_string(),
            provider: self.config.provider.as_str(),
            base_url: match self.config.provider {
                ProviderKind::Mock => "in-process".to_owned(),
                _ => self.config.base_url.to_string(),
            },
            breaker: self.breaker().map_or("off", |b| b.state().kind().as_str()),
            cooldown_remaining_ms: self.cooldown_remaining().map(whole_millis),
            background_check: self.config.health_check.as_ref().map(|_| {
                let snap = self.health().snapshot();
                BackgroundCheck {
                    healthy: snap.healthy,
                    consecutive_failures: snap.consecutive_failures,
                    last_latency_ms: snap.last_latency.map(|d| d.as_secs_f64() * 1e3),
                    last_error: snap.last_error,
                    checks: snap.checks,
                }
            }),
            in_flight: self.load().in_flight(),
            latency_estimate_ms: self.load().latency_estimate().map(|d| d.as_secs_f64() * 1e3),
        }
    }

    /// Everything about it now: see [`DeploymentStats`].
    pub fn stats(&self) -> DeploymentStats {
        let breaker_detail = self.breaker().map(|breaker| {
            let stats = breaker.stats();
            let config = breaker.config();
            BreakerDetail {
                open_remaining_ms: match stats.state {
                    BreakerState::Open { remaining } => Some(whole_millis(remaining)),
                    _ => None,
                },
                consecutive_failures: stats.consecutive_failures,
                window_calls: stats.window_calls,
                window_failures: stats.window_failures,
                rejected: stats.rejected,
                times_opened: stats
                    .transitions
                    .entering(crate::policy::breaker::StateKind::Open)
                    + stats
                        .transitions
                        .entering(crate::policy::breaker::StateKind::ForcedOpen),
                failure_threshold: config.failure_threshold,
                open_timeout_ms: whole_millis(config.open_timeout),
            }
        });
        let rate_limits = self.limiter().map(|limiter| {
            let RateLimitSnapshot {
                requests,
                input_tokens,
                output_tokens,
                ..
            } = limiter.snapshot();
            let usage = |s: Option<LimitStatus>| {
                s.map(|s| LimitUsage {
                    limit: s.limit,
                    used: s.limit.saturating_sub(s.remaining),
                    remaining: s.remaining,
                    reset_ms: whole_millis(s.reset),
                })
            };
            RateLimitUsage {
                requests_per_second: limiter.config().requests_per_second,
                waiting: limiter.waiting(),
                requests_per_minute: usage(requests),
                input_tokens_per_minute: usage(input_tokens),
                output_tokens_per_minute: usage(output_tokens),
            }
        });
        let latency = self
            .load()
            .latency_quantiles()
            .map_or_else(LatencySummary::default, |q| LatencySummary {
                samples: q.samples,
                p50_ms: Some(millis(q.p50)),
                p99_ms: Some(millis(q.p99)),
                max_ms: Some(millis(q.max)),
            });
        DeploymentStats {
            status: self.status(),
            breaker_detail,
            rate_limits,
            latency,
            pool: self.provider().pool_stats().map(|p| PoolUsage {
                in_flight: p.in_flight,
                max_connections: p.max_connections,
            }),
        }
    }
}

impl Engine {
    /// [`Deployment::stats`] of every deployment, in config order. Calls no upstream.
    pub fn deployment_stats(&self) -> Vec<DeploymentStats> {
        self.deployments().map(|d| d.stats()).collect()
    }
}
