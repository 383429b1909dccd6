//! The `--rounds` section of the table: each target's medians across rounds, then the per-round
//! B/A ratios with their median and range. The figures themselves are computed in the crate's
//! `rounds` module; this only prints them.

use std::fmt::Write as _;

use super::cells::{ms, times};
use super::model::Report;
use crate::rounds::RatioSpread;

/// `a` to `b` as `0.951x–1.103x`, or `-`.
fn range(r: &RatioSpread) -> String {
    match (r.min, r.max) {
        (Some(lo), Some(hi)) => format!("{lo:.3}x–{hi:.3}x"),
        _ => "-".to_owned(),
    }
}

/// `--rounds` above 1: each target's medians across rounds, then the per-round B/A ratios.
pub(super) fn render_rounds(out: &mut String, report: &Report) {
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
    use super::super::fixtures::ab_report;
    use super::super::table::render_table;
    use crate::rounds::RoundsReport;

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
}
