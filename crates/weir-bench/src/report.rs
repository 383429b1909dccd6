//! The results: JSON-serializable report structures and the aligned text table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::LOW_TICKS;
use crate::rounds::{RatioSpread, RoundsReport};
use crate::stats::{LatencySummary, Recorder, delta, rate, ratio};

/// Version of the JSON layout below; bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole run, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Layout version of this document.
    pub schema_version: u32,
    /// When the run finished, seconds since the Unix epoch.
    pub timestamp_unix_s: u64,
    /// Where it ran.
    pub machine: Machine,
    /// Path of the `weir` binary that provided the mock (and the gateway, without `--gateway-bin`).
    pub weir_bin: String,
    /// The gateway binaries, in measurement order: A, and B in an A/B run.
    pub gateway_bins: Vec<String>,
    /// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`).
    pub clock_ticks_per_s: u64,
    /// The flags the run used.
    pub settings: Settings,
    /// Memory of the child processes.
    pub processes: Processes,
    /// One entry per scenario, in the order run.
    pub scenarios: Vec<ScenarioReport>,
    /// How to read the numbers.
    pub note: String,
}

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores available to this process.
    pub cores: usize,
    /// `std::env::consts::OS`.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
}

/// The load settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Scenario names, in run order.
    pub scenarios: Vec<String>,
    /// Closed-loop workers.
    pub concurrency: usize,
    /// Open-loop offered rate, req/s.
    pub rate: f64,
    /// Open-loop cap on in-flight requests.
    pub max_outstanding: usize,
    /// Measured window per target, seconds.
    pub duration_s: f64,
    /// Discarded warmup per target, seconds.
    pub warmup_s: f64,
    /// `x_mock.latency_ms` sent to the mock.
    pub upstream_latency_ms: u64,
    /// `x_mock.chunk_delay_ms` sent to the mock.
    pub chunk_delay_ms: u64,
    /// Per-request timeout, seconds.
    pub request_timeout_s: f64,
    /// Worker threads of the load generator's runtime.
    pub load_threads: usize,
    /// Rounds per scenario (`--rounds`); above 1, each target's figures pool every round and each
    /// scenario adds `rounds` (medians across rounds).
    pub rounds: u32,
}

/// Memory figures of the child processes.
#[derive(Debug, Clone, Serialize)]
pub struct Processes {
    /// `weir mock`.
    pub mock: ProcessStats,
    /// `weir serve` (gateway A in an A/B run).
    pub gateway: ProcessStats,
    /// A/B run: gateway B's `weir serve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_b: Option<ProcessStats>,
}

/// One child's identity and memory use, from `/proc/<pid>/status` (KiB; `null` if unreadable).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    /// OS process id.
    pub pid: u32,
    /// Base URL it listened on.
    pub base_url: String,
    /// `VmRSS` right after it reported listening.
    pub rss_start_kib: Option<u64>,
    /// `VmRSS` at the end of the run.
    pub rss_end_kib: Option<u64>,
    /// `VmHWM` (peak RSS) at the end of the run.
    pub rss_peak_kib: Option<u64>,
}

/// One scenario, measured directly against the mock and through the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `closed-unary`, `closed-stream`, `open-unary` or `open-stream`.
    pub name: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Whether requests were SSE streams.
    pub stream: bool,
    /// Client -> mock.
    pub direct: TargetReport,
    /// Client -> gateway -> mock (gateway A in an A/B run).
    pub gateway: TargetReport,
    /// Gateway (A) relative to direct.
    pub comparison: Comparison,
    /// A/B run: client -> gateway B -> mock, measured right after gateway A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_b: Option<TargetReport>,
    /// A/B run: gateway B relative to direct.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison_b: Option<Comparison>,
    /// A/B run: gateway B's figures divided by gateway A's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_over_a: Option<AbRatios>,
    /// `--rounds` above 1: per-round figures, their medians, and the per-round B/A ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<RoundsReport>,
}

impl ScenarioReport {
    /// Every target measured, in run order: direct, gateway (A), gateway B.
    pub fn targets(&self) -> impl Iterator<Item = &TargetReport> {
        [&self.direct, &self.gateway]
            .into_iter()
            .chain(self.gateway_b.as_ref())
    }
}

/// Results for one target in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// `direct` or `gateway`.
    pub target: String,
    /// The URL requests went to.
    pub url: String,
    /// Length of the measured window, seconds.
    pub measured_s: f64,
    /// Open loop: requests scheduled in the window (`null` in closed loop).
    pub scheduled: Option<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by kind: `status_<code>`, `transport_timeout`, `transport_connect`,
    /// `transport_body`, `transport_other`, `stream_incomplete`.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Open loop: requests not sent because `max_outstanding` were already in flight.
    pub dropped: u64,
    /// Open loop: requests still in flight when the drain timeout expired.
    pub unfinished: u64,
    /// Successful requests per second over the measured window.
    pub achieved_rps: f64,
    /// Latency of successful requests, ms (open loop: from the scheduled send time).
    pub latency_ms: Option<LatencySummary>,
    /// Streams: time to the first body chunk, ms.
    pub ttfb_ms: Option<LatencySummary>,
    /// Open loop: how late requests left relative to their schedule, ms.
    pub schedule_lag_ms: Option<LatencySummary>,
    /// CPU time of the processes serving this target during the measured phase.
    pub cpu: TargetCpu,
}

/// CPU use, during one target's measured phase, of the processes serving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TargetCpu {
    /// The gateway in front of the mock (`null` for the direct target, or if unreadable).
    pub gateway: Option<ProcessPhase>,
    /// The mock (`null` if unreadable).
    pub mock: Option<ProcessPhase>,
}

/// One process's CPU time over a measured phase, from `utime + stime` in `/proc/<pid>/stat` read
/// when the window opened (after the warmup) and after its last request finished.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessPhase {
    /// OS process id.
    pub pid: u32,
    /// CPU time used, in clock ticks (see `clock_ticks_per_s`).
    pub cpu_ticks: u64,
    /// CPU time used, ms.
    pub cpu_ms: f64,
    /// CPU time per completed request (successes and errors), µs; `null` if none completed.
    pub cpu_us_per_req: Option<f64>,
    /// Fewer than 50 ticks: each reading is rounded to a tick, so the figure is coarse.
    pub low_resolution: bool,
    /// `VmHWM` right after the phase (peak RSS so far), KiB.
    pub rss_peak_kib: Option<u64>,
}

impl ProcessPhase {
    /// The phase's figures from the two tick readings; `None` if either is missing or they went
    /// backwards (a different process behind the pid).
    pub fn new(
        pid: u32,
        ticks: (Option<u64>, Option<u64>),
        ticks_per_second: u64,
        completed: u64,
        rss_peak_kib: Option<u64>,
    ) -> Option<Self> {
        let cpu_ticks = ticks.1?.checked_sub(ticks.0?)?;
        // Tick counts and request counts are far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let (t, hz, n) = (cpu_ticks as f64, ticks_per_second as f64, completed as f64);
        let cpu_us = t * 1e6 / hz;
        Some(Self {
            pid,
            cpu_ticks,
            cpu_ms: round3(cpu_us / 1000.0),
            cpu_us_per_req: (completed > 0).then(|| round3(cpu_us / n)),
            low_resolution: cpu_ticks < LOW_TICKS,
            rss_peak_kib,
        })
    }
}

/// Rounds to three decimals, hiding float noise in the JSON.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Gateway B divided by gateway A, per figure (`null` when A's figure is missing or zero).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AbRatios {
    /// Requests per second.
    pub throughput: Option<f64>,
    /// Latency p50.
    pub latency_p50: Option<f64>,
    /// Latency p99.
    pub latency_p99: Option<f64>,
    /// Streams: time to first byte, p50.
    pub ttfb_p50: Option<f64>,
    /// The gateway's CPU µs per request: the figure an A/B run is for.
    pub gateway_cpu_per_req: Option<f64>,
    /// The mock's CPU µs per request during each gateway's phase (should stay near 1).
    pub mock_cpu_per_req: Option<f64>,
    /// The gateway's peak RSS after the phase.
    pub gateway_rss_peak: Option<f64>,
}

impl AbRatios {
    /// Compares gateway B's results with gateway A's in one scenario.
    pub fn new(a: &TargetReport, b: &TargetReport) -> Self {
        let both = |f: &dyn Fn(&TargetReport) -> Option<f64>| ratio(f(b)?, f(a)?);
        let cpu = |p: Option<ProcessPhase>| p.and_then(|p| p.cpu_us_per_req);
        // KiB values are far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let rss = |t: &TargetReport| t.cpu.gateway.and_then(|p| p.rss_peak_kib).map(|k| k as f64);
        Self {
            throughput: ratio(b.achieved_rps, a.achieved_rps),
            latency_p50: both(&|t| t.latency_ms.as_ref().map(|s| s.p50)),
            latency_p99: both(&|t| t.latency_ms.as_ref().map(|s| s.p99)),
            ttfb_p50: both(&|t| t.ttfb_ms.as_ref().map(|s| s.p50)),
            gateway_cpu_per_req: both(&|t| cpu(t.cpu.gateway)),
            mock_cpu_per_req: both(&|t| cpu(t.cpu.mock)),
            gateway_rss_peak: both(&rss),
        }
    }
}

/// Extra facts about an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct OpenInfo {
    /// Requests scheduled in the window.
    pub scheduled: u64,
    /// Requests abandoned at the drain timeout.
    pub unfinished: u64,
}

impl TargetReport {
    /// Summarises a recorder.
    pub fn new(target: &str, url: &str, rec: &Recorder, window: Duration, open: Option<OpenInfo>) -> Self {
        let summary = |h| LatencySummary::from_histogram(h);
        Self {
            target: target.to_owned(),
            url: url.to_owned(),
            measured_s: window.as_secs_f64(),
            scheduled: open.map(|o| o.scheduled),
            ok: rec.ok,
            errors: rec.errors.clone(),
            error_total: rec.error_total(),
            dropped: rec.dropped,
            unfinished: open.map_or(0, |o| o.unfinished),
            achieved_rps: rate(rec.ok, window),
            latency_ms: summary(&rec.latency),
            ttfb_ms: summary(&rec.ttfb),
            schedule_lag_ms: if open.is_some() { summary(&rec.lag) } else { None },
            cpu: TargetCpu::default(),
        }
    }

    /// Requests that completed in the window, successfully or not (what CPU time is divided by).
    pub fn completed(&self) -> u64 {
        self.ok + self.error_total
    }
}

/// The gateway's cost relative to calling the mock directly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// Gateway p50 latency minus direct p50, ms.
    pub added_latency_p50_ms: Option<f64>,
    /// Gateway p99 latency minus direct p99, ms.
    pub added_latency_p99_ms: Option<f64>,
    /// Streams: gateway TTFB p50 minus direct, ms.
    pub added_ttfb_p50_ms: Option<f64>,
    /// Streams: gateway TTFB p99 minus direct, ms.
    pub added_ttfb_p99_ms: Option<f64>,
    /// Gateway req/s divided by direct req/s.
    pub throughput_ratio: Option<f64>,
}

impl Comparison {
    /// Compares the two targets of a scenario.
    pub fn new(direct: &TargetReport, gateway: &TargetReport) -> Self {
        let p = |r: &TargetReport, f: fn(&LatencySummary) -> f64| r.latency_ms.as_ref().map(f);
        let t = |r: &TargetReport, f: fn(&LatencySummary) -> f64| r.ttfb_ms.as_ref().map(f);
        Self {
            added_latency_p50_ms: delta(p(gateway, |s| s.p50), p(direct, |s| s.p50)),
            added_latency_p99_ms: delta(p(gateway, |s| s.p99), p(direct, |s| s.p99)),
            added_ttfb_p50_ms: delta(t(gateway, |s| s.p50), t(direct, |s| s.p50)),
            added_ttfb_p99_ms: delta(t(gateway, |s| s.p99), t(direct, |s| s.p99)),
            throughput_ratio: ratio(gateway.achieved_rps, direct.achieved_rps),
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn signed_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.3}"))
}

fn mib(kib: Option<u64>) -> String {
    // KiB values are far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}x"))
}

/// CPU µs per request, marked `*` when the phase had too few ticks to be precise.
fn cpu_us(p: Option<ProcessPhase>) -> String {
    match p {
        Some(ProcessPhase {
            cpu_us_per_req: Some(us),
            low_resolution,
            ..
        }) => format!("{us:.1}{}", if low_resolution { "*" } else { " " }),
        _ => "- ".to_owned(),
    }
}

fn ticks(p: Option<ProcessPhase>) -> String {
    p.map_or_else(|| "-".to_owned(), |p| p.cpu_ticks.to_string())
}

/// Renders the human-readable report.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.settings;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "weir-bench: {} cores shared by load generator, mock and gateway; numbers are relative, compare ratios.",
        report.machine.cores
    );
    let _ = writeln!(out, "weir: {}", report.weir_bin);
    match report.gateway_bins.as_slice() {
        [a, b] => {
            let _ = writeln!(out, "gateway A: {a}");
            let _ = writeln!(out, "gateway B: {b}");
        }
        [g] if *g != report.weir_bin => {
            let _ = writeln!(out, "gateway: {g}");
        }
        _ => {}
    }
    let _ = writeln!(
        out,
        "closed loop: {} workers; open loop: {} req/s (cap {} in flight); {}s measured after {}s warmup per target; \
         upstream latency {} ms, chunk delay {} ms",
        s.concurrency,
        s.rate,
        s.max_outstanding,
        s.duration_s,
        s.warmup_s,
        s.upstream_latency_ms,
        s.chunk_delay_ms
    );
    if s.rounds > 1 {
        let _ = writeln!(
            out,
            "{} rounds per scenario: the sections before `rounds` pool every round (merged histograms, summed CPU \
             and requests); `rounds` has medians across rounds",
            s.rounds
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario",
        "target",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "ttfb p50",
        "ttfb p99"
    );
    for sc in &report.scenarios {
        for t in sc.targets() {
            let l = t.latency_ms.as_ref();
            let f = t.ttfb_ms.as_ref();
            let _ = writeln!(
                out,
                "{:<14} {:<9} {:>8} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
                sc.name,
                t.target,
                t.ok,
                t.error_total + t.dropped + t.unfinished,
                t.achieved_rps,
                ms(l.map(|s| s.p50)),
                ms(l.map(|s| s.p90)),
                ms(l.map(|s| s.p99)),
                ms(l.map(|s| s.p999)),
                ms(l.map(|s| s.max)),
                ms(f.map(|s| s.p50)),
                ms(f.map(|s| s.p99)),
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>11} {:>11} {:>13} {:>13} {:>11}",
        "gateway cost", "target", "+p50 ms", "+p99 ms", "+ttfb p50 ms", "+ttfb p99 ms", "req/s ratio"
    );
    for sc in &report.scenarios {
        let b = sc.gateway_b.as_ref().zip(sc.comparison_b.as_ref());
        for (t, c) in [(&sc.gateway, &sc.comparison)].into_iter().chain(b) {
            let _ = writeln!(
                out,
                "{:<14} {:<9} {:>11} {:>11} {:>13} {:>13} {:>11}",
                sc.name,
                t.target,
                signed_ms(c.added_latency_p50_ms),
                signed_ms(c.added_latency_p99_ms),
                signed_ms(c.added_ttfb_p50_ms),
                signed_ms(c.added_ttfb_p99_ms),
                times(c.throughput_ratio),
            );
        }
    }

    render_cpu(&mut out, report);
    render_ab(&mut out, report);
    render_rounds(&mut out, report);

    let mut problems = Vec::new();
    for sc in &report.scenarios {
        for t in sc.targets() {
            let mut parts: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if t.dropped > 0 {
                parts.push(format!("dropped={}", t.dropped));
            }
            if t.unfinished > 0 {
                parts.push(format!("unfinished={}", t.unfinished));
            }
            if !parts.is_empty() {
                problems.push(format!("  {} {}: {}", sc.name, t.target, parts.join(" ")));
            }
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "errors:");
        for p in problems {
            let _ = writeln!(out, "{p}");
        }
    }

    let open: Vec<_> = report.scenarios.iter().filter(|sc| sc.mode == "open").collect();
    if !open.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "open-loop send lag behind schedule (included in latency above):"
        );
        for sc in open {
            for t in sc.targets() {
                let lag = t.schedule_lag_ms.as_ref();
                let _ = writeln!(
                    out,
                    "  {:<14} {:<9} p50 {} ms, p99 {} ms, max {} ms",
                    sc.name,
                    t.target,
                    ms(lag.map(|s| s.p50)),
                    ms(lag.map(|s| s.p99)),
                    ms(lag.map(|s| s.max))
                );
            }
        }
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:>14} {:>14} {:>14}",
        "memory (MiB)", "rss at start", "rss at end", "peak rss"
    );
    let p = &report.processes;
    let gateways: &[(&str, &ProcessStats)] = match &p.gateway_b {
        Some(b) => &[("mock", &p.mock), ("gateway-A", &p.gateway), ("gateway-B", b)],
        None => &[("mock", &p.mock), ("gateway", &p.gateway)],
    };
    for (name, p) in gateways {
        let _ = writeln!(
            out,
            "{:<14} {:>14} {:>14} {:>14}",
            name,
            mib(p.rss_start_kib),
            mib(p.rss_end_kib),
            mib(p.rss_peak_kib)
        );
    }
    out
}

/// CPU per request of each process behind each target.
fn render_cpu(out: &mut String, report: &Report) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU per request: utime+stime over the measured phase / completed requests ({} ticks/s)",
        report.clock_ticks_per_s
    );
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>15} {:>8} {:>13} {:>8}",
        "CPU µs/req", "target", "gateway µs/req", "ticks", "mock µs/req", "ticks"
    );
    let mut low = false;
    for sc in &report.scenarios {
        for t in sc.targets() {
            low |= [t.cpu.gateway, t.cpu.mock]
                .iter()
                .flatten()
                .any(|p| p.low_resolution);
            let _ = writeln!(
                out,
                "{:<14} {:<9} {:>15} {:>8} {:>13} {:>8}",
                sc.name,
                t.target,
                if t.target == "direct" {
                    "  ".to_owned()
                } else {
                    cpu_us(t.cpu.gateway)
                },
                if t.target == "direct" {
                    String::new()
                } else {
                    ticks(t.cpu.gateway)
                },
                cpu_us(t.cpu.mock),
                ticks(t.cpu.mock),
            );
        }
    }
    if low {
        let _ = writeln!(
            out,
            "* fewer than {LOW_TICKS} ticks in the phase: each reading is rounded to a tick, so the figure is \
             coarse; use a longer --duration"
        );
    }
}

/// A/B run: both gateways side by side per scenario, then B ÷ A.
fn render_ab(out: &mut String, report: &Report) {
    if report.scenarios.iter().all(|sc| sc.gateway_b.is_none()) {
        return;
    }
    let _ = writeln!(out);
    if report.settings.rounds > 1 {
        let _ = writeln!(
            out,
            "A/B: same scenarios, A and B alternating in order each round, every round pooled; B/A is gateway B's \
             figure divided by A's"
        );
    } else {
        let _ = writeln!(
            out,
            "A/B: same scenarios, gateway A then gateway B right after it; B/A is gateway B's figure divided by A's"
        );
    }
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>9} {:>8} {:>8} {:>9} {:>15} {:>13} {:>9}",
        "A/B",
        "gateway",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ttfb p50",
        "gateway µs/req",
        "mock µs/req",
        "peak MiB"
    );
    for sc in &report.scenarios {
        let (Some(b), Some(r)) = (&sc.gateway_b, &sc.b_over_a) else {
            continue;
        };
        for (label, t) in [("A", &sc.gateway), ("B", b)] {
            let l = t.latency_ms.as_ref();
            let _ = writeln!(
                out,
                "{:<14} {:<9} {:>9.1} {:>8} {:>8} {:>9} {:>15} {:>13} {:>9}",
                sc.name,
                label,
                t.achieved_rps,
                ms(l.map(|s| s.p50)),
                ms(l.map(|s| s.p99)),
                ms(t.ttfb_ms.as_ref().map(|s| s.p50)),
                cpu_us(t.cpu.gateway),
                cpu_us(t.cpu.mock),
                mib(t.cpu.gateway.and_then(|p| p.rss_peak_kib)),
            );
        }
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:>9} {:>8} {:>8} {:>9} {:>14}  {:>12}  {:>9}",
            sc.name,
            "B/A",
            times(r.throughput),
            times(r.latency_p50),
            times(r.latency_p99),
            times(r.ttfb_p50),
            times(r.gateway_cpu_per_req),
            times(r.mock_cpu_per_req),
            times(r.gateway_rss_peak),
        );
    }
}

/// `a` to `b` as `0.951x–1.103x`, or `-`.
fn range(r: &RatioSpread) -> String {
    match (r.min, r.max) {
        (Some(lo), Some(hi)) => format!("{lo:.3}x–{hi:.3}x"),
        _ => "-".to_owned(),
    }
}

/// `--rounds` above 1: each target's medians across rounds, then the per-round B/A ratios.
fn render_rounds(out: &mut String, report: &Report) {
    let Some(first) = report.scenarios.iter().find_map(|sc| sc.rounds.as_ref()) else {
        return;
    };
    let _ = writeln!(out);
    let order = match first.orders.as_slice() {
        [even, odd, ..] if even != odd => {
            format!("odd rounds {}, even rounds {}", even.join(", "), odd.join(", "))
        }
        [even, ..] => even.join(", "),
        [] => String::new(),
    };
    let _ = writeln!(
        out,
        "rounds: {} per scenario ({order}); medians across rounds",
        first.rounds
    );
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>9} {:>8} {:>8} {:>15} {:>13}",
        "rounds", "target", "req/s", "p50 ms", "p99 ms", "gateway µs/req", "mock µs/req"
    );
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for sc in &report.scenarios {
        let Some(r) = &sc.rounds else {
            continue;
        };
        for t in &r.targets {
            let _ = writeln!(
                out,
                "{:<14} {:<9} {:>9} {:>8} {:>8} {:>15} {:>13}",
                sc.name,
                t.target,
                num(t.achieved_rps),
                ms(t.latency_p50_ms),
                ms(t.latency_p99_ms),
                num(t.gateway_cpu_us_per_req),
                num(t.mock_cpu_us_per_req),
            );
        }
    }
    let ab: Vec<_> = report
        .scenarios
        .iter()
        .filter_map(|sc| Some((sc.name.as_str(), sc.rounds.as_ref()?.b_over_a.as_ref()?)))
        .collect();
    if ab.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "B/A per round (each round's B divided by the same round's A): median and min–max"
    );
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:>9} {:>15}  per round",
        "rounds B/A", "figure", "median", "range"
    );
    for (name, r) in ab {
        for (label, s) in [
            ("gateway µs/req", &r.gateway_cpu_per_req),
            ("mock µs/req", &r.mock_cpu_per_req),
            ("req/s", &r.throughput),
        ] {
            let per_round: Vec<String> = s
                .per_round
                .iter()
                .map(|v| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")))
                .collect();
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:>9} {:>15}  {}",
                name,
                label,
                times(s.median),
                range(s),
                per_round.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ErrorKind, Sample};

    fn rec(latencies_ms: &[u64], stream: bool) -> Recorder {
        let mut r = Recorder::new().unwrap();
        for &l in latencies_ms {
            let total = Duration::from_millis(l);
            r.record(&Sample::Ok {
                total,
                ttfb: stream.then(|| total / 2),
            });
        }
        r
    }

    fn sample_report() -> Report {
        let window = Duration::from_secs(2);
        let direct = TargetReport::new(
            "direct",
            "http://127.0.0.1:1/v1/chat/completions",
            &rec(&[1; 100], true),
            window,
            None,
        );
        let mut g = rec(&[3; 80], true);
        g.record(&Sample::Err(ErrorKind::Status(502)));
        let gateway = TargetReport::new(
            "gateway",
            "http://127.0.0.1:2/v1/chat/completions",
            &g,
            window,
            None,
        );
        let mut direct = direct;
        let mut gateway = gateway;
        // 100 ok requests, 50 ticks of 10 ms: 5,000 µs each.
        direct.cpu.mock = ProcessPhase::new(
            10,
            (Some(1000), Some(1050)),
            100,
            direct.completed(),
            Some(30_720),
        );
        // 81 completed (80 ok + 1 error), 81 ticks: 10,000 µs each; the mock's 20 ticks are coarse.
        gateway.cpu = TargetCpu {
            gateway: ProcessPhase::new(11, (Some(5), Some(86)), 100, gateway.completed(), Some(40_960)),
            mock: ProcessPhase::new(
                10,
                (Some(1050), Some(1070)),
                100,
                gateway.completed(),
                Some(30_720),
            ),
        };
        let comparison = Comparison::new(&direct, &gateway);
        let open_direct = TargetReport::new(
            "direct",
            "u",
            &rec(&[2; 10], false),
            window,
            Some(OpenInfo {
                scheduled: 12,
                unfinished: 0,
            }),
        );
        let open_gateway = TargetReport::new(
            "gateway",
            "u",
            &Recorder::new().unwrap(),
            window,
            Some(OpenInfo {
                scheduled: 12,
                unfinished: 2,
            }),
        );
        let open_cmp = Comparison::new(&open_direct, &open_gateway);
        let proc_stats = |pid| ProcessStats {
            pid,
            base_url: "http://127.0.0.1:1".into(),
            rss_start_kib: Some(10_240),
            rss_end_kib: Some(20_480),
            rss_peak_kib: Some(30_720),
        };
        Report {
            schema_version: SCHEMA_VERSION,
            timestamp_unix_s: 1_700_000_000,
            machine: Machine {
                cores: 2,
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            weir_bin: "/x/target/release/weir".into(),
            gateway_bins: vec!["/x/target/release/weir".into()],
            clock_ticks_per_s: 100,
            settings: Settings {
                scenarios: vec!["closed-stream".into(), "open-unary".into()],
                concurrency: 32,
                rate: 1000.0,
                max_outstanding: 4096,
                duration_s: 2.0,
                warmup_s: 1.0,
                upstream_latency_ms: 0,
                chunk_delay_ms: 0,
                request_timeout_s: 10.0,
                load_threads: 2,
                rounds: 1,
            },
            processes: Processes {
                mock: proc_stats(10),
                gateway: proc_stats(11),
                gateway_b: None,
            },
            scenarios: vec![
                ScenarioReport {
                    name: "closed-stream".into(),
                    mode: "closed".into(),
                    stream: true,
                    direct,
                    gateway,
                    comparison,
                    gateway_b: None,
                    comparison_b: None,
                    b_over_a: None,
                    rounds: None,
                },
                ScenarioReport {
                    name: "open-unary".into(),
                    mode: "open".into(),
                    stream: false,
                    direct: open_direct,
                    gateway: open_gateway,
                    comparison: open_cmp,
                    gateway_b: None,
                    comparison_b: None,
                    b_over_a: None,
                    rounds: None,
                },
            ],
            note: "n".into(),
        }
    }

    #[test]
    fn comparison_math() {
        let r = sample_report();
        let c = r.scenarios[0].comparison;
        assert!((c.added_latency_p50_ms.unwrap() - 2.0).abs() < 0.01);
        assert!((c.added_latency_p99_ms.unwrap() - 2.0).abs() < 0.01);
        assert!((c.added_ttfb_p50_ms.unwrap() - 1.0).abs() < 0.01);
        assert!((c.throughput_ratio.unwrap() - 0.8).abs() < 1e-9);
        assert!((r.scenarios[0].direct.achieved_rps - 50.0).abs() < 1e-9);
        // Gateway with no successes: no latency delta, ratio 0.
        let o = r.scenarios[1].comparison;
        assert_eq!(o.added_latency_p50_ms, None);
        assert_eq!(o.throughput_ratio, Some(0.0));
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample_report()).unwrap();
        for key in [
            "schema_version",
            "timestamp_unix_s",
            "machine",
            "weir_bin",
            "settings",
            "processes",
            "scenarios",
            "note",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["processes"]["gateway"]["rss_peak_kib"], 30_720);
        assert_eq!(v["processes"]["gateway"]["rss_start_kib"], 10_240);
        assert_eq!(v["processes"]["mock"]["rss_peak_kib"], 30_720);
        let sc = &v["scenarios"][0];
        assert_eq!(sc["name"], "closed-stream");
        assert_eq!(sc["mode"], "closed");
        assert_eq!(sc["stream"], true);
        for side in ["direct", "gateway"] {
            let t = &sc[side];
            for key in [
                "target",
                "url",
                "measured_s",
                "scheduled",
                "ok",
                "errors",
                "error_total",
                "dropped",
                "unfinished",
                "achieved_rps",
                "latency_ms",
                "ttfb_ms",
                "schedule_lag_ms",
            ] {
                assert!(t.get(key).is_some(), "{side} missing {key}");
            }
            for key in ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"] {
                assert!(t["latency_ms"][key].is_number(), "{side} latency missing {key}");
            }
            assert!(t["ttfb_ms"]["p50"].is_number());
        }
        assert_eq!(sc["gateway"]["errors"]["status_502"], 1);
        assert_eq!(sc["gateway"]["error_total"], 1);
        assert!(sc["direct"]["scheduled"].is_null());
        for key in [
            "added_latency_p50_ms",
            "added_latency_p99_ms",
            "added_ttfb_p50_ms",
            "added_ttfb_p99_ms",
            "throughput_ratio",
        ] {
            assert!(sc["comparison"][key].is_number(), "comparison missing {key}");
        }
        let open = &v["scenarios"][1];
        assert_eq!(open["direct"]["scheduled"], 12);
        assert!(open["direct"]["ttfb_ms"].is_null());
        assert!(open["gateway"]["latency_ms"].is_null());
        assert!(open["comparison"]["added_latency_p50_ms"].is_null());

        assert_eq!(v["clock_ticks_per_s"], 100);
        assert_eq!(v["gateway_bins"][0], "/x/target/release/weir");
        let cpu = &sc["gateway"]["cpu"];
        assert_eq!(cpu["gateway"]["pid"], 11);
        assert_eq!(cpu["gateway"]["cpu_ticks"], 81);
        assert_eq!(cpu["gateway"]["cpu_ms"], 810.0);
        assert_eq!(cpu["gateway"]["cpu_us_per_req"], 10_000.0);
        assert_eq!(cpu["gateway"]["low_resolution"], false);
        assert_eq!(cpu["gateway"]["rss_peak_kib"], 40_960);
        assert_eq!(cpu["mock"]["low_resolution"], true);
        assert!(sc["direct"]["cpu"]["gateway"].is_null());
        assert_eq!(sc["direct"]["cpu"]["mock"]["cpu_us_per_req"], 5_000.0);
        // Only A/B runs have the B fields.
        for key in ["gateway_b", "comparison_b", "b_over_a"] {
            assert!(sc.get(key).is_none(), "{key}");
        }
        assert!(v["processes"].get("gateway_b").is_none());
    }

    #[test]
    fn process_phase_math() {
        // 250 ticks at 100/s = 2.5 s of CPU over 1,000 requests = 2,500 µs each.
        let p = ProcessPhase::new(7, (Some(100), Some(350)), 100, 1000, None).unwrap();
        assert_eq!(p.cpu_ticks, 250);
        assert!((p.cpu_ms - 2500.0).abs() < 1e-9);
        assert_eq!(p.cpu_us_per_req, Some(2500.0));
        assert!(!p.low_resolution);
        // Another tick rate; 3 requests: a repeating decimal is rounded to 3 places.
        let p = ProcessPhase::new(7, (Some(0), Some(1024)), 1024, 3, None).unwrap();
        assert_eq!(p.cpu_us_per_req, Some(333_333.333));
        // Few ticks are flagged; no requests: no per-request figure.
        let p = ProcessPhase::new(7, (Some(10), Some(59)), 100, 0, None).unwrap();
        assert!(p.low_resolution);
        assert_eq!(p.cpu_us_per_req, None);
        assert!(
            !ProcessPhase::new(7, (Some(10), Some(60)), 100, 1, None)
                .unwrap()
                .low_resolution
        );
        // A missing reading, or time going backwards (another process behind the pid): nothing.
        assert_eq!(ProcessPhase::new(7, (None, Some(5)), 100, 1, None), None);
        assert_eq!(ProcessPhase::new(7, (Some(5), None), 100, 1, None), None);
        assert_eq!(ProcessPhase::new(7, (Some(6), Some(5)), 100, 1, None), None);
    }

    /// The sample report as an A/B run: gateway B is A's results with 10 % more gateway CPU.
    fn ab_report() -> Report {
        let mut r = sample_report();
        r.gateway_bins = vec!["/bins/weir-main".into(), "/x/target/release/weir".into()];
        r.processes.gateway_b = Some(r.processes.gateway.clone());
        for sc in &mut r.scenarios {
            sc.gateway.target = "gateway-A".into();
            let mut b = sc.gateway.clone();
            b.target = "gateway-B".into();
            if let Some(g) = &mut b.cpu.gateway {
                g.cpu_us_per_req = g.cpu_us_per_req.map(|us| us * 1.1);
            }
            sc.comparison_b = Some(Comparison::new(&sc.direct, &b));
            sc.b_over_a = Some(AbRatios::new(&sc.gateway, &b));
            sc.gateway_b = Some(b);
        }
        r
    }

    #[test]
    fn ab_ratios() {
        let r = ab_report();
        let ab = r.scenarios[0].b_over_a.unwrap();
        assert_eq!(ab.gateway_cpu_per_req, Some(1.1));
        assert_eq!(ab.mock_cpu_per_req, Some(1.0));
        assert_eq!(ab.throughput, Some(1.0));
        assert_eq!(ab.latency_p50, Some(1.0));
        assert_eq!(ab.gateway_rss_peak, Some(1.0));
        // The open scenario's gateways completed nothing: no latency or CPU to divide.
        let open = r.scenarios[1].b_over_a.unwrap();
        assert_eq!(open.latency_p50, None);
        assert_eq!(open.gateway_cpu_per_req, None);
        assert_eq!(open.throughput, None);

        let v = serde_json::to_value(&r).unwrap();
        let sc = &v["scenarios"][0];
        assert_eq!(sc["gateway"]["target"], "gateway-A");
        assert_eq!(sc["gateway_b"]["target"], "gateway-B");
        assert!(sc["comparison_b"]["throughput_ratio"].is_number());
        assert_eq!(sc["b_over_a"]["gateway_cpu_per_req"], 1.1);
        assert_eq!(v["processes"]["gateway_b"]["pid"], 11);
        assert_eq!(v["gateway_bins"][0], "/bins/weir-main");
    }

    #[test]
    fn ab_table() {
        let text = render_table(&ab_report());
        assert!(text.contains("gateway A: /bins/weir-main"), "{text}");
        assert!(text.contains("gateway B: /x/target/release/weir"), "{text}");
        assert!(text.contains("closed-stream  gateway-B"), "{text}");
        assert!(text.contains("1.100x"), "{text}");
        assert!(
            text.contains(&format!("{:<14} {:>14}", "gateway-B", "10.0")),
            "{text}"
        );
        // Each section's rows are as wide as its header (in characters: `µ` is two bytes).
        let lines: Vec<&str> = text.lines().collect();
        for (title, rows) in [("scenario", 6), ("A/B  ", 6), ("CPU µs/req", 6)] {
            let header = lines.iter().position(|l| l.starts_with(title)).unwrap();
            let width = lines[header].chars().count();
            for l in &lines[header + 1..=header + rows] {
                assert_eq!(l.chars().count(), width, "{title}: {l:?}\n{text}");
            }
        }
        assert!(text.contains("closed-stream  B/A"), "{text}");
    }

    #[test]
    fn rounds_table_and_json() {
        let mut r = ab_report();
        r.settings.rounds = 3;
        for sc in &mut r.scenarios {
            let b = sc.gateway_b.clone().unwrap();
            let per_target = [
                vec![sc.direct.clone(); 3],
                vec![sc.gateway.clone(); 3],
                vec![b; 3],
            ];
            sc.rounds = Some(RoundsReport::new(&per_target));
        }
        let text = render_table(&r);
        assert!(text.contains("3 rounds per scenario"), "{text}");
        assert!(
            text.contains(
                "rounds: 3 per scenario (odd rounds direct, gateway-A, gateway-B, even rounds direct, gateway-B, \
                 gateway-A)"
            ),
            "{text}"
        );
        assert!(text.contains("A and B alternating"), "{text}");
        assert!(
            text.contains("closed-stream  gateway µs/req    1.100x   1.100x–1.100x  1.100 1.100 1.100"),
            "{text}"
        );
        // The open scenario's gateways completed nothing: no ratio.
        assert!(
            text.contains("open-unary     gateway µs/req         -               -  - - -"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("rounds   ")).unwrap();
        let width = lines[header].chars().count();
        for l in &lines[header + 1..=header + 6] {
            assert_eq!(l.chars().count(), width, "{l:?}\n{text}");
        }
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["settings"]["rounds"], 3);
        let rounds = &v["scenarios"][0]["rounds"];
        assert_eq!(rounds["rounds"], 3);
        assert_eq!(rounds["b_over_a"]["gateway_cpu_per_req"]["median"], 1.1);
        assert_eq!(rounds["targets"][2]["gateway_cpu_us_per_req"], 11_000.0);
        // Without rounds the field is absent.
        assert!(
            serde_json::to_value(ab_report()).unwrap()["scenarios"][0]
                .get("rounds")
                .is_none()
        );
    }

    #[test]
    fn table_is_aligned_and_complete() {
        let text = render_table(&sample_report());
        assert!(text.contains("2 cores"));
        assert!(text.contains("closed-stream  direct"));
        assert!(text.contains("closed-stream  gateway"));
        assert!(text.contains("+2.00"), "{text}");
        assert!(text.contains("0.800x"));
        assert!(text.contains("status_502=1"));
        assert!(text.contains("unfinished=2"));
        assert!(text.contains("30.0"));
        // CPU: the gateway's 10,000 µs/req, the mock's coarse 5,000 µs/req through the gateway.
        assert!(text.contains("10000.0 "), "{text}");
        assert!(text.contains("2469.1*"), "{text}");
        assert!(text.contains("* fewer than 50 ticks"), "{text}");
        assert!(!text.contains("A/B"), "{text}");
        // Rows of the main table all have the header's width.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("scenario")).unwrap();
        let width = lines[header].len();
        for l in &lines[header + 1..header + 5] {
            assert_eq!(l.len(), width, "{l:?}");
        }
    }
}
