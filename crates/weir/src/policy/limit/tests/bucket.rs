use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::{Instant, advance};

use super::{bucket_config, ms, secs, wait};
use crate::policy::limit::{
    DemandTooLarge, LimitKind, LimitMode, RateLimitConfig, RateLimitError, Refusal, TokenBucket,
};

fn limited(result: Result<(), RateLimitError>) -> crate::policy::limit::RateLimited {
    match result {
        Err(RateLimitError::Limited(limited)) => limited,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn burst_then_refill_rate() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 5, LimitMode::FailFast));
    for _ in 0..5 {
        bucket.try_acquire(1).unwrap();
    }
    let refused = limited(bucket.try_acquire(1));
    assert_eq!(refused.retry_after, ms(100));

    // One request's worth refills every 100 ms.
    advance(ms(100)).await;
    bucket.try_acquire(1).unwrap();
    limited(bucket.try_acquire(1));
    advance(ms(300)).await;
    for _ in 0..3 {
        bucket.try_acquire(1).unwrap();
    }
    limited(bucket.try_acquire(1));

    // A long quiet spell refills only up to the burst.
    advance(secs(60)).await;
    for _ in 0..5 {
        bucket.try_acquire(1).unwrap();
    }
    limited(bucket.try_acquire(1));
}

#[tokio::test(start_paused = true)]
async fn fail_fast_retry_after_is_exact() {
    let bucket = TokenBucket::new(&bucket_config(4.0, 1, LimitMode::FailFast));
    bucket.try_acquire(1).unwrap();

    let refused = limited(bucket.try_acquire(1));
    assert_eq!(refused.which_limit, LimitKind::RequestsPerSecond);
    assert_eq!(refused.reason, Refusal::Exhausted);
    assert_eq!(refused.retry_after, ms(250));

    advance(ms(100)).await;
    assert_eq!(limited(bucket.try_acquire(1)).retry_after, ms(150));
    advance(ms(149)).await;
    assert_eq!(limited(bucket.try_acquire(1)).retry_after, ms(1));
    advance(ms(1)).await;
    bucket.try_acquire(1).unwrap();

    // FailFast also refuses through `acquire`, without waiting.
    let start = Instant::now();
    assert_eq!(limited(bucket.acquire(1).await).retry_after, ms(250));
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_waits_the_right_time() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 1, wait(secs(1))));
    let start = Instant::now();
    bucket.acquire(1).await.unwrap();
    assert_eq!(start.elapsed(), ms(0));
    bucket.acquire(1).await.unwrap();
    assert_eq!(start.elapsed(), ms(100));
    bucket.acquire(1).await.unwrap();
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(bucket.waiting(), 0);

    // `try_acquire` never waits, whatever the mode.
    assert_eq!(limited(bucket.try_acquire(1)).retry_after, ms(100));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 5, wait(secs(10))));
    for _ in 0..5 {
        bucket.try_acquire(1).unwrap();
    }
    let start = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));

    // Arrival is the call to `acquire`. A big request first, then small ones: with a bucket that
    // let whoever fits go first, "b" (1 token, available after 100 ms) would overtake "a" (5).
    let arrivals = [("a", 5), ("b", 1), ("c", 2), ("d", 1)];
    let mut futures: Vec<_> = arrivals
        .iter()
        .map(|&(name, cost)| (name, bucket.acquire(cost)))
        .collect();
    assert_eq!(bucket.waiting(), 4);
    // Spawned in reverse: the order comes from the arrivals, not from scheduling.
    let mut tasks = Vec::new();
    while let Some((name, future)) = futures.pop() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            future.await.unwrap();
            done.lock().push((name, start.elapsed()));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        *done.lock(),
        vec![("a", ms(500)), ("b", ms(600)), ("c", ms(800)), ("d", ms(900))]
    );
    assert_eq!(bucket.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn full_queue_fails_fast() {
    let config = RateLimitConfig {
        max_queue: 2,
        ..bucket_config(10.0, 1, wait(secs(10)))
    };
    let bucket = TokenBucket::new(&config);
    bucket.try_acquire(1).unwrap();
    let first = bucket.acquire(1);
    let second = bucket.acquire(1);
    assert_eq!(bucket.waiting(), 2);

    let start = Instant::now();
    let refused = limited(bucket.acquire(1).await);
    assert_eq!(refused.reason, Refusal::QueueFull);
    assert_eq!(refused.retry_after, ms(300));
    assert_eq!(Instant::now(), start, "a full queue refuses without waiting");

    // A place frees when a waiter leaves the queue.
    drop(first);
    assert_eq!(bucket.waiting(), 1);
    let third = bucket.acquire(1);
    assert_eq!(bucket.waiting(), 2);
    second.await.unwrap();
    third.await.unwrap();
    // "first" left but "second" was already behind it, so its slot stayed spent: the rate holds.
    assert_eq!(start.elapsed(), ms(300));
}

#[tokio::test(start_paused = true)]
async fn wait_longer_than_max_wait_fails_at_once() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 1, wait(ms(150))));
    bucket.try_acquire(1).unwrap();
    let first = bucket.acquire(1); // 100 ms: within max_wait

    let start = Instant::now();
    let refused = limited(bucket.acquire(1).await);
    assert_eq!(refused.reason, Refusal::WaitTooLong);
    assert_eq!(refused.retry_after, ms(200));
    assert_eq!(Instant::now(), start);

    first.await.unwrap();
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_leaves_last_gives_its_slot_back() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 1, wait(secs(1))));
    bucket.try_acquire(1).unwrap();
    let start = Instant::now();
    drop(bucket.acquire(1));
    assert_eq!(bucket.waiting(), 0);
    bucket.acquire(1).await.unwrap();
    assert_eq!(
        start.elapsed(),
        ms(100),
        "the abandoned slot was reused, not skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn more_than_the_burst_is_too_large() {
    let bucket = TokenBucket::new(&bucket_config(10.0, 2, wait(secs(1))));
    let error = bucket.acquire(3).await.unwrap_err();
    assert_eq!(
        error,
        RateLimitError::TooLarge(DemandTooLarge {
            which_limit: LimitKind::RequestsPerSecond,
            demand: 3,
            limit: 2,
        })
    );
    assert_eq!(error.retry_after(), None);
    assert!(error.to_string().contains("can never be admitted"), "{error}");
    // A zero-cost acquire is free.
    bucket.try_acquire(2).unwrap();
    bucket.try_acquire(0).unwrap();
}

#[tokio::test(start_paused = true)]
async fn tiny_and_huge_rates_are_clamped_not_panicking() {
    let slow = TokenBucket::new(&bucket_config(1e-300, 1, LimitMode::FailFast));
    slow.try_acquire(1).unwrap();
    let retry = limited(slow.try_acquire(1)).retry_after;
    assert_eq!(retry, secs(24 * 60 * 60));
    let fast = TokenBucket::new(&bucket_config(1e300, u32::MAX, LimitMode::FailFast));
    fast.try_acquire(1_000_000).unwrap();
}
