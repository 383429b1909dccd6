//! The state machine itself: plain data behind the breaker's lock, every method given `now`.
//!
//! Taking the time as an argument keeps each operation to one clock read and makes the rules
//! readable without the locking and notification around them (which live in the parent module).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::config::CircuitBreakerConfig;
use super::error::BreakerOpen;
use super::outcome::Outcome;
use super::state::{BreakerState, BreakerStats, StateChange, StateKind, TransitionCounts, TransitionReason};
use super::window::Window;

/// What a closed breaker counts.
#[derive(Debug, Clone)]
struct ClosedCounts {
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    window: Window,
}

impl ClosedCounts {
    fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        ClosedCounts {
            consecutive_failures: 0,
            last_failure: None,
            window: Window::new(config.window, now),
        }
    }

    /// The consecutive failures that still count: none once `reset_timeout` passed quietly.
    fn live_failures(&self, reset_timeout: Duration, now: Instant) -> u32 {
        match self.last_failure {
            Some(at) if now.saturating_duration_since(at) < reset_timeout => self.consecutive_failures,
            _ => 0,
        }
    }
}

/// The state and what it counts. Per-state data lives in its variant so that entering a state
/// starts it with fresh counts by construction.
#[allow(
    clippy::large_enum_variant,
    reason = "one per breaker, behind its lock and never copied around; boxing would only add an allocation per close"
)]
#[derive(Debug, Clone)]
enum Phase {
    Closed(ClosedCounts),
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
    ForcedOpen,
    ForcedClosed,
}

impl Phase {
    fn kind(&self) -> StateKind {
        match self {
            Phase::Closed(_) => StateKind::Closed,
            Phase::Open { .. } => StateKind::Open,
            Phase::HalfOpen { .. } => StateKind::HalfOpen,
            Phase::ForcedOpen => StateKind::ForcedOpen,
            Phase::ForcedClosed => StateKind::ForcedClosed,
        }
    }
}

/// A breaker's mutable state.
#[derive(Debug)]
pub(super) struct Machine {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    phase: Phase,
    /// Bumped on every state change and reset. A permit remembers the generation that admitted
    /// it, and its outcome only counts if that generation is still current: a call admitted while
    /// closed that fails after the breaker opened (or, worse, after it half-opened) must neither
    /// re-open it nor take a probe slot it never held.
    generation: u64,
    transitions: TransitionCounts,
    rejected: u64,
    /// Changes not yet handed to the log and the listeners (see `CircuitBreaker::deliver`).
    pending: Vec<StateChange>,
}

impl Machine {
    pub(super) fn new(name: Arc<str>, config: CircuitBreakerConfig, now: Instant) -> Self {
        let config = config.sanitized();
        Machine {
            name,
            phase: Phase::Closed(ClosedCounts::new(&config, now)),
            config,
            generation: 0,
            transitions: TransitionCounts::default(),
            rejected: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Half-opens an open breaker whose timeout has passed. Done lazily, whenever anyone looks,
    /// so that a breaker costs no timer task; the change is logged when it is first observed.
    /// Every operation starts here, so a change's `from` is always the state an observer would
    /// have seen (a `reset` after the timeout leaves half-open, not open).
    fn tick(&mut self, now: Instant) {
        if let Phase::Open { until } = self.phase
            && now >= until
        {
            self.transition(
                Phase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
                TransitionReason::OpenTimeoutElapsed,
                now,
            );
        }
    }

    fn transition(&mut self, to: Phase, reason: TransitionReason, now: Instant) {
        let from = self.phase.kind();
        let to_kind = to.kind();
        self.phase = to;
        self.generation = self.generation.wrapping_add(1);
        self.transitions.count(from, to_kind);
        self.pending.push(StateChange {
            name: Arc::clone(&self.name),
            from,
            to: to_kind,
            reason,
            at: now,
        });
    }

    fn open(&mut self, reason: TransitionReason, now: Instant) {
        // A preposterous `open_timeout` (say `Duration::MAX`) would overflow the clock; a century
        // is "until someone resets it" for any practical purpose.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let until = now
            .checked_add(self.config.open_timeout)
            .or_else(|| now.checked_add(CENTURY))
            .unwrap_or(now);
        self.transition(Phase::Open { until }, reason, now);
    }

    fn close(&mut self, reason: TransitionReason, now: Instant) {
        let counts = ClosedCounts::new(&self.config, now);
        self.transition(Phase::Closed(counts), reason, now);
    }

    pub(super) fn state(&mut self, now: Instant) -> BreakerState {
        self.tick(now);
        match self.phase {
            Phase::Closed(_) => BreakerState::Closed,
            Phase::Open { until } => BreakerState::Open {
                remaining: until.saturating_duration_since(now),
            },
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
            Phase::ForcedOpen => BreakerState::ForcedOpen,
            Phase::ForcedClosed => BreakerState::ForcedClosed,
        }
    }

    /// Admits a call, returning the generation its permit must carry.
    pub(super) fn acquire(&mut self, now: Instant) -> Result<u64, BreakerOpen> {
        self.tick(now);
        let retry_in = match &mut self.phase {
            Phase::Closed(_) | Phase::ForcedClosed => return Ok(self.generation),
            Phase::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_max_probes => {
                *in_flight += 1;
                return Ok(self.generation);
            }
            Phase::HalfOpen { .. } => Duration::ZERO,
            Phase::Open { until } => until.saturating_duration_since(now),
            Phase::ForcedOpen => self.config.open_timeout,
        };
        self.rejected = self.rejected.saturating_add(1);
        Err(BreakerOpen {
            name: Arc::clone(&self.name),
            retry_in,
            state: self.phase.kind(),
        })
    }

    /// Whether [`acquire`](Self::acquire) would admit a call now, without taking a probe slot.
    pub(super) fn permits(&mut self, now: Instant) -> bool {
        self.tick(now);
        match self.phase {
            Phase::Closed(_) | Phase::ForcedClosed => true,
            Phase::HalfOpen { in_flight, .. } => in_flight < self.config.half_open_max_probes,
            Phase::Open { .. } | Phase::ForcedOpen => false,
        }
    }

    /// Counts the outcome of a call admitted in `generation`.
    pub(super) fn complete(&mut self, generation: u64, outcome: Outcome, now: Instant) {
        if generation != self.generation {
            return;
        }
        let config = self.config;
        match &mut self.phase {
            Phase::Closed(counts) => match outcome {
                Outcome::Success => {
                    counts.consecutive_failures = 0;
                    counts.window.record(now, false);
                }
                Outcome::Failure => {
                    counts.consecutive_failures =
                        counts.live_failures(config.reset_timeout, now).saturating_add(1);
                    counts.last_failure = Some(now);
                    counts.window.record(now, true);
                    if counts.consecutive_failures >= config.failure_threshold {
                        let failures = counts.consecutive_failures;
                        self.open(TransitionReason::ConsecutiveFailures { failures }, now);
                    } else if let Some(threshold) = config.failure_rate_threshold {
                        // Checked on failures only: a rate can also rise when old successes slide
                        // out of the window, but opening right after a *successful* call would be
                        // baffling in the logs, and the next failure catches it anyway.
                        let (calls, failures) = counts.window.totals(now);
                        if calls >= config.min_requests && f64::from(failures) > threshold * f64::from(calls)
                        {
                            self.open(TransitionReason::FailureRate { failures, calls }, now);
                        }
                    }
                }
                Outcome::Ignored => {}
            },
            Phase::HalfOpen { in_flight, successes } => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success => {
                        *successes = successes.saturating_add(1);
                        if *successes >= config.success_threshold {
                            let successes = *successes;
                            self.close(TransitionReason::ProbesSucceeded { successes }, now);
                        }
                    }
                    Outcome::Failure => self.open(TransitionReason::ProbeFailed, now),
                    Outcome::Ignored => {}
                }
            }
            // Forced closed ignores failures by definition; open states admit no calls, so a
            // permit of their generation cannot exist.
            Phase::ForcedClosed | Phase::Open { .. } | Phase::ForcedOpen => {}
        }
    }

    pub(super) fn force_open(&mut self, now: Instant) {
        self.tick(now);
        if !matches!(self.phase, Phase::ForcedOpen) {
            self.transition(Phase::ForcedOpen, TransitionReason::ForcedOpen, now);
        }
    }

    pub(super) fn force_closed(&mut self, now: Instant) {
        self.tick(now);
        if !matches!(self.phase, Phase::ForcedClosed) {
            self.transition(Phase::ForcedClosed, TransitionReason::ForcedClosed, now);
        }
    }

    pub(super) fn reset(&mut self, now: Instant) {
        self.tick(now);
        if matches!(self.phase, Phase::Closed(_)) {
            // Not a state change (nothing to log or count), but still a fresh start: clear the
            // counts and disown calls already under way, like every other transition does.
            self.phase = Phase::Closed(ClosedCounts::new(&self.config, now));
            self.generation = self.generation.wrapping_add(1);
        } else {
            self.close(TransitionReason::Reset, now);
        }
    }

    pub(super) fn stats(&mut self, now: Instant) -> BreakerStats {
        let state = self.state(now);
        let (consecutive_failures, (window_calls, window_failures)) = match &self.phase {
            Phase::Closed(counts) => (
                counts.live_failures(self.config.reset_timeout, now),
                counts.window.totals(now),
            ),
            _ => (0, (0, 0)),
        };
        let (probes_in_flight, probe_successes) = match self.phase {
            Phase::HalfOpen { in_flight, successes } => (in_flight, successes),
            _ => (0, 0),
        };
        BreakerStats {
            state,
            consecutive_failures,
            window_calls,
            window_failures,
            probes_in_flight,
            probe_successes,
            rejected: self.rejected,
            transitions: self.transitions,
        }
    }

    pub(super) fn take_pending(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.pending)
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
