//! The policies that decide what happens to a request around its upstream calls.
//!
//! - [`disposition`]: what a failure means (retry? fall back? breaker? refund? cooldown?), decided
//!   once per error and read by everything below.
//! - [`breaker`]: circuit breakers, one per deployment; a tower layer in the engine's per-attempt stack.
//! - [`concurrency`]: an adaptive limit on calls in flight per deployment, following latency;
//!   off by default; a tower layer in the engine's per-attempt stack.
//! - [`limit`]: rate limits per deployment and per client key; tower layers in the engine's pipeline.
//! - [`retry`]: the retry policy (backoff, `Retry-After`) and the retry budget the router applies.
//!
//! Each policy is implemented once: the engine's pipeline is built from these layers, and library
//! users can put the same layers around their own services.

pub mod breaker;
pub mod concurrency;
pub mod disposition;
pub mod limit;
pub mod retry;
