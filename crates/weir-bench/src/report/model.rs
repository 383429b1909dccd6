//! The JSON document of a gateway run: the run's settings, the machine, the child processes'
//! memory, and one entry per scenario. Field docs double as the schema's documentation, since the
//! JSON is read by scripts that compare runs.

use serde::Serialize;

use super::ab::AbRatios;
use super::target::{Comparison, TargetReport};
use crate::rounds::RoundsReport;

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::sample_report;

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
}
