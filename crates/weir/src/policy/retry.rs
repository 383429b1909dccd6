//! When and how long to wait before trying an upstream call again.
//!
//! This is the one place retries are decided (the HTTP client's own retries are off), so a client
//! request causes at most `max_retries + 1` upstream calls. Defaults: 3 attempts (2 retries),
//! exponential backoff from 1 s doubling up to 10 s, with *full* jitter (a uniformly random wait in
//! `[0, backoff]`) so that many clients failing together don't retry together, and the upstream's
//! `Retry-After` obeyed when it gives one (up to `max_retry_after`).
//!
//! Only failures that another attempt could fix are retried: 429, 5xx, timeouts and connection
//! errors. A 400 never is. A stream is only retried before its first event reached the client.
//!
//! ## Why a budget, and not only a maximum?
//!
//! `max_retries` bounds one request, not the fleet: when an upstream is down, every request makes
//! all its attempts and the upstream sees three times the traffic exactly when it can least take
//! it. A [`RetryBudget`] (as in tower and Finagle) caps retries at a fraction of first attempts over
//! a sliding window — by default 20 %, plus a small floor so a quiet service can still retry — so
//! a dead upstream gets at most ~1.2× the offered load, however many retries each request may make.
//!
//! ## Deadlines
//!
//! Every attempt has its own timeouts (connect/read/total of its deployment), and the request as a
//! whole has a deadline (`resilience.request_deadline`, default 120 s) that no attempt or backoff
//! wait may cross. A
//! client can shorten it per request with `x-weir-timeout` (seconds or a duration like `30s`), and
//! OpenAI's SDKs' `x-stainless-timeout` header is honoured the same way.

use std::time::Duration;

// The settings are part of the configuration schema; re-exported here, where they are applied.
pub use crate::config::{RetryBudgetConfig, RetryPolicy};
use crate::{
    error::Error,
    policy::disposition::{Disposition, Retry, classify},
};

impl RetryPolicy {
    /// How long to wait before retry number `retry` (0-based) after `error`, or `None` to give up.
    /// `jitter` is a uniform random number in `[0, 1)`.
    pub fn delay(&self, retry: u32, error: &Error, jitter: f64) -> Option<Duration> {
        self.delay_for(retry, &classify(error), jitter)
    }

    /// [`RetryPolicy::delay`] for an error already judged.
    pub fn delay_for(&self, retry: u32, disposition: &Disposition, jitter: f64) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        match disposition.retry {
            Retry::No => return None,
            Retry::After(wait) => return (wait <= self.max_retry_after).then_some(wait),
            Retry::Backoff => {}
        }
        let growth = self
            .factor
            .max(1.0)
            .powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let exp =
            Duration::try_from_secs_f64(self.base_delay.as_secs_f64() * growth).unwrap_or(self.max_delay);
        Some(exp.min(self.max_delay).mul_f64(jitter.clamp(0.0, 1.0)))
    }
}

/// Caps retries at a fraction of first attempts over a sliding window (see the module docs).
///
/// Time is split into ten slots of `window / 10`; a slot older than the window is forgotten. A
/// retry may be taken while `retries < min_per_second × window + ratio × first_attempts`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    slot_len: Duration,
    /// `(slot start, first attempts, retries)`, oldest first.
    slots: parking_lot::Mutex<std::collections::VecDeque<(tokio::time::Instant, u64, u64)>>,
}

impl RetryBudget {
    /// A budget with these settings.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let window = config.window.max(Duration::from_millis(10));
        RetryBudget {
            ratio: config.ratio.max(0.0),
            reserve: config.min_per_second.max(0.0) * window.as_secs_f64(),
            slot_len: window / 10,
            slots: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(11)),
        }
    }

    /// Records a first attempt (earns `ratio` retries).
    pub fn deposit(&self) {
        let mut slots = self.slots.lock();
        self.advance(&mut slots);
        if let Some(slot) = slots.back_mut() {
            slot.1 += 1;
        }
    }

    /// Takes one retry from the budget, or says no.
    pub fn try_withdraw(&self) -> bool {
        let mut slots = self.slots.lock();
        self.advance(&mut slots);
        let (firsts, retries) = slots.iter().fold((0u64, 0u64), |(f, r), s| (f + s.1, r + s.2));
        let allowed = (self.reserve + self.ratio * firsts as f64).floor();
        if (retries as f64) >= allowed {
            return false;
        }
        if let Some(slot) = slots.back_mut() {
            slot.2 += 1;
        }
        true
    }

    /// Drops slots that left the window and makes sure the newest slot covers now.
    fn advance(&self, slots: &mut std::collections::VecDeque<(tokio::time::Instant, u64, u64)>) {
        let now = tokio::time::Instant::now();
        let window = self.slot_len * 10;
        while slots.front().is_some_and(|s| now.duration_since(s.0) >= window) {
            slots.pop_front();
        }
        if slots
            .back()
            .is_none_or(|s| now.duration_since(s.0) >= self.slot_len)
        {
            slots.push_back((now, 0, 0));
        }
    }
}

/// Whether another attempt could succeed where this one failed (see
/// [`disposition`](crate::policy::disposition), which decides it).
pub fn should_retry(error: &Error) -> bool {
    classify(error).retry != Retry::No
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::error::TimeoutPhase;

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
        let pool = Error::PoolExhausted {
            waited: Duration::from_secs(1),
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
        assert_eq!(p.delay(0, &e, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(1, &e, 1.0), Some(Duration::from_secs(2)));
        assert_eq!(p.delay(2, &e, 1.0), None, "the default allows two retries");
        let many = RetryPolicy { max_retries: 10, ..p };
        assert_eq!(many.delay(3, &e, 1.0), Some(Duration::from_secs(8)));
        assert_eq!(many.delay(4, &e, 1.0), Some(Duration::from_secs(10)), "capped");
        assert_eq!(many.delay(9, &e, 1.0), Some(Duration::from_secs(10)));
        assert_eq!(
            many.delay(3, &e, 0.0),
            Some(Duration::ZERO),
            "full jitter reaches zero"
        );
        assert_eq!(many.delay(3, &e, 0.25), Some(Duration::from_secs(2)));
        let triple = RetryPolicy {
            factor: 3.0,
            max_retries: 5,
            ..p
        };
        assert_eq!(triple.delay(2, &e, 1.0), Some(Duration::from_secs(9)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_at_a_fraction_of_first_attempts() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 0.0,
            window: Duration::from_secs(10),
        });
        assert!(!budget.try_withdraw(), "nothing deposited, no reserve");
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 20);
        // After the window passes, old deposits no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!budget.try_withdraw());
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.try_withdraw(), "5 deposits earn one retry");
        assert!(!budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_reserve_allows_a_few_retries_when_quiet() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
        });
        let granted = (0..50).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
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
