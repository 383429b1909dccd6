//! What the limiter bench measures: each case's limiter, its limits, and the body one check runs.
//!
//! Every body builds its limiter before calling `timed`, so construction (and, for the keyed
//! cases, creating each key's limiter) stays outside the clock: the figures are the per-check
//! cost a running gateway pays, not its startup.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use tokio::time::Instant;
use weir::policy::limit::{Demand, KeyedLimiter, LimitMode, RateLimitConfig, RateLimiter, TokenBucket};

use super::Expect;
use super::harness::{Params, Sample, timed};

/// Generous per-second rate: one request per nanosecond, far above what a check can reach.
const FAST_RPS: u32 = 1_000_000_000;
/// Burst of the generous buckets.
const FAST_BURST: u32 = 1_000_000;
/// Generous per-minute limits.
const FAST_RPM: u64 = 1_000_000_000_000;
const FAST_TPM: u64 = 1_000_000_000_000_000;
/// The token estimate a request is admitted with (prompt estimate, `max_tokens`) and the usage
/// it is reconciled to.
const ESTIMATE: (u64, u64) = (800, 512);
const ACTUAL: (u64, u64) = (750, 300);
/// Input tokens per minute of the refusing window: the first request fits, the second never
/// does within the run.
const TIGHT_INPUT_TPM: u64 = 1_000;

/// What one case measures.
pub(super) struct Case {
    /// `weir`, `governor` or `baseline`.
    pub(super) group: &'static str,
    /// What is called per check.
    pub(super) name: &'static str,
    /// The limits it is configured with.
    pub(super) limits: &'static str,
    /// Whether it picks one of the keys per check (the key count is added to `limits`).
    pub(super) keyed: bool,
    pub(super) expect: Expect,
    /// Runs one repetition on a fresh limiter.
    pub(super) run: fn(&Params<'_>) -> Result<Sample>,
}

/// The cases, in the order run and reported.
pub(super) const CASES: &[Case] = &[
    Case {
        group: "baseline",
        name: "clock: tokio Instant::now",
        limits: "-",
        keyed: false,
        expect: Expect::Admit,
        run: baseline_clock,
    },
    Case {
        group: "weir",
        name: "TokenBucket::try_acquire",
        limits: "1e9/s, burst 1e6",
        keyed: false,
        expect: Expect::Admit,
        run: weir_bucket_fast,
    },
    Case {
        group: "weir",
        name: "RateLimiter::try_reserve",
        limits: "1e9/s, burst 1e6",
        keyed: false,
        expect: Expect::Admit,
        run: weir_limiter_rps,
    },
    Case {
        group: "weir",
        name: "RateLimiter reserve+reconcile",
        limits: "rpm+in/out tpm (huge)",
        keyed: false,
        expect: Expect::Admit,
        run: weir_limiter_window_fast,
    },
    Case {
        group: "weir",
        name: "KeyedLimiter::try_reserve",
        limits: "1e9/s, burst 1e6",
        keyed: true,
        expect: Expect::Admit,
        run: weir_keyed_rps,
    },
    Case {
        group: "weir",
        name: "KeyedLimiter reserve+reconcile",
        limits: "rpm+in/out tpm (huge)",
        keyed: true,
        expect: Expect::Admit,
        run: weir_keyed_window,
    },
    Case {
        group: "governor",
        name: "direct check (GCRA)",
        limits: "1e9/s, burst 1e6",
        keyed: false,
        expect: Expect::Admit,
        run: governor_direct_fast,
    },
    Case {
        group: "governor",
        name: "keyed check_key (dashmap)",
        limits: "1e9/s, burst 1e6",
        keyed: true,
        expect: Expect::Admit,
        run: governor_keyed,
    },
    Case {
        group: "weir",
        name: "TokenBucket::try_acquire",
        limits: "1/s, burst 1",
        keyed: false,
        expect: Expect::Refuse,
        run: weir_bucket_tight,
    },
    Case {
        group: "weir",
        name: "RateLimiter reserve+reconcile",
        limits: "in tpm 1000, est 800",
        keyed: false,
        expect: Expect::Refuse,
        run: weir_limiter_window_tight,
    },
    Case {
        group: "governor",
        name: "direct check (GCRA)",
        limits: "1/s, burst 1",
        keyed: false,
        expect: Expect::Refuse,
        run: governor_direct_tight,
    },
];

/// `config`, checked: Weir's limiters take a validated config and do not check it again.
fn weir(config: RateLimitConfig) -> Result<RateLimitConfig> {
    config
        .validate()
        .map_err(|e| anyhow!("building the Weir limiter: {e}"))?;
    Ok(config)
}

fn bucket_config(rps: u32, burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_second: Some(f64::from(rps)),
        burst: Some(burst),
        mode: LimitMode::FailFast,
        ..RateLimitConfig::default()
    }
}

fn window_config(input_tokens_per_minute: u64) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: Some(FAST_RPM),
        input_tokens_per_minute: Some(input_tokens_per_minute),
        output_tokens_per_minute: Some(FAST_TPM),
        ..RateLimitConfig::default()
    }
}

/// What the gateway does per request: reserve the estimate, then reconcile with the usage.
fn reserve_reconcile(limiter: &RateLimiter) -> bool {
    match limiter.try_reserve(Demand::request(ESTIMATE.0, ESTIMATE.1)) {
        Ok(reservation) => {
            reservation.reconcile(ACTUAL.0, ACTUAL.1);
            true
        }
        Err(_) => false,
    }
}

fn governor_quota(per_second: u32, burst: u32) -> Result<Quota> {
    let rate = NonZeroU32::new(per_second).context("governor rate must be non-zero")?;
    let burst = NonZeroU32::new(burst).context("governor burst must be non-zero")?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

fn baseline_clock(p: &Params<'_>) -> Result<Sample> {
    timed(p, |_| {
        black_box(Instant::now());
        true
    })
}

fn weir_bucket_fast(p: &Params<'_>) -> Result<Sample> {
    let bucket = TokenBucket::new(&weir(bucket_config(FAST_RPS, FAST_BURST))?);
    timed(p, |_| bucket.try_acquire(1).is_ok())
}

fn weir_bucket_tight(p: &Params<'_>) -> Result<Sample> {
    let bucket = TokenBucket::new(&weir(bucket_config(1, 1))?);
    timed(p, |_| bucket.try_acquire(1).is_ok())
}

fn weir_limiter_rps(p: &Params<'_>) -> Result<Sample> {
    let limiter = RateLimiter::new(weir(bucket_config(FAST_RPS, FAST_BURST))?);
    timed(p, |_| limiter.try_reserve(Demand::request(0, 0)).is_ok())
}

fn weir_limiter_window_fast(p: &Params<'_>) -> Result<Sample> {
    let limiter = RateLimiter::new(weir(window_config(FAST_TPM))?);
    timed(p, |_| reserve_reconcile(&limiter))
}

fn weir_limiter_window_tight(p: &Params<'_>) -> Result<Sample> {
    let limiter = RateLimiter::new(weir(window_config(TIGHT_INPUT_TPM))?);
    timed(p, |_| reserve_reconcile(&limiter))
}

fn weir_keyed_rps(p: &Params<'_>) -> Result<Sample> {
    let keyed = KeyedLimiter::new(weir(bucket_config(FAST_RPS, FAST_BURST))?);
    // Every key's limiter exists before the clock starts: this measures lookups, not creation.
    for key in p.keys {
        let _ = keyed.try_reserve(key, Demand::request(0, 0));
    }
    let keys = p.keys;
    timed(p, |rng| {
        keyed
            .try_reserve(&keys[rng.below(keys.len())], Demand::request(0, 0))
            .is_ok()
    })
}

fn weir_keyed_window(p: &Params<'_>) -> Result<Sample> {
    let keyed = KeyedLimiter::new(weir(window_config(FAST_TPM))?);
    for key in p.keys {
        reserve_reconcile(&keyed.limiter(key));
    }
    let keys = p.keys;
    timed(p, |rng| {
        match keyed.try_reserve(
            &keys[rng.below(keys.len())],
            Demand::request(ESTIMATE.0, ESTIMATE.1),
        ) {
            Ok(reservation) => {
                reservation.reconcile(ACTUAL.0, ACTUAL.1);
                true
            }
            Err(_) => false,
        }
    })
}

fn governor_direct_fast(p: &Params<'_>) -> Result<Sample> {
    let limiter = DefaultDirectRateLimiter::direct(governor_quota(FAST_RPS, FAST_BURST)?);
    timed(p, |_| limiter.check().is_ok())
}

fn governor_direct_tight(p: &Params<'_>) -> Result<Sample> {
    let limiter = DefaultDirectRateLimiter::direct(governor_quota(1, 1)?);
    timed(p, |_| limiter.check().is_ok())
}

fn governor_keyed(p: &Params<'_>) -> Result<Sample> {
    let limiter: DefaultKeyedRateLimiter<Arc<str>> =
        DefaultKeyedRateLimiter::keyed(governor_quota(FAST_RPS, FAST_BURST)?);
    for key in p.keys {
        let _ = limiter.check_key(key);
    }
    let keys = p.keys;
    timed(p, |rng| limiter.check_key(&keys[rng.below(keys.len())]).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::make_keys;

    #[test]
    fn every_case_admits_or_refuses_as_labelled() {
        let keys = make_keys(50);
        for threads in [1, 2] {
            let p = Params {
                threads,
                iterations: 2_000,
                keys: &keys,
            };
            for case in CASES {
                let sample = (case.run)(&p).unwrap();
                assert_eq!(sample.ops, 2_000 * threads as u64);
                let admitted = sample.admitted as f64 / sample.ops as f64;
                match case.expect {
                    Expect::Admit => assert!(admitted > 0.999, "{} {}: {admitted}", case.group, case.name),
                    Expect::Refuse => assert!(admitted < 0.01, "{} {}: {admitted}", case.group, case.name),
                }
            }
        }
    }
}
