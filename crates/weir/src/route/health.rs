//! Background health checks: probe each deployment on a timer and remember whether it answers.
//!
//! The circuit breaker ([`crate::policy::breaker`]) learns about a deployment from
//! real traffic, so it only notices an outage after some requests have failed, and it only
//! notices a recovery when it lets a request through. A health check probes the deployment
//! itself, on a timer: a deployment that died while idle is known to be down before the next
//! request is sent to it, and one that came back is known to be up without risking a user's
//! request to find out.
//!
//! # Off by default
//!
//! Health checks are opt-in, per deployment. A probe is a real call to the upstream (the engine
//! uses its cheap `GET /models`), and paid upstreams may bill or rate-limit it, so nothing is
//! probed unless the configuration asks for it. A deployment without health checks is always
//! healthy as far as this module is concerned; the circuit breaker still protects it.
//!
//! # The pieces
//!
//! - [`Health`]: what the latest probes say about one deployment. A cheap handle (an `Arc`)
//!   shared by the checker, which writes it, and the router, which reads
//!   [`is_healthy`](Health::is_healthy) on every request; that read is a single atomic load.
//! - [`spawn_checker`]: a tokio task that calls a probe closure every `interval` and records each
//!   result in a [`Health`]. It knows nothing about HTTP: the probe is any async closure that
//!   returns the probe's latency, or an error message.
//! - [`HealthCheckHandle`]: stops the task when dropped (or on [`stop`](HealthCheckHandle::stop)).
//!
//! # Healthy and unhealthy
//!
//! ```text
//!             unhealthy_threshold consecutive failed probes
//!   Healthy ───────────────────────────────────────────────▶ Unhealthy
//!      ▲                                                         │
//!      └─────────────────────────────────────────────────────────┘
//!             healthy_threshold consecutive successful probes
//! ```
//!
//! A deployment starts **healthy**: it is usable until probes prove otherwise, so starting the
//! gateway (or adding a deployment) never leaves it unroutable while the first probe is in
//! flight. A success resets the run of failures and a failure resets the run of successes, so a
//! deployment that fails every other probe stays in whichever state it was in: one flaky answer is
//! not an outage, and one lucky answer is not a recovery. The change is logged with the
//! deployment's name: `warn` when it becomes unhealthy (with the last error), `info` when it
//! recovers (with the last latency). Individual failed probes that change nothing are logged at
//! `debug`.
//!
//! # Timing
//!
//! The first probe runs as soon as the checker starts. Each later probe starts `interval` after
//! the previous one *started*, plus a random jitter of up to 10 % of `interval`, so that many
//! deployments started together drift apart instead of probing their upstreams in lockstep.
//! Probes of one deployment never overlap: if a probe is still running when the next is due
//! (possible when `timeout` is not shorter than `interval`), the next one starts as soon as it
//! finishes.
//!
//! A probe that has not answered within `timeout` is abandoned (its future is dropped, which
//! cancels the request) and counts as a failure with the error `no answer within 5s`. A probe
//! that panics counts as a failure too, and the checker carries on: a bug in one probe must not
//! silently freeze the deployment's health at its last value.
//!
//! # Defaults
//!
//! | Field                 | Default | Meaning                                                  |
//! |-----------------------|---------|----------------------------------------------------------|
//! | `interval`            | 30 s    | time between the starts of two probes (plus jitter)      |
//! | `timeout`             | 5 s     | how long a probe may take before it counts as a failure |
//! | `unhealthy_threshold` | 2       | consecutive failures that mark a deployment unhealthy    |
//! | `healthy_threshold`   | 2       | consecutive successes that mark it healthy again         |
//!
//! Two in a row, rather than one, because a single probe lost to a network blip or a
//! load-balancer restart should not take a deployment out of rotation for a whole interval, and
//! a single lucky answer from a crash-looping upstream should not put it back.
//!
//! [`HealthCheckConfig::validate`] rejects zero values (for configuration loading, so mistakes
//! are reported with the field's name); [`spawn_checker`] itself never fails and clamps them
//! instead (see [`HealthCheckConfig::sanitized`]).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;

/// The largest jitter added to the interval, as a fraction of it.
const MAX_JITTER: f64 = 0.1;

/// The interval used in place of a zero one: probing in a tight loop would cost real money on a
/// paid upstream, so a zero interval is read as "often", not "constantly".
const MIN_INTERVAL: Duration = Duration::from_secs(1);

// The settings are part of the configuration schema; re-exported here, where they are applied.
pub(crate) use crate::config::HealthCheckConfig;

impl HealthCheckConfig {
    /// A copy with every out-of-range value replaced by a usable one: a zero `interval` becomes
    /// 1 s, a zero `timeout` becomes the interval, and zero thresholds become 1.
    pub fn sanitized(mut self) -> Self {
        if self.interval.is_zero() {
            self.interval = MIN_INTERVAL;
        }
        if self.timeout.is_zero() {
            // A zero timeout would fail every probe that is not ready on its first poll; the
            // interval is the longest wait that still keeps probes on schedule.
            self.timeout = self.interval;
        }
        self.unhealthy_threshold = self.unhealthy_threshold.max(1);
        self.healthy_threshold = self.healthy_threshold.max(1);
        self
    }
}

/// What the probes of one deployment say, as seen at one moment (see [`Health::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    /// Whether the deployment is considered healthy (`true` until probes prove otherwise).
    pub healthy: bool,
    /// Failed probes since the last successful one.
    pub consecutive_failures: u32,
    /// Successful probes since the last failed one.
    pub consecutive_successes: u32,
    /// When the latest probe result was recorded; `None` before the first.
    pub last_checked: Option<Instant>,
    /// Latency of the latest probe if it succeeded; `None` if it failed or none has run.
    pub last_latency: Option<Duration>,
    /// Error of the latest probe if it failed; `None` if it succeeded or none has run.
    pub last_error: Option<String>,
    /// Probe results recorded so far.
    pub checks: u64,
}

/// The health of one deployment, as established by its probes. Cloning gives another handle to
/// the same state.
///
/// Starts healthy. [`record`](Self::record) feeds it probe results (normally from
/// [`spawn_checker`]); [`is_healthy`](Self::is_healthy) reads it without taking a lock.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// The verdict, kept outside the mutex so the per-request read is one atomic load. Only
    /// written while `state` is locked, so it always agrees with the counts.
    healthy: AtomicBool,
    state: Mutex<State>,
}

struct State {
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    consecutive_failures: u32,
    consecutive_successes: u32,
    last_checked: Option<Instant>,
    last_latency: Option<Duration>,
    last_error: Option<String>,
    checks: u64,
}

/// A change of verdict, logged once the lock is released.
enum Transition {
    Unhealthy { failures: u32, error: String },
    Recovered { successes: u32, latency: Duration },
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No lock here: Debug may be printed while the state is locked.
        f.debug_struct("Health")
            .field("name", &self.inner.name)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// A healthy deployment with no probes recorded. `name` (the deployment's) appears in logs.
    ///
    /// Thresholds are the defaults (2 and 2) until [`set_thresholds`](Self::set_thresholds) or
    /// [`spawn_checker`] changes them.
    pub fn new(name: impl Into<String>) -> Self {
        let defaults = HealthCheckConfig::default();
        Health {
            inner: Arc::new(Inner {
                name: Arc::from(name.into()),
                healthy: AtomicBool::new(true),
                state: Mutex::new(State {
                    unhealthy_threshold: defaults.unhealthy_threshold,
                    healthy_threshold: defaults.healthy_threshold,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    last_checked: None,
                    last_latency: None,
                    last_error: None,
                    checks: 0,
                }),
            }),
        }
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the deployment is considered healthy. Lock-free: meant to be called per request.
    pub fn is_healthy(&self) -> bool {
        // Relaxed is enough: the flag publishes no other data, and a router that sees a verdict
        // a moment late routes one request the way it would have a moment earlier.
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// The current verdict and the details of the latest probe, read together.
    pub fn snapshot(&self) -> HealthSnapshot {
        let state = self.inner.state.lock();
        HealthSnapshot {
            healthy: self.is_healthy(),
            consecutive_failures: state.consecutive_failures,
            consecutive_successes: state.consecutive_successes,
            last_checked: state.last_checked,
            last_latency: state.last_latency,
            last_error: state.last_error.clone(),
            checks: state.checks,
        }
    }

    /// Sets how many consecutive failures mark the deployment unhealthy, and how many consecutive
    /// successes mark it healthy again. Zero is read as 1. Takes effect at the next
    /// [`record`](Self::record); the current verdict is not re-evaluated.
    pub fn set_thresholds(&self, unhealthy_threshold: u32, healthy_threshold: u32) {
        let mut state = self.inner.state.lock();
        state.unhealthy_threshold = unhealthy_threshold.max(1);
        state.healthy_threshold = healthy_threshold.max(1);
    }

    /// Records one probe result, its latency or its error, and applies the thresholds: the
    /// `unhealthy_threshold`-th failure in a row marks a healthy deployment unhealthy (logged at
    /// `warn`), the `healthy_threshold`-th success in a row marks an unhealthy one healthy
    /// (logged at `info`).
    pub fn record(&self, outcome: Result<Duration, String>) {
        let now = Instant::now();
        let transition = {
            let mut state = self.inner.state.lock();
            state.checks = state.checks.saturating_add(1);
            state.last_checked = Some(now);
            let healthy = self.is_healthy();
            match outcome {
                Ok(latency) => {
                    state.consecutive_failures = 0;
                    state.consecutive_successes = state.consecutive_successes.saturating_add(1);
                    state.last_latency = Some(latency);
                    state.last_error = None;
                    if !healthy && state.consecutive_successes >= state.healthy_threshold {
                        self.inner.healthy.store(true, Ordering::Relaxed);
                        Some(Transition::Recovered {
                            successes: state.consecutive_successes,
                            latency,
                        })
                    } else {
                        None
                    }
                }
                Err(error) => {
                    state.consecutive_successes = 0;
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    state.last_latency = None;
                    let failures = state.consecutive_failures;
                    let flips = healthy && failures >= state.unhealthy_threshold;
                    if flips {
                        self.inner.healthy.store(false, Ordering::Relaxed);
                    } else {
                        tracing::debug!(
                            deployment = %self.inner.name,
                            consecutive_failures = failures,
                            error = %error,
                            "health check failed"
                        );
                    }
                    state.last_error = Some(error.clone());
                    flips.then_some(Transition::Unhealthy { failures, error })
                }
            }
        };
        // Logged outside the lock so a slow log sink never holds up `snapshot` readers.
        match transition {
            Some(Transition::Unhealthy { failures, error }) => tracing::warn!(
                deployment = %self.inner.name,
                consecutive_failures = failures,
                error = %error,
                "deployment failed its health checks; marking it unhealthy"
            ),
            Some(Transition::Recovered { successes, latency }) => tracing::info!(
                deployment = %self.inner.name,
                consecutive_successes = successes,
                latency_ms = latency.as_millis(),
                "deployment passes its health checks again; marking it healthy"
            ),
            None => {}
        }
    }
}

/// Stops a deployment's background health checks when dropped (see `Engine::start_health_checks`).
#[derive(Debug)]
#[must_use = "dropping the handle stops the health checks at once"]
pub struct HealthCheckHandle {
    task: JoinHandle<()>,
}

impl HealthCheckHandle {
    /// Stops the checker. A probe in flight is cancelled (its future is dropped) and not
    /// recorded; the deployment keeps its last verdict. Same as dropping the handle.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Whether the checker task has ended. It only ends when stopped, or if its runtime shuts
    /// down.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for HealthCheckHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing one deployment in the background and records every result in `health`.
///
/// The first probe runs at once, then one every `config.interval` plus up to 10 % jitter, each
/// bounded by `config.timeout`; probes never overlap (see the [module docs](self) for the
/// details). `probe` returns the probe's latency, or an error message for the logs and
/// [`HealthSnapshot::last_error`]. The thresholds of `config` are applied to `health` (with
/// [`Health::set_thresholds`]). Zero values in `config` are clamped
/// ([`HealthCheckConfig::sanitized`]) rather than rejected.
///
/// Runs until the returned handle is dropped or [stopped](HealthCheckHandle::stop).
///
/// # Panics
///
/// The task is started with [`tokio::spawn`], so this must be called from within a tokio
/// runtime, and panics otherwise.
#[must_use = "dropping the handle stops the health checks at once"]
pub(crate) fn spawn_checker<F, Fut>(health: Health, config: HealthCheckConfig, probe: F) -> HealthCheckHandle
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send + 'static,
{
    let config = config.sanitized();
    health.set_thresholds(config.unhealthy_threshold, config.healthy_threshold);
    let task = tokio::spawn(run_checker(health, config, probe));
    HealthCheckHandle { task }
}

/// The checker's loop; `config` is already sanitized, so `interval` is not zero.
async fn run_checker<F, Fut>(health: Health, config: HealthCheckConfig, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Duration, String>>,
{
    loop {
        let started = Instant::now();
        let outcome = probe_once(&probe, config.timeout).await;
        health.record(outcome);
        // Scheduled from the start, so a probe's own duration does not stretch the interval;
        // when a probe overran, the deadline has passed and the next one starts at once.
        let next = started + jittered(config.interval, fastrand::f64());
        tokio::time::sleep_until(next).await;
    }
}

/// Runs one probe within `timeout`, turning a timeout or a panic into a failure.
async fn probe_once<F, Fut>(probe: &F, timeout: Duration) -> Result<Duration, String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Duration, String>>,
{
    // The closure call is inside the caught future, so a panic in either is caught. Unwind
    // safety is not a concern: nothing the probe touched is used again by this task.
    let attempt = AssertUnwindSafe(async { probe().await }).catch_unwind();
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_panic)) => Err("the health probe panicked".to_owned()),
        Err(_elapsed) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// `interval` plus `random` (in `[0, 1)`) times the largest jitter.
fn jittered(interval: Duration, random: f64) -> Duration {
    interval + interval.mul_f64(MAX_JITTER * random.clamp(0.0, 1.0))
}
