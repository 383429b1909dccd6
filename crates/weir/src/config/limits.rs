//! The `rate_limits:` sections (per deployment, and `server.client_rate_limits`):
//! [`RateLimitConfig`], its defaults and its validation. The limiters that enforce it are
//! `policy::limit`.

use std::time::Duration;

use serde::Deserialize;

use super::{
    ConfigDuration, FieldError,
    overlay::{Switch, section},
};

/// Burst of the per-second bucket when `burst` is not set.
pub const DEFAULT_BURST: u32 = 10;
/// Longest wait for the per-second bucket in the default [`LimitMode::Wait`].
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
/// Most requests that may wait for the per-second bucket at once, by default.
pub const DEFAULT_MAX_QUEUE: usize = 1024;

/// What the per-second bucket does with a request that finds it empty.
///
/// Only the bucket waits: the per-minute windows always refuse at once (the module docs of
/// `policy::limit` say why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    /// Wait, in arrival order, until the bucket has room; refuse at once if that would take
    /// longer than `max_wait` or if `max_queue` requests are already waiting.
    Wait {
        /// The longest a request may wait for the bucket.
        max_wait: Duration,
    },
    /// Refuse at once when the bucket is empty.
    FailFast,
}

impl Default for LimitMode {
    /// `Wait` for up to 10 s: the bucket's waits are normally fractions of a second (it smooths
    /// bursts into the configured rate), so queueing is kinder than a 429 the client would retry
    /// anyway. A wait beyond 10 s means the deployment is badly overloaded, and a prompt refusal
    /// (which the router or client can take elsewhere) beats holding the connection.
    fn default() -> Self {
        LimitMode::Wait {
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// Rate limits of one deployment (one upstream API key) or of one client key.
///
/// Every limit is optional; with none set the limiter admits everything and costs a few atomic
/// operations. Build it with struct-update syntax from [`Default`] so new fields don't break
/// callers.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Steady request rate of the per-second token bucket; `None` disables the bucket.
    pub requests_per_second: Option<f64>,
    /// How many requests the bucket admits at once after a quiet spell (default 10).
    pub burst: Option<u32>,
    /// What the bucket does when empty (default: wait up to 10 s).
    pub mode: LimitMode,
    /// How many requests may wait for the bucket at once; more are refused at once (default
    /// 1024), so a stampede costs bounded memory.
    pub max_queue: usize,
    /// Requests admitted in any 60 s.
    pub requests_per_minute: Option<u64>,
    /// Prompt (input) tokens admitted in any 60 s.
    pub input_tokens_per_minute: Option<u64>,
    /// Completion (output) tokens admitted in any 60 s.
    pub output_tokens_per_minute: Option<u64>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: None,
            burst: None,
            mode: LimitMode::default(),
            max_queue: DEFAULT_MAX_QUEUE,
            requests_per_minute: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks every field; the error names each bad field (several are separated by `; `).
    ///
    /// Config loading calls this; call it on a config built by hand. The limiters themselves
    /// (`RateLimiter::new` and its parts) never fail: they read an invalid value as the strictest
    /// usable one (see their docs).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(rate) = self.requests_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            problems.push(format!(
                "requests_per_second must be a positive number, got {rate}"
            ));
        }
        if self.burst == Some(0) {
            problems.push("burst must be at least 1".to_owned());
        }
        for (field, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("input_tokens_per_minute", self.input_tokens_per_minute),
            ("output_tokens_per_minute", self.output_tokens_per_minute),
        ] {
            if value == Some(0) {
                problems.push(format!("{field} must be at least 1"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The bucket's burst, with the default applied.
    pub fn burst_or_default(&self) -> u32 {
        self.burst.unwrap_or(DEFAULT_BURST)
    }

    /// Whether any limit is set (a config without one admits everything).
    pub fn is_limited(&self) -> bool {
        self.requests_per_second.is_some() || self.has_window_limits()
    }

    /// Whether any of the per-minute limits is set.
    pub fn has_window_limits(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.input_tokens_per_minute.is_some()
            || self.output_tokens_per_minute.is_some()
    }
}

section! {
    /// `rate_limits:` as written (a deployment's, `upstream_defaults`' or
    /// `server.client_rate_limits`).
    pub(super) struct RawRateLimits {
        pub(super) requests_per_second: Option<f64>,
        pub(super) burst: Option<u32>,
        pub(super) mode: Option<RawLimitMode>,
        pub(super) max_wait: Option<ConfigDuration>,
        pub(super) max_queue: Option<usize>,
        pub(super) requests_per_minute: Option<u64>,
        pub(super) input_tokens_per_minute: Option<u64>,
        pub(super) output_tokens_per_minute: Option<u64>,
    }
}

/// `mode:` as written; `max_wait` is a separate key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawLimitMode {
    Wait,
    FailFast,
}

/// A deployment's `rate_limits`: one section, or (with `api_keys`) one per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRateLimitsSpec {
    One(RawRateLimits),
    PerKey(Vec<RawRateLimits>),
}

impl Default for RawRateLimitsSpec {
    fn default() -> Self {
        RawRateLimitsSpec::One(RawRateLimits::default())
    }
}

/// No limit set, no limiter: `mode`, `burst` and the like alone limit nothing, so they are not
/// checked either.
impl Switch for RawRateLimits {
    type Config = RateLimitConfig;

    fn is_on(&self) -> bool {
        self.requests_per_second.is_some()
            || self.requests_per_minute.is_some()
            || self.input_tokens_per_minute.is_some()
            || self.output_tokens_per_minute.is_some()
    }
}

impl TryFrom<RawRateLimits> for RateLimitConfig {
    type Error = FieldError;

    /// The section over the defaults; bad values are reported on the section, every bad field
    /// named in the message.
    fn try_from(raw: RawRateLimits) -> Result<Self, FieldError> {
        let d = RateLimitConfig::default();
        let mode = match raw.mode {
            Some(RawLimitMode::FailFast) => LimitMode::FailFast,
            Some(RawLimitMode::Wait) | None => match raw.max_wait {
                Some(max_wait) => LimitMode::Wait { max_wait: max_wait.0 },
                None => d.mode,
            },
        };
        let config = RateLimitConfig {
            requests_per_second: raw.requests_per_second,
            burst: raw.burst,
            mode,
            max_queue: raw.max_queue.unwrap_or(d.max_queue),
            requests_per_minute: raw.requests_per_minute,
            input_tokens_per_minute: raw.input_tokens_per_minute,
            output_tokens_per_minute: raw.output_tokens_per_minute,
        };
        config.validate().map_err(FieldError::section)?;
        Ok(config)
    }
}
