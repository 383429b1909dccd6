//! The gateway's breaker defaults ([`CircuitBreakerConfig::for_deployments`]) against the traffic
//! they were chosen for (issue 17, defect 8): a flaky upstream stays in use, a down one is cut off.
//! Paused tokio time; the "random" faults are a fixed pseudo-random sequence, so every run is the
//! same run.

use std::time::Duration;

use http::StatusCode;
use tokio::time::advance;

use super::*;
use crate::error::Error;
use crate::policy::disposition::{self, Retry};

/// A fixed xorshift sequence: `true` for about `percent` of calls.
struct Faults {
    state: u64,
    percent: u64,
}

impl Faults {
    fn new(percent: u64) -> Self {
        Faults {
            state: 0x9E37_79B9_7F4A_7C15,
            percent,
        }
    }

    fn next(&mut self) -> bool {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % 100 < self.percent
    }
}

/// Runs `calls` calls, one every `gap`, failing as `faults` says; returns how many the breaker
/// admitted.
async fn run(b: &CircuitBreaker, calls: u32, gap: Duration, faults: &mut Faults) -> u32 {
    let mut admitted = 0;
    for _ in 0..calls {
        if let Ok(permit) = b.try_acquire() {
            admitted += 1;
            permit.record(if faults.next() {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
        advance(gap).await;
    }
    admitted
}

#[tokio::test(start_paused = true)]
async fn a_quarter_of_calls_failing_never_opens_the_default_breaker() {
    // 2 000 calls at 20 a second, a quarter failing, as in the probe that found the old defaults
    // serving 359 of 2 000 requests.
    let b = CircuitBreaker::new("flaky", CircuitBreakerConfig::for_deployments());
    let admitted = run(&b, 2_000, Duration::from_millis(50), &mut Faults::new(25)).await;
    assert_eq!(admitted, 2_000, "the breaker turned calls away");
    assert_eq!(b.stats().transitions.total(), 0);
    // The textbook default opens on the same traffic: that is what the new defaults fix.
    let classic = CircuitBreaker::new("classic", CircuitBreakerConfig::default());
    let admitted = run(&classic, 2_000, Duration::from_millis(50), &mut Faults::new(25)).await;
    assert!(admitted < 2_000, "the sequence has runs of five failures");
}

#[tokio::test(start_paused = true)]
async fn a_down_upstream_still_opens_it_at_any_traffic() {
    let config = CircuitBreakerConfig::for_deployments();
    // Busy, two calls in three failing (never a long run): the failure rate opens it as soon as
    // the window holds min_requests calls.
    let busy = CircuitBreaker::new("busy", config);
    let mut calls = 0;
    while busy.is_call_permitted() {
        calls += 1;
        let outcome = if calls % 3 == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        busy.try_acquire().unwrap().record(outcome);
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(calls, config.min_requests);

    // Quiet (one call a minute, never min_requests in a window): ten failures in a row do.
    let quiet = CircuitBreaker::new("quiet", config);
    for _ in 0..config.failure_threshold - 1 {
        quiet.try_acquire().unwrap().record(Outcome::Failure);
        advance(Duration::from_secs(50)).await;
    }
    assert_eq!(quiet.state(), BreakerState::Closed);
    quiet.try_acquire().unwrap().record(Outcome::Failure);
    assert!(matches!(quiet.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn more_than_half_failing_opens_it_and_it_recovers_through_probes() {
    let config = CircuitBreakerConfig::for_deployments();
    let b = CircuitBreaker::new("sick", config);
    let admitted = run(&b, 200, Duration::from_millis(50), &mut Faults::new(70)).await;
    assert!(admitted < 200, "70 % failing must open it");
    // Healthy again: after open_timeout the probes close it.
    advance(config.open_timeout).await;
    for _ in 0..config.success_threshold {
        b.try_acquire().unwrap().record(Outcome::Success);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_5xx_that_blames_the_request_is_not_retried_nor_counted() {
    let error = |error_type: &str| Error::Upstream {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "bad input".into(),
        error_type: Some(error_type.into()),
        code: None,
        param: None,
        retry_after: None,
    };
    let blamed = disposition::classify(&error("invalid_request_error"));
    assert_eq!(blamed.retry, Retry::No);
    assert_eq!(blamed.breaker, Outcome::Ignored);
    let ordinary = disposition::classify(&error("server_error"));
    assert_eq!(ordinary.retry, Retry::Backoff);
    assert_eq!(ordinary.breaker, Outcome::Failure);
}

#[test]
fn deployment_defaults_keep_the_other_settings() {
    let d = CircuitBreakerConfig::for_deployments();
    assert_eq!(d.failure_threshold, 10);
    assert_eq!(d.failure_rate_threshold, Some(0.5));
    assert_eq!(
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_rate_threshold: None,
            ..d
        },
        CircuitBreakerConfig::default()
    );
    assert_eq!(d.validate(), Ok(()));
}
