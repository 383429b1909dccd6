//! How one repetition of a case is timed: `threads` OS threads released together by a spinning
//! gate, each running the check a fixed number of times, the repetition's time spanning the first
//! thread's start to the last thread's end.
//!
//! OS threads rather than tokio tasks, because the limiters' `try_*` calls never await: what is
//! measured is contention between cores on the limiter's state, which tasks on one runtime
//! would blur with scheduling.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::time::Instant;

/// The parameters of one repetition.
pub(super) struct Params<'a> {
    pub(super) threads: usize,
    pub(super) iterations: u64,
    pub(super) keys: &'a [Arc<str>],
}

/// One repetition's outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) elapsed: Duration,
    pub(super) ops: u64,
    pub(super) admitted: u64,
}

impl Sample {
    pub(super) fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops.max(1) as f64
    }
}

/// xorshift64*: a few cycles per number, so the key pick costs the keyed cases next to nothing.
pub(super) struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for small `n`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((u128::from(r) * n as u128) >> 64) as usize
    }
}

const WAIT: u8 = 0;
const GO: u8 = 1;
const ABORT: u8 = 2;

/// What one thread did.
struct ThreadRun {
    start: Instant,
    end: Instant,
    admitted: u64,
}

/// Runs `op` `p.iterations` times on each of `p.threads` threads, all released together; `op`
/// returns whether the check was admitted.
pub(super) fn timed<F>(p: &Params<'_>, op: F) -> Result<Sample>
where
    F: Fn(&mut Rng) -> bool + Sync,
{
    let gate = AtomicU8::new(WAIT);
    let (op, gate, iterations) = (&op, &gate, p.iterations);
    let runs = std::thread::scope(|scope| -> Result<Vec<ThreadRun>> {
        let mut handles = Vec::with_capacity(p.threads);
        for t in 0..p.threads {
            let spawned = std::thread::Builder::new()
                .name(format!("limiter-bench-{t}"))
                .spawn_scoped(scope, move || {
                    let mut rng = Rng::new(t as u64);
                    // Spin so that every thread starts the moment the gate opens.
                    let mut state = gate.load(Ordering::Acquire);
                    while state == WAIT {
                        std::hint::spin_loop();
                        state = gate.load(Ordering::Acquire);
                    }
                    let start = Instant::now();
                    let mut admitted = 0u64;
                    if state == GO {
                        for _ in 0..iterations {
                            admitted += u64::from(black_box(op(&mut rng)));
                        }
                    }
                    ThreadRun {
                        start,
                        end: Instant::now(),
                        admitted,
                    }
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    // Release the threads already waiting, without running anything.
                    gate.store(ABORT, Ordering::Release);
                    return Err(anyhow!(error).context("spawning a benchmark thread"));
                }
            }
        }
        gate.store(GO, Ordering::Release);
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a benchmark thread panicked")))
            .collect()
    })?;
    let (Some(start), Some(end)) = (
        runs.iter().map(|r| r.start).min(),
        runs.iter().map(|r| r.end).max(),
    ) else {
        bail!("no benchmark threads ran");
    };
    Ok(Sample {
        elapsed: end.saturating_duration_since(start),
        ops: iterations * p.threads as u64,
        admitted: runs.iter().map(|r| r.admitted).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let i = rng.below(10);
            assert!(i < 10);
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_ne!(Rng::new(0).0, Rng::new(1).0);
    }
}
