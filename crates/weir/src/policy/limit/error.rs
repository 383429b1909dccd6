//! The errors a limiter produces.

use std::fmt;
use std::time::Duration;

use super::snapshot::{RateLimitSnapshot, format_reset};

/// One of the limits a [`RateLimitConfig`](super::RateLimitConfig) can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The per-second token bucket (`requests_per_second` / `burst`).
    RequestsPerSecond,
    /// `requests_per_minute`.
    RequestsPerMinute,
    /// `input_tokens_per_minute`.
    InputTokensPerMinute,
    /// `output_tokens_per_minute`.
    OutputTokensPerMinute,
}

impl LimitKind {
    /// The config field that sets this limit.
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::RequestsPerSecond => "requests_per_second",
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::InputTokensPerMinute => "input_tokens_per_minute",
            LimitKind::OutputTokensPerMinute => "output_tokens_per_minute",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::RequestsPerSecond => "requests per second",
            LimitKind::RequestsPerMinute => "requests per minute",
            LimitKind::InputTokensPerMinute => "input tokens per minute",
            LimitKind::OutputTokensPerMinute => "output tokens per minute",
        })
    }
}

/// Why a request that could fit some day was refused now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The limit has no room now (and the mode, or the limit kind, does not wait).
    Exhausted,
    /// The bucket has no room and `max_queue` requests are already waiting for it.
    QueueFull,
    /// The bucket would have room only after more than `max_wait`.
    WaitTooLong,
    /// The limit is shared through Redis, Redis is unreachable and `redis.on_error` is
    /// `fail_closed`.
    Unavailable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Exhausted => "limit reached",
            Refusal::QueueFull => "too many requests already waiting",
            Refusal::WaitTooLong => "the wait would exceed max_wait",
            Refusal::Unavailable => "the shared limit's Redis is unreachable",
        })
    }
}

/// A request was refused for now; it would fit after `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit that refused (the one needing the longest wait when several are full).
    pub which_limit: LimitKind,
    /// Why now was not possible.
    pub reason: Refusal,
    /// How long until the request would fit, if nothing else is admitted meanwhile: the value for
    /// a `Retry-After` header.
    pub retry_after: Duration,
    /// The per-minute limits at the moment of refusal, with `retry_after` set; see
    /// [`headers`](Self::headers). Boxed to keep `Result`s small on the admission path.
    pub snapshot: Box<RateLimitSnapshot>,
}

impl RateLimited {
    /// The response headers for this refusal: `retry-after`, `retry-after-ms` and the
    /// `x-ratelimit-*` family (see [`RateLimitSnapshot::headers`]).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        RateLimitSnapshot {
            retry_after: Some(self.retry_after),
            ..(*self.snapshot).clone()
        }
        .headers()
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit exceeded ({}: {}); retry after {}",
            self.which_limit,
            self.reason,
            format_reset(self.retry_after)
        )
    }
}

impl std::error::Error for RateLimited {}

/// A request can never be admitted: it alone needs more than a limit allows.
///
/// Waiting would never help, so this is its own error rather than a [`RateLimited`] with an
/// endless `retry_after`. The request must be made smaller (fewer `max_tokens`, a shorter
/// prompt) or the limit raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandTooLarge {
    /// The limit it exceeds.
    pub which_limit: LimitKind,
    /// What the request asked for (requests or tokens).
    pub demand: u64,
    /// The limit (the burst, for the per-second bucket).
    pub limit: u64,
}

impl fmt::Display for DemandTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DemandTooLarge {
            which_limit,
            demand,
            limit,
        } = self;
        if *which_limit == LimitKind::RequestsPerSecond {
            write!(
                f,
                "request too large: it counts as {demand} requests but the burst of the {which_limit} \
                 limit is {limit}, so it can never be admitted"
            )
        } else {
            write!(
                f,
                "request too large: it needs {demand} against a limit of {limit} {which_limit}, so it \
                 can never be admitted; make it smaller"
            )
        }
    }
}

impl std::error::Error for DemandTooLarge {}

/// A limiter's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Refused for now; fits after `retry_after`. An HTTP 429 with `Retry-After`.
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// Refused for good: larger than a limit. Retrying cannot help.
    #[error(transparent)]
    TooLarge(#[from] DemandTooLarge),
}

impl RateLimitError {
    /// The limit that refused.
    pub fn which_limit(&self) -> LimitKind {
        match self {
            RateLimitError::Limited(limited) => limited.which_limit,
            RateLimitError::TooLarge(large) => large.which_limit,
        }
    }

    /// When the request would fit; `None` if it never will.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited(limited) => Some(limited.retry_after),
            RateLimitError::TooLarge(_) => None,
        }
    }

    /// The response headers for this refusal (none for [`TooLarge`](Self::TooLarge), which no
    /// wait fixes).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RateLimitError::Limited(limited) => limited.headers(),
            RateLimitError::TooLarge(_) => Vec::new(),
        }
    }
}

/// The error of a [`RateLimitService`](super::RateLimitService).
///
/// An enum rather than tower's customary `Box<dyn Error>`, as with the circuit breaker's
/// `BreakerError`: the engine gets the inner service's error back whole, and a refusal with its
/// `retry_after` and headers, through a `match` instead of a downcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitServiceError<E> {
    /// The limiter refused; the inner service was not called.
    Limited(RateLimitError),
    /// The inner service failed.
    Inner(E),
}

impl<E> RateLimitServiceError<E> {
    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            RateLimitServiceError::Inner(error) => Some(error),
            RateLimitServiceError::Limited(_) => None,
        }
    }

    /// The limiter's refusal, if that is what this is.
    pub fn as_limited(&self) -> Option<&RateLimitError> {
        match self {
            RateLimitServiceError::Limited(error) => Some(error),
            RateLimitServiceError::Inner(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RateLimitServiceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitServiceError::Limited(error) => error.fmt(f),
            RateLimitServiceError::Inner(error) => error.fmt(f),
        }
    }
}

/// Transparent: `Display` already shows the wrapped error, so `source` skips it rather than
/// have error reports print it twice.
impl<E: std::error::Error + 'static> std::error::Error for RateLimitServiceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RateLimitServiceError::Limited(error) => error.source(),
            RateLimitServiceError::Inner(error) => error.source(),
        }
    }
}
