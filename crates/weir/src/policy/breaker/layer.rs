//! The tower layer.

use tower::Layer;

use super::CircuitBreaker;
use super::service::CircuitBreakerService;

/// Wraps services in a [`CircuitBreakerService`] guarded by one [`CircuitBreaker`].
///
/// Every service this layer wraps shares the same breaker (it holds a handle, not a config): one
/// layer per deployment.
///
/// `classify` judges each finished call: a [`Classify`](super::Classify), usually a
/// `Fn(&Result<Response, Error>) -> Outcome`. For services failing with [`crate::Error`], pass
/// [`classify`](super::classify).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classify: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer guarding services with `breaker`, judging calls with `classify`.
    pub fn new(breaker: CircuitBreaker, classify: C) -> Self {
        CircuitBreakerLayer { breaker, classify }
    }
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The classifier is usually a closure, which has no Debug.
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classify.clone())
    }
}
