//! Routing within a model group: which deployment a request tries first, which next, and which
//! deployments are healthy enough to try at all.
//!
//! - [`balance`]: the load-balancing strategies. A [`Balancer`](balance::Balancer) turns a
//!   group's deployments into a preference order per request; the engine walks that order and
//!   skips deployments that are cooling down, breaker-open or rate-limited.
//! - [`health`]: background health checks of deployments.

pub(crate) mod balance;
pub(crate) mod health;
pub(crate) mod latency;
