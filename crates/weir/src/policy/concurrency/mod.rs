//! Adaptive concurrency: a limit on calls in flight that follows the upstream's latency, so a
//! slowing upstream gets less work instead of a queue that grows without bound.
//!
//! The idea is the one of Envoy's adaptive concurrency filter and Netflix's concurrency-limits
//! (Little's law: in flight = throughput × latency; past the upstream's capacity, more
//! concurrency only buys latency). [`AdaptiveLimit`] keeps the limit; each window of
//! [`AdaptiveConcurrencyConfig::window`] it compares the window's mean latency with a
//! *baseline* (the latency when lightly loaded):
//!
//! - above `tolerance` × baseline (or a call timed out): the limit shrinks by the ratio
//!   `tolerance × baseline / latency`, bounded to `[0.5, 0.9]` per window — a gradient, so a
//!   badly overloaded upstream is backed off fast and a slightly slow one gently;
//! - otherwise, if the limit was reached in the window: it grows by `√limit` (at least 1), fast
//!   from small limits, careful near large ones;
//! - every `baseline_interval`, one window runs at `min_limit` and its latency becomes the new
//!   baseline (Envoy's minRTT recalculation), so an upstream that became slower for good is
//!   learned without letting the baseline creep up with the load itself.
//!
//! Everything is computed lazily when calls start and end (no background task), on tokio time,
//! so tests can pause it. A call over the limit is refused at once ([`Shed`]); the engine turns
//! that into the deployment being unusable, so routing tries another one or answers a shaped
//! 503 with `Retry-After`.

mod layer;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

pub use crate::config::AdaptiveConcurrencyConfig;
pub use layer::{AdaptiveConcurrencyLayer, AdaptiveConcurrencyService, Settle};

/// A call refused because the deployment is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// The limit at the time.
    pub limit: u32,
    /// When a slot is likely to be free again (about one baseline latency).
    pub retry_in: Duration,
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at its adaptive concurrency limit of {} calls in flight",
            self.limit
        )
    }
}

/// How a finished call informs the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// The upstream answered after this long (for a stream: to its first event).
    Latency(Duration),
    /// The call timed out: the strongest sign of overload.
    Timeout,
    /// Nothing to learn (a fast error, a call that was not made).
    Ignore,
}

/// The shared limit of one deployment (cheap to clone).
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    config: AdaptiveConcurrencyConfig,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: u32,
    baseline: Option<Duration>,
    /// This window's limit is pinned to `min_limit` and its latency becomes the baseline.
    measuring: bool,
    /// Counts measuring phases; only calls started in the current one measure the baseline
    /// (calls still finishing from before carry the load it is meant to exclude).
    epoch: u64,
    remeasure_at: Instant,
    window: Window,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    latency_sum: Duration,
    samples: u32,
    /// The fastest call: the first baseline, before any measuring window ran.
    fastest: Option<Duration>,
    timeouts: u32,
    /// The limit was reached (a call was shed, or in flight touched the limit).
    saturated: bool,
}

impl Window {
    fn new(start: Instant) -> Window {
        Window {
            start,
            latency_sum: Duration::ZERO,
            samples: 0,
            fastest: None,
            timeouts: 0,
            saturated: false,
        }
    }
}

impl AdaptiveLimit {
    /// A limit at `config.initial_limit` (the config is clamped to sane bounds, never refused).
    pub fn new(config: AdaptiveConcurrencyConfig) -> AdaptiveLimit {
        let mut config = config;
        config.min_limit = config.min_limit.max(1);
        config.max_limit = config.max_limit.max(config.min_limit);
        config.initial_limit = config.initial_limit.clamp(config.min_limit, config.max_limit);
        config.tolerance = if config.tolerance.is_finite() {
            config.tolerance.max(1.0)
        } else {
            2.0
        };
        config.min_samples = config.min_samples.max(1);
        if config.window.is_zero() {
            config.window = Duration::from_millis(1);
        }
        let now = Instant::now();
        AdaptiveLimit {
            state: Arc::new(Mutex::new(State {
                limit: f64::from(config.initial_limit),
                in_flight: 0,
                baseline: None,
                measuring: false,
                epoch: 0,
                remeasure_at: now + config.baseline_interval,
                window: Window::new(now),
            })),
            config,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &AdaptiveConcurrencyConfig {
        &self.config
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        let mut state = self.state.lock();
        self.roll(&mut state);
        self.effective(&state)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.state.lock().in_flight
    }

    /// The latency the limit is measured against, once known.
    pub fn baseline(&self) -> Option<Duration> {
        self.state.lock().baseline
    }

    /// A slot for one call, or [`Shed`] when the limit is reached. The permit frees the slot
    /// when dropped; [`Permit::sample`] first tells the limit how the call went.
    pub fn try_acquire(&self) -> Result<Permit, Shed> {
        let mut state = self.state.lock();
        self.roll(&mut state);
        let limit = self.effective(&state);
        if state.in_flight >= limit {
            state.window.saturated = true;
            let retry_in = state
                .baseline
                .unwrap_or(self.config.window)
                .min(self.config.window);
            return Err(Shed { limit, retry_in });
        }
        state.in_flight += 1;
        if state.in_flight >= limit {
            state.window.saturated = true;
        }
        Ok(Permit {
            epoch: state.measuring.then_some(state.epoch),
            limit: Some(self.clone()),
            started: Instant::now(),
            sampled: false,
        })
    }

    fn effective(&self, state: &State) -> u32 {
        if state.measuring {
            self.config.min_limit
        } else {
            (state.limit.round() as u32).clamp(self.config.min_limit, self.config.max_limit)
        }
    }

    fn record(&self, sample: Sample, epoch: Option<u64>) {
        let mut state = self.state.lock();
        self.roll(&mut state);
        if state.measuring && epoch != Some(state.epoch) {
            return;
        }
        match sample {
            Sample::Latency(took) => {
                state.window.latency_sum += took;
                state.window.samples += 1;
                state.window.fastest = Some(state.window.fastest.map_or(took, |f| f.min(took)));
            }
            Sample::Timeout => state.window.timeouts += 1,
            Sample::Ignore => {}
        }
    }

    fn release(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }

    /// Closes the window if it is over and recomputes the limit from it.
    fn roll(&self, state: &mut State) {
        let now = Instant::now();
        if now < state.window.start + self.config.window {
            return;
        }
        let window = std::mem::replace(&mut state.window, Window::new(now));
        let mean = (window.samples > 0).then(|| window.latency_sum / window.samples);
        let (min, max) = (f64::from(self.config.min_limit), f64::from(self.config.max_limit));
        if state.measuring {
            // The window ran at `min_limit`: its latency is the upstream's own.
            if let Some(mean) = mean {
                state.baseline = Some(mean);
                state.measuring = false;
                state.remeasure_at = now + self.config.baseline_interval;
            }
            return;
        }
        let enough = window.samples >= self.config.min_samples;
        if state.baseline.is_none() && enough {
            state.baseline = window.fastest;
        }
        if window.timeouts > 0 {
            state.limit = (state.limit * 0.5).max(min);
        } else if let (Some(mean), Some(baseline), true) = (mean, state.baseline, enough) {
            let target = baseline.as_secs_f64() * self.config.tolerance;
            let latency = mean.as_secs_f64();
            if latency > target {
                state.limit = (state.limit * (target / latency).clamp(0.5, 0.9)).max(min);
            } else if window.saturated {
                state.limit = (state.limit + state.limit.sqrt().max(1.0)).min(max);
            }
            if mean < baseline {
                state.baseline = Some(mean);
            }
        }
        if now >= state.remeasure_at {
            state.measuring = true;
            state.epoch += 1;
        }
    }
}

/// One call's slot in an [`AdaptiveLimit`]; freed when dropped.
#[derive(Debug)]
pub struct Permit {
    limit: Option<AdaptiveLimit>,
    /// The measuring phase it started in, if it started in one.
    epoch: Option<u64>,
    started: Instant,
    sampled: bool,
}

impl Permit {
    /// Tells the limit how the call went: `Sample::Latency` measured from when the permit was
    /// taken is the usual one ([`Permit::answered`]). Only the first sample counts.
    pub fn sample(&mut self, sample: Sample) {
        if self.sampled {
            return;
        }
        self.sampled = true;
        if let Some(limit) = &self.limit {
            limit.record(sample, self.epoch);
        }
    }

    /// Records the time since the permit was taken as the call's latency.
    pub fn answered(&mut self) {
        let took = self.started.elapsed();
        self.sample(Sample::Latency(took));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(limit) = self.limit.take() {
            limit.release();
        }
    }
}
