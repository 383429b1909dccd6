use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::{Instant, advance};

use super::{bucket_config, ms, one, secs, wait};
use crate::policy::limit::{
    Demand, LimitKind, LimitMode, RateLimitConfig, RateLimitError, RateLimited, RateLimiter, Reservation,
};

fn limited(result: Result<Reservation, RateLimitError>) -> RateLimited {
    match result {
        Err(RateLimitError::Limited(limited)) => limited,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn validate_names_the_bad_fields() {
    assert_eq!(RateLimitConfig::default().validate(), Ok(()));
    let bad = RateLimitConfig {
        requests_per_second: Some(-1.0),
        burst: Some(0),
        requests_per_minute: Some(0),
        input_tokens_per_minute: Some(0),
        output_tokens_per_minute: Some(0),
        ..RateLimitConfig::default()
    };
    let error = bad.validate().unwrap_err();
    for field in [
        "requests_per_second",
        "burst",
        "requests_per_minute",
        "input_tokens_per_minute",
        "output_tokens_per_minute",
    ] {
        assert!(error.contains(field), "{field} missing from {error}");
    }
    for rate in [0.0, f64::NAN, f64::INFINITY] {
        let config = RateLimitConfig {
            requests_per_second: Some(rate),
            ..RateLimitConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("requests_per_second"));
    }
}

/// Building a limiter does not fail: validation is the config's (above). A limiter built from an
/// invalid config by hand reads each bad value as the strictest usable one.
#[tokio::test(start_paused = true)]
async fn limiters_from_unvalidated_configs_read_bad_values_strictly() {
    for rate in [0.0, -1.0, f64::NAN] {
        let limiter = RateLimiter::new(RateLimitConfig {
            requests_per_second: Some(rate),
            burst: Some(0),
            requests_per_minute: Some(0),
            ..bucket_config(1.0, 1, LimitMode::FailFast)
        });
        // A zero per-minute limit admits nothing, whatever the bucket says.
        assert!(limiter.try_reserve(one()).is_err());
        let bucket_only = RateLimiter::new(RateLimitConfig {
            requests_per_second: Some(rate),
            burst: Some(0),
            ..bucket_config(1.0, 1, LimitMode::FailFast)
        });
        // One request (a zero burst is 1), then one per day.
        let _ = bucket_only.try_reserve(one()).unwrap();
        assert!(limited(bucket_only.try_reserve(one())).retry_after >= secs(23 * 3600));
    }
    // A bucket without a rate has none to keep: a burst's worth at once, more an instant later.
    let bucket = crate::policy::limit::TokenBucket::new(&RateLimitConfig::default());
    for _ in 0..10 {
        bucket.try_acquire(1).unwrap();
    }
    advance(ms(1)).await;
    bucket.try_acquire(1).unwrap();
}

#[test]
fn defaults() {
    let config = RateLimitConfig::default();
    assert_eq!(config.mode, LimitMode::Wait { max_wait: secs(10) });
    assert_eq!(config.max_queue, 1024);
    assert_eq!(config.burst_or_default(), 10);
    assert!(!config.is_limited());
}

#[tokio::test(start_paused = true)]
async fn unlimited_admits_everything() {
    let limiter = RateLimiter::new(RateLimitConfig::default());
    for _ in 0..10_000 {
        limiter
            .try_reserve(Demand::request(1 << 40, 1 << 40))
            .unwrap()
            .reconcile(1, 1);
    }
    assert!(limiter.snapshot().headers().is_empty());
    let _ = RateLimiter::unlimited().reserve(one()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bucket_and_windows_together() {
    let limiter = RateLimiter::new(RateLimitConfig {
        requests_per_minute: Some(3),
        ..bucket_config(1.0, 2, LimitMode::FailFast)
    });
    let _ = limiter.try_reserve(one()).unwrap();
    let _ = limiter.try_reserve(one()).unwrap();

    // The bucket refuses first; its refusal still reports the windows.
    let refused = limited(limiter.try_reserve(one()));
    assert_eq!(refused.which_limit, LimitKind::RequestsPerSecond);
    assert_eq!(refused.retry_after, secs(1));
    assert_eq!(refused.snapshot.requests.unwrap().remaining, 1);
    let headers = refused.headers();
    assert!(headers.contains(&("x-ratelimit-remaining-requests", "1".to_owned())));
    assert!(headers.contains(&("retry-after", "1".to_owned())));

    advance(secs(1)).await;
    let _ = limiter.try_reserve(one()).unwrap();
    advance(secs(1)).await;
    // Bucket has room, the minute does not.
    let refused = limited(limiter.try_reserve(one()));
    assert_eq!(refused.which_limit, LimitKind::RequestsPerMinute);
    assert_eq!(refused.retry_after, secs(58));
}

#[tokio::test(start_paused = true)]
async fn reserve_waits_in_call_order() {
    let limiter = RateLimiter::new(RateLimitConfig {
        requests_per_minute: Some(100),
        ..bucket_config(10.0, 1, wait(secs(10)))
    });
    let _ = limiter.try_reserve(one()).unwrap();
    let start = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let futures: Vec<_> = (0..5).map(|i| (i, limiter.reserve(one()))).collect();
    let mut tasks = Vec::new();
    for (i, future) in futures.into_iter().rev() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let reservation = future.await.unwrap();
            done.lock().push((i, start.elapsed()));
            reservation.reconcile(0, 0);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected: Vec<_> = (0..5).map(|i| (i, ms(100 * (i + 1)))).collect();
    assert_eq!(*done.lock(), expected);
    assert_eq!(limiter.snapshot().requests.unwrap().remaining, 94);
}

#[tokio::test(start_paused = true)]
async fn window_refusal_after_the_wait_returns_the_bucket_slot() {
    let limiter = RateLimiter::new(RateLimitConfig {
        input_tokens_per_minute: Some(1000),
        ..bucket_config(10.0, 1, wait(secs(10)))
    });
    let _ = limiter.try_reserve(one()).unwrap();
    let start = Instant::now();
    // Fits the window now, waits 100 ms for the bucket...
    let waiting = limiter.reserve(Demand::request(600, 0));
    // ...while a request that counts no requests (so skips the bucket) takes the tokens.
    let _ = limiter
        .try_reserve(Demand {
            requests: 0,
            input_tokens: 600,
            output_tokens: 0,
        })
        .unwrap();
    let refused = limited(waiting.await);
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(refused.which_limit, LimitKind::InputTokensPerMinute);
    assert_eq!(refused.retry_after, secs(60) - ms(100));
    // Its bucket slot came back: another request goes now instead of in 100 ms.
    let _ = limiter.try_reserve(one()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn window_refusal_takes_no_bucket_slot() {
    let limiter = RateLimiter::new(RateLimitConfig {
        requests_per_minute: Some(1),
        ..bucket_config(1.0, 1, wait(secs(10)))
    });
    let _ = limiter.try_reserve(one()).unwrap();
    let start = Instant::now();
    // The bucket would make it wait 1 s, but the minute limit refuses it first, at once.
    assert_eq!(limited(limiter.reserve(one()).await).retry_after, secs(60));
    assert_eq!(Instant::now(), start);
}
