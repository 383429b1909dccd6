//! How requests are paced: a closed loop of workers, and an open loop on a fixed schedule whose
//! latencies count from each request's scheduled send time (see the parent module on coordinated
//! omission). Both discard the warmup's samples and mark when the measured window opens, so that
//! what the caller reads around the phase (the children's CPU time) covers the same window.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::request::{RequestTemplate, Target, send_one};
use crate::stats::Recorder;

/// Phases of one run.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Samples from requests started (or scheduled) during warmup are discarded.
    pub warmup: Duration,
    /// The measured window that follows the warmup.
    pub duration: Duration,
}

/// Runs `mark` on the runtime when the measured window opens, so that readings taken around the
/// measured phase (the children's CPU time) exclude the warmup. The timer's ~1 ms granularity is
/// far below the 10 ms resolution of what it reads.
fn mark_at<T, F>(at: Instant, mark: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        mark()
    })
}

/// Closed loop: `concurrency` workers each send the next request as soon as the previous one
/// finished. A request is counted when it *started* inside the measured window. `at_measure_start`
/// runs once when the measured window opens (after the warmup); its result is returned.
pub async fn run_closed<T, F>(
    target: &Target,
    req: &RequestTemplate,
    concurrency: usize,
    phases: Phases,
    at_measure_start: F,
) -> Result<(Recorder, T)>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let measure_start = start + phases.warmup;
    let mark = mark_at(measure_start, at_measure_start);
    let end = measure_start + phases.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let req = req.clone();
        workers.spawn(async move {
            let mut rec = Recorder::new()?;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let sample = send_one(&target, &req, t0).await;
                if t0 >= measure_start {
                    rec.record(&sample);
                }
            }
            anyhow::Ok(rec)
        });
    }
    let mut total = Recorder::new()?;
    while let Some(joined) = workers.join_next().await {
        let rec = joined.context("closed-loop worker panicked")??;
        total.merge(&rec)?;
    }
    // Fired long ago: the workers ran until the end of the window, which is after its start.
    let marked = mark.await.context("measure-start mark panicked")?;
    Ok((total, marked))
}

/// Number of requests an open loop at `rate` req/s schedules over `span`.
pub fn schedule_len(rate: f64, span: Duration) -> u64 {
    let n = (rate * span.as_secs_f64()).floor();
    // Saturating float-to-int cast is the intent; rate and span are validated positive.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = n as u64;
    n
}

/// Offset from the loop's start at which request `i` is scheduled. Computed from `i` directly
/// rather than by accumulating intervals, so rounding never drifts.
pub fn scheduled_offset(i: u64, rate: f64) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let i = i as f64;
    Duration::from_secs_f64(i / rate)
}

/// Result of an open-loop run.
#[derive(Debug)]
pub struct OpenOutcome {
    /// Samples of requests scheduled inside the measured window.
    pub recorder: Recorder,
    /// Requests scheduled inside the measured window.
    pub scheduled: u64,
    /// Requests still outstanding when the drain timeout expired (not in `recorder`).
    pub unfinished: u64,
}

/// Open loop: requests are scheduled at fixed intervals (`1 / rate`) regardless of how fast
/// responses come back; latency counts from the scheduled time. At most `max_outstanding` requests
/// are in flight; a request that would exceed the cap is dropped and counted. `at_measure_start`
/// runs once when the measured window opens (after the warmup); its result is returned.
pub async fn run_open<T, F>(
    target: &Target,
    req: &RequestTemplate,
    rate: f64,
    max_outstanding: usize,
    phases: Phases,
    drain_timeout: Duration,
    at_measure_start: F,
) -> Result<(OpenOutcome, T)>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let permits = u32::try_from(max_outstanding).context("max outstanding too large")?;
    let semaphore = Arc::new(Semaphore::new(max_outstanding));
    let shared = Arc::new(Mutex::new(Recorder::new()?));
    let total = schedule_len(rate, phases.warmup + phases.duration);
    let handle = tokio::runtime::Handle::current();
    // Taken here rather than on the dispatcher thread so the mark below shares the schedule's
    // origin; the thread starts within microseconds, inside the warmup.
    let start = Instant::now();
    let mark = mark_at(start + phases.warmup, at_measure_start);
    let dispatcher = {
        let semaphore = Arc::clone(&semaphore);
        let shared = Arc::clone(&shared);
        let target = target.clone();
        let req = req.clone();
        // The dispatcher runs on its own (blocking-pool) thread and sleeps with the OS timer,
        // which wakes within tens of microseconds; tokio's timer wheel has 1 ms granularity and
        // would add up to ~2 ms of send lag to every open-loop latency.
        tokio::task::spawn_blocking(move || {
            let measure_start = start + phases.warmup;
            let mut scheduled = 0u64;
            let mut dropped = 0u64;
            for i in 0..total {
                let at = start + scheduled_offset(i, rate);
                let now = Instant::now();
                if at > now {
                    // A dedicated thread, not a runtime worker: blocking here is the point.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(at - now);
                }
                let measured = at >= measure_start;
                if measured {
                    scheduled += 1;
                }
                let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() else {
                    if measured {
                        dropped += 1;
                    }
                    continue;
                };
                let target = target.clone();
                let req = req.clone();
                let shared = Arc::clone(&shared);
                handle.spawn(async move {
                    let lag = at.elapsed();
                    let sample = send_one(&target, &req, at).await;
                    if measured {
                        let mut rec = shared.lock();
                        rec.record(&sample);
                        rec.record_lag(lag);
                    }
                    drop(permit);
                });
            }
            (scheduled, dropped)
        })
    };
    let (scheduled, dropped) = dispatcher.await.context("open-loop dispatcher panicked")?;
    // Wait for the stragglers: all permits back means nothing is in flight.
    let unfinished = match tokio::time::timeout(drain_timeout, semaphore.acquire_many(permits)).await {
        Ok(Ok(_all)) => 0,
        _ => u64::try_from(max_outstanding - semaphore.available_permits()).unwrap_or(u64::MAX),
    };
    let mut recorder = std::mem::replace(&mut *shared.lock(), Recorder::new()?);
    recorder.dropped = dropped;
    let marked = mark.await.context("measure-start mark panicked")?;
    Ok((
        OpenOutcome {
            recorder,
            scheduled,
            unfinished,
        },
        marked,
    ))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::load::fake::{fake_upstream, target};
    use crate::load::request::build_client;

    #[test]
    fn schedule_is_evenly_spaced_and_does_not_drift() {
        assert_eq!(schedule_len(1000.0, Duration::from_secs(3)), 3000);
        assert_eq!(schedule_len(3.0, Duration::from_millis(1500)), 4);
        assert_eq!(schedule_len(0.5, Duration::from_secs(1)), 0);
        assert_eq!(scheduled_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(scheduled_offset(250, 100.0), Duration::from_millis(2500));
        // 1/3 s intervals: the 3,000,000th request is at exactly 1,000,000 s, no accumulated error.
        let off = scheduled_offset(3_000_000, 3.0);
        assert!((off.as_secs_f64() - 1_000_000.0).abs() < 1e-6, "{off:?}");
        // Strictly increasing.
        let offs: Vec<_> = (0..100).map(|i| scheduled_offset(i, 7.0)).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
    }

    const SHORT: Phases = Phases {
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_against_fake() {
        let base = fake_upstream().await;
        let t = target(&base);
        let req = RequestTemplate::new(true, 0, 0).unwrap();
        let before = Instant::now();
        let (rec, marked) = run_closed(&t, &req, 4, SHORT, Instant::now).await.unwrap();
        let after = Instant::now();
        // The mark fires when the measured window opens: after the warmup, before the end.
        assert!(marked >= before + SHORT.warmup, "{:?}", marked - before);
        assert!(marked + SHORT.duration / 2 <= after, "{:?}", after - marked);
        assert!(rec.ok > 10, "ok {}", rec.ok);
        assert_eq!(rec.error_total(), 0, "{:?}", rec.errors);
        assert_eq!(rec.latency.len(), rec.ok);
        assert_eq!(rec.ttfb.len(), rec.ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_against_fake() {
        let base = fake_upstream().await;
        let t = target(&base);
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        let before = Instant::now();
        let (out, marked) = run_open(&t, &req, 200.0, 64, SHORT, Duration::from_secs(5), Instant::now)
            .await
            .unwrap();
        let after = Instant::now();
        assert!(marked >= before + SHORT.warmup, "{:?}", marked - before);
        assert!(marked + SHORT.duration / 2 <= after, "{:?}", after - marked);
        // 200 req/s over 300 ms measured.
        assert!((55..=65).contains(&out.scheduled), "scheduled {}", out.scheduled);
        assert_eq!(out.unfinished, 0);
        assert_eq!(
            out.recorder.ok + out.recorder.error_total() + out.recorder.dropped,
            out.scheduled
        );
        assert_eq!(out.recorder.error_total(), 0, "{:?}", out.recorder.errors);
        assert_eq!(out.recorder.lag.len(), out.recorder.ok);
    }

    #[tokio::test]
    async fn open_loop_drops_over_cap() {
        // Nobody answers: connections hang until the request timeout, so the cap fills up.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let t = Target::new(
            "direct",
            &base,
            build_client(8, Duration::from_millis(400)).unwrap(),
        );
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        let phases = Phases {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
        };
        let (out, ()) = run_open(&t, &req, 100.0, 3, phases, Duration::from_secs(5), || ())
            .await
            .unwrap();
        assert_eq!(out.scheduled, 20);
        assert_eq!(out.recorder.dropped, 17);
        assert_eq!(
            out.recorder.errors.get("transport_timeout"),
            Some(&3),
            "{:?}",
            out.recorder.errors
        );
    }
}
