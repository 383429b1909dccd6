//! The tower layer.

use tower::Layer;

use super::RateLimiter;
use super::service::RateLimitService;

/// Wraps services in a [`RateLimitService`] limited by one [`RateLimiter`].
///
/// Every service this layer wraps shares the same limiter (it holds a handle, not a config).
/// `demand` says what each request counts: a `Fn(&Request) -> Demand`, e.g.
/// `|_| Demand::request(0, 0)` to count requests only.
#[derive(Clone)]
pub struct RateLimitLayer<F> {
    limiter: RateLimiter,
    demand: F,
}

impl<F> RateLimitLayer<F> {
    /// A layer limiting services with `limiter`, counting each request as `demand` says.
    pub fn new(limiter: RateLimiter, demand: F) -> Self {
        RateLimitLayer { limiter, demand }
    }
}

impl<F> std::fmt::Debug for RateLimitLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The demand function is usually a closure, which has no Debug.
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for RateLimitLayer<F> {
    type Service = RateLimitService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone(), self.demand.clone())
    }
}
