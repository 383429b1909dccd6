//! What the limiter bench reports: one row per case and thread count (the median of the
//! repetitions, with their range), the `clock` baseline's speedup as a check on how much
//! parallelism the run really got, the JSON document and the aligned table.

use serde::Serialize;

use super::cases::Case;
use super::harness::Sample;
use super::{Expect, LimiterSettings};
use crate::report::Machine;

/// Version of the limiter JSON layout; bump on incompatible changes.
pub const LIMITER_SCHEMA_VERSION: u32 = 1;

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

/// What the JSON says about reading its numbers.
pub(super) const NOTE: &str = "ns_per_op = wall time of a repetition / checks by all threads (median of the repetitions), \
so with 2 threads it is the inverse of aggregate throughput: perfect scaling would halve the 1-thread figure. \
Weir reads std's clock through tokio::time::Instant (see the clock baseline row); governor reads quanta's TSC clock. \
Keyed cases pick a uniformly random key per check with an inline xorshift (about 1 ns). \
Refused cases build an error per check (Weir also boxes a header snapshot).";

/// The `clock` baseline's multi-thread throughput relative to one thread.
pub(super) fn clock_speedup(results: &[LimiterResult]) -> Vec<ClockSpeedup> {
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

/// One case at one thread count: the median of its repetitions, their range, and the admitted
/// fraction that shows whether the path the case is labelled with was the one measured.
pub(super) fn summarize(case: &Case, threads: usize, keys: usize, samples: &[Sample]) -> LimiterResult {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limiter::cases::CASES;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[5.0, 1.0, 3.0]) - 3.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
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
