//! A small latency histogram per deployment, for the p50/p99 the admin API reports.
//!
//! The balancer's peak-EWMA ([`super::balance::LoadStats`]) is one number tuned for routing: it
//! jumps to the slowest recent sample. Operators asking "how slow is this upstream?" want
//! quantiles instead, and over a bounded recent past rather than since startup.
//!
//! # Why this shape
//!
//! - **Fixed log-linear buckets** (8 per power of two, as HdrHistogram does with 1 significant
//!   binary digit more than a power-of-two histogram): a quantile is reported to within 6.25 % of
//!   the true sample, from 1 µs to 12 days, in 304 `u32` counters. No allocation per sample.
//! - **Two rotating windows** of [`WINDOW`] each: samples go into the current window; when it is
//!   over, it becomes the previous one and a fresh one starts. Quantiles read both, so they cover
//!   the last one to two windows: old spells fall out instead of diluting forever, and a
//!   quantile never rests on a window that just started empty.
//! - **One `parking_lot` mutex**, held for an index computation and an increment (or, once per
//!   window, clearing the counters). Recording happens once per successful attempt, next to the
//!   EWMA's own lock, so it adds tens of nanoseconds to a request that takes milliseconds.
//!
//! Time is tokio's clock, so paused-time tests control the windows.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How long one window lasts; quantiles cover the last one to two of them.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Sub-buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 8;
/// `log2(SUB_BUCKETS)`.
const SUB_BITS: u32 = 3;
/// Samples are clamped below 2^40 µs (about 12.7 days).
const MAX_EXPONENT: u32 = 39;
/// Buckets `0..8` hold 0..7 µs exactly; then 8 per power of two up to `MAX_EXPONENT`.
const BUCKETS: usize = (SUB_BUCKETS + (MAX_EXPONENT - SUB_BITS + 1) as u64 * SUB_BUCKETS) as usize;

/// Latency quantiles over the recent past.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyQuantiles {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest sample's bucket.
    pub max: Duration,
    /// How many samples they were computed from.
    pub samples: u64,
}

/// Per-deployment latency samples in two rotating windows. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    state: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    current: Counts,
    previous: Counts,
    /// When `current` started.
    started: Instant,
}

#[derive(Debug)]
struct Counts {
    buckets: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Counts {
    fn new() -> Self {
        Counts {
            buckets: Box::new([0; BUCKETS]),
            total: 0,
        }
    }

    fn clear(&mut self) {
        self.buckets.fill(0);
        self.total = 0;
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram whose first window starts now.
    pub(crate) fn new() -> Self {
        LatencyHistogram {
            state: Mutex::new(Windows {
                current: Counts::new(),
                previous: Counts::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Records one sample taken at `now`.
    pub(crate) fn record(&self, latency: Duration, now: Instant) {
        let index = bucket_of(latency);
        let mut state = self.state.lock();
        state.rotate(now);
        if let Some(slot) = state.current.buckets.get_mut(index) {
            *slot = slot.saturating_add(1);
        }
        state.current.total = state.current.total.saturating_add(1);
    }

    /// p50, p99 and max over the last one to two windows; `None` without samples there.
    pub(crate) fn quantiles(&self) -> Option<LatencyQuantiles> {
        let mut state = self.state.lock();
        state.rotate(Instant::now());
        let samples = state.current.total + state.previous.total;
        if samples == 0 {
            return None;
        }
        let count = |i: usize| {
            u64::from(state.current.buckets.get(i).copied().unwrap_or(0))
                + u64::from(state.previous.buckets.get(i).copied().unwrap_or(0))
        };
        // The smallest bucket at which the cumulative count reaches `rank` (1-based).
        let at_rank = |rank: u64| {
            let mut seen = 0;
            for i in 0..BUCKETS {
                seen += count(i);
                if seen >= rank {
                    return representative(i);
                }
            }
            representative(BUCKETS - 1)
        };
        let rank = |q: f64| ((q * samples as f64).ceil() as u64).clamp(1, samples);
        let max = (0..BUCKETS)
            .rev()
            .find(|&i| count(i) > 0)
            .map_or(Duration::ZERO, representative);
        Some(LatencyQuantiles {
            p50: at_rank(rank(0.50)),
            p99: at_rank(rank(0.99)),
            max,
            samples,
        })
    }
}

impl Windows {
    /// Moves to the window `now` falls in: the current one becomes the previous one, or both are
    /// cleared when more than a whole window passed without a sample.
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < WINDOW {
            return;
        }
        if elapsed < WINDOW * 2 {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.started += WINDOW;
        } else {
            self.current.clear();
            self.previous.clear();
            self.started = now;
        }
    }
}

/// The bucket of a sample: exact below 8 µs, then 8 buckets per power of two.
fn bucket_of(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .min((1 << (MAX_EXPONENT + 1)) - 1);
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros();
    let sub = (micros >> (exponent - SUB_BITS)) - SUB_BUCKETS;
    (SUB_BUCKETS + u64::from(exponent - SUB_BITS) * SUB_BUCKETS + sub) as usize
}

/// The middle of a bucket's range, as the value reported for its samples.
fn representative(index: usize) -> Duration {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return Duration::from_micros(index);
    }
    let octave = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
    let width = 1u64 << octave;
    let lower = (SUB_BUCKETS + sub) << octave;
    Duration::from_micros(lower + width / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_the_error_bound() {
        let mut last = 0;
        for micros in [
            0u64, 1, 7, 8, 9, 15, 16, 17, 100, 1_000, 12_345, 999_999, 60_000_000,
        ] {
            let index = bucket_of(Duration::from_micros(micros));
            assert!(index >= last, "buckets must grow with the value");
            last = index;
            let back = representative(index).as_micros() as f64;
            let error = (back - micros as f64).abs() / (micros as f64).max(1.0);
            assert!(error <= 0.0625, "{micros} µs reported as {back} µs");
        }
        assert_eq!(bucket_of(Duration::from_secs(u64::MAX)), BUCKETS - 1);
        // Each bucket's representative falls back into that bucket.
        for i in 0..BUCKETS {
            assert_eq!(bucket_of(representative(i)), i);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quantiles_of_a_known_distribution() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantiles(), None);
        let now = Instant::now();
        // 98 fast samples, 2 slow ones: the median is fast, the p99 is slow.
        for _ in 0..98 {
            h.record(Duration::from_millis(10), now);
        }
        for _ in 0..2 {
            h.record(Duration::from_millis(900), now);
        }
        let q = h.quantiles().unwrap();
        assert_eq!(q.samples, 100);
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() / ms <= 0.0625;
        assert!(near(q.p50, 10.0), "{q:?}");
        assert!(near(q.p99, 900.0), "{q:?}");
        assert!(near(q.max, 900.0), "{q:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn old_windows_fall_out() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_millis(500), Instant::now());
        tokio::time::advance(WINDOW).await;
        // One window later the sample is in the previous window: still counted.
        h.record(Duration::from_millis(5), Instant::now());
        assert_eq!(h.quantiles().unwrap().samples, 2);
        tokio::time::advance(WINDOW).await;
        // Two windows later only the newer sample is left.
        let q = h.quantiles().unwrap();
        assert_eq!(q.samples, 1);
        assert!(q.max < Duration::from_millis(6));
        tokio::time::advance(WINDOW * 3).await;
        assert_eq!(h.quantiles(), None);
    }
}
