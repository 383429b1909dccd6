//! Shared limits against a real `redis-server` (started on a free loopback port).
//!
//! These run on the real clock, not tokio's paused one: the limits are decided on Redis's clock
//! (`TIME`), which a test cannot pause, and paused tokio time would fire every Redis timeout at
//! once while a reply is on the wire. Expiry is exercised with a window of a fraction of a second
//! (`Scope::with_window`) instead of waiting minutes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proptest::prelude::*;

use super::one;
use crate::config::{RedisConfig, RedisOnError};
use crate::policy::limit::shared::{Decision, Scope};
use crate::policy::limit::{
    Demand, LimitKind, LimitMode, RateLimitConfig, RateLimitError, RateLimiter, RedisLimits, Refusal,
};

// The integration tests' helper, whose items are `pub` for them.
#[allow(unreachable_pub)]
#[path = "../../../../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::{RedisServer, unique_prefix};

fn redis(url: &str, prefix: &str, on_error: RedisOnError) -> RedisLimits {
    RedisLimits::new(RedisConfig {
        key_prefix: prefix.to_owned(),
        on_error,
        timeout: Duration::from_millis(200),
        max_backoff: Duration::from_millis(400),
        ..RedisConfig::new(url)
    })
}

fn rpm(limit: u64) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: Some(limit),
        mode: LimitMode::FailFast,
        ..RateLimitConfig::default()
    }
}

#[tokio::test]
async fn instances_sharing_redis_admit_exactly_the_limit_all_or_nothing() {
    let server = RedisServer::start().await;
    let prefix = unique_prefix("shared-exact");
    // Three "instances": three connections, three limiters with the same name.
    let limiters: Vec<RateLimiter> = (0..3)
        .map(|_| {
            let redis = redis(&server.url, &prefix, RedisOnError::FailClosed);
            RateLimiter::shared(rpm(10), &redis, "dep:a")
        })
        .collect();
    let calls = (0..30).map(|i| limiters[i % 3].reserve(one()));
    let results = futures::future::join_all(calls).await;
    let admitted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(admitted.len(), 10);
    for result in &results {
        if let Err(RateLimitError::Limited(limited)) = result {
            assert_eq!(limited.which_limit, LimitKind::RequestsPerMinute);
            assert_eq!(limited.reason, Refusal::Exhausted);
            assert!(
                limited.retry_after > Duration::from_secs(55)
                    && limited.retry_after <= Duration::from_secs(60)
            );
            assert_eq!(limited.snapshot.requests.unwrap().remaining, 0);
        }
    }
    // The last admitted saw the window full.
    let remaining: Vec<u64> = admitted
        .iter()
        .map(|r| r.snapshot().requests.unwrap().remaining)
        .collect();
    assert!(remaining.contains(&0) && remaining.contains(&9), "{remaining:?}");

    // A refund (the call never reached the upstream) frees one place, for any instance.
    let mut results = results;
    let refunded = results
        .remove(results.iter().position(Result::is_ok).unwrap())
        .unwrap();
    refunded
        .shared_charge()
        .unwrap()
        .adjust_now([0; 3])
        .await
        .unwrap();
    assert!(limiters[2].reserve(one()).await.is_ok());
    assert!(limiters[1].reserve(one()).await.is_err());
}

#[tokio::test]
async fn token_reservations_are_reconciled_in_place() {
    let server = RedisServer::start().await;
    let redis = redis(
        &server.url,
        &unique_prefix("shared-tokens"),
        RedisOnError::FailClosed,
    );
    let config = RateLimitConfig {
        input_tokens_per_minute: Some(1_000),
        output_tokens_per_minute: Some(500),
        ..rpm(100)
    };
    let a = RateLimiter::shared(config.clone(), &redis, "client:x");
    let b = RateLimiter::shared(config, &redis, "client:x");
    let first = a.reserve(Demand::request(600, 400)).await.unwrap();
    assert_eq!(first.snapshot().input_tokens.unwrap().remaining, 400);
    let refused = b.reserve(Demand::request(600, 10)).await.unwrap_err();
    assert_eq!(refused.which_limit(), LimitKind::InputTokensPerMinute);
    // All or nothing: the refused request took no requests and no output tokens.
    let probe = b.reserve(Demand::request(0, 100)).await.unwrap();
    assert_eq!(probe.snapshot().requests.unwrap().remaining, 98);
    assert_eq!(probe.snapshot().output_tokens.unwrap().remaining, 0);
    // The real usage was smaller: what is left over is free at once.
    first
        .shared_charge()
        .unwrap()
        .adjust_now([1, 100, 50])
        .await
        .unwrap();
    let second = b.reserve(Demand::request(600, 10)).await.unwrap();
    assert_eq!(second.snapshot().input_tokens.unwrap().remaining, 300);
    // Too large for the limit on its own: refused without a retry_after that would never come.
    assert!(matches!(
        a.reserve(Demand::request(1_001, 0)).await,
        Err(RateLimitError::TooLarge(_))
    ));
}

#[tokio::test]
async fn the_bucket_books_later_slots_in_wait_mode_and_refuses_in_fail_fast() {
    let server = RedisServer::start().await;
    let redis = redis(
        &server.url,
        &unique_prefix("shared-bucket"),
        RedisOnError::FailClosed,
    );
    let bucket = |mode| RateLimitConfig {
        requests_per_second: Some(10.0),
        burst: Some(2),
        mode,
        ..RateLimitConfig::default()
    };
    let waiting = Scope::new(
        &redis,
        "dep:w",
        &bucket(LimitMode::Wait {
            max_wait: Duration::from_secs(1),
        }),
    );
    let mut waits = Vec::new();
    for _ in 0..5 {
        match waiting.reserve(one(), true).await.unwrap() {
            Decision::Admitted(_, wait) => waits.push(wait),
            Decision::Refused(e) => panic!("refused: {e}"),
        }
    }
    // Two at once (the burst), then one every 100 ms of Redis's clock.
    assert!(waits[0].is_zero() && waits[1].is_zero(), "{waits:?}");
    for pair in waits[2..].windows(2) {
        assert!(pair[1] > pair[0], "{waits:?}");
    }
    assert!(
        waits[4] > Duration::from_millis(250) && waits[4] <= Duration::from_millis(300),
        "{waits:?}"
    );

    let fast = Scope::new(&redis, "dep:f", &bucket(LimitMode::FailFast));
    for _ in 0..2 {
        assert!(matches!(fast.reserve(one(), true).await.unwrap(), Decision::Admitted(_, w) if w.is_zero()));
    }
    match fast.reserve(one(), true).await.unwrap() {
        Decision::Refused(RateLimitError::Limited(limited)) => {
            assert_eq!(limited.which_limit, LimitKind::RequestsPerSecond);
            assert!(
                limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_millis(100)
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A port nothing listens on: every call fails at once (connection refused).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn on_error_decides_while_redis_is_unreachable() {
    let url = dead_url();
    let open = redis(&url, "p", RedisOnError::FailOpen);
    let limiter = RateLimiter::shared(rpm(1), &open, "dep:a");
    for _ in 0..5 {
        assert!(limiter.reserve(one()).await.is_ok());
    }
    assert_eq!(open.fallbacks(), 5);
    assert!(!open.is_up() && open.errors() >= 1);

    let closed = redis(&url, "p", RedisOnError::FailClosed);
    let limiter = RateLimiter::shared(rpm(100), &closed, "dep:a");
    match limiter.reserve(one()).await {
        Err(RateLimitError::Limited(limited)) => {
            assert_eq!(limited.reason, Refusal::Unavailable);
            assert!(limited.retry_after >= Duration::from_secs(1));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Local: each of 2 instances enforces half of the limit in process.
    let local = RedisLimits::new(RedisConfig {
        instances: 2,
        ..RedisConfig::new(url.as_str())
    });
    let limiter = RateLimiter::shared(rpm(10), &local, "dep:a");
    let admitted = futures::future::join_all((0..10).map(|_| limiter.reserve(one())))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(admitted, 5);
}

#[tokio::test]
async fn after_redis_restarts_shared_limits_resume_and_the_recovery_is_counted() {
    let mut server = RedisServer::start().await;
    let redis = redis(
        &server.url,
        &unique_prefix("shared-restart"),
        RedisOnError::FailOpen,
    );
    let limiter = RateLimiter::shared(rpm(3), &redis, "dep:a");
    for _ in 0..3 {
        assert!(limiter.reserve(one()).await.is_ok());
    }
    assert!(limiter.reserve(one()).await.is_err());
    server.kill().await;
    // Down: fail_open admits, bounded by the timeout (no hang).
    let down = tokio::time::timeout(Duration::from_secs(2), limiter.reserve(one())).await;
    assert!(down.unwrap().is_ok());
    assert!(!redis.is_up());
    server.restart().await;
    // The gate reopens after its backoff (at most max_backoff); then Redis decides again.
    let mut resumed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = limiter.reserve(one()).await;
        if redis.is_up() {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "shared limits did not resume");
    assert_eq!(redis.recoveries(), 1);
    // The restarted Redis is empty: the limit counts from zero again, and holds.
    let after = futures::future::join_all((0..6).map(|_| limiter.reserve(one()))).await;
    assert!(after.iter().filter(|r| r.is_ok()).count() <= 3);
    assert!(after.iter().any(Result::is_err));
}

/// One step of several clients sharing one limiter.
#[derive(Debug, Clone)]
enum Op {
    Reserve {
        client: usize,
        demand: [u64; 3],
    },
    /// Reconcile the oldest held reservation with this share (percent) of its tokens.
    Reconcile {
        pct: u64,
    },
    /// Refund the oldest held reservation.
    Refund,
    /// Let Redis's clock run (ms).
    Sleep(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..3, 0u64..3, 0u64..400, 0u64..400)
            .prop_map(|(client, r, i, o)| Op::Reserve { client, demand: [r, i, o] }),
        2 => (0u64..=100).prop_map(|pct| Op::Reconcile { pct }),
        1 => Just(Op::Refund),
        2 => prop_oneof![3 => 0u64..5, 1 => 20u64..120].prop_map(Op::Sleep),
    ]
}

const PROP_WINDOW: Duration = Duration::from_millis(150);

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For any interleaving of reserve, reconcile, refund and expiry from several clients, no
    /// window of Redis's clock admits more than the limits (reconciles stay within estimates, as
    /// the `max_tokens` bound makes them for output).
    #[test]
    fn no_window_of_redis_clock_admits_more_than_the_limit(
        limits in (1u64..8, 200u64..1_500, 200u64..1_500),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let server = RedisServer::start().await;
            let prefix = unique_prefix("shared-prop");
            let config = RateLimitConfig {
                requests_per_minute: Some(limits.0),
                input_tokens_per_minute: Some(limits.1),
                output_tokens_per_minute: Some(limits.2),
                ..RateLimitConfig::default()
            };
            let limits = [limits.0, limits.1, limits.2];
            let clients: Vec<Scope> = (0..3)
                .map(|_| {
                    Scope::new(&redis(&server.url, &prefix, RedisOnError::FailClosed), "dep:p", &config)
                        .with_window(PROP_WINDOW)
                })
                .collect();
            // Admission time (µs of Redis's clock) and final amounts of every admission.
            let mut admitted: Vec<(u64, [u64; 3])> = Vec::new();
            let mut held = std::collections::VecDeque::new();
            for op in ops {
                match op {
                    Op::Reserve { client, demand } => {
                        let demand = Demand { requests: demand[0], input_tokens: demand[1], output_tokens: demand[2] };
                        if clients[client].too_large(demand).is_some() {
                            continue;
                        }
                        match clients[client].reserve(demand, false).await.unwrap() {
                            Decision::Admitted(reservation, wait) => {
                                let charge = reservation.shared_charge().unwrap();
                                let at = charge.reserved_at_us + wait.as_micros() as u64;
                                admitted.push((at, charge.amounts));
                                held.push_back((admitted.len() - 1, reservation));
                            }
                            Decision::Refused(RateLimitError::Limited(limited)) => {
                                prop_assert!(limited.retry_after <= PROP_WINDOW);
                            }
                            Decision::Refused(other) => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                    Op::Reconcile { pct } => {
                        if let Some((index, reservation)) = held.pop_front() {
                            let charge = reservation.shared_charge().unwrap();
                            let [r, i, o] = charge.amounts;
                            let actual = [r, i * pct / 100, o * pct / 100];
                            charge.adjust_now(actual).await.unwrap();
                            admitted[index].1 = actual;
                        }
                    }
                    Op::Refund => {
                        if let Some((index, reservation)) = held.pop_front() {
                            reservation.shared_charge().unwrap().adjust_now([0; 3]).await.unwrap();
                            admitted[index].1 = [0; 3];
                        }
                    }
                    Op::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            let window = PROP_WINDOW.as_micros() as u64;
            admitted.sort_by_key(|(at, _)| *at);
            for (k, &(start, _)) in admitted.iter().enumerate() {
                let mut sums = [0u64; 3];
                for &(at, amounts) in admitted[k..].iter().take_while(|(at, _)| *at < start + window) {
                    let _ = at;
                    for r in 0..3 {
                        sums[r] += amounts[r];
                    }
                }
                for r in 0..3 {
                    prop_assert!(sums[r] <= limits[r], "window from {start}: resource {r}: {} > {}", sums[r], limits[r]);
                }
            }
            Ok(())
        })?;
    }
}
