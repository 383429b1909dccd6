//! What a finished call tells the breaker about the upstream's health.

use crate::error::{Error, ErrorKind, TimeoutPhase};

/// How one call counts towards the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream did its job.
    Success,
    /// The upstream is (probably) unhealthy: a 5xx, a timeout, a broken connection, garbage.
    Failure,
    /// Says nothing about the upstream's health (the client's mistake, a 429, a cancelled call):
    /// counted neither way.
    Ignored,
}

impl Outcome {
    /// How an error of the engine counts. See the table in the [module docs](super).
    pub fn from_error(error: &Error) -> Outcome {
        // Waiting for a pooled connection timed out on *our* side: the pool is saturated, which
        // says nothing about the upstream and must not take it out of rotation.
        if matches!(
            error,
            Error::Timeout {
                phase: TimeoutPhase::PoolWait,
                ..
            }
        ) {
            return Outcome::Ignored;
        }
        // Exhaustive on purpose: a new error kind must be placed in this table deliberately.
        match error.kind() {
            ErrorKind::UpstreamServerError
            | ErrorKind::Timeout
            | ErrorKind::Connect
            | ErrorKind::Transport
            | ErrorKind::BadUpstreamResponse => Outcome::Failure,
            // A 429 already sends the deployment into its own cooldown; tripping the breaker too
            // would keep it out for `open_timeout` on top, and a busy upstream is not a broken one.
            ErrorKind::UpstreamRateLimited
            // The upstream answered sensibly to a request it did not like (or to our key, which
            // waiting out an open breaker would not fix).
            | ErrorKind::UpstreamClientError
            | ErrorKind::UpstreamAuth
            // Failures on the gateway's side: the upstream never saw the request.
            | ErrorKind::RateLimited
            | ErrorKind::InvalidRequest
            | ErrorKind::ModelNotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Unauthenticated
            | ErrorKind::NotFound
            | ErrorKind::Unavailable
            | ErrorKind::Internal => Outcome::Ignored,
        }
    }
}

/// How the result of one upstream call counts: `Ok` is a [`Success`](Outcome::Success), an error
/// counts as [`Outcome::from_error`] says.
///
/// Its signature fits [`CircuitBreakerLayer::new`](super::CircuitBreakerLayer::new) as the
/// classifier for any service whose error is [`crate::Error`].
pub fn classify<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(error) => Outcome::from_error(error),
    }
}
