//! The tower service.

use std::task::{Context, Poll};

use tower::Service;

use super::future::ResponseFuture;
use super::{BreakerError, CircuitBreaker, Classify};

/// A service whose calls go through a [`CircuitBreaker`]: rejected at once while it is open,
/// judged by `classify` when they finish. Built by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
#[derive(Clone)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Guards `inner` with `breaker`, judging calls with `classify`.
    pub fn new(inner: S, breaker: CircuitBreaker, classify: C) -> Self {
        CircuitBreakerService {
            inner,
            breaker,
            classify,
        }
    }

    /// The breaker guarding this service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
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

impl<S: std::fmt::Debug, C> std::fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    /// Readiness is the inner service's. The breaker is consulted in `call`, not here: an open
    /// breaker is a per-call answer ("not now"), while an error from `poll_ready` tells tower the
    /// service is broken for good. If `call` then rejects, the inner service keeps whatever it
    /// reserved for the next call.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(self.inner.call(request), permit, self.classify.clone()),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
