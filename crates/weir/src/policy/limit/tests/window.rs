use tokio::time::{Instant, advance};

use super::{ms, one, secs};
use crate::policy::limit::{
    Demand, DemandTooLarge, LimitKind, RateLimitConfig, RateLimitError, RateLimited, RateLimiter, Refusal,
    Reservation, SlidingWindow,
};

fn window(requests: Option<u64>, input: Option<u64>, output: Option<u64>) -> SlidingWindow {
    SlidingWindow::new(&RateLimitConfig {
        requests_per_minute: requests,
        input_tokens_per_minute: input,
        output_tokens_per_minute: output,
        ..RateLimitConfig::default()
    })
}

fn limited(result: Result<Reservation, RateLimitError>) -> RateLimited {
    match result {
        Err(RateLimitError::Limited(limited)) => limited,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn tokens(input: u64, output: u64) -> Demand {
    Demand::request(input, output)
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_then_refuses_until_expiry() {
    let limits = window(Some(3), None, None);
    let _ = limits.reserve(one()).unwrap(); // t = 0
    advance(secs(10)).await;
    let _ = limits.reserve(one()).unwrap(); // t = 10
    advance(secs(10)).await;
    let _ = limits.reserve(one()).unwrap(); // t = 20
    advance(secs(10)).await;

    // t = 30: full until the t = 0 admission expires at t = 60.
    let refused = limited(limits.reserve(one()));
    assert_eq!(refused.which_limit, LimitKind::RequestsPerMinute);
    assert_eq!(refused.reason, Refusal::Exhausted);
    assert_eq!(refused.retry_after, secs(30));
    assert_eq!(refused.snapshot.retry_after, Some(secs(30)));

    advance(secs(30) - ms(1)).await;
    assert_eq!(limited(limits.reserve(one())).retry_after, ms(1));
    advance(ms(1)).await;
    let _ = limits.reserve(one()).unwrap(); // t = 60
    // Next: when the t = 10 admission expires.
    assert_eq!(limited(limits.reserve(one())).retry_after, secs(10));
}

#[tokio::test(start_paused = true)]
async fn no_double_admission_at_a_minute_boundary() {
    let limits = window(Some(10), None, None);
    let start = Instant::now();
    advance(secs(59)).await;
    for _ in 0..10 {
        let _ = limits.reserve(one()).unwrap();
    }
    // A fixed window would reset at t = 60 and admit ten more within two seconds.
    advance(secs(1)).await;
    assert_eq!(limited(limits.reserve(one())).retry_after, secs(59));
    advance(secs(58)).await;
    assert_eq!(limited(limits.reserve(one())).retry_after, secs(1));
    advance(secs(1)).await;
    assert_eq!(start.elapsed(), secs(119));
    for _ in 0..10 {
        let _ = limits.reserve(one()).unwrap();
    }
    limited(limits.reserve(one()));
}

#[tokio::test(start_paused = true)]
async fn token_refusal_waits_for_enough_to_expire() {
    let limits = window(None, Some(1000), None);
    let _ = limits.reserve(tokens(600, 0)).unwrap(); // t = 0
    advance(secs(20)).await;
    let _ = limits.reserve(tokens(300, 0)).unwrap(); // t = 20
    advance(secs(10)).await;

    // 100 fits; 200 needs 100 freed, so the t = 0 entry must go (at t = 60).
    let refused = limited(limits.reserve(tokens(200, 0)));
    assert_eq!(refused.which_limit, LimitKind::InputTokensPerMinute);
    assert_eq!(refused.retry_after, secs(30));
    let _ = limits.reserve(tokens(100, 0)).unwrap();
    // Now full: 700 needs everything up to the t = 20 entry gone (at t = 80).
    assert_eq!(limited(limits.reserve(tokens(700, 0))).retry_after, secs(50));
}

#[tokio::test(start_paused = true)]
async fn refusal_reports_the_limit_with_the_longest_wait() {
    let limits = window(Some(10), Some(1000), None);
    let _ = limits.reserve(tokens(0, 0)).unwrap(); // t = 0
    advance(secs(10)).await;
    let _ = limits.reserve(tokens(900, 0)).unwrap(); // t = 10
    advance(secs(20)).await;
    for _ in 0..8 {
        let _ = limits.reserve(tokens(0, 0)).unwrap(); // t = 30
    }
    advance(secs(10)).await;
    // t = 40: requests fit at t = 60, tokens only at t = 70.
    let refused = limited(limits.reserve(tokens(200, 0)));
    assert_eq!(refused.which_limit, LimitKind::InputTokensPerMinute);
    assert_eq!(refused.retry_after, secs(30));
}

#[tokio::test(start_paused = true)]
async fn reconcile_returns_unused_tokens() {
    let limits = window(None, Some(1000), Some(1000));
    let reservation = limits.reserve(tokens(800, 500)).unwrap();
    assert_eq!(reservation.snapshot().input_tokens.unwrap().remaining, 200);
    limited(limits.reserve(tokens(500, 0)));

    reservation.reconcile(300, 100);
    let next = limits.reserve(tokens(500, 0)).unwrap();
    let snapshot = next.snapshot();
    assert_eq!(snapshot.input_tokens.unwrap().remaining, 200);
    assert_eq!(snapshot.output_tokens.unwrap().remaining, 900);
}

#[tokio::test(start_paused = true)]
async fn reconcile_charges_extra_at_admission_time_and_may_overshoot() {
    let limits = window(None, None, Some(1000));
    let reservation = limits.reserve(tokens(0, 100)).unwrap();
    advance(secs(20)).await;
    reservation.reconcile(0, 1500);

    let snapshot = limits.snapshot();
    let output = snapshot.output_tokens.unwrap();
    assert_eq!(output.remaining, 0, "overshoot shows as nothing left");
    // Charged at the admission time (t = 0), so it expires at t = 60, not t = 80.
    assert_eq!(output.reset, secs(40));
    assert_eq!(limited(limits.reserve(tokens(0, 1))).retry_after, secs(40));
    advance(secs(40)).await;
    let _ = limits.reserve(tokens(0, 1000)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn refund_returns_everything() {
    let limits = window(Some(1), Some(1000), None);
    let reservation = limits.reserve(tokens(1000, 0)).unwrap();
    limited(limits.reserve(tokens(0, 0)));
    reservation.refund();
    let _ = limits.reserve(tokens(1000, 0)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_keeps_the_charge() {
    let limits = window(Some(1), Some(1000), None);
    drop(limits.reserve(tokens(1000, 0)).unwrap());
    advance(secs(5)).await;
    let refused = limited(limits.reserve(tokens(0, 0)));
    assert_eq!(refused.retry_after, secs(55));
}

#[tokio::test(start_paused = true)]
async fn reconcile_after_expiry_changes_nothing() {
    let limits = window(None, Some(1000), None);
    let old = limits.reserve(tokens(1000, 0)).unwrap();
    advance(secs(60)).await;
    let _ = limits.reserve(tokens(1000, 0)).unwrap();
    // The old entry is gone; reconciling it must not free room in the new one.
    old.reconcile(0, 0);
    limited(limits.reserve(tokens(1, 0)));
}

#[tokio::test(start_paused = true)]
async fn demand_larger_than_a_limit_is_refused_for_good() {
    let limits = window(Some(100), Some(1000), None);
    let error = limits.reserve(tokens(1500, 0)).unwrap_err();
    assert_eq!(
        error,
        RateLimitError::TooLarge(DemandTooLarge {
            which_limit: LimitKind::InputTokensPerMinute,
            demand: 1500,
            limit: 1000,
        })
    );
    assert_eq!(error.retry_after(), None);
    assert!(error.headers().is_empty());
    let message = error.to_string();
    assert!(message.contains("1500") && message.contains("1000"), "{message}");
    assert!(message.contains("never be admitted"), "{message}");
    // Nothing was charged.
    assert_eq!(limits.snapshot().input_tokens.unwrap().remaining, 1000);

    // Through the combined limiter in Wait mode it fails at once rather than wait.
    let limiter = RateLimiter::new(RateLimitConfig {
        requests_per_second: Some(1.0),
        input_tokens_per_minute: Some(1000),
        ..RateLimitConfig::default()
    });
    let start = Instant::now();
    assert!(matches!(
        limiter.reserve(tokens(1001, 0)).await,
        Err(RateLimitError::TooLarge(_))
    ));
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn admissions_close_together_share_an_entry() {
    let limits = window(None, Some(1_000_000), None);
    for _ in 0..1000 {
        let _ = limits.reserve(tokens(1, 0)).unwrap();
        advance(ms(1)).await;
    }
    // 1000 admissions over one second, 10 ms apart at most per entry.
    assert_eq!(limits.entries(), 100);
    // A merged entry counts until 60 s after its latest admission: never too early. At t = 60 s
    // the t = 0 admission alone would have expired; merged with those up to t = 9 ms, it counts
    // until t = 60.009 s.
    advance(secs(59)).await;
    assert_eq!(
        limits.snapshot().input_tokens.unwrap().remaining,
        1_000_000 - 1000
    );
    advance(ms(9)).await;
    assert_eq!(limits.snapshot().input_tokens.unwrap().remaining, 1_000_000 - 990);
}
