use std::time::Duration;

use tokio::time::advance;

use super::{ms, secs};
use crate::policy::limit::{
    Demand, LimitStatus, RateLimitConfig, RateLimitError, RateLimitSnapshot, RateLimiter, format_reset,
};

fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn resets_are_written_like_openai() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(1), "1ms"),
        (ms(20), "20ms"),
        (ms(999), "999ms"),
        (secs(1), "1s"),
        (ms(1500), "1.5s"),
        (ms(1100) + Duration::from_nanos(1), "1.101s"),
        (ms(59_123), "59.123s"),
        (secs(60), "1m0s"),
        (secs(360), "6m0s"),
        (ms(61_500), "1m1.5s"),
        (secs(3600), "1h0m0s"),
        (ms(3_723_004), "1h2m3.004s"),
    ];
    for (duration, expected) in cases {
        assert_eq!(format_reset(duration), expected, "{duration:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn admission_headers() {
    let limiter = RateLimiter::new(RateLimitConfig {
        requests_per_minute: Some(100),
        input_tokens_per_minute: Some(1000),
        output_tokens_per_minute: Some(500),
        ..RateLimitConfig::default()
    });
    let reservation = limiter.try_reserve(Demand::request(100, 50)).unwrap();
    let headers = reservation.headers();
    let expected = [
        ("x-ratelimit-limit-requests", "100"),
        ("x-ratelimit-remaining-requests", "99"),
        ("x-ratelimit-reset-requests", "1m0s"),
        ("x-ratelimit-limit-tokens", "1500"),
        ("x-ratelimit-remaining-tokens", "1350"),
        ("x-ratelimit-reset-tokens", "1m0s"),
        ("x-ratelimit-limit-input-tokens", "1000"),
        ("x-ratelimit-remaining-input-tokens", "900"),
        ("x-ratelimit-reset-input-tokens", "1m0s"),
        ("x-ratelimit-limit-output-tokens", "500"),
        ("x-ratelimit-remaining-output-tokens", "450"),
        ("x-ratelimit-reset-output-tokens", "1m0s"),
    ];
    let expected: Vec<_> = expected.iter().map(|&(k, v)| (k, v.to_owned())).collect();
    assert_eq!(headers, expected);
    reservation.reconcile(100, 0);

    advance(ms(30_500)).await;
    let headers = limiter.snapshot().headers();
    assert_eq!(header(&headers, "x-ratelimit-reset-requests"), Some("29.5s"));
    // No output tokens are counted any more, so that limit is fully reset.
    assert_eq!(header(&headers, "x-ratelimit-reset-output-tokens"), Some("0s"));
    assert_eq!(
        header(&headers, "x-ratelimit-remaining-output-tokens"),
        Some("500")
    );
    assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("29.5s"));
    assert_eq!(header(&headers, "retry-after"), None);
}

#[tokio::test(start_paused = true)]
async fn refusal_headers_carry_retry_after() {
    let limiter = RateLimiter::new(RateLimitConfig {
        input_tokens_per_minute: Some(1000),
        ..RateLimitConfig::default()
    });
    let _ = limiter.try_reserve(Demand::request(1000, 0)).unwrap();
    advance(ms(58_800)).await;
    let error = limiter.try_reserve(Demand::request(1, 0)).unwrap_err();
    assert_eq!(error.retry_after(), Some(ms(1200)));
    let RateLimitError::Limited(limited) = &error else {
        panic!("expected a refusal, got {error:?}");
    };
    let headers = error.headers();
    assert_eq!(headers, limited.headers());
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    assert_eq!(header(&headers, "retry-after-ms"), Some("1200"));
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("1.2s"));
    // Only configured limits produce headers.
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), None);
    assert_eq!(header(&headers, "x-ratelimit-limit-output-tokens"), None);
    assert!(error.to_string().contains("input tokens per minute"), "{error}");
}

#[test]
fn combined_tokens() {
    let status = |limit, remaining, reset| LimitStatus {
        limit,
        remaining,
        reset: secs(reset),
    };
    let both = RateLimitSnapshot {
        input_tokens: Some(status(1000, 100, 10)),
        output_tokens: Some(status(500, 400, 20)),
        ..RateLimitSnapshot::default()
    };
    assert_eq!(both.tokens(), Some(status(1500, 500, 20)));
    let input_only = RateLimitSnapshot {
        input_tokens: Some(status(1000, 100, 10)),
        ..RateLimitSnapshot::default()
    };
    assert_eq!(input_only.tokens(), Some(status(1000, 100, 10)));
    assert_eq!(RateLimitSnapshot::default().tokens(), None);
    assert!(RateLimitSnapshot::default().headers().is_empty());
}
