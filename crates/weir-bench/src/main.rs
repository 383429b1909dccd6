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

// This is a command-line tool whose purpose is to print a report on stdout.
#![allow(clippy::print_stdout)]

mod cli;
mod cpu;
mod limiter;
mod load;
mod process;
mod report;
mod rounds;
mod stats;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser as _;

use crate::cli::{Args, CacheMode, Scenario, limiter_selected, select_scenarios, tokens_selected};
use crate::cpu::{ClockTicks, read_cpu_ticks};
use crate::limiter::LimiterSettings;
use crate::load::{Phases, RequestTemplate, Target, build_client, preflight, run_closed, run_open};
use crate::process::{Service, read_status_kib};
use crate::report::{
    AbRatios, Comparison, Machine, OpenInfo, ProcessPhase, ProcessStats, Processes, Report, SCHEMA_VERSION,
    ScenarioReport, Settings, TargetCpu, TargetReport, render_table,
};
use crate::rounds::{Pool, RoundsReport, pooled_report, round_order};
use crate::stats::Recorder;

/// Most gateways one run compares: A and B.
const MAX_GATEWAYS: usize = 2;

/// What the report says about reading its numbers.
const NOTE: &str = "The load generator, the mock and the gateway share this machine's cores; absolute \
numbers depend on the host, so compare gateway against direct (added latency, throughput ratio). \
Open-loop latency is measured from each request's scheduled send time; there the throughput ratio \
is 1.0 unless a target falls behind the offered rate, so compare latency. Closed-loop throughput \
ratios show how much CPU the gateway needs per request on this shared machine; `cpu` measures it directly \
(utime + stime over the measured phase, divided by the completed requests; 10 ms ticks, so short phases are \
coarse, see `low_resolution`). In an A/B run, `b_over_a` divides gateway B's figures by gateway A's. With \
--rounds above 1, the per-target figures pool every round and `rounds` has the medians across rounds and the \
per-round B/A ratios (median, min, max): read `rounds.b_over_a.gateway_cpu_per_req`.";

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
    absolute(&path)
}

/// Absolute, so the path in the report is unambiguous.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// The `weir` binaries of a run.
#[derive(Debug)]
struct Binaries {
    /// Runs the mock (and the gateway without `--gateway-bin`).
    weir: PathBuf,
    /// One gateway, or A and B.
    gateways: Vec<GatewaySpec>,
}

/// One gateway to start and measure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GatewaySpec {
    /// Target name in the report: `gateway`, or `gateway-A` / `gateway-B` in an A/B run.
    name: &'static str,
    /// Its `weir` binary.
    bin: PathBuf,
}

/// The gateways from `--gateway-bin` (none: `--weir-bin`'s). One keeps the usual `gateway` name, so a
/// single-gateway report reads the same whichever binary it ran.
fn gateway_specs(flags: &[PathBuf], weir_bin: &Path) -> Result<Vec<GatewaySpec>> {
    if flags.len() > MAX_GATEWAYS {
        bail!(
            "--gateway-bin given {} times; an A/B run compares at most {MAX_GATEWAYS} gateways",
            flags.len()
        );
    }
    for path in flags {
        if !path.is_file() {
            bail!("gateway binary not found at {} (--gateway-bin)", path.display());
        }
    }
    let bins = match flags {
        [] => vec![weir_bin.to_owned()],
        _ => flags.iter().map(|p| absolute(p)).collect::<Result<_>>()?,
    };
    let names: &[&'static str] = if bins.len() == 1 {
        &["gateway"]
    } else {
        &["gateway-A", "gateway-B"]
    };
    Ok(names
        .iter()
        .zip(bins)
        .map(|(&name, bin)| GatewaySpec { name, bin })
        .collect())
}

/// Facts about the machine the run needs.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Logical cores.
    cores: usize,
    /// Worker threads of the load generator's runtime.
    threads: usize,
    /// `USER_HZ`, the unit of `/proc/<pid>/stat` CPU times.
    clock_ticks_per_s: u64,
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

/// The processes a target's requests cost CPU in: the gateway (none for direct), and the mock.
#[derive(Debug, Clone, Copy)]
struct Charged {
    gateway: Option<u32>,
    mock: u32,
}

/// `utime + stime` of the charged processes, in clock ticks.
type Ticks = (Option<u64>, Option<u64>);

impl Charged {
    fn read(self) -> Ticks {
        (self.gateway.and_then(read_cpu_ticks), read_cpu_ticks(self.mock))
    }

    /// Turns the readings from before and after the measured phase into per-request figures, and
    /// warns about figures too coarse to trust (`label` names the phase).
    fn phase(self, before: Ticks, after: Ticks, completed: u64, hz: u64, label: &str) -> TargetCpu {
        let one =
            |pid: u32, ticks| ProcessPhase::new(pid, ticks, hz, completed, read_status_kib(pid, "VmHWM"));
        let cpu = TargetCpu {
            gateway: self.gateway.and_then(|pid| one(pid, (before.0, after.0))),
            mock: one(self.mock, (before.1, after.1)),
        };
        let named = [
            ("gateway", self.gateway.is_some(), cpu.gateway),
            ("mock", true, cpu.mock),
        ];
        for (name, expected, phase) in named {
            match phase {
                Some(p) if p.low_resolution => eprintln!(
                    "warning: {label}: the {name} used only {} clock ticks ({} ms of CPU) in the measured \
                     phase; its CPU µs/req is coarse (each reading is rounded to a tick): use a longer --duration",
                    p.cpu_ticks, p.cpu_ms
                ),
                None if expected => {
                    eprintln!("warning: {label}: could not read the {name}'s CPU time from /proc")
                }
                _ => {}
            }
        }
        cpu
    }
}

fn cpu_summary(cpu: &TargetCpu) -> String {
    [("gateway", cpu.gateway), ("mock", cpu.mock)]
        .into_iter()
        .filter_map(|(name, p)| Some(format!("{name} {:.1} µs/req", p?.cpu_us_per_req?)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one target's phase in one round needs besides the target.
struct RoundRun<'a> {
    args: &'a Args,
    sc: Scenario,
    req: &'a RequestTemplate,
    phases: Phases,
    drain_timeout: Duration,
    hz: u64,
}

impl RoundRun<'_> {
    /// Warms up and measures one target: its report, and the samples and open-loop counts to pool.
    async fn target(
        &self,
        t: &Target,
        charged: Charged,
        label: &str,
    ) -> Result<(TargetReport, Recorder, Option<OpenInfo>)> {
        let (args, phases) = (self.args, self.phases);
        eprintln!(
            "{label}: {} warmup + {} ...",
            secs(phases.warmup),
            secs(phases.duration)
        );
        // CPU is read when the measured window opens (after the warmup) and once its last request
        // has finished, so the warmup's work is not charged to the measured requests.
        let (rec, open, before) = if self.sc.open {
            let (out, before) = run_open(
                t,
                self.req,
                args.rate,
                args.max_outstanding as usize,
                phases,
                self.drain_timeout,
                move || charged.read(),
            )
            .await?;
            let info = OpenInfo {
                scheduled: out.scheduled,
                unfinished: out.unfinished,
            };
            (out.recorder, Some(info), before)
        } else {
            let (rec, before) = run_closed(t, self.req, args.concurrency as usize, phases, move || {
                charged.read()
            })
            .await?;
            (rec, None, before)
        };
        let after = charged.read();
        let mut tr = TargetReport::new(t.name, &t.url, &rec, phases.duration, open);
        tr.cpu = charged.phase(before, after, tr.completed(), self.hz, label);
        Ok((tr, rec, open))
    }
}

async fn measure(
    args: &Args,
    scenarios: &[Scenario],
    bins: &Binaries,
    out_dir: &Path,
    tmp: &Path,
    host: Host,
) -> Result<Report> {
    let loopback = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(["--host", "127.0.0.1", "--port", "0"].iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    eprintln!("starting mock: {} mock", bins.weir.display());
    let mut mock = Service::start(
        "mock",
        &bins.weir,
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
    // In an A/B run both gateways run throughout, in front of the same mock; the one not being
    // measured is idle, so it costs the other nothing but memory.
    let mut gateways = Vec::new();
    for spec in &bins.gateways {
        eprintln!("starting {}: {} serve", spec.name, spec.bin.display());
        let gateway = Service::start(
            spec.name,
            &spec.bin,
            &loopback(&["serve", "--config", &config_arg]),
            &out_dir.join(format!("{}.stderr.log", spec.name)),
            args.startup_timeout,
        )
        .await?;
        eprintln!(
            "{} listening on {} (pid {})",
            spec.name, gateway.base_url, gateway.pid
        );
        gateways.push(gateway);
    }

    let concurrency = args.concurrency as usize;
    let max_outstanding = args.max_outstanding as usize;
    let pool = concurrency.max(max_outstanding);
    // Every target with the processes its requests cost CPU in; run in this order per scenario.
    let mut targets = vec![(
        Target::new(
            "direct",
            &mock.base_url,
            build_client(pool, args.request_timeout)?,
        ),
        Charged {
            gateway: None,
            mock: mock.pid,
        },
    )];
    for g in &gateways {
        targets.push((
            Target::new(g.name, &g.base_url, build_client(pool, args.request_timeout)?),
            Charged {
                gateway: Some(g.pid),
                mock: mock.pid,
            },
        ));
    }

    for stream in [false, true] {
        if scenarios.iter().any(|s| s.stream == stream) {
            let req = RequestTemplate::new(stream, args.upstream_latency_ms, args.chunk_delay_ms)?;
            for (t, _) in &targets {
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
        // Per target (in `targets` order): every round's report, and the samples of all rounds.
        let mut per_round: Vec<Vec<TargetReport>> = targets.iter().map(|_| Vec::new()).collect();
        let mut pools = targets.iter().map(|_| Pool::new()).collect::<Result<Vec<_>>>()?;
        for round in 0..args.rounds {
            for i in round_order(targets.len(), round) {
                let Some(((t, charged), (reports, pooled))) =
                    targets.get(i).zip(per_round.get_mut(i).zip(pools.get_mut(i)))
                else {
                    bail!("internal error: no target {i}");
                };
                let label = if args.rounds > 1 {
                    format!("{} {} round {}/{}", sc.name(), t.name, round + 1, args.rounds)
                } else {
                    format!("{} {}", sc.name(), t.name)
                };
                let run = RoundRun {
                    args,
                    sc,
                    req: &req,
                    phases,
                    drain_timeout,
                    hz: host.clock_ticks_per_s,
                };
                let (tr, rec, open) = run.target(t, *charged, &label).await?;
                mock.ensure_running()?;
                for g in &mut gateways {
                    g.ensure_running()?;
                }
                eprintln!(
                    "{label}: ok {} errors {} {:.1} req/s; {}",
                    tr.ok,
                    tr.error_total + tr.dropped + tr.unfinished,
                    tr.achieved_rps,
                    cpu_summary(&tr.cpu)
                );
                pooled.add(&rec, open)?;
                reports.push(tr);
            }
        }
        let mut measured = targets
            .iter()
            .zip(&pools)
            .zip(&per_round)
            .map(|(((t, _), p), rounds)| {
                pooled_report(t.name, &t.url, p, phases.duration, rounds, host.clock_ticks_per_s)
            });
        let (Some(dr), Some(gw)) = (measured.next(), measured.next()) else {
            bail!("internal error: missing target results");
        };
        let gateway_b = measured.next();
        results.push(ScenarioReport {
            name: sc.name().to_owned(),
            mode: sc.mode().to_owned(),
            stream: sc.stream,
            comparison: Comparison::new(&dr, &gw),
            comparison_b: gateway_b.as_ref().map(|b| Comparison::new(&dr, b)),
            b_over_a: gateway_b.as_ref().map(|b| AbRatios::new(&gw, b)),
            direct: dr,
            gateway: gw,
            gateway_b,
            rounds: (args.rounds > 1).then(|| RoundsReport::new(&per_round)),
        });
    }

    let mut gateway_stats = gateways.iter().map(process_stats);
    let Some(gateway_a) = gateway_stats.next() else {
        bail!("internal error: no gateway");
    };
    let processes = Processes {
        mock: process_stats(&mock),
        gateway: gateway_a,
        gateway_b: gateway_stats.next(),
    };
    for g in gateways {
        g.stop().await;
    }
    mock.stop().await;

    let timestamp_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        timestamp_unix_s,
        machine: Machine {
            cores: host.cores,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        },
        weir_bin: bins.weir.display().to_string(),
        gateway_bins: bins
            .gateways
            .iter()
            .map(|g| g.bin.display().to_string())
            .collect(),
        clock_ticks_per_s: host.clock_ticks_per_s,
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
            load_threads: host.threads,
            rounds: args.rounds,
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

    #[test]
    fn gateway_specs_default_single_and_ab() {
        // Any existing file stands in for a binary.
        let exe = std::env::current_exe().unwrap();
        let weir = PathBuf::from("/w/weir");
        let one = gateway_specs(&[], &weir).unwrap();
        assert_eq!(
            one,
            [GatewaySpec {
                name: "gateway",
                bin: weir.clone()
            }]
        );
        let one = gateway_specs(std::slice::from_ref(&exe), &weir).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].name, &one[0].bin), ("gateway", &exe));
        let ab = gateway_specs(&[exe.clone(), exe.clone()], &weir).unwrap();
        let names: Vec<_> = ab.iter().map(|g| g.name).collect();
        assert_eq!(names, ["gateway-A", "gateway-B"]);
        let err = gateway_specs(&[exe.clone(), exe.clone(), exe], &weir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 2"), "{err}");
        let err = gateway_specs(&[PathBuf::from("/nonexistent/weir")], &weir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--gateway-bin"), "{err}");
    }
}
