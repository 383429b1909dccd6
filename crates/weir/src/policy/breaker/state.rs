//! The breaker's observable state: what it is, how it got there, and how often it moved.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Where a breaker is, as [`CircuitBreaker::state`](super::CircuitBreaker::state) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; failures are being counted.
    Closed,
    /// Calls are rejected until `remaining` has passed; then the breaker half-opens.
    Open {
        /// Time left before probes are let through.
        remaining: Duration,
    },
    /// A few probe calls are let through to test whether the upstream recovered.
    HalfOpen,
    /// Opened by hand: rejects every call until [`force_closed`](super::CircuitBreaker::force_closed)
    /// or [`reset`](super::CircuitBreaker::reset).
    ForcedOpen,
    /// Closed by hand: admits every call and ignores failures until
    /// [`reset`](super::CircuitBreaker::reset).
    ForcedClosed,
}

impl BreakerState {
    /// The state without its data, for labels and comparisons.
    pub fn kind(self) -> StateKind {
        match self {
            BreakerState::Closed => StateKind::Closed,
            BreakerState::Open { .. } => StateKind::Open,
            BreakerState::HalfOpen => StateKind::HalfOpen,
            BreakerState::ForcedOpen => StateKind::ForcedOpen,
            BreakerState::ForcedClosed => StateKind::ForcedClosed,
        }
    }
}

/// A breaker state without its data: what state changes and metric labels name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKind {
    /// See [`BreakerState::Closed`].
    Closed,
    /// See [`BreakerState::Open`].
    Open,
    /// See [`BreakerState::HalfOpen`].
    HalfOpen,
    /// See [`BreakerState::ForcedOpen`].
    ForcedOpen,
    /// See [`BreakerState::ForcedClosed`].
    ForcedClosed,
}

impl StateKind {
    /// Every state, in declaration order.
    pub const ALL: [StateKind; 5] = [
        StateKind::Closed,
        StateKind::Open,
        StateKind::HalfOpen,
        StateKind::ForcedOpen,
        StateKind::ForcedClosed,
    ];

    /// The label value, in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Closed => "closed",
            StateKind::Open => "open",
            StateKind::HalfOpen => "half_open",
            StateKind::ForcedOpen => "forced_open",
            StateKind::ForcedClosed => "forced_closed",
        }
    }

    /// Whether a breaker in this state rejects calls (open, by itself or by hand).
    pub fn is_open(self) -> bool {
        matches!(self, StateKind::Open | StateKind::ForcedOpen)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// Closed → open: this many failures in a row.
    ConsecutiveFailures {
        /// The count that reached the threshold.
        failures: u32,
    },
    /// Closed → open: the failure rate over the window exceeded the threshold.
    FailureRate {
        /// Failures in the window.
        failures: u32,
        /// Counted calls in the window.
        calls: u32,
    },
    /// Open → half-open: `open_timeout` passed.
    OpenTimeoutElapsed,
    /// Half-open → open: a probe failed.
    ProbeFailed,
    /// Half-open → closed: this many probes succeeded.
    ProbesSucceeded {
        /// The count that reached the threshold.
        successes: u32,
    },
    /// [`force_open`](super::CircuitBreaker::force_open) was called.
    ForcedOpen,
    /// [`force_closed`](super::CircuitBreaker::force_closed) was called.
    ForcedClosed,
    /// [`reset`](super::CircuitBreaker::reset) was called.
    Reset,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TransitionReason::ConsecutiveFailures { failures } => {
                write!(f, "{failures} consecutive failures")
            }
            TransitionReason::FailureRate { failures, calls } => {
                let percent = f64::from(failures) * 100.0 / f64::from(calls.max(1));
                write!(
                    f,
                    "failure rate {percent:.0}% ({failures} of {calls} calls in the window)"
                )
            }
            TransitionReason::OpenTimeoutElapsed => f.write_str("open timeout elapsed"),
            TransitionReason::ProbeFailed => f.write_str("a half-open probe failed"),
            TransitionReason::ProbesSucceeded { successes } => {
                write!(f, "{successes} half-open probes succeeded")
            }
            TransitionReason::ForcedOpen => f.write_str("forced open"),
            TransitionReason::ForcedClosed => f.write_str("forced closed"),
            TransitionReason::Reset => f.write_str("reset"),
        }
    }
}

/// One state change, as listeners registered with
/// [`on_state_change`](super::CircuitBreaker::on_state_change) receive it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name (its deployment).
    pub name: Arc<str>,
    /// The state it left.
    pub from: StateKind,
    /// The state it entered.
    pub to: StateKind,
    /// Why.
    pub reason: TransitionReason,
    /// When (tokio's clock, so paused-time tests see paused time).
    pub at: Instant,
}

/// How many times a breaker went from each state to each other one, since it was created.
///
/// These are monotonic counters (metrics export them as such), so [`reset`](super::CircuitBreaker::reset)
/// does not clear them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransitionCounts {
    counts: [[u64; StateKind::ALL.len()]; StateKind::ALL.len()],
}

impl TransitionCounts {
    /// Changes from `from` to `to`.
    pub fn get(&self, from: StateKind, to: StateKind) -> u64 {
        self.counts[from.index()][to.index()]
    }

    /// Changes into `to`, from anywhere (e.g. how often the breaker opened).
    pub fn entering(&self, to: StateKind) -> u64 {
        self.counts.iter().map(|row| row[to.index()]).sum()
    }

    /// All changes.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Every `(from, to, count)` that happened at least once.
    pub fn iter(&self) -> impl Iterator<Item = (StateKind, StateKind, u64)> + '_ {
        StateKind::ALL.into_iter().flat_map(move |from| {
            StateKind::ALL
                .into_iter()
                .map(move |to| (from, to, self.get(from, to)))
                .filter(|&(_, _, count)| count > 0)
        })
    }

    pub(super) fn count(&mut self, from: StateKind, to: StateKind) {
        let slot = &mut self.counts[from.index()][to.index()];
        *slot = slot.saturating_add(1);
    }
}

/// A snapshot of a breaker, from [`CircuitBreaker::stats`](super::CircuitBreaker::stats).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Failures in a row while closed (0 once `reset_timeout` passed without one).
    pub consecutive_failures: u32,
    /// Counted calls (successes and failures) in the sliding window while closed.
    pub window_calls: u32,
    /// Failures in the sliding window while closed.
    pub window_failures: u32,
    /// Probes under way while half-open.
    pub probes_in_flight: u32,
    /// Successful probes so far while half-open.
    pub probe_successes: u32,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// State changes since the breaker was created.
    pub transitions: TransitionCounts,
}

impl BreakerStats {
    /// Failures ÷ counted calls in the window, or `None` when the window is empty.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.window_calls > 0).then(|| f64::from(self.window_failures) / f64::from(self.window_calls))
    }
}
