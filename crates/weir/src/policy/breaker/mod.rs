//! Circuit breaker: stop calling a deployment that keeps failing, and find out when it recovers.
//!
//! Without a breaker, every request routed to a dead upstream waits out a connect or read timeout
//! before failing (or being retried elsewhere), and a struggling upstream keeps receiving the full
//! load that is keeping it down. A breaker notices a run of failures, *opens*, and from then on
//! rejects calls to that deployment at once — no socket, no timeout — so the router can pick
//! another deployment and the upstream gets room to recover. After a while it lets a few *probe*
//! calls through; if they succeed it closes again, if one fails it waits another round.
//!
//! There is one [`CircuitBreaker`] per deployment. It is a cheap handle (an `Arc`) around a small
//! state behind a `parking_lot` mutex that is held for a few arithmetic operations and never
//! across an `.await`.
//!
//! # States
//!
//! ```text
//!            failure_threshold consecutive failures, or
//!            failure rate > failure_rate_threshold over `window` (once ≥ min_requests calls)
//!   Closed ────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                  │  ▲
//!     │                                        open_timeout elapsed      │  │  a probe fails
//!     │  success_threshold probes succeed                                ▼  │
//!     └──────────────────────────────────────────────────────────────── HalfOpen
//!                                        (≤ half_open_max_probes calls at a time)
//!
//!   force_open()    any ──▶ ForcedOpen     rejects every call until force_closed() or reset()
//!   force_closed()  any ──▶ ForcedClosed   admits every call, counts nothing, until reset()
//!   reset()         any ──▶ Closed         with every count cleared
//! ```
//!
//! - **Closed**: calls flow. Failures in a row are counted; a success, or `reset_timeout` without
//!   a failure, clears that count, so scattered failures never add up to an outage. When
//!   `failure_rate_threshold` is set, successes and failures are also counted over a sliding
//!   `window` (to a tenth of it), and the breaker opens when the rate *exceeds* the threshold
//!   while the window holds at least `min_requests` counted calls: this catches an upstream that
//!   fails every other call, which never builds a long run.
//! - **Open**: every call is rejected with [`BreakerOpen`], whose `retry_in` says how long until
//!   probes are allowed.
//! - **Half-open**: at most `half_open_max_probes` calls are in flight at once; other calls are
//!   rejected (with `retry_in` zero, as a slot frees the moment a probe finishes). After
//!   `success_threshold` successful probes the breaker closes with fresh counts; any failed probe
//!   re-opens it for another `open_timeout`.
//!
//! Open → half-open happens lazily, the first time anyone looks after `open_timeout` (a call, a
//! [`state`](CircuitBreaker::state) read, [`stats`](CircuitBreaker::stats)), so breakers need no
//! timer task; that is also when the change is logged. Time is tokio's clock, so tests pause it.
//!
//! # What counts
//!
//! Every admitted call holds a [`BreakerPermit`] and reports an explicit [`Outcome`] through
//! [`BreakerPermit::record`]. [`classify`] (and [`Outcome::from_error`]) turn the engine's results
//! into outcomes:
//!
//! | Result                                                  | Outcome   | Why                                   |
//! |---------------------------------------------------------|-----------|---------------------------------------|
//! | `Ok`                                                    | `Success` |                                       |
//! | upstream 5xx                                            | `Failure` | the upstream is failing               |
//! | timeout: connect, read or total                         | `Failure` | the upstream is slow or unreachable   |
//! | connection refused, DNS, TLS; connection reset mid-call | `Failure` | the upstream is unreachable           |
//! | invalid upstream response                               | `Failure` | the upstream is broken                |
//! | upstream 429                                            | `Ignored` | busy is not broken; a 429 puts the deployment in its own cooldown |
//! | upstream 4xx (400, 404, 422, …; also 401/403)           | `Ignored` | the request (or our key) was rejected by a healthy upstream |
//! | timeout waiting for a pooled connection                 | `Ignored` | our pool is saturated, not the upstream |
//! | gateway-side errors (bad request, unknown model, draining, internal) | `Ignored` | the upstream never saw the call |
//! | permit dropped without `record` (e.g. the client went away) | `Ignored` | the call never finished       |
//!
//! `Ignored` means counted neither way: it does not break a run of failures, does not add to the
//! window, and in half-open only frees the probe slot. A call admitted before a state change
//! (including [`reset`](CircuitBreaker::reset)) that finishes after it is not counted either: it
//! says something about the upstream *before* the change, and a call admitted while closed must
//! not close (or re-open) a half-open breaker on its own.
//!
//! # Defaults
//!
//! `CircuitBreakerConfig::default()` is the textbook breaker below. A gateway deployment starts
//! from [`CircuitBreakerConfig::for_deployments`] instead: `failure_threshold` 10 and
//! `failure_rate_threshold` 0.5, the rest the same — see its docs and docs/resilience.md.
//!
//! | Field                    | Default | Deployments |
//! |--------------------------|---------|-------------|
//! | `failure_threshold`      | 5       | 10          |
//! | `failure_rate_threshold` | off     | 0.5         |
//! | `min_requests`           | 20      |
//! | `window`                 | 60 s    |
//! | `open_timeout`           | 30 s    |
//! | `half_open_max_probes`   | 1       |
//! | `success_threshold`      | 3       |
//! | `reset_timeout`          | 60 s    |
//!
//! # Retries and cooldowns
//!
//! The breaker sits *inside* the retry loop of [`crate::policy::retry`]: every attempt takes its own
//! permit from the breaker of the deployment it is about to call, and records its own outcome, so
//! a request retried twice against a failing upstream is three pieces of evidence, as it should
//! be. An attempt that finds the breaker open fails at once without touching the network; the
//! retry logic should move on to another deployment rather than wait, and when the request cannot
//! go anywhere else, [`BreakerOpen::into_error`] makes it [`crate::error::Error::Unavailable`], which
//! [`should_retry`](crate::policy::retry::should_retry) does not retry.
//!
//! A 429 is `Ignored`: rate limiting has its own per-deployment cooldown (honouring the
//! upstream's `Retry-After`), and letting it also trip the breaker would punish a busy upstream
//! twice and for the wrong length of time.
//!
//! # Observing it
//!
//! Every state change is logged — `warn` when the breaker opens (by itself or by hand), `info`
//! otherwise — with the breaker's name, `from`, `to` and `reason`; it is counted per `(from, to)`
//! pair in [`BreakerStats::transitions`]; and it is passed to every listener registered with
//! [`on_state_change`](CircuitBreaker::on_state_change), in the order the changes happened.
//!
//! # As a tower layer
//!
//! [`CircuitBreakerLayer`] wraps any service: `call` takes a permit first and, if the breaker is
//! open, returns a future that fails at once with [`BreakerError::Open`] without calling the inner
//! service; otherwise it records the classifier's verdict on the inner result when the call
//! finishes (or `Ignored` if the future is dropped first). Its error is a typed
//! [`BreakerError`] rather than tower's usual `Box<dyn Error>` so that the inner error comes back
//! whole, for the engine to match on without a downcast. How a finished call is recorded is the
//! layer's [`Classify`] rule: any `Fn(&Result) -> Outcome` (such as [`classify`]) records at once;
//! the engine's rule keeps the permit of a streamed answer until the stream ends. This layer is
//! the breaker of every deployment's stack in the engine.

mod config;
mod error;
pub mod future;
mod layer;
mod machine;
mod outcome;
mod service;
mod state;
mod window;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tuning_tests;

use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

pub use self::config::CircuitBreakerConfig;
pub use self::error::{BreakerError, BreakerOpen};
pub use self::layer::CircuitBreakerLayer;
pub use self::outcome::{Classify, Outcome, classify};
pub use self::service::CircuitBreakerService;
pub use self::state::{
    BreakerState, BreakerStats, StateChange, StateKind, TransitionCounts, TransitionReason,
};

use self::machine::Machine;

/// A state-change listener.
type Listener = Arc<dyn Fn(&StateChange) + Send + Sync>;

struct Shared {
    name: Arc<str>,
    machine: Mutex<Machine>,
    /// Held by whichever thread is handing pending state changes to the log and the listeners,
    /// so that they see the changes one at a time and in order.
    delivering: Mutex<()>,
    listeners: RwLock<Vec<Listener>>,
}

/// The circuit breaker of one deployment. Cloning gives another handle to the same breaker.
///
/// See the [module docs](self) for the rules.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No state here: Debug must not take the lock (it may be printed while it is held).
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker. `name` (the deployment's) appears in logs, errors and state changes.
    ///
    /// Out-of-range settings are clamped rather than rejected (see
    /// [`CircuitBreakerConfig::sanitized`]); run [`CircuitBreakerConfig::validate`] when loading
    /// configuration to report them instead.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Self {
        let name: Arc<str> = Arc::from(name.into());
        let machine = Machine::new(Arc::clone(&name), config, Instant::now());
        CircuitBreaker {
            shared: Arc::new(Shared {
                name,
                machine: Mutex::new(machine),
                delivering: Mutex::new(()),
                listeners: RwLock::new(Vec::new()),
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> CircuitBreakerConfig {
        *self.shared.machine.lock().config()
    }

    /// Asks to make a call. On success, make it and [`record`](BreakerPermit::record) its
    /// outcome on the permit; on `Err`, don't make it (the breaker is open, or half-open with
    /// every probe slot taken).
    pub fn try_acquire(&self) -> Result<BreakerPermit, BreakerOpen> {
        let generation = self.with_machine(|machine, now| machine.acquire(now))?;
        Ok(BreakerPermit {
            breaker: self.clone(),
            generation,
            finished: false,
        })
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.with_machine(|machine, now| machine.state(now))
    }

    /// Whether [`try_acquire`](Self::try_acquire) would admit a call now, without taking a probe
    /// slot: for routing, to skip deployments whose breaker is open. The answer may be stale by
    /// the time the call is made, so the call must still take a permit.
    pub fn is_call_permitted(&self) -> bool {
        self.with_machine(|machine, now| machine.permits(now))
    }

    /// Opens the breaker until [`force_closed`](Self::force_closed) or [`reset`](Self::reset),
    /// whatever the calls' outcomes. For taking a deployment out of rotation by hand.
    pub fn force_open(&self) {
        self.with_machine(|machine, now| machine.force_open(now));
    }

    /// Closes the breaker until [`reset`](Self::reset), admitting every call and counting no
    /// outcome. For keeping a deployment in rotation that the breaker would wrongly remove.
    pub fn force_closed(&self) {
        self.with_machine(|machine, now| machine.force_closed(now));
    }

    /// Back to normal operation: closed, with failure counts, window and probes cleared. Calls
    /// already under way are not counted when they finish. Transition counters are kept.
    pub fn reset(&self) {
        self.with_machine(|machine, now| machine.reset(now));
    }

    /// A snapshot of the breaker's state and counters.
    pub fn stats(&self) -> BreakerStats {
        self.with_machine(|machine, now| machine.stats(now))
    }

    /// Adds a listener called once for every state change, in order, after the change happened
    /// and outside the breaker's lock (so it may call back into the breaker). It runs on the
    /// thread that caused or first observed the change, so it should be quick: update a metric,
    /// send on a channel.
    pub fn on_state_change(&self, listener: impl Fn(&StateChange) + Send + Sync + 'static) {
        self.shared.listeners.write().push(Arc::new(listener));
    }

    /// Runs `f` under the lock with the current time, then delivers any state change it caused.
    fn with_machine<R>(&self, f: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        let (result, changed) = {
            let mut machine = self.shared.machine.lock();
            // Read the clock under the lock, so that the machine sees time move forward only.
            let result = f(&mut machine, Instant::now());
            (result, machine.has_pending())
        };
        if changed {
            self.deliver();
        }
        result
    }

    /// Hands pending state changes to the log and the listeners.
    ///
    /// Changes are queued under the state lock (which fixes their order) and delivered outside it
    /// (so a listener may call back into the breaker). Only one thread delivers at a time: one
    /// that finds another delivering leaves its changes in the queue for it. The deliverer looks
    /// at the queue once more after letting go, so a change queued just as it finished is not
    /// stranded. A listener that causes a change re-enters here, finds the delivery lock taken
    /// (by its own thread) and leaves the change to the loop below, instead of deadlocking.
    fn deliver(&self) {
        let shared = &*self.shared;
        loop {
            let Some(delivering) = shared.delivering.try_lock() else {
                return;
            };
            loop {
                let changes = shared.machine.lock().take_pending();
                if changes.is_empty() {
                    break;
                }
                let listeners = shared.listeners.read().clone();
                for change in &changes {
                    log_change(change);
                    for listener in &listeners {
                        listener(change);
                    }
                }
            }
            drop(delivering);
            if !shared.machine.lock().has_pending() {
                return;
            }
        }
    }
}

fn log_change(change: &StateChange) {
    let (breaker, from, to) = (&*change.name, change.from.as_str(), change.to.as_str());
    let reason = &change.reason;
    if change.to.is_open() {
        tracing::warn!(breaker, from, to, %reason, "circuit breaker opened");
    } else {
        tracing::info!(breaker, from, to, %reason, "circuit breaker state changed");
    }
}

/// Leave to make one call through a [`CircuitBreaker`].
///
/// Report how the call went with [`record`](Self::record) (or
/// [`record_result`](Self::record_result)). Dropping the permit without recording counts as
/// [`Outcome::Ignored`] and frees its half-open probe slot, so a call abandoned half-way (the
/// client went away, the future was dropped) never wedges a half-open breaker.
#[must_use = "a permit dropped without `record` counts the call as Ignored"]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    generation: u64,
    finished: bool,
}

impl fmt::Debug for BreakerPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("breaker", &self.breaker.shared.name)
            .field("generation", &self.generation)
            .finish()
    }
}

impl BreakerPermit {
    /// Counts the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    /// Counts the call by its result, as [`classify`] judges it.
    pub fn record_result<T>(self, result: &crate::error::Result<T>) {
        self.record(classify(result));
    }

    /// The breaker this permit is from.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn finish(&mut self, outcome: Outcome) {
        if !self.finished {
            self.finished = true;
            let generation = self.generation;
            self.breaker
                .with_machine(|machine, now| machine.complete(generation, outcome, now));
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        self.finish(Outcome::Ignored);
    }
}
