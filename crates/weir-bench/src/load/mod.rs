//! The load generator: one request, a closed loop of workers, and an open loop on a fixed
//! schedule.
//!
//! In the open loop every request has a *scheduled* send time `start + i / rate`, and its latency
//! is measured from that scheduled time, not from when it actually left. If the system under test
//! stalls, requests that should have been sent during the stall are sent late, and measuring from
//! the actual send would hide the time they spent waiting ("coordinated omission"). The delay
//! between schedule and actual send is recorded separately as `schedule_lag`.
//!
//! `request` holds what one request is (the client, the body, one send read to the end, the
//! preflight); `loops` holds how requests are paced (the closed and open loops and the schedule).
//! They are apart because the pacing is where measurement mistakes hide, and it reads more
//! clearly without the HTTP details beside it.

#[cfg(test)]
mod fake;
mod loops;
mod request;

pub use loops::{Phases, run_closed, run_open};
pub use request::{API_KEY, MODEL, RequestTemplate, Target, build_client, preflight};
