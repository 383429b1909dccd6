//! The tower service.

use std::task::{Context, Poll};

use tower::Service;

use super::future::ResponseFuture;
use super::layer::{Ask, KeepCharged, Settle};
use super::{RateLimitServiceError, RateLimiter};

/// A service whose calls first reserve their [`Demand`](super::Demand) from a [`RateLimiter`]:
/// refused with [`RateLimitServiceError::Limited`] without calling the inner service when the
/// limiter says no, delayed when its bucket says wait (if the call's [`Ask`] allows). Built by
/// [`RateLimitLayer`](super::RateLimitLayer).
///
/// The reservation is held while the inner service runs and then handed to the [`Settle`]
/// policy (by default [`KeepCharged`]: the estimate stays charged; see the [module docs](super)).
///
/// The inner service must be `Clone`: a call may wait for the limiter, and during that wait the
/// instance `poll_ready` readied travels with the call while this service keeps a clone (the
/// usual tower pattern for middleware that awaits something before calling).
#[derive(Clone)]
pub struct RateLimitService<S, F, K = KeepCharged> {
    inner: S,
    limiter: RateLimiter,
    demand: F,
    settle: K,
}

impl<S, F> RateLimitService<S, F> {
    /// Limits `inner` with `limiter`, counting each request as `demand` says.
    pub fn new(inner: S, limiter: RateLimiter, demand: F) -> Self {
        RateLimitService {
            inner,
            limiter,
            demand,
            settle: KeepCharged,
        }
    }
}

impl<S, F, K> RateLimitService<S, F, K> {
    /// Settles reservations with `settle` once each call finishes.
    pub fn settle_with<K2>(self, settle: K2) -> RateLimitService<S, F, K2> {
        RateLimitService {
            inner: self.inner,
            limiter: self.limiter,
            demand: self.demand,
            settle,
        }
    }

    /// The limiter of this service.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug, F, K> std::fmt::Debug for RateLimitService<S, F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, F, A, K, Req> Service<Req> for RateLimitService<S, F, K>
where
    S: Service<Req> + Clone,
    F: Fn(&Req) -> A,
    A: Into<Ask>,
    K: Settle<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = RateLimitServiceError<S::Error>;
    type Future = ResponseFuture<S, Req, K>;

    /// Readiness is the inner service's. The limiter is consulted in `call`: a refusal is an
    /// answer for one request, while an error from `poll_ready` would tell tower the service is
    /// broken for good.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RateLimitServiceError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let ask: Ask = (self.demand)(&request).into();
        // The call may have to wait for the limiter, so it goes to the instance `poll_ready`
        // readied (taken out here), and this service keeps a fresh clone for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let settle = self.settle.clone();
        if ask.wait {
            ResponseFuture::new(self.limiter.reserve(ask.demand), ready, request, settle)
        } else {
            ResponseFuture::new(self.limiter.reserve_now(ask.demand), ready, request, settle)
        }
    }
}
