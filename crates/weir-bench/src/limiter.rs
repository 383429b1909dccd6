//! `--scenario limiter`: an in-process micro-benchmark of the rate limiters, no gateway involved.
//!
//! Each case builds a fresh limiter, then `threads` OS threads (`std::thread`, not tokio tasks)
//! each run a fixed number of checks against it, all starting together. The time of one
//! repetition is from the first thread's start to the last thread's end, and
//! `ns/op = elapsed / (threads × iterations)`: with two threads this is the cost of a check at the
//! limiter's aggregate throughput, so a limiter that scaled perfectly over two cores would show
//! half its one-thread figure, and one serialised by a lock shows the same or more. Each case runs
//! once untimed (a tenth of the iterations, on its own fresh limiter) and then `repetitions`
//! times; the table reports the median. Repetitions are interleaved across cases, so load from
//! elsewhere on the machine that comes and goes spoils single repetitions rather than whole cases.
//! On a shared machine the two-thread rows are the sensitive ones: the `clock` baseline's should
//! be about half its one-thread figure when both cores were free.
//!
//! Limits are generous (checks are admitted; this measures overhead) except in the `[refused]`
//! cases, which are configured so that all but the first check or two are refused: a refusal
//! builds an error (and, in Weir, a boxed header snapshot), which costs differently. The
//! `admitted` column shows which path was measured.
//!
//! Weir's limiters read tokio's clock (`tokio::time::Instant::now`), which outside a runtime is
//! `std::time::Instant::now` (no runtime is needed: `try_*` never sleeps); governor reads
//! `quanta`'s TSC clock. The `clock` baseline row shows what one clock read costs here.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use tokio::time::Instant;
use weir::policy::limit::{Demand, KeyedLimiter, LimitMode, RateLimitConfig, RateLimiter, TokenBucket};

use crate::report::Machine;

/// File name of the limiter report, written next to `--json`.
pub const JSON_FILE: &str = "limiter.json";

/// Version of the limiter JSON layout; bump on incompatible changes.
pub const LIMITER_SCHEMA_VERSION: u32 = 1;

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

/// How the limiter bench runs.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterSettings {
    /// Checks per thread per repetition.
    pub iterations_per_thread: u64,
    /// Timed repetitions per case and thread count; the median is reported.
    pub repetitions: usize,
    /// Thread counts to run each case with.
    pub threads: Vec<usize>,
    /// Keys of the keyed limiters.
    pub keys: usize,
}

/// Whether a case is meant to measure admissions or refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Limits are generous: checks are admitted.
    Admit,
    /// Limits are tight: all but the first check or two are refused.
    Refuse,
}

/// What one case measures.
struct Case {
    /// `weir`, `governor` or `baseline`.
    group: &'static str,
    /// What is called per check.
    name: &'static str,
    /// The limits it is configured with.
    limits: &'static str,
    /// Whether it picks one of the keys per check (the key count is added to `limits`).
    keyed: bool,
    expect: Expect,
    /// Runs one repetition on a fresh limiter.
    run: fn(&Params<'_>) -> Result<Sample>,
}

/// The parameters of one repetition.
struct Params<'a> {
    threads: usize,
    iterations: u64,
    keys: &'a [Arc<str>],
}

/// One repetition's outcome.
#[derive(Debug, Clone, Copy)]
struct Sample {
    elapsed: Duration,
    ops: u64,
    admitted: u64,
}

impl Sample {
    fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops.max(1) as f64
    }
}

/// The cases, in the order run and reported.
const CASES: &[Case] = &[
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

/// One row of the report: a case at one thread count.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterResult {
    /// `weir`, `governor` or `baseline`.
    pub group: String,
    /// What is called per check.
    pub limiter: String,
    /// The limits it was configured with.
    pub limits: String,
    /// Whether the case measures admissions or refusals.
    pub expect: Expect,
    /// Threads hammering the one limiter.
    pub threads: usize,
    /// Checks per repetition (all threads).
    pub ops: u64,
    /// Median over the repetitions of elapsed / ops.
    pub ns_per_op: f64,
    /// `1e9 / ns_per_op`: checks per second across all threads.
    pub ops_per_s: f64,
    /// Fastest repetition.
    pub ns_per_op_min: f64,
    /// Slowest repetition.
    pub ns_per_op_max: f64,
    /// Every repetition, in run order.
    pub ns_per_op_reps: Vec<f64>,
    /// Fraction of checks admitted, over all repetitions.
    pub admitted_fraction: f64,
}

/// The parallelism the `clock` baseline reached at one thread count.
#[derive(Debug, Clone, Serialize)]
pub struct ClockSpeedup {
    /// Threads.
    pub threads: usize,
    /// Throughput over the one-thread throughput (ideal: `threads`).
    pub speedup: f64,
}

/// The limiter bench's JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterReport {
    /// Layout version of this document.
    pub schema_version: u32,
    /// `limiter`.
    pub kind: &'static str,
    /// When the run finished, seconds since the Unix epoch.
    pub timestamp_unix_s: u64,
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: LimiterSettings,
    /// One row per case and thread count, in run order.
    pub results: Vec<LimiterResult>,
    /// Wall time of the whole limiter bench, seconds.
    pub total_s: f64,
    /// For each thread count above 1: the `clock` baseline's throughput with that many threads
    /// over its one-thread throughput. Clock reads share nothing, so this is the parallelism the
    /// run really got: about the thread count when the cores were free, less when something
    /// else on the machine was using them (then the multi-thread rows are pessimistic).
    pub clock_speedup: Vec<ClockSpeedup>,
    /// How to read the numbers.
    pub note: String,
}

const NOTE: &str = "ns_per_op = wall time of a repetition / checks by all threads (median of the repetitions), \
so with 2 threads it is the inverse of aggregate throughput: perfect scaling would halve the 1-thread figure. \
Weir reads std's clock through tokio::time::Instant (see the clock baseline row); governor reads quanta's TSC clock. \
Keyed cases pick a uniformly random key per check with an inline xorshift (about 1 ns). \
Refused cases build an error per check (Weir also boxes a header snapshot).";

/// Runs every case at every thread count, prints the table on stdout and writes the JSON to
/// `json_path`.
pub fn run(settings: &LimiterSettings, json_path: &Path) -> Result<()> {
    if settings.threads.is_empty() || settings.threads.contains(&0) {
        bail!("limiter bench: thread counts must be at least 1");
    }
    if settings.repetitions == 0 || settings.iterations_per_thread == 0 || settings.keys == 0 {
        bail!("limiter bench: iterations, repetitions and keys must be at least 1");
    }
    if let Some(dir) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    eprintln!(
        "limiter bench: {} cases x threads {:?} x ({} + 1 warmup) repetitions, {} checks per thread, {} cores",
        CASES.len(),
        settings.threads,
        settings.repetitions,
        settings.iterations_per_thread,
        cores
    );
    let keys = make_keys(settings.keys);
    let started = Instant::now();
    let results = measure_all(settings, &keys)?;
    let total = started.elapsed();
    let report = LimiterReport {
        schema_version: LIMITER_SCHEMA_VERSION,
        kind: "limiter",
        timestamp_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: Machine {
            cores,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        },
        settings: settings.clone(),
        total_s: total.as_secs_f64(),
        clock_speedup: clock_speedup(&results),
        results,
        note: NOTE.to_owned(),
    };
    println!("{}", render_table(&report));
    let json = serde_json::to_string_pretty(&report).context("serializing limiter report")?;
    std::fs::write(json_path, json + "\n").with_context(|| format!("writing {}", json_path.display()))?;
    println!("JSON written to {}", json_path.display());
    Ok(())
}

/// The `clock` baseline's multi-thread throughput relative to one thread.
fn clock_speedup(results: &[LimiterResult]) -> Vec<ClockSpeedup> {
    let clock: Vec<&LimiterResult> = results.iter().filter(|r| r.group == "baseline").collect();
    let Some(single) = clock.iter().find(|r| r.threads == 1) else {
        return Vec::new();
    };
    clock
        .iter()
        .filter(|r| r.threads > 1 && r.ns_per_op > 0.0)
        .map(|r| ClockSpeedup {
            threads: r.threads,
            speedup: single.ns_per_op / r.ns_per_op,
        })
        .collect()
}

/// Keys like the gateway's client identities (`key-<n>` as `Arc<str>`).
fn make_keys(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| Arc::from(format!("key-{i}"))).collect()
}

/// Runs every case at every thread count: one warmup round (a tenth of the iterations), then
/// `repetitions` timed rounds. Rounds are interleaved (each runs every case once) so that a burst
/// of load from elsewhere on the machine lands on one repetition of several cases, which the
/// median discards, rather than on every repetition of one case.
fn measure_all(settings: &LimiterSettings, keys: &[Arc<str>]) -> Result<Vec<LimiterResult>> {
    let combos: Vec<(&Case, usize)> = CASES
        .iter()
        .flat_map(|case| settings.threads.iter().map(move |&threads| (case, threads)))
        .collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(settings.repetitions); combos.len()];
    for round in 0..=settings.repetitions {
        let round_start = Instant::now();
        let iterations = match round {
            0 => (settings.iterations_per_thread / 10).max(1),
            _ => settings.iterations_per_thread,
        };
        for (&(case, threads), samples) in combos.iter().zip(&mut samples) {
            let params = Params {
                threads,
                iterations,
                keys,
            };
            let sample = (case.run)(&params)
                .with_context(|| format!("{} {}, {} threads", case.group, case.name, threads))?;
            if round > 0 {
                samples.push(sample);
            }
        }
        let what = match round {
            0 => "warmup".to_owned(),
            _ => format!("repetition {}/{}", round, settings.repetitions),
        };
        eprintln!("  {what} done in {:.1}s", round_start.elapsed().as_secs_f64());
    }
    Ok(combos
        .iter()
        .zip(&samples)
        .map(|(&(case, threads), samples)| summarize(case, threads, keys.len(), samples))
        .collect())
}

fn summarize(case: &Case, threads: usize, keys: usize, samples: &[Sample]) -> LimiterResult {
    let reps: Vec<f64> = samples.iter().map(Sample::ns_per_op).collect();
    let ns_per_op = median(&reps);
    let ops: u64 = samples.iter().map(|s| s.ops).sum();
    let admitted: u64 = samples.iter().map(|s| s.admitted).sum();
    LimiterResult {
        group: case.group.to_owned(),
        limiter: case.name.to_owned(),
        limits: if case.keyed {
            format!("{}; {} keys", case.limits, keys)
        } else {
            case.limits.to_owned()
        },
        expect: case.expect,
        threads,
        ops: samples.first().map_or(0, |s| s.ops),
        ns_per_op,
        ops_per_s: if ns_per_op > 0.0 { 1e9 / ns_per_op } else { 0.0 },
        ns_per_op_min: reps.iter().copied().fold(f64::INFINITY, f64::min),
        ns_per_op_max: reps.iter().copied().fold(0.0, f64::max),
        ns_per_op_reps: reps,
        admitted_fraction: admitted as f64 / ops.max(1) as f64,
    }
}

/// The median (mean of the middle two for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The aligned text table.
pub fn render_table(report: &LimiterReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = &report.settings;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "limiter bench: {} cores; {} checks per thread, median of {} repetitions; {} keys for keyed limiters; {:.1}s total",
        report.machine.cores, s.iterations_per_thread, s.repetitions, s.keys, report.total_s
    );
    let _ = writeln!(
        out,
        "ns/op = wall time / checks of all threads (2 threads: inverse of aggregate throughput)."
    );
    for c in &report.clock_speedup {
        let _ = writeln!(
            out,
            "parallelism check: the clock baseline ran {:.2}x faster on {} threads than on 1 (ideal {}x; less means \
             the cores were busy with something else and the {}-thread rows are pessimistic).",
            c.speedup, c.threads, c.threads, c.threads
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<9} {:<31} {:<32} {:<6} {:>3} {:>9} {:>12} {:>17} {:>8}",
        "group", "limiter", "limits", "expect", "thr", "ns/op", "ops/s", "min-max ns/op", "admitted"
    );
    for r in &report.results {
        let expect = match r.expect {
            Expect::Admit => "admit",
            Expect::Refuse => "refuse",
        };
        let _ = writeln!(
            out,
            "{:<9} {:<31} {:<32} {:<6} {:>3} {:>9.1} {:>12.0} {:>17} {:>7.1}%",
            r.group,
            r.limiter,
            r.limits,
            expect,
            r.threads,
            r.ns_per_op,
            r.ops_per_s,
            format!("{:.1}-{:.1}", r.ns_per_op_min, r.ns_per_op_max),
            r.admitted_fraction * 100.0
        );
    }
    out
}

/// xorshift64*: a few cycles per number, so the key pick costs the keyed cases next to nothing.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for small `n`).
    fn below(&mut self, n: usize) -> usize {
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
fn timed<F>(p: &Params<'_>, op: F) -> Result<Sample>
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

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[5.0, 1.0, 3.0]) - 3.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
    }

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

    #[test]
    fn measure_all_reports_every_case_and_thread_count() {
        let settings = LimiterSettings {
            iterations_per_thread: 100,
            repetitions: 3,
            threads: vec![1, 2],
            keys: 10,
        };
        let results = measure_all(&settings, &make_keys(settings.keys)).unwrap();
        assert_eq!(results.len(), CASES.len() * 2);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.threads, [1, 2][i % 2]);
            assert_eq!(r.ops, 100 * r.threads as u64);
            assert_eq!(r.ns_per_op_reps.len(), 3);
            assert!(r.ns_per_op_min <= r.ns_per_op && r.ns_per_op <= r.ns_per_op_max);
        }
        assert!(results.iter().any(|r| r.limits.ends_with("; 10 keys")));
        let speedup = clock_speedup(&results);
        assert_eq!(speedup.len(), 1);
        assert_eq!(speedup[0].threads, 2);
        assert!(speedup[0].speedup > 0.0);
    }

    #[test]
    fn table_lists_every_result() {
        let case = &CASES[1];
        let sample = Sample {
            elapsed: Duration::from_millis(40),
            ops: 2_000_000,
            admitted: 2_000_000,
        };
        let result = summarize(case, 2, 1000, &[sample, sample, sample]);
        assert!((result.ns_per_op - 20.0).abs() < 1e-9);
        assert!((result.ops_per_s - 5e7).abs() < 1e-3);
        let report = LimiterReport {
            schema_version: LIMITER_SCHEMA_VERSION,
            kind: "limiter",
            timestamp_unix_s: 0,
            machine: Machine {
                cores: 2,
                os: "linux".to_owned(),
                arch: "x86_64".to_owned(),
            },
            settings: LimiterSettings {
                iterations_per_thread: 1_000_000,
                repetitions: 3,
                threads: vec![2],
                keys: 1000,
            },
            results: vec![result],
            total_s: 1.0,
            clock_speedup: vec![ClockSpeedup {
                threads: 2,
                speedup: 1.97,
            }],
            note: NOTE.to_owned(),
        };
        let table = render_table(&report);
        assert!(table.contains("TokenBucket::try_acquire"), "{table}");
        assert!(table.contains("20.0"), "{table}");
        assert!(table.contains("1.97x faster on 2 threads"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["results"][0]["expect"], "admit");
        assert_eq!(json["results"][0]["threads"], 2);
    }
}
