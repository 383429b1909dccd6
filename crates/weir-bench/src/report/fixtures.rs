//! Test fixtures shared by the report modules' tests: a two-scenario report (closed stream with
//! CPU figures, open unary whose gateway completed nothing) and the same report as an A/B run.
//! Shared so that every section's test reads the same numbers.

use std::time::Duration;

use super::ab::AbRatios;
use super::model::{Machine, ProcessStats, Processes, Report, SCHEMA_VERSION, ScenarioReport, Settings};
use super::target::{Comparison, OpenInfo, ProcessPhase, TargetCpu, TargetReport};
use crate::stats::{ErrorKind, Recorder, Sample};

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

pub(super) fn sample_report() -> Report {
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

/// The sample report as an A/B run: gateway B is A's results with 10 % more gateway CPU.
pub(super) fn ab_report() -> Report {
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
