use tokio::time::advance;

use super::{one, secs};
use crate::policy::limit::{KeyedLimiter, RateLimitConfig};

fn per_key(requests_per_minute: u64) -> KeyedLimiter<&'static str> {
    KeyedLimiter::new(RateLimitConfig {
        requests_per_minute: Some(requests_per_minute),
        ..RateLimitConfig::default()
    })
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let keyed = per_key(1);
    let _ = keyed.try_reserve(&"a", one()).unwrap();
    assert!(keyed.try_reserve(&"a", one()).is_err());
    let _ = keyed.reserve(&"b", one()).await.unwrap();
    assert!(keyed.try_reserve(&"b", one()).is_err());
    assert_eq!(keyed.len(), 2);
    // The same key gets the same limiter.
    assert_eq!(keyed.limiter(&"a").snapshot().requests.unwrap().remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let keyed = per_key(1);
    let _ = keyed.try_reserve(&"a", one()).unwrap();
    advance(secs(30)).await;
    let _ = keyed.try_reserve(&"b", one()).unwrap();
    advance(secs(31)).await;

    // t = 61: the next call sweeps. "a" has been idle past the window and counts nothing;
    // "b" (used at t = 30) still counts its request, so it stays.
    let _ = keyed.try_reserve(&"c", one()).unwrap();
    assert_eq!(keyed.len(), 2);
    assert!(
        keyed.try_reserve(&"b", one()).is_err(),
        "b's state survived the sweep"
    );

    // Both were last used at t = 61, and what they counted expires at t = 90 and t = 121.
    advance(secs(59)).await;
    assert_eq!(keyed.evict_idle(), 0);
    advance(secs(1)).await;
    assert_eq!(keyed.evict_idle(), 2);
    assert!(keyed.is_empty());
    // A key that comes back starts fresh, which is what its old limiter would have said too.
    let _ = keyed.try_reserve(&"a", one()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn held_limiters_are_not_evicted() {
    let keyed = per_key(1);
    let held = keyed.limiter(&"a");
    advance(secs(120)).await;
    assert_eq!(keyed.evict_idle(), 0);
    drop(held);
    assert_eq!(keyed.evict_idle(), 1);
}

#[test]
fn invalid_config_is_refused() {
    // Refused by the config's validation (which config loading runs), not by the limiter, which
    // is built from a validated config and cannot fail.
    let error = RateLimitConfig {
        burst: Some(0),
        ..RateLimitConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(error.contains("burst"), "{error}");
}
