//! `--rounds N`: each scenario measured N times, alternating the order of the gateways, and the
//! figures summarised by their median across rounds.
//!
//! On a shared machine one phase can land on a quiet or a busy moment, and in an A/B run the target
//! measured second always follows the first. Repeating the scenario and alternating A and B (round
//! 1: direct, A, B; round 2: direct, B, A; ...) spreads both effects over both gateways; the median
//! of each figure across rounds shrugs off a round that hit a burst of contention, and the min–max
//! range of the per-round B/A ratio shows how far one round can be trusted.
//!
//! The report's usual per-target figures pool every round instead (histograms merged, CPU ticks and
//! requests summed): see [`pooled_report`].

use std::time::Duration;

use serde::Serialize;

use crate::report::{AbRatios, OpenInfo, ProcessPhase, TargetCpu, TargetReport};
use crate::stats::Recorder;

/// The order targets run in, in round `round` (0-based) of a scenario, as indices into
/// `[direct, gateway A, gateway B]` (`targets` of them): direct first, then the gateways in order
/// in even rounds and in reverse order in odd ones.
pub fn round_order(targets: usize, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets).collect();
    if round % 2 == 1 && targets > 1 {
        order[1..].reverse();
    }
    order
}

/// The median of the values present (`None`s are rounds without that figure); the mean of the two
/// middle values for an even count; `None` if there are none.
pub fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let m = if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    };
    Some(round6(m))
}

/// Rounds to six decimals, hiding float noise in the JSON.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// One target's figures in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundFigures {
    /// Round number, from 1.
    pub round: u32,
    /// Position of the target in that round's order, from 1 (direct is always 1).
    pub position: usize,
    /// Successful requests per second.
    pub achieved_rps: f64,
    /// Latency p50, ms.
    pub latency_p50_ms: Option<f64>,
    /// Latency p99, ms.
    pub latency_p99_ms: Option<f64>,
    /// The gateway's CPU µs per request (`null` for direct).
    pub gateway_cpu_us_per_req: Option<f64>,
    /// The mock's CPU µs per request.
    pub mock_cpu_us_per_req: Option<f64>,
}

impl RoundFigures {
    /// The figures of `t`, measured in round `round` (from 1) at `position` (from 1).
    pub fn new(round: u32, position: usize, t: &TargetReport) -> Self {
        let l = t.latency_ms.as_ref();
        Self {
            round,
            position,
            achieved_rps: t.achieved_rps,
            latency_p50_ms: l.map(|s| s.p50),
            latency_p99_ms: l.map(|s| s.p99),
            gateway_cpu_us_per_req: t.cpu.gateway.and_then(|p| p.cpu_us_per_req),
            mock_cpu_us_per_req: t.cpu.mock.and_then(|p| p.cpu_us_per_req),
        }
    }
}

/// One target's medians across the rounds of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetMedians {
    /// `direct`, `gateway`, `gateway-A` or `gateway-B`.
    pub target: String,
    /// Median req/s.
    pub achieved_rps: Option<f64>,
    /// Median of the rounds' latency p50, ms.
    pub latency_p50_ms: Option<f64>,
    /// Median of the rounds' latency p99, ms.
    pub latency_p99_ms: Option<f64>,
    /// Median of the rounds' gateway CPU µs per request (`null` for direct).
    pub gateway_cpu_us_per_req: Option<f64>,
    /// Median of the rounds' mock CPU µs per request.
    pub mock_cpu_us_per_req: Option<f64>,
    /// Every round's figures, in round order.
    pub per_round: Vec<RoundFigures>,
}

impl TargetMedians {
    /// Medians of `per_round`.
    pub fn new(target: &str, per_round: Vec<RoundFigures>) -> Self {
        let med = |f: fn(&RoundFigures) -> Option<f64>| median(&per_round.iter().map(f).collect::<Vec<_>>());
        Self {
            target: target.to_owned(),
            achieved_rps: med(|r| Some(r.achieved_rps)),
            latency_p50_ms: med(|r| r.latency_p50_ms),
            latency_p99_ms: med(|r| r.latency_p99_ms),
            gateway_cpu_us_per_req: med(|r| r.gateway_cpu_us_per_req),
            mock_cpu_us_per_req: med(|r| r.mock_cpu_us_per_req),
            per_round,
        }
    }
}

/// A ratio measured once per round: its median and range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatioSpread {
    /// Median across rounds (`null` if no round had the figure).
    pub median: Option<f64>,
    /// Smallest round's ratio.
    pub min: Option<f64>,
    /// Largest round's ratio.
    pub max: Option<f64>,
    /// Each round's ratio, in round order (`null` where a side's figure was missing).
    pub per_round: Vec<Option<f64>>,
}

impl RatioSpread {
    /// Summarises the per-round ratios.
    pub fn new(per_round: Vec<Option<f64>>) -> Self {
        let present = || per_round.iter().flatten().copied();
        Self {
            median: median(&per_round),
            min: present().reduce(f64::min),
            max: present().reduce(f64::max),
            per_round,
        }
    }
}

/// A/B run: the per-round B ÷ A ratios, each from the same round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbRounds {
    /// Gateway CPU µs per request, B ÷ A: the figure an A/B run is for.
    pub gateway_cpu_per_req: RatioSpread,
    /// Mock CPU µs per request during each gateway's phase, B ÷ A (should stay near 1).
    pub mock_cpu_per_req: RatioSpread,
    /// Requests per second, B ÷ A.
    pub throughput: RatioSpread,
}

impl AbRounds {
    /// From each round's A and B results, in round order.
    pub fn new(rounds: &[(&TargetReport, &TargetReport)]) -> Self {
        let ratios: Vec<AbRatios> = rounds.iter().map(|(a, b)| AbRatios::new(a, b)).collect();
        let spread = |f: fn(&AbRatios) -> Option<f64>| RatioSpread::new(ratios.iter().map(f).collect());
        Self {
            gateway_cpu_per_req: spread(|r| r.gateway_cpu_per_req),
            mock_cpu_per_req: spread(|r| r.mock_cpu_per_req),
            throughput: spread(|r| r.throughput),
        }
    }
}

/// A scenario measured over several rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundsReport {
    /// Number of rounds.
    pub rounds: u32,
    /// Each round's target order.
    pub orders: Vec<Vec<String>>,
    /// Medians per target, in the order of the first round.
    pub targets: Vec<TargetMedians>,
    /// A/B run: B ÷ A per round, with median and range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_over_a: Option<AbRounds>,
}

impl RoundsReport {
    /// From `per_target[i][r]`, target `i`'s report in round `r` (targets as in [`round_order`]).
    pub fn new(per_target: &[Vec<TargetReport>]) -> Self {
        let rounds = per_target.first().map_or(0, Vec::len);
        let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
        let orders: Vec<Vec<usize>> = (0..rounds).map(|r| round_order(per_target.len(), r)).collect();
        let targets = per_target
            .iter()
            .enumerate()
            .map(|(i, reports)| {
                let figures = reports
                    .iter()
                    .zip(&orders)
                    .zip(1..)
                    .map(|((t, order), round)| {
                        let position = order.iter().position(|&j| j == i).map_or(0, |p| p + 1);
                        RoundFigures::new(round, position, t)
                    })
                    .collect();
                let name = reports.first().map_or("", |t| t.target.as_str());
                TargetMedians::new(name, figures)
            })
            .collect();
        let b_over_a = match per_target {
            [_, a, b] => Some(AbRounds::new(&a.iter().zip(b).collect::<Vec<_>>())),
            _ => None,
        };
        let name = |i: usize| {
            per_target
                .get(i)
                .and_then(|r| r.first())
                .map_or("", |t| t.target.as_str())
        };
        Self {
            rounds,
            orders: orders
                .iter()
                .map(|o| o.iter().map(|&i| name(i).to_owned()).collect())
                .collect(),
            targets,
            b_over_a,
        }
    }
}

/// One target's results pooled over all rounds: what the report's usual per-target fields hold.
#[derive(Debug)]
pub struct Pool {
    /// Every round's samples.
    pub recorder: Recorder,
    /// Open loop: scheduled and unfinished requests summed.
    pub open: Option<OpenInfo>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            recorder: Recorder::new()?,
            open: None,
        })
    }

    /// Adds one round's samples.
    pub fn add(&mut self, rec: &Recorder, open: Option<OpenInfo>) -> anyhow::Result<()> {
        self.recorder.merge(rec)?;
        if let Some(o) = open {
            let sum = self.open.get_or_insert(OpenInfo {
                scheduled: 0,
                unfinished: 0,
            });
            sum.scheduled += o.scheduled;
            sum.unfinished += o.unfinished;
        }
        Ok(())
    }
}

/// The pooled report of one target: the merged samples over `rounds` windows of `window`, and CPU
/// time summed over the rounds' phases (`null` if any round lacks it) divided by all completed
/// requests; the peak RSS is the last round's (`VmHWM` only grows).
pub fn pooled_report(
    target: &str,
    url: &str,
    pool: &Pool,
    window: Duration,
    per_round: &[TargetReport],
    ticks_per_second: u64,
) -> TargetReport {
    let rounds = u32::try_from(per_round.len()).unwrap_or(u32::MAX);
    let mut tr = TargetReport::new(target, url, &pool.recorder, window * rounds, pool.open);
    let completed = tr.completed();
    let summed = |f: fn(&TargetCpu) -> Option<ProcessPhase>| -> Option<ProcessPhase> {
        let phases: Vec<ProcessPhase> = per_round.iter().map(|t| f(&t.cpu)).collect::<Option<_>>()?;
        let last = phases.last()?;
        let ticks = phases.iter().map(|p| p.cpu_ticks).sum();
        ProcessPhase::new(
            last.pid,
            (Some(0), Some(ticks)),
            ticks_per_second,
            completed,
            last.rss_peak_kib,
        )
    };
    tr.cpu = TargetCpu {
        gateway: summed(|c| c.gateway),
        mock: summed(|c| c.mock),
    };
    tr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Sample;

    #[test]
    fn order_alternates() {
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [0, 2, 1]);
        assert_eq!(round_order(3, 2), [0, 1, 2]);
        assert_eq!(round_order(3, 3), [0, 2, 1]);
        // One gateway: nothing to alternate.
        assert_eq!(round_order(2, 1), [0, 1]);
    }

    #[test]
    fn median_odd_even_missing() {
        assert_eq!(median(&[Some(3.0), Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median(&[Some(4.0), Some(1.0), Some(3.0), Some(2.0)]), Some(2.5));
        assert_eq!(median(&[Some(5.0), None, Some(1.0), Some(9.0)]), Some(5.0));
        assert_eq!(median(&[Some(7.0)]), Some(7.0));
        assert_eq!(median(&[None, None]), None);
        assert_eq!(median(&[]), None);
        // An outlier does not move it.
        assert_eq!(median(&[Some(1.0), Some(1.1), Some(50.0)]), Some(1.1));
    }

    #[test]
    fn ratio_spread() {
        let s = RatioSpread::new(vec![Some(1.2), Some(0.9), None, Some(1.0)]);
        assert_eq!(s.median, Some(1.0));
        assert_eq!(s.min, Some(0.9));
        assert_eq!(s.max, Some(1.2));
        assert_eq!(s.per_round.len(), 4);
        let none = RatioSpread::new(vec![None]);
        assert_eq!((none.median, none.min, none.max), (None, None, None));
    }

    /// A closed-loop report with `ok` requests in 1 s and the given CPU ticks (100/s).
    fn target(
        name: &str,
        ok: u64,
        latency_ms: u64,
        gateway_ticks: Option<u64>,
        mock_ticks: u64,
    ) -> TargetReport {
        let mut rec = Recorder::new().unwrap();
        for _ in 0..ok {
            rec.record(&Sample::Ok {
                total: Duration::from_millis(latency_ms),
                ttfb: None,
            });
        }
        let mut t = TargetReport::new(name, "u", &rec, Duration::from_secs(1), None);
        let phase = |pid, ticks| ProcessPhase::new(pid, (Some(0), Some(ticks)), 100, ok, Some(pid.into()));
        t.cpu = TargetCpu {
            gateway: gateway_ticks.and_then(|g| phase(2, g)),
            mock: phase(1, mock_ticks),
        };
        t
    }

    #[test]
    fn rounds_report_medians_and_ratios() {
        // 1,000 requests per round; 100 ticks = 1 s of CPU = 1,000 µs/req.
        let direct = vec![
            target("direct", 1000, 1, None, 50),
            target("direct", 1000, 1, None, 60),
            target("direct", 1000, 1, None, 70),
        ];
        let a = vec![
            target("gateway-A", 500, 2, Some(100), 50),
            target("gateway-A", 400, 4, Some(100), 50),
            target("gateway-A", 600, 3, Some(100), 50),
        ];
        // B's gateway CPU per request: 1.1x, 0.8x and 1.5x A's.
        let b = vec![
            target("gateway-B", 500, 2, Some(110), 50),
            target("gateway-B", 400, 4, Some(80), 55),
            target("gateway-B", 600, 3, Some(150), 50),
        ];
        let r = RoundsReport::new(&[direct, a, b]);
        assert_eq!(r.rounds, 3);
        assert_eq!(
            r.orders,
            [
                ["direct", "gateway-A", "gateway-B"],
                ["direct", "gateway-B", "gateway-A"],
                ["direct", "gateway-A", "gateway-B"],
            ]
        );
        let names: Vec<_> = r.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["direct", "gateway-A", "gateway-B"]);
        let a = &r.targets[1];
        assert_eq!(a.achieved_rps, Some(500.0));
        // Histogram buckets: within 0.1 %.
        assert!((a.latency_p50_ms.unwrap() - 3.0).abs() < 0.01);
        // 100 ticks over 500, 400, 600 requests: 2000, 2500, 1666.667 µs.
        assert_eq!(a.gateway_cpu_us_per_req, Some(2000.0));
        assert_eq!(r.targets[0].gateway_cpu_us_per_req, None);
        assert_eq!(r.targets[0].mock_cpu_us_per_req, Some(600.0));
        assert_eq!(
            a.per_round.iter().map(|f| f.position).collect::<Vec<_>>(),
            [2, 3, 2]
        );
        assert_eq!(
            r.targets[2]
                .per_round
                .iter()
                .map(|f| f.position)
                .collect::<Vec<_>>(),
            [3, 2, 3]
        );
        let ab = r.b_over_a.as_ref().unwrap();
        assert_eq!(
            ab.gateway_cpu_per_req.per_round,
            [Some(1.1), Some(0.8), Some(1.5)]
        );
        assert_eq!(ab.gateway_cpu_per_req.median, Some(1.1));
        assert_eq!(ab.gateway_cpu_per_req.min, Some(0.8));
        assert_eq!(ab.gateway_cpu_per_req.max, Some(1.5));
        assert_eq!(ab.mock_cpu_per_req.median, Some(1.0));
        assert_eq!(ab.mock_cpu_per_req.max, Some(1.1));
        assert_eq!(ab.throughput.median, Some(1.0));

        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["b_over_a"]["gateway_cpu_per_req"]["median"], 1.1);
        assert_eq!(v["targets"][2]["per_round"][1]["position"], 2);
        assert!(v["targets"][0]["gateway_cpu_us_per_req"].is_null());

        // A single gateway: medians, no ratios.
        let one = RoundsReport::new(&[
            vec![target("direct", 10, 1, None, 1)],
            vec![target("gateway", 10, 1, Some(1), 1)],
        ]);
        assert_eq!(one.rounds, 1);
        assert!(one.b_over_a.is_none());
        assert!(serde_json::to_value(&one).unwrap().get("b_over_a").is_none());
    }

    #[test]
    fn pooled_report_sums_rounds() {
        let rounds = [
            target("gateway", 500, 2, Some(100), 50),
            target("gateway", 300, 4, Some(60), 30),
        ];
        let mut p = Pool::new().unwrap();
        for n in [500, 300] {
            let mut rec = Recorder::new().unwrap();
            for _ in 0..n {
                rec.record(&Sample::Ok {
                    total: Duration::from_millis(2),
                    ttfb: None,
                });
            }
            p.add(&rec, None).unwrap();
        }
        let t = pooled_report("gateway", "u", &p, Duration::from_secs(1), &rounds, 100);
        assert_eq!(t.ok, 800);
        assert!((t.measured_s - 2.0).abs() < 1e-9);
        assert!((t.achieved_rps - 400.0).abs() < 1e-9);
        let g = t.cpu.gateway.unwrap();
        // 160 ticks = 1.6 s over 800 requests.
        assert_eq!(g.cpu_ticks, 160);
        assert_eq!(g.cpu_us_per_req, Some(2000.0));
        assert_eq!(g.pid, 2);
        assert_eq!(t.cpu.mock.unwrap().cpu_ticks, 80);
        assert!(!t.cpu.mock.unwrap().low_resolution);
        // A round without a reading: no pooled figure.
        let mut gap = rounds.clone();
        gap[1].cpu.gateway = None;
        let t = pooled_report("gateway", "u", &p, Duration::from_secs(1), &gap, 100);
        assert_eq!(t.cpu.gateway, None);
        assert!(t.cpu.mock.is_some());

        // Open loop: scheduled and unfinished add up.
        let mut p = Pool::new().unwrap();
        for (s, u) in [(10, 1), (12, 0)] {
            p.add(
                &Recorder::new().unwrap(),
                Some(OpenInfo {
                    scheduled: s,
                    unfinished: u,
                }),
            )
            .unwrap();
        }
        let t = pooled_report("direct", "u", &p, Duration::from_secs(1), &rounds, 100);
        assert_eq!((t.scheduled, t.unfinished), (Some(22), 1));
    }
}
