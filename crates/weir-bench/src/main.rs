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

// This is a command-line tool whose purpose is to print a report on stdout.
#![allow(clippy::print_stdout)]

mod cli;
mod limiter;
mod load;
mod process;
mod report;
mod stats;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser as _;

use crate::cli::{Args, CacheMode, Scenario, limiter_selected, select_scenarios, tokens_selected};
use crate::limiter::LimiterSettings;
use crate::load::{Phases, RequestTemplate, Target, build_client, preflight, run_closed, run_open};
use crate::process::Service;
use crate::report::{
    Comparison, Machine, OpenInfo, ProcessStats, Processes, Report, SCHEMA_VERSION, ScenarioReport, Settings,
    TargetReport, render_table,
};

/// What the report says about reading its numbers.
const NOTE: &str = "The load generator, the mock and the gateway share this machine's cores; absolute \
numbers depend on the host, so compare gateway against direct (added latency, throughput ratio). \
Open-loop latency is measured from each request's scheduled send time; there the throughput ratio \
is 1.0 unless a target falls behind the offered rate, so compare latency. Closed-loop throughput \
ratios show how much CPU the gateway needs per request on this shared machine.";

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

fn real_main() -> Result<()> {
    let args = Args::parse();
    let scenarios = select_scenarios(&args.scenario);
    // Resolved first, so a missing binary fails before the limiter bench has run.
    let weir_bin = if scenarios.is_empty() {
        None
    } else {
        Some(resolve_weir_bin(args.weir_bin.clone())?)
    };
    if limiter_selected(&args.scenario) {
        let path = output_dir(&args.json).join(limiter::JSON_FILE);
        if weir_bin.is_some() && args.json.file_name() == Some(std::ffi::OsStr::new(limiter::JSON_FILE)) {
            bail!(
                "--json {} would be overwritten by the limiter bench's {}; choose another file name",
                args.json.display(),
                limiter::JSON_FILE
            );
        }
        limiter::run(&limiter_settings(&args), &path)?;
    }
    if tokens_selected(&args.scenario) {
        let settings = tokens::TokensSettings {
            corpus_mb: args.tokens_corpus_mb,
            repetitions: args.tokens_repetitions as usize,
        };
        tokens::run(&settings, &output_dir(&args.json).join(tokens::JSON_FILE))?;
    }
    let Some(weir_bin) = weir_bin else {
        return Ok(());
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = args.threads.map_or(cores, |t| t as usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("building tokio runtime")?;
    runtime.block_on(async move {
        tokio::select! {
            result = run(args, scenarios, weir_bin, cores, threads) => result,
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

/// The gateway configuration pointing at the mock.
///
/// The pool caps are raised above any concurrency the bench uses: with the defaults (30 per host),
/// requests beyond 30 in flight queue for a connection slot, and the bench would measure that cap
/// (a whole upstream round trip at the tail) rather than the gateway's own cost.
fn gateway_config(mock_base_url: &str) -> String {
    format!(
        "logging:\n  level: warn\nupstream_defaults:\n  pool: {{ max_connections: 4096, max_connections_per_host: 4096 }}\n\
         models:\n  - name: {model}\n    deployments:\n      - provider: openai\n        \
         base_url: {mock_base_url}/v1\n        api_key: {key}\n        model: {model}\n",
        model = load::MODEL,
        key = load::API_KEY,
    )
}

/// The `cache:` section for `--cache` (empty when off). `aggressive`, so the bench's request (no
/// temperature) is cacheable as it is; a fresh key prefix, so a run never starts with old entries.
fn cache_section(mode: CacheMode, redis_url: &str) -> String {
    let prefix = format!(
        "weir-bench:{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    match mode {
        CacheMode::Off => String::new(),
        CacheMode::Memory => "cache:\n  strategy: aggressive\n".to_owned(),
        CacheMode::Redis => format!(
            "cache:\n  strategy: aggressive\n  memory: {{ enabled: false }}\n  redis:\n    url: {redis_url}\n    key_prefix: {prefix}\n"
        ),
    }
}

/// `--weir-bin`, or `weir` next to this executable.
fn resolve_weir_bin(flag: Option<PathBuf>) -> Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating the weir-bench executable")?;
            exe.parent()
                .ok_or_else(|| anyhow!("executable {} has no parent", exe.display()))?
                .join("weir")
        }
    };
    if !path.is_file() {
        bail!(
            "weir binary not found at {}; build it with `cargo build --release -p weir-gateway` \
             (and run target/release/weir-bench), or pass --weir-bin PATH",
            path.display()
        );
    }
    // Absolute, so the path in the report is unambiguous.
    std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
}

/// A per-run temp directory (holding the generated gateway config), removed when dropped, including
/// when the run is interrupted.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: it only holds the generated config.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn process_stats(svc: &Service) -> ProcessStats {
    ProcessStats {
        pid: svc.pid,
        base_url: svc.base_url.clone(),
        rss_start_kib: svc.rss_start_kib,
        rss_end_kib: svc.rss_now_kib(),
        rss_peak_kib: svc.rss_peak_kib(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

async fn run(
    args: Args,
    scenarios: Vec<Scenario>,
    weir_bin: PathBuf,
    cores: usize,
    threads: usize,
) -> Result<()> {
    let out_dir = output_dir(&args.json);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let tmp = TempDir::new()?;
    let report = measure(&args, &scenarios, &weir_bin, &out_dir, &tmp.0, cores, threads).await?;
    drop(tmp);

    println!("{}", render_table(&report));
    let json = serde_json::to_string_pretty(&report).context("serializing report")?;
    std::fs::write(&args.json, json + "\n").with_context(|| format!("writing {}", args.json.display()))?;
    println!("JSON written to {}", args.json.display());
    Ok(())
}

async fn measure(
    args: &Args,
    scenarios: &[Scenario],
    weir_bin: &Path,
    out_dir: &Path,
    tmp: &Path,
    cores: usize,
    threads: usize,
) -> Result<Report> {
    let loopback = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(["--host", "127.0.0.1", "--port", "0"].iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    eprintln!("starting mock: {} mock", weir_bin.display());
    let mut mock = Service::start(
        "mock",
        weir_bin,
        &loopback(&["mock"]),
        &out_dir.join("mock.stderr.log"),
        args.startup_timeout,
    )
    .await?;
    eprintln!("mock listening on {} (pid {})", mock.base_url, mock.pid);

    let config_path = tmp.join("gateway.yaml");
    let config = gateway_config(&mock.base_url) + &cache_section(args.cache, &args.redis_url);
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    let config_arg = config_path.to_string_lossy().into_owned();
    let mut gateway = Service::start(
        "gateway",
        weir_bin,
        &loopback(&["serve", "--config", &config_arg]),
        &out_dir.join("gateway.stderr.log"),
        args.startup_timeout,
    )
    .await?;
    eprintln!("gateway listening on {} (pid {})", gateway.base_url, gateway.pid);

    let concurrency = args.concurrency as usize;
    let max_outstanding = args.max_outstanding as usize;
    let pool = concurrency.max(max_outstanding);
    let direct = Target::new(
        "direct",
        &mock.base_url,
        build_client(pool, args.request_timeout)?,
    );
    let through = Target::new(
        "gateway",
        &gateway.base_url,
        build_client(pool, args.request_timeout)?,
    );

    for stream in [false, true] {
        if scenarios.iter().any(|s| s.stream == stream) {
            let req = RequestTemplate::new(stream, args.upstream_latency_ms, args.chunk_delay_ms)?;
            for t in [&direct, &through] {
                preflight(t, &req).await?;
            }
        }
    }

    let phases = Phases {
        warmup: args.warmup,
        duration: args.duration,
    };
    // Long enough for every in-flight request to hit its own timeout.
    let drain_timeout = args.request_timeout + Duration::from_secs(2);
    let mut results = Vec::new();
    for &sc in scenarios {
        let req = RequestTemplate::new(sc.stream, args.upstream_latency_ms, args.chunk_delay_ms)?;
        let mut per_target = Vec::new();
        for t in [&direct, &through] {
            eprintln!(
                "{:<14} {:<8} {} warmup + {} ...",
                sc.name(),
                t.name,
                secs(phases.warmup),
                secs(phases.duration)
            );
            let tr = if sc.open {
                let out = run_open(t, &req, args.rate, max_outstanding, phases, drain_timeout).await?;
                let info = OpenInfo {
                    scheduled: out.scheduled,
                    unfinished: out.unfinished,
                };
                TargetReport::new(t.name, &t.url, &out.recorder, phases.duration, Some(info))
            } else {
                let rec = run_closed(t, &req, concurrency, phases).await?;
                TargetReport::new(t.name, &t.url, &rec, phases.duration, None)
            };
            mock.ensure_running()?;
            gateway.ensure_running()?;
            eprintln!(
                "{:<14} {:<8} ok {} errors {} {:.1} req/s",
                sc.name(),
                t.name,
                tr.ok,
                tr.error_total + tr.dropped + tr.unfinished,
                tr.achieved_rps
            );
            per_target.push(tr);
        }
        let (Some(gw), Some(dr)) = (per_target.pop(), per_target.pop()) else {
            bail!("internal error: missing target results");
        };
        results.push(ScenarioReport {
            name: sc.name().to_owned(),
            mode: sc.mode().to_owned(),
            stream: sc.stream,
            comparison: Comparison::new(&dr, &gw),
            direct: dr,
            gateway: gw,
        });
    }

    let processes = Processes {
        mock: process_stats(&mock),
        gateway: process_stats(&gateway),
    };
    gateway.stop().await;
    mock.stop().await;

    let timestamp_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        timestamp_unix_s,
        machine: Machine {
            cores,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        },
        weir_bin: weir_bin.display().to_string(),
        settings: Settings {
            scenarios: scenarios.iter().map(|s| s.name().to_owned()).collect(),
            concurrency,
            rate: args.rate,
            max_outstanding,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            upstream_latency_ms: args.upstream_latency_ms,
            chunk_delay_ms: args.chunk_delay_ms,
            request_timeout_s: args.request_timeout.as_secs_f64(),
            load_threads: threads,
        },
        processes,
        scenarios: results,
        note: NOTE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_at_mock() {
        let yaml = gateway_config("http://127.0.0.1:4242");
        assert_eq!(
            yaml,
            "logging:\n  level: warn\nupstream_defaults:\n  pool: { max_connections: 4096, max_connections_per_host: 4096 }\n\
             models:\n  - name: mock-model\n    deployments:\n      - provider: openai\n        \
             base_url: http://127.0.0.1:4242/v1\n        api_key: bench-key\n        model: mock-model\n"
        );
    }

    #[test]
    fn missing_weir_bin_is_a_clear_error() {
        let err = resolve_weir_bin(Some(PathBuf::from("/nonexistent/weir")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--weir-bin"), "{err}");
        assert!(err.contains("cargo build --release -p weir-gateway"), "{err}");
    }
}
