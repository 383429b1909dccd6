//! A/B runs (`--gateway-bin A --gateway-bin B`): gateway B's figures divided by gateway A's, and
//! the table section that shows both gateways side by side.
//!
//! The ratios live next to their section because they exist only for it: a single-gateway run
//! has neither (the JSON omits `b_over_a`, the table omits the section).

use std::fmt::Write as _;

use serde::Serialize;

use super::cells::{cpu_us, mib, ms, times};
use super::model::Report;
use super::target::{ProcessPhase, TargetReport};
use crate::stats::ratio;

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

/// A/B run: both gateways side by side per scenario, then B ÷ A.
pub(super) fn render_ab(out: &mut String, report: &Report) {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::ab_report;
    use super::super::table::render_table;

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
}
