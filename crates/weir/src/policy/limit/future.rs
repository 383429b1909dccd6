//! The response future of [`RateLimitService`](super::RateLimitService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use super::{RateLimitError, RateLimitServiceError, Reservation};

type Reserve = Pin<Box<dyn Future<Output = Result<Reservation, RateLimitError>> + Send>>;

pin_project! {
    /// Waits for the limiter, then resolves to the inner service's response; or resolves to
    /// [`RateLimitServiceError::Limited`] without calling it. Dropping it while it waits gives
    /// up its place in the bucket's line.
    pub struct ResponseFuture<S: Service<Req>, Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Reserving {
            reserve: Reserve,
            call: Option<(S, Req)>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn new(
        reserve: impl Future<Output = Result<Reservation, RateLimitError>> + Send + 'static,
        service: S,
        request: Req,
    ) -> Self {
        ResponseFuture {
            state: State::Reserving {
                reserve: Box::pin(reserve),
                call: Some((service, request)),
            },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Reserving { .. } => "reserving",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}

impl<S: Service<Req>, Req> Future for ResponseFuture<S, Req> {
    type Output = Result<S::Response, RateLimitServiceError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, call } => {
                    // The reservation is dropped here: the layer cannot reconcile (see the
                    // module docs), so the estimate stays charged.
                    if let Err(error) = ready!(reserve.as_mut().poll(cx)) {
                        return Poll::Ready(Err(RateLimitServiceError::Limited(error)));
                    }
                    let Some((mut service, request)) = call.take() else {
                        // Only reachable by polling after completion, which the `Future`
                        // contract leaves unspecified.
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(RateLimitServiceError::Inner);
                }
            }
        }
    }
}
