//! The response future of [`CircuitBreakerService`](super::CircuitBreakerService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{BreakerError, BreakerOpen, BreakerPermit, Classify};

pin_project! {
    /// Resolves to the inner service's response, or at once to [`BreakerError::Open`] when the
    /// breaker rejected the call. Dropping it before it resolves counts the call as
    /// [`Outcome::Ignored`](super::Outcome::Ignored).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            // An `Option` so it can be recorded exactly once, when the inner future resolves.
            permit: Option<BreakerPermit>,
            classify: C,
        },
        Rejected {
            open: BreakerOpen,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, permit: BreakerPermit, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(super) fn rejected(open: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { open },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    classify.settle(&result, permit);
                }
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
            // Cloned rather than taken, so that polling again after completion (a contract
            // violation, but not ours to punish with a panic) still gets an answer.
            KindProj::Rejected { open } => Poll::Ready(Err(BreakerError::Open(open.clone()))),
        }
    }
}
