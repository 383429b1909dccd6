//! The tower layer, and what it asks of the limiter per request.

use tower::Layer;

use super::service::RateLimitService;
use super::{Demand, RateLimiter, Reservation};

/// What one call asks of the limiter: its demand, and whether it may wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// What the call counts.
    pub demand: Demand,
    /// `true`: [`RateLimiter::reserve`] (waits as the limiter's mode allows); `false`:
    /// [`RateLimiter::try_reserve`] (refuses at once) — for a router probing several
    /// deployments, which would rather move on than queue.
    pub wait: bool,
}

impl From<Demand> for Ask {
    fn from(demand: Demand) -> Ask {
        Ask { demand, wait: true }
    }
}

/// What a rate-limited service does with a call's reservation once the call has finished.
pub trait Settle<T, E> {
    /// Settles `reservation` by the call's result: reconcile it with the real usage, refund it,
    /// or drop it (the estimate stays charged) — now, or once a streamed response has ended. It
    /// may also annotate the response (the limit's `x-ratelimit-*` headers, say).
    fn settle(&self, result: &mut Result<T, E>, reservation: Reservation);
}

/// Keeps every reservation's estimate charged: the layer alone cannot see the real usage of an
/// arbitrary service's response. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepCharged;

impl<T, E> Settle<T, E> for KeepCharged {
    fn settle(&self, _result: &mut Result<T, E>, reservation: Reservation) {
        drop(reservation);
    }
}

/// Wraps services in a [`RateLimitService`] limited by one [`RateLimiter`].
///
/// Every service this layer wraps shares the same limiter (it holds a handle, not a config).
/// `demand` says what each request counts: a `Fn(&Request) -> Demand` (or `-> Ask`, to choose
/// per request whether it may wait), e.g. `|_| Demand::request(0, 0)` to count requests only.
/// Reservations are kept charged unless [`settle_with`](Self::settle_with) says otherwise.
#[derive(Clone)]
pub struct RateLimitLayer<F, K = KeepCharged> {
    limiter: RateLimiter,
    demand: F,
    settle: K,
}

impl<F> RateLimitLayer<F> {
    /// A layer limiting services with `limiter`, counting each request as `demand` says.
    pub fn new(limiter: RateLimiter, demand: F) -> Self {
        RateLimitLayer {
            limiter,
            demand,
            settle: KeepCharged,
        }
    }
}

impl<F, K> RateLimitLayer<F, K> {
    /// Settles each call's reservation with `settle` when the call finishes (e.g. reconciling
    /// it with the response's usage).
    pub fn settle_with<K2>(self, settle: K2) -> RateLimitLayer<F, K2> {
        RateLimitLayer {
            limiter: self.limiter,
            demand: self.demand,
            settle,
        }
    }
}

impl<F, K> std::fmt::Debug for RateLimitLayer<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The demand function is usually a closure, which has no Debug.
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, K: Clone> Layer<S> for RateLimitLayer<F, K> {
    type Service = RateLimitService<S, F, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone(), self.demand.clone())
            .settle_with(self.settle.clone())
    }
}
