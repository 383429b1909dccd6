//! The human-readable report: the header, the per-target latency table, the gateway-cost table,
//! CPU per request, errors, open-loop send lag and memory. The A/B and rounds sections are
//! rendered by their own modules and slotted in between, in the order a reader compares them.

use std::fmt::Write as _;

use super::ab::render_ab;
use super::cells::{cpu_us, mib, ms, signed_ms, ticks, times};
use super::model::{ProcessStats, Report};
use super::rounds_table::render_rounds;
use crate::cpu::LOW_TICKS;

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::sample_report;
    use super::*;

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
