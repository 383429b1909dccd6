//! Resilience: circuit breakers and rate limits, each usable alone (as a tower layer around any
//! service) and wired per deployment into the engine. Retries live in [`crate::retry`].

pub mod circuit_breaker;
pub mod rate_limit;
