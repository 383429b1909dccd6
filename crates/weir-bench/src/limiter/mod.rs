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
//!
//! The module is split by what changes together: `cases` holds what is measured (the limiters,
//! their limits and the per-check bodies), `harness` how one repetition is timed (threads
//! released together, the key picker), and `results` what is reported (the JSON document, the
//! medians and the table). This file runs them: settings, the interleaved repetitions, the files.

mod cases;
mod harness;
mod results;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use self::cases::{CASES, Case};
use self::harness::{Params, Sample};
use self::results::{
    LIMITER_SCHEMA_VERSION, LimiterReport, LimiterResult, NOTE, clock_speedup, render_table, summarize,
};
use crate::report::Machine;

/// File name of the limiter report, written next to `--json`.
pub const JSON_FILE: &str = "limiter.json";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
