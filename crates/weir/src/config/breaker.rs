//! The `circuit_breaker:` section: [`CircuitBreakerConfig`], its defaults and its validation.
//!
//! The breaker itself (the state machine that reads these settings) is `policy::breaker`.

use std::time::Duration;

use super::{
    ConfigDuration, FieldError,
    overlay::{Switch, section},
};

/// Settings of one circuit breaker (one per deployment).
///
/// The defaults suit an LLM upstream: calls are slow and expensive, so a handful of consecutive
/// failures is already strong evidence, and half a minute is long enough for a restarting upstream
/// or a failed-over load balancer to come back without leaving a healthy one idle for long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed breaker. Default 5.
    pub failure_threshold: u32,
    /// Failure rate (failures ÷ counted calls, in `[0, 1)`) over [`window`](Self::window) above which
    /// a closed breaker opens. `None` (the default) turns rate-based opening off, leaving only
    /// [`failure_threshold`](Self::failure_threshold).
    pub failure_rate_threshold: Option<f64>,
    /// Counted calls the window must hold before the failure rate is trusted: two failures out of
    /// three calls say little. Default 20.
    pub min_requests: u32,
    /// How far back the failure rate looks. Default 60 s.
    pub window: Duration,
    /// How long an open breaker rejects calls before letting probes through. Default 30 s.
    pub open_timeout: Duration,
    /// Probes a half-open breaker lets through at the same time. Default 1.
    pub half_open_max_probes: u32,
    /// Successful probes that close a half-open breaker. Default 3.
    pub success_threshold: u32,
    /// Time without a failure after which a closed breaker forgets its consecutive failures, so
    /// that four failures spread over a day do not combine with a fifth into an outage.
    /// Default 60 s.
    pub reset_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_rate_threshold: None,
            min_requests: 20,
            window: Duration::from_secs(60),
            open_timeout: Duration::from_secs(30),
            half_open_max_probes: 1,
            success_threshold: 3,
            reset_timeout: Duration::from_secs(60),
        }
    }
}

impl CircuitBreakerConfig {
    /// The defaults of a gateway deployment's breaker (a `circuit_breaker:` section, or none, in
    /// the config file; the zero-config setup): what every key not written falls back to.
    ///
    /// [`Default`] is the textbook breaker — five consecutive failures open it — and stays what a
    /// library user gets from `CircuitBreakerConfig::default()`. In front of one LLM upstream that
    /// fails fast far too often: with a quarter of calls failing at random (a 5xx, a cut stream),
    /// runs of five come every few thousand calls, and each opens the breaker for 30 s — every
    /// client gets a 503 although three calls in four would succeed. A gateway deployment instead
    /// opens when its *failure rate* is above 50 % over the last minute, once at least 20 calls
    /// were counted (a flaky upstream stays in use, a down one is cut off within 20 calls), or
    /// after 10 consecutive failures, which covers a dead upstream with too little traffic to
    /// reach the volume (at a 25 % failure rate a run of ten is a one-in-a-million event). See
    /// docs/resilience.md for the reasoning.
    pub fn for_deployments() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 10,
            failure_rate_threshold: Some(0.5),
            ..CircuitBreakerConfig::default()
        }
    }

    /// Checks every field, naming the first bad one (`"failure_threshold must be at least 1"`).
    ///
    /// Config loading calls this so that mistakes surface with the field's name; call it on a
    /// config built by hand. The breaker itself (`CircuitBreaker::new`) does not fail: it clamps
    /// an out-of-range value to the nearest usable one (`CircuitBreakerConfig::sanitized`).
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            ("failure_threshold", self.failure_threshold),
            ("min_requests", self.min_requests),
            ("half_open_max_probes", self.half_open_max_probes),
            ("success_threshold", self.success_threshold),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(format!("{field} must be at least 1"));
            }
        }
        if let Some(rate) = self.failure_rate_threshold {
            // A rate must *exceed* the threshold to open the breaker, so 1.0 (or more) could never
            // trip it: that is a disabled check in disguise, which `None` says honestly.
            if !(0.0..1.0).contains(&rate) {
                return Err(format!(
                    "failure_rate_threshold must be at least 0 and below 1 (got {rate})"
                ));
            }
        }
        let non_zero = [
            ("window", self.window),
            ("open_timeout", self.open_timeout),
            ("reset_timeout", self.reset_timeout),
        ];
        for (field, value) in non_zero {
            if value.is_zero() {
                return Err(format!("{field} must be longer than zero"));
            }
        }
        Ok(())
    }
}

section! {
    /// `circuit_breaker:` as written (in a deployment or in `upstream_defaults`).
    pub(super) struct RawBreaker {
        pub(super) enabled: Option<bool>,
        pub(super) failure_threshold: Option<u32>,
        pub(super) failure_rate_threshold: Option<f64>,
        pub(super) min_requests: Option<u32>,
        pub(super) window: Option<ConfigDuration>,
        pub(super) open_timeout: Option<ConfigDuration>,
        pub(super) half_open_max_probes: Option<u32>,
        pub(super) success_threshold: Option<u32>,
        pub(super) reset_timeout: Option<ConfigDuration>,
    }
}

/// Every deployment has a breaker unless it says `enabled: false`.
impl Switch for RawBreaker {
    type Config = CircuitBreakerConfig;

    fn is_on(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

impl TryFrom<RawBreaker> for CircuitBreakerConfig {
    type Error = FieldError;

    /// The section over the deployment defaults ([`CircuitBreakerConfig::for_deployments`]); a
    /// bad value is reported on the section, with the field's
    /// name in the message (`failure_threshold must be at least 1`).
    fn try_from(raw: RawBreaker) -> Result<Self, FieldError> {
        let d = CircuitBreakerConfig::for_deployments();
        let config = CircuitBreakerConfig {
            failure_threshold: raw.failure_threshold.unwrap_or(d.failure_threshold),
            failure_rate_threshold: raw.failure_rate_threshold.or(d.failure_rate_threshold),
            min_requests: raw.min_requests.unwrap_or(d.min_requests),
            window: raw.window.map_or(d.window, |v| v.0),
            open_timeout: raw.open_timeout.map_or(d.open_timeout, |v| v.0),
            half_open_max_probes: raw.half_open_max_probes.unwrap_or(d.half_open_max_probes),
            success_threshold: raw.success_threshold.unwrap_or(d.success_threshold),
            reset_timeout: raw.reset_timeout.map_or(d.reset_timeout, |v| v.0),
        };
        config.validate().map_err(FieldError::section)?;
        Ok(config)
    }
}
