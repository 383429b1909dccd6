//! The per-second token bucket, as virtual-time scheduling (GCRA).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::error::{DemandTooLarge, LimitKind, RateLimitError, RateLimited, Refusal};
use super::snapshot::RateLimitSnapshot;
use super::{LimitMode, RateLimitConfig};

/// The longest time one request may stand for (a rate below one per day is taken as one per
/// day), so that `interval × burst` stays far from `Instant`'s range.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The pure core of the bucket, with time as a parameter.
///
/// Rather than a token count refilled by a timer, the bucket keeps one instant, the *theoretical
/// arrival time* `tat`: when the bucket would be full again if nothing else arrived. Each request
/// pushes it `interval` (= 1 / rate) later; a request may go once `tat` is at most
/// `capacity` (= burst × interval) ahead of the clock. That is exactly a token bucket of `burst`
/// tokens refilled at `rate`, with no refill task and O(1) state.
///
/// It also makes waiting fair for free: a request that cannot go now is given the *next free
/// slot* (`tat` moves on at once), so requests go in the order they arrived, and a small request
/// can never slip in ahead of a large one that is already waiting.
#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    interval: Duration,
    capacity: Duration,
    burst: u64,
    tat: Instant,
}

/// Where one admission goes in the bucket's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// When the request may go (`now` if at once).
    pub(crate) start: Instant,
    /// `tat` before and after this admission, to undo it.
    prev_tat: Instant,
    tat: Instant,
}

impl Gcra {
    /// A full bucket of `burst` refilled at `rate` per second. A `rate` that is not a positive
    /// number (which validation rejects) is read as the slowest rate, one per day; a zero `burst`
    /// as 1.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        // Rounded up to the nanosecond: a bucket may be a hair slower than configured, never
        // faster.
        let nanos = (1e9 / rate).ceil();
        // `rate > 0.0` is false for NaN too; a negative rate must not become a 1 ns interval.
        let interval = if rate > 0.0 && nanos.is_finite() && nanos < MAX_INTERVAL.as_nanos() as f64 {
            Duration::from_nanos((nanos as u64).max(1))
        } else {
            MAX_INTERVAL
        };
        let burst = burst.max(1);
        Gcra {
            interval,
            capacity: interval.saturating_mul(burst),
            burst: u64::from(burst),
            tat: now,
        }
    }

    /// Where `cost` requests arriving at `now` fit, without admitting them.
    pub(crate) fn slot(&self, now: Instant, cost: u64) -> Result<Slot, DemandTooLarge> {
        let too_large = DemandTooLarge {
            which_limit: LimitKind::RequestsPerSecond,
            demand: cost,
            limit: self.burst,
        };
        if cost > self.burst {
            return Err(too_large);
        }
        // cost <= burst, which came from a u32.
        let increment = self
            .interval
            .saturating_mul(u32::try_from(cost).unwrap_or(u32::MAX));
        let tat = self.tat.max(now).checked_add(increment).ok_or(too_large)?;
        let start = tat.checked_sub(self.capacity).map_or(now, |start| start.max(now));
        Ok(Slot {
            start,
            prev_tat: self.tat,
            tat,
        })
    }

    /// Takes `slot` (from [`slot`](Self::slot) on the current state).
    pub(crate) fn commit(&mut self, slot: &Slot) {
        self.tat = slot.tat;
    }

    /// Gives `slot` back if nothing was scheduled after it; otherwise its time stays used, since
    /// handing it to a newcomer could put two requests closer together than the rate allows
    /// (the requests behind it already have their times).
    pub(crate) fn undo(&mut self, slot: &Slot) {
        if self.tat == slot.tat {
            self.tat = slot.prev_tat;
        }
    }

    /// Whether the bucket is full at `now`, i.e. the same as a new one.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.tat <= now
    }
}

#[derive(Debug)]
struct BucketState {
    gcra: Gcra,
    /// Requests sleeping until their slot.
    waiting: usize,
}

/// A token bucket of `burst` requests refilled at `requests_per_second`, shared by every clone.
///
/// [`acquire`](Self::acquire) honours the [`LimitMode`]: in `Wait` mode a request that finds the
/// bucket empty waits its turn, first come first served, unless that would take more than
/// `max_wait` or `max_queue` requests are already waiting, in which case it is refused at once.
/// [`try_acquire`](Self::try_acquire) never waits.
#[derive(Clone)]
pub struct TokenBucket {
    state: Arc<Mutex<BucketState>>,
    mode: LimitMode,
    max_queue: usize,
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("TokenBucket")
            .field("interval", &state.gcra.interval)
            .field("burst", &state.gcra.burst)
            .field("mode", &self.mode)
            .field("waiting", &state.waiting)
            .finish()
    }
}

impl TokenBucket {
    /// The bucket of `config` (its per-minute fields are ignored).
    ///
    /// It does not fail: `config` is expected to be valid (config loading checks it; check a
    /// config built by hand with [`RateLimitConfig::validate`]). An invalid one still gives a
    /// working bucket, reading each bad value as the strictest usable one: a `requests_per_second`
    /// that is not a positive number admits one request per day, a zero `burst` is 1. Without
    /// `requests_per_second` the bucket has no rate to keep and admits up to `burst` at a time
    /// without waiting.
    pub fn new(config: &RateLimitConfig) -> Self {
        let rate = config.requests_per_second.unwrap_or(f64::INFINITY);
        TokenBucket {
            state: Arc::new(Mutex::new(BucketState {
                gcra: Gcra::new(rate, config.burst_or_default(), Instant::now()),
                waiting: 0,
            })),
            mode: config.mode,
            max_queue: config.max_queue,
        }
    }

    /// Takes `cost` requests' worth from the bucket, waiting if the mode allows.
    ///
    /// The request's place in line is taken when this is *called*, not when the future is first
    /// polled, so callers are served in call order. Dropping the future while it waits leaves
    /// the line; its slot goes back to the bucket if nobody queued behind it.
    pub fn acquire(&self, cost: u64) -> impl Future<Output = Result<(), RateLimitError>> + Send + use<> {
        let ticket = self.schedule(Instant::now(), cost, true);
        async move {
            ticket?.ready().await;
            Ok(())
        }
    }

    /// Takes `cost` requests' worth from the bucket now, or refuses at once whatever the mode.
    pub fn try_acquire(&self, cost: u64) -> Result<(), RateLimitError> {
        self.schedule(Instant::now(), cost, false).map(drop)
    }

    /// How many requests are waiting for the bucket.
    pub fn waiting(&self) -> usize {
        self.state.lock().waiting
    }

    /// Books a slot for `cost` requests arriving at `now`. With `may_wait` and a `Wait` mode, the
    /// slot may be in the future (the ticket then holds a place in the queue until it is
    /// ready or dropped).
    pub(crate) fn schedule(&self, now: Instant, cost: u64, may_wait: bool) -> Result<Ticket, RateLimitError> {
        let mut state = self.state.lock();
        let slot = state.gcra.slot(now, cost)?;
        let wait = slot.start.saturating_duration_since(now);
        let queued = !wait.is_zero();
        if queued {
            let reason = match self.mode {
                LimitMode::Wait { max_wait } if may_wait => {
                    if wait > max_wait {
                        Some(Refusal::WaitTooLong)
                    } else if state.waiting >= self.max_queue {
                        Some(Refusal::QueueFull)
                    } else {
                        None
                    }
                }
                _ => Some(Refusal::Exhausted),
            };
            if let Some(reason) = reason {
                return Err(RateLimitError::Limited(RateLimited {
                    which_limit: LimitKind::RequestsPerSecond,
                    reason,
                    retry_after: wait,
                    snapshot: Box::new(RateLimitSnapshot {
                        retry_after: Some(wait),
                        ..RateLimitSnapshot::default()
                    }),
                }));
            }
            state.waiting += 1;
        }
        state.gcra.commit(&slot);
        Ok(Ticket {
            state: self.state.clone(),
            slot,
            queued,
        })
    }

    /// Whether the bucket is full and nobody waits: the same as a new bucket.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let state = self.state.lock();
        state.waiting == 0 && state.gcra.is_full(now)
    }
}

/// A booked slot in a [`TokenBucket`].
pub(crate) struct Ticket {
    state: Arc<Mutex<BucketState>>,
    slot: Slot,
    /// Counted in `waiting` until the slot's time comes.
    queued: bool,
}

impl Ticket {
    /// Waits until the slot's time.
    pub(crate) async fn ready(mut self) -> Ticket {
        if self.queued {
            tokio::time::sleep_until(self.slot.start).await;
            let mut state = self.state.lock();
            state.waiting = state.waiting.saturating_sub(1);
            self.queued = false;
        }
        self
    }

    /// Gives the slot back (if nothing was scheduled after it): the request will not be sent
    /// after all.
    pub(crate) fn cancel(mut self) {
        let mut state = self.state.lock();
        if self.queued {
            state.waiting = state.waiting.saturating_sub(1);
            self.queued = false;
        }
        state.gcra.undo(&self.slot);
    }
}

impl Drop for Ticket {
    /// A ticket dropped while waiting leaves the queue and gives its slot back if it can. One
    /// dropped after its time (the request went) keeps it.
    fn drop(&mut self) {
        if self.queued {
            let mut state = self.state.lock();
            state.waiting = state.waiting.saturating_sub(1);
            state.gcra.undo(&self.slot);
        }
    }
}
