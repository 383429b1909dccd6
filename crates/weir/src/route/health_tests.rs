//! Tests of health checks. Timing tests run in paused tokio time: `sleep` auto-advances the
//! clock from one timer to the next, so probes run in order and nothing really waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn config(interval: Duration, timeout: Duration) -> HealthCheckConfig {
    HealthCheckConfig {
        interval,
        timeout,
        ..HealthCheckConfig::default()
    }
}

fn fail(health: &Health) {
    health.record(Err("connection refused".to_owned()));
}

fn succeed(health: &Health) {
    health.record(Ok(ms(50)));
}

/// A probe that counts its calls and answers `outcome` at once.
fn counting_probe(
    calls: &Arc<AtomicU32>,
    outcome: Result<Duration, String>,
) -> impl Fn() -> std::future::Ready<Result<Duration, String>> + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(outcome.clone())
    }
}

// --- configuration ---

#[test]
fn config_defaults() {
    let config = HealthCheckConfig::default();
    assert_eq!(config.interval, secs(30));
    assert_eq!(config.timeout, secs(5));
    assert_eq!(config.unhealthy_threshold, 2);
    assert_eq!(config.healthy_threshold, 2);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn config_validation_names_the_bad_field() {
    let zero_interval = config(Duration::ZERO, secs(5));
    assert_eq!(
        zero_interval.validate(),
        Err("interval must be longer than zero".to_owned())
    );
    let zero_timeout = config(secs(30), Duration::ZERO);
    assert_eq!(
        zero_timeout.validate(),
        Err("timeout must be longer than zero".to_owned())
    );
    let zero_unhealthy = HealthCheckConfig {
        unhealthy_threshold: 0,
        ..HealthCheckConfig::default()
    };
    assert_eq!(
        zero_unhealthy.validate(),
        Err("unhealthy_threshold must be at least 1".to_owned())
    );
    let zero_healthy = HealthCheckConfig {
        healthy_threshold: 0,
        ..HealthCheckConfig::default()
    };
    assert_eq!(
        zero_healthy.validate(),
        Err("healthy_threshold must be at least 1".to_owned())
    );
}

#[test]
fn config_allows_a_timeout_as_long_as_the_interval_or_longer() {
    assert_eq!(config(secs(10), secs(10)).validate(), Ok(()));
    assert_eq!(config(secs(10), secs(60)).validate(), Ok(()));
}

#[test]
fn sanitized_replaces_zero_values() {
    let zeros = HealthCheckConfig {
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
        unhealthy_threshold: 0,
        healthy_threshold: 0,
    };
    let clamped = zeros.sanitized();
    assert_eq!(
        clamped,
        HealthCheckConfig {
            interval: secs(1),
            timeout: secs(1),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        }
    );
    assert_eq!(clamped.validate(), Ok(()));
    let good = HealthCheckConfig::default();
    assert_eq!(good.clone().sanitized(), good);
}

#[test]
fn jitter_adds_up_to_a_tenth_of_the_interval() {
    assert_eq!(jittered(secs(30), 0.0), secs(30));
    assert_eq!(jittered(secs(30), 0.5), ms(31_500));
    assert!(jittered(secs(30), 0.999_999) < secs(33));
    // Out-of-range randomness is clamped rather than trusted.
    assert_eq!(jittered(secs(30), 7.0), secs(33));
    assert_eq!(jittered(secs(30), -1.0), secs(30));
}

// --- thresholds ---

#[test]
fn starts_healthy_with_nothing_recorded() {
    let health = Health::new("gpt-4o/openai");
    assert!(health.is_healthy());
    assert_eq!(health.name(), "gpt-4o/openai");
    assert_eq!(
        health.snapshot(),
        HealthSnapshot {
            healthy: true,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_checked: None,
            last_latency: None,
            last_error: None,
            checks: 0,
        }
    );
}

#[test]
fn one_failure_does_not_flip_but_two_do() {
    let health = Health::new("a");
    fail(&health);
    assert!(health.is_healthy(), "one failure is below the threshold of 2");
    fail(&health);
    assert!(!health.is_healthy(), "the second failure in a row flips it");
    fail(&health);
    assert!(!health.is_healthy());
    assert_eq!(health.snapshot().consecutive_failures, 3);
}

#[test]
fn a_success_resets_the_failure_count() {
    let health = Health::new("a");
    fail(&health);
    succeed(&health);
    assert_eq!(health.snapshot().consecutive_failures, 0);
    fail(&health);
    assert!(
        health.is_healthy(),
        "failures separated by a success are not consecutive"
    );
    fail(&health);
    assert!(!health.is_healthy());
}

#[test]
fn recovery_needs_healthy_threshold_successes_in_a_row() {
    let health = Health::new("a");
    fail(&health);
    fail(&health);
    assert!(!health.is_healthy());

    succeed(&health);
    assert!(!health.is_healthy(), "one success is below the threshold of 2");
    fail(&health);
    assert_eq!(health.snapshot().consecutive_successes, 0);
    succeed(&health);
    assert!(
        !health.is_healthy(),
        "a failure in between restarts the run of successes"
    );
    succeed(&health);
    assert!(health.is_healthy());
    let snapshot = health.snapshot();
    assert_eq!(snapshot.consecutive_successes, 2);
    assert_eq!(snapshot.consecutive_failures, 0);
}

#[test]
fn thresholds_can_be_changed_and_zero_means_one() {
    let health = Health::new("a");
    health.set_thresholds(3, 0);
    fail(&health);
    fail(&health);
    assert!(health.is_healthy());
    fail(&health);
    assert!(!health.is_healthy());
    succeed(&health);
    assert!(health.is_healthy(), "a healthy threshold of 0 acts as 1");
}

#[test]
fn clones_share_one_state() {
    let health = Health::new("a");
    let router_view = health.clone();
    fail(&health);
    fail(&health);
    assert!(!router_view.is_healthy());
    assert_eq!(router_view.snapshot().checks, 2);
    assert!(format!("{router_view:?}").contains("healthy: false"));
}

#[tokio::test(start_paused = true)]
async fn snapshot_describes_the_latest_probe() {
    let start = Instant::now();
    let health = Health::new("a");
    health.record(Ok(ms(120)));
    assert_eq!(
        health.snapshot(),
        HealthSnapshot {
            healthy: true,
            consecutive_failures: 0,
            consecutive_successes: 1,
            last_checked: Some(start),
            last_latency: Some(ms(120)),
            last_error: None,
            checks: 1,
        }
    );

    sleep(secs(5)).await;
    health.record(Err("HTTP 503 Service Unavailable".to_owned()));
    assert_eq!(
        health.snapshot(),
        HealthSnapshot {
            healthy: true,
            consecutive_failures: 1,
            consecutive_successes: 0,
            last_checked: Some(start + secs(5)),
            last_latency: None,
            last_error: Some("HTTP 503 Service Unavailable".to_owned()),
            checks: 2,
        }
    );

    sleep(secs(5)).await;
    health.record(Ok(ms(80)));
    let snapshot = health.snapshot();
    assert_eq!(snapshot.last_latency, Some(ms(80)));
    assert_eq!(snapshot.last_error, None, "a success clears the error");
    assert_eq!(snapshot.last_checked, Some(start + secs(10)));
    assert_eq!(snapshot.checks, 3);
}

// --- the checker ---

#[tokio::test(start_paused = true)]
async fn checker_probes_at_once_then_every_interval() {
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let health = Health::new("a");
    let _handle = spawn_checker(
        health.clone(),
        config(secs(10), secs(1)),
        counting_probe(&calls, Ok(ms(30))),
    );

    sleep(ms(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the first probe runs at once");
    assert_eq!(health.snapshot().last_latency, Some(ms(30)));

    // The second probe is due 10 s after the first, plus up to 1 s of jitter.
    sleep_until(start + ms(9_900)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    sleep_until(start + ms(11_100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The third comes 10–11 s after the second, which started in [10 s, 11 s).
    sleep_until(start + ms(19_900)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    sleep_until(start + ms(22_100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Probe k starts in [10k s, 11k s): by 99.9 s exactly ten have started.
    sleep_until(start + ms(99_900)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(health.snapshot().checks, 10);
    assert!(health.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_times_out_and_counts_as_a_failure() {
    let start = Instant::now();
    let health = Health::new("a");
    let _handle = spawn_checker(health.clone(), config(secs(30), secs(5)), || {
        futures::future::pending::<Result<Duration, String>>()
    });

    sleep_until(start + ms(4_900)).await;
    assert_eq!(health.snapshot().checks, 0, "still waiting for an answer");

    sleep_until(start + ms(5_100)).await;
    let snapshot = health.snapshot();
    assert_eq!(snapshot.checks, 1);
    assert_eq!(snapshot.consecutive_failures, 1);
    assert_eq!(snapshot.last_error.as_deref(), Some("no answer within 5s"));
    assert_eq!(snapshot.last_checked, Some(start + secs(5)));
    assert!(health.is_healthy(), "one timeout is below the threshold");

    // The second probe starts in [30 s, 33 s) and times out 5 s later.
    sleep_until(start + ms(38_100)).await;
    assert_eq!(health.snapshot().checks, 2);
    assert!(!health.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn probes_never_overlap_and_a_slow_probe_delays_the_next() {
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_in_flight = Arc::new(AtomicU32::new(0));
    let probe = {
        let (calls, in_flight, max_in_flight) = (
            Arc::clone(&calls),
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
        );
        move || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let (in_flight, max_in_flight) = (Arc::clone(&in_flight), Arc::clone(&max_in_flight));
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                // The first probe takes 2.5 intervals; later ones are quick.
                let took = if call == 0 { secs(25) } else { secs(1) };
                sleep(took).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(took)
            }
        }
    };
    // A timeout longer than the interval is what lets a probe overrun it.
    let _handle = spawn_checker(Health::new("a"), config(secs(10), secs(60)), probe);

    sleep_until(start + ms(24_900)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no probe starts while one is running"
    );
    // The next probe was due at 10 s; it starts as soon as the slow one finishes.
    sleep_until(start + ms(25_500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The one after is back on the interval, counted from the start of the second.
    sleep_until(start + ms(34_900)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    sleep_until(start + ms(36_100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    assert_eq!(max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_probing() {
    let calls = Arc::new(AtomicU32::new(0));
    let handle = spawn_checker(
        Health::new("a"),
        config(secs(10), secs(1)),
        counting_probe(&calls, Ok(ms(30))),
    );
    sleep(ms(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    drop(handle);
    sleep(secs(120)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_a_probe_in_flight_without_recording_it() {
    /// Notes when the probe future is dropped, i.e. when its request would be cancelled.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let probe = {
        let dropped = Arc::clone(&dropped);
        move || {
            let flag = DropFlag(Arc::clone(&dropped));
            async move {
                let _flag = flag;
                sleep(secs(3)).await;
                Ok(secs(3))
            }
        }
    };
    let health = Health::new("a");
    let handle = spawn_checker(health.clone(), config(secs(10), secs(5)), probe);
    sleep(secs(1)).await;
    assert!(!dropped.load(Ordering::SeqCst), "the probe is in flight");
    assert!(!handle.is_finished());

    handle.stop();
    sleep(ms(1)).await;
    assert!(dropped.load(Ordering::SeqCst), "the probe was cancelled");
    sleep(secs(60)).await;
    assert_eq!(health.snapshot().checks, 0);
    assert!(health.is_healthy(), "the last verdict is kept");
}

#[tokio::test(start_paused = true)]
async fn the_checker_applies_the_configured_thresholds() {
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let health = Health::new("a");
    let config = HealthCheckConfig {
        interval: secs(10),
        timeout: secs(1),
        unhealthy_threshold: 3,
        healthy_threshold: 1,
    };
    let _handle = spawn_checker(
        health.clone(),
        config,
        counting_probe(&calls, Err("HTTP 500".to_owned())),
    );

    // Failures at 0 s, [10, 11) s and [20, 22) s.
    sleep_until(start + ms(11_100)).await;
    assert_eq!(health.snapshot().consecutive_failures, 2);
    assert!(health.is_healthy(), "the threshold is 3, not the default 2");
    sleep_until(start + ms(22_100)).await;
    assert!(!health.is_healthy());
    assert_eq!(health.snapshot().last_error.as_deref(), Some("HTTP 500"));

    // Its healthy threshold of 1 applies to direct records as well.
    succeed(&health);
    assert!(health.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_counts_as_a_failure_and_probing_goes_on() {
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let probe = {
        let calls = Arc::clone(&calls);
        move || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    panic!("bug in the probe");
                }
                Ok(ms(40))
            }
        }
    };
    let health = Health::new("a");
    let _handle = spawn_checker(health.clone(), config(secs(10), secs(1)), probe);

    sleep(ms(1)).await;
    let snapshot = health.snapshot();
    assert_eq!(snapshot.checks, 1);
    assert_eq!(snapshot.last_error.as_deref(), Some("the health probe panicked"));

    sleep_until(start + ms(11_100)).await;
    let snapshot = health.snapshot();
    assert_eq!(snapshot.checks, 2);
    assert_eq!(snapshot.last_latency, Some(ms(40)));
}
