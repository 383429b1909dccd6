//! When and how long to wait before trying an upstream call again.
//!
//! This is the one place retries are decided (the HTTP client's own retries are off), so a client
//! request causes at most `max_retries + 1` upstream calls. The defaults follow OpenAI's SDKs,
//! which users' expectations are set by: 2 retries, exponential backoff from 0.5 s capped at 8 s,
//! with *full* jitter (a uniformly random wait in `[0, backoff]`) so that many clients failing
//! together don't retry together, and the upstream's `Retry-After` obeyed when it gives one.
//!
//! Only failures that another attempt could fix are retried: 429, 5xx, timeouts and connection
//! errors. A 400 never is. A stream is only retried before its first event reached the client.

use std::time::Duration;

use crate::error::{Error, ErrorKind, TimeoutPhase};

/// Retry settings of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff, doubled each retry.
    pub base_delay: Duration,
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
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `retry` (0-based) after `error`, or `None` to give up.
    /// `jitter` is a uniform random number in `[0, 1)`.
    pub fn delay(&self, retry: u32, error: &Error, jitter: f64) -> Option<Duration> {
        if retry >= self.max_retries || !should_retry(error) {
            return None;
        }
        if let Error::Upstream {
            retry_after: Some(wait),
            ..
        } = error
        {
            return (*wait <= self.max_retry_after).then_some(*wait);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX));
        Some(exp.min(self.max_delay).mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

/// Whether another attempt could succeed where this one failed.
pub fn should_retry(error: &Error) -> bool {
    // Waiting for a pooled connection already took the connect timeout; retrying would only
    // queue more work behind a saturated pool.
    if matches!(
        error,
        Error::Timeout {
            phase: TimeoutPhase::PoolWait,
            ..
        }
    ) {
        return false;
    }
    matches!(
        error.kind(),
        ErrorKind::UpstreamRateLimited
            | ErrorKind::UpstreamServerError
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::Transport
    )
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn upstream(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Upstream {
            status: StatusCode::from_u16(status).unwrap(),
            message: "x".into(),
            error_type: None,
            code: None,
            param: None,
            retry_after,
        }
    }

    #[test]
    fn only_retryable_failures_are_retried() {
        let p = RetryPolicy::default();
        assert!(p.delay(0, &upstream(400, None), 0.5).is_none());
        assert!(p.delay(0, &upstream(401, None), 0.5).is_none());
        assert!(p.delay(0, &upstream(404, None), 0.5).is_none());
        assert!(p.delay(0, &upstream(500, None), 0.5).is_some());
        assert!(p.delay(0, &upstream(429, None), 0.5).is_some());
        assert!(
            p.delay(
                0,
                &Error::Connect {
                    message: "refused".into()
                },
                0.5
            )
            .is_some()
        );
        let read = Error::Timeout {
            phase: TimeoutPhase::Read,
            after: Duration::from_secs(1),
        };
        assert!(p.delay(0, &read, 0.5).is_some());
        let pool = Error::Timeout {
            phase: TimeoutPhase::PoolWait,
            after: Duration::from_secs(1),
        };
        assert!(p.delay(0, &pool, 0.5).is_none());
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let e = upstream(503, None);
        assert!(p.delay(0, &e, 0.5).is_some());
        assert!(p.delay(1, &e, 0.5).is_some());
        assert!(p.delay(2, &e, 0.5).is_none());
        assert!(RetryPolicy { max_retries: 0, ..p }.delay(0, &e, 0.5).is_none());
    }

    #[test]
    fn backoff_is_exponential_capped_and_fully_jittered() {
        let p = RetryPolicy::default();
        let e = upstream(500, None);
        assert_eq!(p.delay(0, &e, 1.0), Some(Duration::from_millis(500)));
        assert_eq!(p.delay(1, &e, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(2, &e, 1.0), None, "the default allows two retries");
        let many = RetryPolicy { max_retries: 10, ..p };
        assert_eq!(many.delay(1, &e, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(many.delay(5, &e, 1.0), Some(Duration::from_secs(8)), "capped");
        assert_eq!(many.delay(9, &e, 1.0), Some(Duration::from_secs(8)));
        assert_eq!(
            many.delay(3, &e, 0.0),
            Some(Duration::ZERO),
            "full jitter reaches zero"
        );
        assert_eq!(many.delay(3, &e, 0.25), Some(Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_is_obeyed_up_to_a_maximum() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, &upstream(429, Some(Duration::from_secs(3))), 0.1),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            p.delay(0, &upstream(429, Some(Duration::from_secs(61))), 0.1),
            None
        );
    }
}
