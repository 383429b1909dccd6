//! The results: JSON-serializable report structures and the aligned text table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

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
    /// Path of the `weir` binary that provided the mock and the gateway.
    pub weir_bin: String,
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
}

/// Memory figures of both child processes.
#[derive(Debug, Clone, Serialize)]
pub struct Processes {
    /// `weir mock`.
    pub mock: ProcessStats,
    /// `weir serve`.
    pub gateway: ProcessStats,
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
    /// Client -> gateway -> mock.
    pub gateway: TargetReport,
    /// Gateway relative to direct.
    pub comparison: Comparison,
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
        }
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
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:<8} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
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
        for t in [&sc.direct, &sc.gateway] {
            let l = t.latency_ms.as_ref();
            let f = t.ttfb_ms.as_ref();
            let _ = writeln!(
                out,
                "{:<14} {:<8} {:>8} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
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
        "{:<14} {:>11} {:>11} {:>13} {:>13} {:>11}",
        "gateway cost", "+p50 ms", "+p99 ms", "+ttfb p50 ms", "+ttfb p99 ms", "req/s ratio"
    );
    for sc in &report.scenarios {
        let c = &sc.comparison;
        let _ = writeln!(
            out,
            "{:<14} {:>11} {:>11} {:>13} {:>13} {:>11}",
            sc.name,
            signed_ms(c.added_latency_p50_ms),
            signed_ms(c.added_latency_p99_ms),
            signed_ms(c.added_ttfb_p50_ms),
            signed_ms(c.added_ttfb_p99_ms),
            c.throughput_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}x")),
        );
    }

    let mut problems = Vec::new();
    for sc in &report.scenarios {
        for t in [&sc.direct, &sc.gateway] {
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
            for t in [&sc.direct, &sc.gateway] {
                let lag = t.schedule_lag_ms.as_ref();
                let _ = writeln!(
                    out,
                    "  {:<14} {:<8} p50 {} ms, p99 {} ms, max {} ms",
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
    for (name, p) in [
        ("mock", &report.processes.mock),
        ("gateway", &report.processes.gateway),
    ] {
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
            },
            processes: Processes {
                mock: proc_stats(10),
                gateway: proc_stats(11),
            },
            scenarios: vec![
                ScenarioReport {
                    name: "closed-stream".into(),
                    mode: "closed".into(),
                    stream: true,
                    direct,
                    gateway,
                    comparison,
                },
                ScenarioReport {
                    name: "open-unary".into(),
                    mode: "open".into(),
                    stream: false,
                    direct: open_direct,
                    gateway: open_gateway,
                    comparison: open_cmp,
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
        // Rows of the main table all have the header's width.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("scenario")).unwrap();
        let width = lines[header].len();
        for l in &lines[header + 1..header + 5] {
            assert_eq!(l.len(), width, "{l:?}");
        }
    }
}
