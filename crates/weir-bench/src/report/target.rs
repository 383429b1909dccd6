//! One target's figures in one scenario (latency, throughput, errors, CPU per request) and the
//! gateway's cost relative to calling the mock directly.
//!
//! These are built from a `Recorder` once a phase is over; `rounds` builds the same structures
//! from samples pooled over several rounds, so both paths report identically.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::LOW_TICKS;
use crate::stats::{LatencySummary, Recorder, delta, rate, ratio};

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::sample_report;
    use super::*;

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
}
