//! The response future of [`RateLimitService`](super::RateLimitService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use super::layer::Settle;
use super::{RateLimitError, RateLimitServiceError, Reservation};

type Reserve = Pin<Box<dyn Future<Output = Result<Reservation, RateLimitError>> + Send>>;

pin_project! {
    /// Waits for the limiter, then resolves to the inner service's response (settling the
    /// reservation with it); or resolves to [`RateLimitServiceError::Limited`] without calling
    /// it. Dropping it while it waits gives up its place in the bucket's line; dropping it while
    /// the inner call runs drops the reservation (its estimate stays charged).
    pub struct ResponseFuture<S: Service<Req>, Req, K> {
        #[pin]
        state: State<S, Req, K>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req, K> {
        Reserving {
            reserve: Reserve,
            call: Option<(S, Req, K)>,
        },
        Calling {
            #[pin]
            future: S::Future,
            held: Option<(Reservation, K)>,
        },
    }
}

impl<S: Service<Req>, Req, K> ResponseFuture<S, Req, K> {
    pub(super) fn new(
        reserve: impl Future<Output = Result<Reservation, RateLimitError>> + Send + 'static,
        service: S,
        request: Req,
        settle: K,
    ) -> Self {
        ResponseFuture {
            state: State::Reserving {
                reserve: Box::pin(reserve),
                call: Some((service, request, settle)),
            },
        }
    }
}

impl<S: Service<Req>, Req, K> fmt::Debug for ResponseFuture<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Reserving { .. } => "reserving",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}

impl<S: Service<Req>, Req, K: Settle<S::Response, S::Error>> Future for ResponseFuture<S, Req, K> {
    type Output = Result<S::Response, RateLimitServiceError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, call } => {
                    let reservation = match ready!(reserve.as_mut().poll(cx)) {
                        Ok(reservation) => reservation,
                        Err(error) => return Poll::Ready(Err(RateLimitServiceError::Limited(error))),
                    };
                    let Some((mut service, request, settle)) = call.take() else {
                        // Only reachable by polling after completion, which the `Future`
                        // contract leaves unspecified.
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        held: Some((reservation, settle)),
                    });
                }
                StateProj::Calling { future, held } => {
                    let mut result = ready!(future.poll(cx));
                    if let Some((reservation, settle)) = held.take() {
                        settle.settle(&mut result, reservation);
                    }
                    return Poll::Ready(result.map_err(RateLimitServiceError::Inner));
                }
            }
        }
    }
}
