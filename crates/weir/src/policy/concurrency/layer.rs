//! [`AdaptiveConcurrencyLayer`]: the tower layer around any service. The rules for turning an
//! answer into a [`Sample`](super::Sample) and a refusal into the service's error are the
//! caller's ([`Settle`]): a stream, for instance, is answered when its first event arrives but
//! holds its slot until it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{AdaptiveLimit, Permit, Shed};

/// How a service's results settle a concurrency permit, and what a shed call answers.
pub trait Settle<Response, Error> {
    /// The error a call refused by the limit gets.
    fn shed(&self, shed: Shed) -> Error;
    /// Called once the inner service answered: sample the permit and drop it (now, or when the
    /// answer is finished).
    fn settle(&self, result: &Result<Response, Error>, permit: Permit);
}

/// Wraps a service in an [`AdaptiveLimit`] (shared by every clone of the service).
#[derive(Debug, Clone)]
pub struct AdaptiveConcurrencyLayer<J> {
    limit: AdaptiveLimit,
    judge: J,
}

impl<J: Clone> AdaptiveConcurrencyLayer<J> {
    /// A layer limiting calls through `limit`, settled by `judge`.
    pub fn new(limit: AdaptiveLimit, judge: J) -> Self {
        Self { limit, judge }
    }
}

impl<S, J: Clone> Layer<S> for AdaptiveConcurrencyLayer<J> {
    type Service = AdaptiveConcurrencyService<S, J>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrencyService {
            inner,
            limit: self.limit.clone(),
            judge: self.judge.clone(),
        }
    }
}

/// The service of [`AdaptiveConcurrencyLayer`].
#[derive(Debug, Clone)]
pub struct AdaptiveConcurrencyService<S, J> {
    inner: S,
    limit: AdaptiveLimit,
    judge: J,
}

impl<S, J> AdaptiveConcurrencyService<S, J> {
    /// `inner` limited by `limit`, settled by `judge`.
    pub fn new(inner: S, limit: AdaptiveLimit, judge: J) -> Self {
        Self { inner, limit, judge }
    }

    /// The limit, for inspection.
    pub fn limit(&self) -> &AdaptiveLimit {
        &self.limit
    }
}

impl<S, J, Request> Service<Request> for AdaptiveConcurrencyService<S, J>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    J: Settle<S::Response, S::Error> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = match self.limit.try_acquire() {
            Ok(permit) => permit,
            Err(shed) => {
                let err = self.judge.shed(shed);
                return Box::pin(std::future::ready(Err(err)));
            }
        };
        let call = self.inner.call(request);
        let judge = self.judge.clone();
        Box::pin(async move {
            let result = call.await;
            judge.settle(&result, permit);
            result
        })
    }
}
