//! Soak: a steady open-loop rate against an external gateway (in front of `weir mock
//! --fault-mix`), sampling the gateway's RSS and open file descriptors and the latency every
//! interval; the verdict is "flat" when memory and descriptors do not grow and nothing hung or
//! came back silently wrong.

// A soak prints its table row by row as it runs, so a long run shows progress.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::time::{Instant, MissedTickBehavior};

use crate::classify::Outcome;
use crate::report::Cell;
use crate::traffic::{Shot, send};

/// A soak run's knobs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// The gateway, `http://host:port`.
    pub target: String,
    /// Requests started per second (open loop: they do not wait for each other).
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// How often a row is sampled.
    pub sample_every: Duration,
    /// The gateway's process, whose RSS and descriptors are sampled (Linux `/proc`).
    pub watch_pid: Option<u32>,
    /// Seeds the choice of face, model and streaming.
    pub seed: u64,
    /// A request with no complete answer after this long is a hang.
    pub hang_bound: Duration,
}

/// One sampled interval.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the start, at the end of the interval.
    pub at_secs: u64,
    /// The gateway's resident memory, KiB.
    pub rss_kib: Option<u64>,
    /// The gateway's open file descriptors.
    pub fds: Option<u64>,
    /// Outcomes of the requests that finished in the interval.
    pub outcomes: Cell,
    /// Latency of the requests that finished in the interval: p50, p99, max, in ms.
    pub latency_ms: (f64, f64, f64),
}

/// Runs the soak, printing each sample as it is taken; returns the samples and the verdict.
pub async fn run(settings: &SoakSettings) -> anyhow::Result<(Vec<Sample>, bool)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(settings.hang_bound)
        .build()?;
    let window = Arc::new(Mutex::new(Window::new()?));
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / settings.rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sampler = tokio::time::interval_at(started + settings.sample_every, settings.sample_every);
    let mut samples = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut index = 0u64;
    println!("{}", header());
    loop {
        tokio::select! {
            _ = ticks.tick(), if started.elapsed() < settings.duration => {
                let shot = Shot::pick(settings.seed, index);
                index += 1;
                let (client, base, window) = (client.clone(), settings.target.clone(), Arc::clone(&window));
                in_flight.spawn(async move {
                    let sent = Instant::now();
                    let verdict = send(&client, &base, &shot).await;
                    window.lock().add(verdict.outcome, sent.elapsed());
                });
            }
            _ = sampler.tick() => {
                let sample = window.lock().take(started.elapsed().as_secs(), settings.watch_pid)?;
                println!("{}", row(&sample));
                samples.push(sample);
                if started.elapsed() >= settings.duration && in_flight.is_empty() {
                    break;
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    let flat = is_flat(&samples);
    println!("\n{}", verdict_line(&samples, flat));
    Ok((samples, flat))
}

/// What finished in the current interval.
struct Window {
    outcomes: Cell,
    latency: Histogram<u64>,
}

impl Window {
    fn new() -> anyhow::Result<Window> {
        Ok(Window {
            outcomes: Cell::default(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        })
    }

    fn add(&mut self, outcome: Outcome, took: Duration) {
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes.counts[i] += 1;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.latency.record(micros.min(self.latency.high()));
    }

    fn take(&mut self, at_secs: u64, pid: Option<u32>) -> anyhow::Result<Sample> {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let sample = Sample {
            at_secs,
            rss_kib: pid.and_then(rss_kib),
            fds: pid.and_then(open_fds),
            outcomes: std::mem::take(&mut self.outcomes),
            latency_ms: (ms(0.5), ms(0.99), self.latency.max() as f64 / 1000.0),
        };
        self.latency.reset();
        Ok(sample)
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn header() -> String {
    let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
    format!(
        "| t (s) | RSS (MiB) | fds | p50 ms | p99 ms | max ms | {} |\n|---:|---:|---:|---:|---:|---:|{}",
        outcomes.join(" | "),
        "---:|".repeat(outcomes.len())
    )
}

fn row(sample: &Sample) -> String {
    let rss = sample
        .rss_kib
        .map_or_else(|| "-".to_owned(), |kib| format!("{:.1}", kib as f64 / 1024.0));
    let fds = sample.fds.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let (p50, p99, max) = sample.latency_ms;
    let counts: Vec<String> = sample.outcomes.counts.iter().map(u64::to_string).collect();
    format!(
        "| {} | {rss} | {fds} | {p50:.1} | {p99:.1} | {max:.1} | {} |",
        sample.at_secs,
        counts.join(" | ")
    )
}

/// Flat: no hang and nothing silently wrong; the RSS of the last half of the run within 20 %
/// (+ 4 MiB) of the first half's peak and descriptors within 16 of it. The first sample is
/// warmup (allocator and pools filling) and only counts for the outcomes.
pub fn is_flat(samples: &[Sample]) -> bool {
    let bad = samples
        .iter()
        .any(|s| s.outcomes.count(Outcome::Hang) > 0 || s.outcomes.count(Outcome::SilentlyWrong) > 0);
    if bad {
        return false;
    }
    let steady = samples.get(1..).unwrap_or_default();
    if steady.len() < 2 {
        return true;
    }
    let (first, last) = steady.split_at(steady.len() / 2);
    let peak = |part: &[Sample], f: fn(&Sample) -> Option<u64>| part.iter().filter_map(f).max();
    let rss_ok = match (peak(first, |s| s.rss_kib), peak(last, |s| s.rss_kib)) {
        (Some(a), Some(b)) => b as f64 <= a as f64 * 1.2 + 4096.0,
        _ => true,
    };
    let fds_ok = match (peak(first, |s| s.fds), peak(last, |s| s.fds)) {
        (Some(a), Some(b)) => b <= a + 16,
        _ => true,
    };
    rss_ok && fds_ok
}

fn verdict_line(samples: &[Sample], flat: bool) -> String {
    let mut total = Cell::default();
    for s in samples {
        for (sum, n) in total.counts.iter_mut().zip(s.outcomes.counts) {
            *sum += n;
        }
    }
    let mut out = String::new();
    let parts: Vec<String> = Outcome::ALL
        .iter()
        .map(|o| format!("{} {}", o.label(), total.count(*o)))
        .collect();
    let _ = write!(
        out,
        "totals: {}\nverdict: {}",
        parts.join(", "),
        if flat { "flat" } else { "NOT flat" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss: u64, fds: u64) -> Sample {
        Sample {
            at_secs: 0,
            rss_kib: Some(rss),
            fds: Some(fds),
            outcomes: Cell::default(),
            latency_ms: (0.0, 0.0, 0.0),
        }
    }

    #[test]
    fn flatness() {
        let flat = [
            sample(9000, 40),
            sample(20000, 50),
            sample(21000, 52),
            sample(20500, 51),
            sample(21500, 50),
        ];
        assert!(is_flat(&flat));
        let growing = [
            sample(9000, 40),
            sample(20000, 50),
            sample(21000, 52),
            sample(40000, 51),
            sample(60000, 50),
        ];
        assert!(!is_flat(&growing));
        let leaking_fds = [
            sample(9000, 40),
            sample(20000, 50),
            sample(20000, 52),
            sample(20000, 90),
            sample(20000, 150),
        ];
        assert!(!is_flat(&leaking_fds));
        let mut hung = flat.clone();
        hung[3].outcomes.counts[5] = 1;
        assert!(!is_flat(&hung));
    }

    #[test]
    fn this_process_is_visible() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(open_fds(pid).is_some_and(|n| n > 0));
    }
}
