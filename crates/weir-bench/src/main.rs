//! `weir-bench`: measures what the Weir gateway adds on top of its upstream.
//!
//! It starts `weir mock` (an OpenAI-compatible mock upstream) and `weir serve` (the gateway,
//! configured with the mock as its only deployment) as child processes on 127.0.0.1, then runs
//! the same load twice per scenario, one target after the other: against the mock directly, and
//! against the gateway in front of the mock. The difference is the gateway's cost.
//!
//! # Load modes
//!
//! * **Closed loop** (`closed-*`): a fixed number of workers, each sending its next request when
//!   the previous one completes. Throughput is whatever the system sustains at that concurrency;
//!   latency is measured from each request's actual start.
//! * **Open loop** (`open-*`): requests are *scheduled* at fixed intervals of `1 / rate`,
//!   independent of responses, and latency is measured from the **scheduled** send time rather
//!   than the moment the request actually left. A closed-loop client, or an open-loop client that
//!   measures from the actual send, stops sending while the server stalls and then never records
//!   the requests that should have gone out during the stall: the stall is hidden in a handful of
//!   slow samples ("coordinated omission") and the percentiles look far better than what real,
//!   independent clients would see. Measuring from the schedule charges every request for the time
//!   it had to wait, including time lost in the load generator itself (reported separately as
//!   `schedule_lag`). In-flight requests are capped (`--max-outstanding`); requests due while the
//!   cap is reached are dropped and counted.
//!
//! Both modes run non-streaming and streaming (SSE read to the end, with time to first body
//! chunk) chat completions.
//!
//! # CPU per request
//!
//! Around each target's measured phase the harness reads the CPU time (`utime + stime`) of the
//! processes serving it from `/proc/<pid>/stat` — the mock for the direct target, the gateway and
//! the mock through the gateway — and divides the difference by the requests completed in the
//! phase: see the `cpu` module. On a machine whose cores are shared, this is steadier than
//! throughput for telling whether a change made the gateway cheaper, though contention moves it
//! too (docs/benchmarks.md has the noise of an A/A run).
//!
//! # A/B runs
//!
//! `--gateway-bin A --gateway-bin B` starts two gateways (two `weir` binaries, e.g. main's and the
//! current build) in front of the same mock and measures each scenario direct, through A, through B,
//! back to back, so both see the same machine conditions; the report adds B ÷ A ratios.
//!
//! # Rounds
//!
//! `--rounds N` measures every scenario N times with the processes kept running, alternating the
//! gateways' order (direct, A, B; then direct, B, A; ...), each target's phase with its own warmup.
//! The usual figures then pool all rounds, and each scenario adds the median across rounds of each
//! target's figures and of the per-round B ÷ A ratios, with their range: see the `rounds` module.
//!
//! # Caveat
//!
//! The load generator, the mock and the gateway share the machine's cores, so absolute numbers
//! are only meaningful relative to each other: read the added latency and the throughput ratio.
//!
//! # Limiter micro-benchmark
//!
//! `--scenario limiter` (not part of `all`) measures the rate limiters in-process instead, in ns
//! per check on 1 and 2 OS threads: see the `limiter` module. It runs before any gateway scenario
//! and needs no `weir` binary; its JSON goes to `limiter.json` next to `--json`.
//!
//! # Layout
//!
//! This file is the command-line flow only: parse the flags, run the in-process benches that were
//! asked for, then start the runtime and hand the gateway scenarios to `measure`, which starts the
//! processes and runs every scenario and round. `setup` finds the binaries and writes the
//! gateway's config; `load` paces and sends requests; `report` and `rounds` shape the results.

// This is a command-line tool whose purpose is to print a report on stdout.
#![allow(clippy::print_stdout)]

mod cli;
mod cpu;
mod limiter;
mod load;
mod measure;
mod process;
mod report;
mod rounds;
mod setup;
mod shared_limiter;
mod stats;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser as _;

use crate::cli::{
    Args, Scenario, limiter_selected, select_scenarios, shared_limiter_selected, tokens_selected,
};
use crate::cpu::ClockTicks;
use crate::limiter::LimiterSettings;
use crate::measure::{Host, measure};
use crate::report::render_table;
use crate::setup::{Binaries, TempDir, gateway_specs, resolve_weir_bin};

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the context chain without a backtrace dump.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; errors bubble up here so `main` prints them once and exits non-zero.
fn real_main() -> Result<()> {
    let args = Args::parse();
    let scenarios = select_scenarios(&args.scenario);
    // Resolved first, so a missing binary fails before the limiter bench has run.
    let bins = if scenarios.is_empty() {
        None
    } else {
        let weir = resolve_weir_bin(args.weir_bin.clone())?;
        let gateways = gateway_specs(&args.gateway_bin, &weir)?;
        Some(Binaries { weir, gateways })
    };
    if limiter_selected(&args.scenario) {
        let path = output_dir(&args.json).join(limiter::JSON_FILE);
        if bins.is_some() && args.json.file_name() == Some(std::ffi::OsStr::new(limiter::JSON_FILE)) {
            bail!(
                "--json {} would be overwritten by the limiter bench's {}; choose another file name",
                args.json.display(),
                limiter::JSON_FILE
            );
        }
        limiter::run(&limiter_settings(&args), &path)?;
    }
    if shared_limiter_selected(&args.scenario) {
        let settings = shared_limiter::SharedLimiterSettings {
            redis_url: args.redis_url.clone(),
            checks: args.shared_limiter_checks,
            concurrency: args.shared_limiter_concurrency.clone(),
        };
        shared_limiter::run(&settings, &output_dir(&args.json).join(shared_limiter::JSON_FILE))?;
    }
    if tokens_selected(&args.scenario) {
        let settings = tokens::TokensSettings {
            corpus_mb: args.tokens_corpus_mb,
            repetitions: args.tokens_repetitions as usize,
        };
        tokens::run(&settings, &output_dir(&args.json).join(tokens::JSON_FILE))?;
    }
    let Some(bins) = bins else {
        return Ok(());
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = args.threads.map_or(cores, |t| t as usize);
    let ticks = ClockTicks::detect();
    if let Some(warning) = &ticks.warning {
        eprintln!("warning: {warning}");
    }
    let host = Host {
        cores,
        threads,
        clock_ticks_per_s: ticks.per_second,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("building tokio runtime")?;
    runtime.block_on(async move {
        tokio::select! {
            result = run(args, scenarios, bins, host) => result,
            // Dropping `run` drops the child handles, which kills the children (kill_on_drop).
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })
}

/// The limiter bench's settings from its flags.
fn limiter_settings(args: &Args) -> LimiterSettings {
    LimiterSettings {
        iterations_per_thread: args.limiter_iterations,
        repetitions: args.limiter_repetitions as usize,
        threads: args.limiter_threads.iter().map(|&t| t as usize).collect(),
        keys: args.limiter_keys as usize,
    }
}

/// The directory of `--json`, where the logs and the limiter report go too.
fn output_dir(json: &Path) -> PathBuf {
    match json.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The gateway scenarios: measures them, then prints the table and writes the JSON. The temp
/// directory only holds the gateway's config, so it is removed as soon as the processes stopped.
async fn run(args: Args, scenarios: Vec<Scenario>, bins: Binaries, host: Host) -> Result<()> {
    let out_dir = output_dir(&args.json);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let tmp = TempDir::new()?;
    let report = measure(&args, &scenarios, &bins, &out_dir, &tmp.0, host).await?;
    drop(tmp);

    println!("{}", render_table(&report));
    let json = serde_json::to_string_pretty(&report).context("serializing report")?;
    std::fs::write(&args.json, json + "\n").with_context(|| format!("writing {}", args.json.display()))?;
    println!("JSON written to {}", args.json.display());
    Ok(())
}
