//! Sample recording and the pure arithmetic behind the report: percentiles from
//! HdrHistogram (microsecond resolution), throughput, and gateway-vs-direct deltas.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram can hold: one hour, in microseconds. Larger values are clamped.
const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by each histogram (0.1 % relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Creates an empty microsecond histogram with the bounds every recorder uses.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS).context("creating histogram")
}

/// Converts a duration to whole microseconds, saturating instead of overflowing.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Why one request did not count as a success. Rendered as a stable string key in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with a non-2xx status.
    Status(u16),
    /// The request (headers or body) exceeded the per-request timeout.
    Timeout,
    /// The TCP connection could not be established.
    Connect,
    /// The response body broke off mid-way.
    Body,
    /// Any other transport-level failure.
    Transport,
    /// A stream ended with status 200 but without the terminating `data: [DONE]` event.
    StreamIncomplete,
}

impl ErrorKind {
    /// Stable key used in the JSON `errors` map and the table.
    pub fn key(&self) -> String {
        match self {
            Self::Status(code) => format!("status_{code}"),
            Self::Timeout => "transport_timeout".to_owned(),
            Self::Connect => "transport_connect".to_owned(),
            Self::Body => "transport_body".to_owned(),
            Self::Transport => "transport_other".to_owned(),
            Self::StreamIncomplete => "stream_incomplete".to_owned(),
        }
    }

    /// Classifies a reqwest error.
    pub fn from_reqwest(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect
        } else if err.is_body() || err.is_decode() {
            Self::Body
        } else {
            Self::Transport
        }
    }
}

/// Outcome of one request, with times measured from the request's origin (its actual start in
/// closed loop, its *scheduled* start in open loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    /// 2xx response read to the end.
    Ok {
        /// Origin to last body byte.
        total: Duration,
        /// Origin to first body chunk (streams only).
        ttfb: Option<Duration>,
    },
    /// The request failed; its latency is not recorded.
    Err(ErrorKind),
}

/// Accumulates samples for one target in one scenario. Cheap to merge, so each closed-loop
/// worker keeps its own and they are combined at the end.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    /// Time to first body chunk of successful streams, microseconds.
    pub ttfb: Histogram<u64>,
    /// Open loop only: how late each request was actually sent relative to its schedule.
    pub lag: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by [`ErrorKind::key`].
    pub errors: BTreeMap<String, u64>,
    /// Open loop only: requests never sent because the outstanding-request cap was reached.
    pub dropped: u64,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Result<Self> {
        Ok(Self {
            latency: new_histogram()?,
            ttfb: new_histogram()?,
            lag: new_histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
            dropped: 0,
        })
    }

    /// Records one finished request.
    pub fn record(&mut self, sample: &Sample) {
        match sample {
            Sample::Ok { total, ttfb } => {
                self.ok += 1;
                self.latency.saturating_record(micros(*total));
                if let Some(t) = ttfb {
                    self.ttfb.saturating_record(micros(*t));
                }
            }
            Sample::Err(kind) => *self.errors.entry(kind.key()).or_insert(0) += 1,
        }
    }

    /// Records how late an open-loop request was dispatched.
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record(micros(lag));
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.ttfb.add(&other.ttfb).context("merging ttfb histograms")?;
        self.lag.add(&other.lag).context("merging lag histograms")?;
        self.ok += other.ok;
        self.dropped += other.dropped;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        Ok(())
    }

    /// Failed requests of all kinds (not counting dropped ones).
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Percentile summary of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of recorded values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

/// Microseconds to milliseconds.
fn us_to_ms(us: u64) -> f64 {
    // Histogram values stay far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let v = us as f64;
    v / 1000.0
}

impl LatencySummary {
    /// Summarises a microsecond histogram; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Self {
            count: h.len(),
            min: us_to_ms(h.min()),
            mean: round_us(h.mean() / 1000.0),
            p50: us_to_ms(h.value_at_quantile(0.50)),
            p90: us_to_ms(h.value_at_quantile(0.90)),
            p99: us_to_ms(h.value_at_quantile(0.99)),
            p999: us_to_ms(h.value_at_quantile(0.999)),
            max: us_to_ms(h.max()),
        })
    }
}

/// Rounds milliseconds to whole microseconds, hiding float noise in the JSON.
pub fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Requests per second over a measurement window; 0 for an empty window.
pub fn rate(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let c = count as f64;
    c / secs
}

/// `numerator / denominator` (to 6 decimals), or `None` when the denominator is not positive.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| (numerator / denominator * 1e6).round() / 1e6)
}

/// Gateway minus direct of an optional pair, in ms rounded to microseconds; `None` if either side is missing.
pub fn delta(gateway: Option<f64>, direct: Option<f64>) -> Option<f64> {
    Some(round_us(gateway? - direct?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_from_uniform_samples() {
        let mut r = Recorder::new().unwrap();
        for i in 1..=1000 {
            r.record(&Sample::Ok {
                total: ms(i),
                ttfb: None,
            });
        }
        let s = LatencySummary::from_histogram(&r.latency).unwrap();
        assert_eq!(s.count, 1000);
        // 3 significant digits => values within 0.1 %.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 1e-9;
        assert!(close(s.p50, 500.0), "p50 {}", s.p50);
        assert!(close(s.p90, 900.0), "p90 {}", s.p90);
        assert!(close(s.p99, 990.0), "p99 {}", s.p99);
        assert!(close(s.p999, 999.0), "p999 {}", s.p999);
        assert!(close(s.max, 1000.0), "max {}", s.max);
        assert!(close(s.min, 1.0), "min {}", s.min);
        assert!((s.mean - 500.5).abs() < 1.0, "mean {}", s.mean);
        assert!(LatencySummary::from_histogram(&r.ttfb).is_none());
    }

    #[test]
    fn microsecond_resolution() {
        let mut r = Recorder::new().unwrap();
        r.record(&Sample::Ok {
            total: Duration::from_micros(137),
            ttfb: Some(Duration::from_micros(42)),
        });
        let s = LatencySummary::from_histogram(&r.latency).unwrap();
        assert!((s.p50 - 0.137).abs() < 1e-9);
        let t = LatencySummary::from_histogram(&r.ttfb).unwrap();
        assert!((t.max - 0.042).abs() < 1e-9);
    }

    #[test]
    fn huge_values_saturate() {
        let mut r = Recorder::new().unwrap();
        r.record(&Sample::Ok {
            total: Duration::from_secs(10 * 3600),
            ttfb: None,
        });
        let s = LatencySummary::from_histogram(&r.latency).unwrap();
        assert!(s.max >= 3_600_000.0 * 0.999);
    }

    #[test]
    fn errors_are_counted_by_kind_and_merged() {
        let mut a = Recorder::new().unwrap();
        a.record(&Sample::Err(ErrorKind::Status(502)));
        a.record(&Sample::Err(ErrorKind::Status(502)));
        a.record(&Sample::Err(ErrorKind::Timeout));
        a.record(&Sample::Ok {
            total: ms(1),
            ttfb: None,
        });
        let mut b = Recorder::new().unwrap();
        b.record(&Sample::Err(ErrorKind::StreamIncomplete));
        b.record(&Sample::Ok {
            total: ms(3),
            ttfb: None,
        });
        b.dropped = 4;
        a.merge(&b).unwrap();
        assert_eq!(a.ok, 2);
        assert_eq!(a.dropped, 4);
        assert_eq!(a.error_total(), 4);
        assert_eq!(a.errors["status_502"], 2);
        assert_eq!(a.errors["transport_timeout"], 1);
        assert_eq!(a.errors["stream_incomplete"], 1);
        assert_eq!(a.latency.len(), 2);
    }

    #[test]
    fn rate_ratio_delta() {
        assert!((rate(500, Duration::from_secs(2)) - 250.0).abs() < 1e-9);
        assert!((rate(500, Duration::from_millis(0))).abs() < 1e-9);
        assert_eq!(ratio(800.0, 1000.0), Some(0.8));
        assert_eq!(ratio(800.0, 0.0), None);
        assert_eq!(delta(Some(1.5), Some(1.0)), Some(0.5));
        assert_eq!(delta(None, Some(1.0)), None);
        assert_eq!(delta(Some(1.0), None), None);
    }
}
