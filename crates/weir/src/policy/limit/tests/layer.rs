use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{bucket_config, ms, secs, wait};
use crate::policy::limit::{
    Demand, LimitKind, LimitMode, RateLimitLayer, RateLimitServiceError, RateLimiter,
};

#[tokio::test(start_paused = true)]
async fn refuses_without_calling_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = service_fn(move |request: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(request * 2) }
    });
    let limiter = RateLimiter::new(bucket_config(1.0, 2, LimitMode::FailFast));
    // Requests are numbers here; each counts as that many requests.
    let layer = RateLimitLayer::new(limiter, |request: &u64| Demand {
        requests: *request,
        ..Demand::default()
    });
    let mut service = layer.layer(inner);

    assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 2);
    let error = service.ready().await.unwrap().call(2).await.unwrap_err();
    let RateLimitServiceError::Limited(refusal) = &error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert_eq!(refusal.which_limit(), LimitKind::RequestsPerSecond);
    assert_eq!(refusal.retry_after(), Some(secs(1)));
    assert!(error.as_limited().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn waits_in_wait_mode() {
    let inner = service_fn(|()| async { Ok::<_, Infallible>(Instant::now()) });
    let limiter = RateLimiter::new(bucket_config(10.0, 1, wait(secs(1))));
    let service = RateLimitLayer::new(limiter, |_: &()| Demand::request(0, 0)).layer(inner);
    let start = Instant::now();
    let first = service.clone().oneshot(()).await.unwrap();
    let second = service.clone().oneshot(()).await.unwrap();
    assert_eq!(first - start, ms(0));
    assert_eq!(second - start, ms(100));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_come_back_whole() {
    let inner = service_fn(|()| async { Err::<(), _>("upstream broke") });
    let limiter = RateLimiter::unlimited();
    let service = RateLimitLayer::new(limiter, |_: &()| Demand::request(0, 0)).layer(inner);
    let error = service.oneshot(()).await.unwrap_err();
    assert_eq!(error.into_inner(), Some("upstream broke"));
}
