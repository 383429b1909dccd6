//! The errors a breaker produces.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::state::StateKind;

/// A call was rejected because the breaker is not letting calls through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// The breaker's name (its deployment).
    pub name: Arc<str>,
    /// How long until the breaker may admit a call again:
    /// - open: the rest of `open_timeout`;
    /// - half-open with every probe slot taken: zero, as a slot frees the moment a probe finishes
    ///   (move on to another deployment rather than wait);
    /// - forced open: `open_timeout`, only as a hint of when to look again, since it stays open
    ///   until someone closes it.
    pub retry_in: Duration,
    /// The state that rejected the call: [`Open`](StateKind::Open),
    /// [`HalfOpen`](StateKind::HalfOpen) or [`ForcedOpen`](StateKind::ForcedOpen).
    pub state: StateKind,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.state {
            StateKind::HalfOpen => write!(
                f,
                "circuit breaker `{name}` is half-open and all its probe slots are taken"
            ),
            StateKind::ForcedOpen => write!(f, "circuit breaker `{name}` is forced open"),
            _ => write!(
                f,
                "circuit breaker `{name}` is open; it may admit calls again in {}",
                humantime::format_duration(round_up_to_millis(self.retry_in))
            ),
        }
    }
}

impl std::error::Error for BreakerOpen {}

impl BreakerOpen {
    /// The engine's error for this rejection: [`crate::error::Error::Unavailable`] (a 503), which the
    /// retry policy does not retry against the same deployment.
    pub fn into_error(self) -> crate::error::Error {
        crate::error::Error::Unavailable {
            message: self.to_string(),
        }
    }
}

/// Nanoseconds make an unreadable message ("29s 999ms 999us 1ns").
fn round_up_to_millis(duration: Duration) -> Duration {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// The error of a [`CircuitBreakerService`](super::CircuitBreakerService).
///
/// An enum rather than tower's customary `Box<dyn Error>`: the engine needs the inner service's
/// error back whole (to classify it, retry it and map it to HTTP), and a typed enum gives it that
/// with a `match` instead of a downcast, and without an allocation per failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerError<E> {
    /// The breaker rejected the call; the inner service was not called.
    Open(BreakerOpen),
    /// The inner service failed.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(error) => Some(error),
            BreakerError::Open(_) => None,
        }
    }

    /// Whether the breaker rejected the call.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerError::Open(_))
    }
}

impl BreakerError<crate::error::Error> {
    /// Flattens into the engine's error type (a rejection becomes
    /// [`BreakerOpen::into_error`]).
    pub fn into_error(self) -> crate::error::Error {
        match self {
            BreakerError::Open(open) => open.into_error(),
            BreakerError::Inner(error) => error,
        }
    }
}

impl<E> From<BreakerOpen> for BreakerError<E> {
    fn from(open: BreakerOpen) -> Self {
        BreakerError::Open(open)
    }
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(open) => open.fmt(f),
            BreakerError::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: the inner error's own source, so a chain printer does not repeat it.
        match self {
            BreakerError::Open(_) => None,
            BreakerError::Inner(error) => error.source(),
        }
    }
}
