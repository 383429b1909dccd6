//! What a finished call tells the breaker about the upstream's health.

use crate::error::Error;

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
    /// How an error of the engine counts: what [`classify`](crate::policy::disposition::classify)
    /// decides for it (see the table in the [module docs](super)).
    pub fn from_error(error: &Error) -> Outcome {
        crate::policy::disposition::classify(error).breaker
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

/// How a breaker-guarded service reports a finished call to its permit.
///
/// Any `Fn(&Result<T, E>) -> Outcome` (such as [`classify`]) records at once. A response whose
/// outcome is only known later — a stream that may still break — is settled by an implementation
/// that keeps the permit until then (the engine's does, for streamed answers).
pub trait Classify<T, E> {
    /// Records the call's outcome on `permit`, now or once the response has finished.
    fn settle(&self, result: &Result<T, E>, permit: super::BreakerPermit);
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn settle(&self, result: &Result<T, E>, permit: super::BreakerPermit) {
        permit.record(self(result));
    }
}
