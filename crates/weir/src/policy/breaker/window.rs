//! The sliding window behind the failure rate.
//!
//! Keeping every call's timestamp would cost memory in proportion to traffic (60 000 entries a
//! minute at 1 000 requests per second, per deployment). Instead the window is cut into a fixed
//! number of buckets, each counting calls and failures for a tenth of the window: memory is
//! constant, recording is O(1) and reading the totals is a sum over ten buckets. The price is
//! resolution: calls older than the window are never counted, calls younger than nine tenths of it
//! always are, and in between it depends on where the bucket boundary falls.

use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window. Ten keeps the error at a tenth of the window (6 s of a minute) for a sum
/// over ten integers per read.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time (counted in bucket widths since `origin`) this bucket holds.
    epoch: u64,
    calls: u32,
    failures: u32,
}

/// Counts of calls and failures over the last `window`, to a tenth of it.
#[derive(Debug, Clone)]
pub(super) struct Window {
    origin: Instant,
    bucket_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(super) fn new(window: Duration, now: Instant) -> Self {
        Window {
            origin: now,
            // At least a nanosecond so a zero window cannot divide by zero; it then simply forgets
            // every call almost at once.
            bucket_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX)
    }

    /// Counts one call.
    pub(super) fn record(&mut self, now: Instant, failure: bool) {
        let epoch = self.epoch(now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            // The slot still holds a slice that has slid out of the window: reuse it.
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        if failure {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// `(calls, failures)` within the window as of `now`.
    pub(super) fn totals(&self, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|bucket| bucket.epoch <= epoch && epoch - bucket.epoch < BUCKETS as u64)
            .fold((0u32, 0u32), |(calls, failures), bucket| {
                (
                    calls.saturating_add(bucket.calls),
                    failures.saturating_add(bucket.failures),
                )
            })
    }
}
