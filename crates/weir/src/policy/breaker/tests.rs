//! Tests of the circuit breaker. Time is tokio's paused clock, moved with `advance`: no test sleeps.
//! Longer than the usual ~600 lines: one test per rule of the state machine (see the module docs'
//! table), all on the same small helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::error::{Error, TimeoutPhase};

const SEC: Duration = Duration::from_secs(1);

fn breaker(config: CircuitBreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new("dep-a", config)
}

fn record(b: &CircuitBreaker, outcome: Outcome) {
    b.try_acquire().unwrap().record(outcome);
}

fn fail(b: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        record(b, Outcome::Failure);
    }
}

fn succeed(b: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        record(b, Outcome::Success);
    }
}

fn upstream(status: u16) -> Error {
    Error::Upstream {
        status: StatusCode::from_u16(status).unwrap(),
        message: "x".into(),
        error_type: None,
        code: None,
        param: None,
        retry_after: None,
    }
}

fn timeout(phase: TimeoutPhase) -> Error {
    Error::Timeout { phase, after: SEC }
}

/// Opens a default breaker and waits out its open timeout.
async fn half_opened(config: CircuitBreakerConfig) -> CircuitBreaker {
    let b = breaker(config);
    fail(&b, config.failure_threshold);
    advance(config.open_timeout).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b
}

#[tokio::test(start_paused = true)]
async fn opens_after_exactly_failure_threshold_consecutive_failures() {
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().consecutive_failures, 4);
    assert!(b.is_call_permitted());

    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open { remaining: 30 * SEC });
    assert!(!b.is_call_permitted());
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_run_of_failures() {
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 4);
    succeed(&b, 1);
    assert_eq!(b.stats().consecutive_failures, 0);
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
}

fn rate_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        // Out of the way, so only the rate can open the breaker.
        failure_threshold: 100,
        failure_rate_threshold: Some(0.5),
        min_requests: 20,
        ..CircuitBreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn failure_rate_opens_only_once_min_requests_are_counted() {
    let b = breaker(rate_config());
    // 13 failures and 6 successes, never more than two failures in a row: 68% of 19 calls.
    for i in 0..19 {
        record(
            &b,
            if i % 3 == 2 {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        );
    }
    let stats = b.stats();
    assert_eq!((stats.window_calls, stats.window_failures), (19, 13));
    assert_eq!(b.state(), BreakerState::Closed, "19 calls are below min_requests");

    fail(&b, 1);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    let (from, to, count) = b.stats().transitions.iter().next().unwrap();
    assert_eq!((from, to, count), (StateKind::Closed, StateKind::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_must_exceed_the_threshold() {
    let b = breaker(rate_config());
    for _ in 0..10 {
        succeed(&b, 1);
        fail(&b, 1);
    }
    assert_eq!(b.stats().failure_rate(), Some(0.5));
    assert_eq!(b.state(), BreakerState::Closed, "exactly 50% does not exceed 50%");

    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&changes);
    b.on_state_change(move |change| seen.lock().push(change.reason));
    fail(&b, 1);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert_eq!(
        *changes.lock(),
        [TransitionReason::FailureRate {
            failures: 11,
            calls: 21
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_old_calls() {
    let b = breaker(rate_config());
    for _ in 0..9 {
        fail(&b, 1);
        succeed(&b, 1);
    }
    fail(&b, 1);
    assert_eq!(b.stats().window_calls, 19);
    // One more failure would make 11 of 20 and open it, but these calls are long gone by then.
    advance(60 * SEC).await;
    let stats = b.stats();
    assert_eq!((stats.window_calls, stats.window_failures), (0, 0));
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_window_counts_recent_calls() {
    let b = breaker(rate_config());
    fail(&b, 1);
    // Anything younger than nine tenths of the window is still in it.
    advance(53 * SEC).await;
    succeed(&b, 1);
    assert_eq!(b.stats().window_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_with_the_time_left_then_half_opens() {
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 5);

    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_in, 30 * SEC);
    assert_eq!(rejected.state, StateKind::Open);
    assert_eq!(&*rejected.name, "dep-a");
    assert_eq!(
        rejected.to_string(),
        "circuit breaker `dep-a` is open; it may admit calls again in 30s"
    );

    advance(10 * SEC).await;
    assert_eq!(b.try_acquire().unwrap_err().retry_in, 20 * SEC);
    assert_eq!(b.state(), BreakerState::Open { remaining: 20 * SEC });

    advance(20 * SEC - Duration::from_millis(1)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_ok());
    assert_eq!(b.stats().rejected, 3);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_max_probes_at_a_time() {
    let b = half_opened(CircuitBreakerConfig {
        half_open_max_probes: 2,
        ..CircuitBreakerConfig::default()
    })
    .await;
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    assert_eq!(b.stats().probes_in_flight, 2);
    assert!(!b.is_call_permitted());
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, StateKind::HalfOpen);
    assert_eq!(rejected.retry_in, Duration::ZERO);

    first.record(Outcome::Success);
    assert!(b.is_call_permitted());
    // Peeking took no slot.
    assert!(b.is_call_permitted());
    let third = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    second.record(Outcome::Success);
    third.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn closes_after_success_threshold_probes() {
    let b = half_opened(CircuitBreakerConfig::default()).await;
    succeed(&b, 2);
    let stats = b.stats();
    assert_eq!(stats.state, BreakerState::HalfOpen);
    assert_eq!(stats.probe_successes, 2);
    // An ignored probe neither counts nor hurts.
    record(&b, Outcome::Ignored);
    assert_eq!(b.state(), BreakerState::HalfOpen);

    succeed(&b, 1);
    let stats = b.stats();
    assert_eq!(stats.state, BreakerState::Closed);
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.transitions.get(StateKind::HalfOpen, StateKind::Closed), 1);
    // Fresh counts: it takes a whole new run to open it again.
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_another_open_timeout() {
    let b = half_opened(CircuitBreakerConfig::default()).await;
    succeed(&b, 2);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open { remaining: 30 * SEC });
    assert_eq!(b.stats().transitions.get(StateKind::HalfOpen, StateKind::Open), 1);
    advance(30 * SEC).await;
    // The two earlier successes are forgotten: three more are needed.
    succeed(&b, 2);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_timeout_clears_the_consecutive_count() {
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 4);
    advance(60 * SEC).await;
    assert_eq!(b.stats().consecutive_failures, 0);
    fail(&b, 1);
    assert_eq!(b.stats().consecutive_failures, 1);
    assert_eq!(b.state(), BreakerState::Closed);

    // The timeout runs from the last failure: failures 50 s apart still add up.
    let b = breaker(CircuitBreakerConfig::default());
    for _ in 0..4 {
        fail(&b, 1);
        advance(50 * SEC).await;
    }
    assert_eq!(b.stats().consecutive_failures, 4);
    fail(&b, 1);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_never_trip_it() {
    let b = breaker(CircuitBreakerConfig {
        failure_rate_threshold: Some(0.1),
        min_requests: 1,
        ..CircuitBreakerConfig::default()
    });
    let ignored = [
        upstream(429),
        upstream(400),
        upstream(401),
        upstream(403),
        upstream(404),
        upstream(422),
        Error::PoolExhausted {
            waited: Duration::from_secs(10),
        },
        Error::missing_param("model"),
        Error::Unavailable {
            message: "draining".into(),
        },
    ];
    for _ in 0..50 {
        for error in &ignored {
            b.try_acquire().unwrap().record_result::<()>(&Err(error.clone()));
        }
    }
    let stats = b.stats();
    assert_eq!(stats.state, BreakerState::Closed);
    assert_eq!((stats.window_calls, stats.consecutive_failures), (0, 0));

    // Nor do they interrupt a run of failures.
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 2);
    record(&b, Outcome::Ignored);
    assert_eq!(b.stats().consecutive_failures, 2);
}

#[test]
fn classify_follows_the_outcome_table() {
    assert_eq!(classify(&Ok::<_, Error>(())), Outcome::Success);
    let failures = [
        upstream(500),
        upstream(502),
        upstream(503),
        upstream(504),
        timeout(TimeoutPhase::Connect),
        timeout(TimeoutPhase::Read),
        timeout(TimeoutPhase::Total),
        Error::Connect {
            message: "refused".into(),
        },
        Error::Transport {
            message: "reset".into(),
        },
        Error::BadUpstreamResponse {
            message: "not json".into(),
        },
    ];
    for error in failures {
        assert_eq!(Outcome::from_error(&error), Outcome::Failure, "{error}");
        assert_eq!(classify::<()>(&Err(error)), Outcome::Failure);
    }
    let ignored = [
        upstream(400),
        upstream(401),
        upstream(403),
        upstream(404),
        upstream(429),
        Error::PoolExhausted {
            waited: Duration::from_secs(10),
        },
        Error::missing_param("model"),
        Error::ModelNotFound { model: "x".into() },
        Error::PayloadTooLarge { limit: 1 },
        Error::Unauthenticated {
            message: "no key".into(),
        },
        Error::Unavailable {
            message: "draining".into(),
        },
        Error::Internal("bug".into()),
    ];
    for error in ignored {
        assert_eq!(Outcome::from_error(&error), Outcome::Ignored, "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_releases_its_probe_slot() {
    let b = half_opened(CircuitBreakerConfig::default()).await;
    let probe = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(probe);
    let stats = b.stats();
    assert_eq!((stats.state, stats.probes_in_flight), (BreakerState::HalfOpen, 0));
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn calls_admitted_before_a_state_change_do_not_count_after_it() {
    let config = CircuitBreakerConfig::default();
    let b = breaker(config);
    let slow = b.try_acquire().unwrap();
    fail(&b, 5);
    advance(config.open_timeout).await;
    let probe = b.try_acquire().unwrap();
    // The slow call admitted while closed fails now: it says nothing about the upstream since
    // it opened, must not re-open the half-open breaker, and must not free the probe's slot.
    slow.record(Outcome::Failure);
    let stats = b.stats();
    assert_eq!((stats.state, stats.probes_in_flight), (BreakerState::HalfOpen, 1));
    probe.record(Outcome::Success);
    assert_eq!(b.stats().probe_successes, 1);
}

#[tokio::test(start_paused = true)]
async fn force_open_force_closed_and_reset() {
    let b = breaker(CircuitBreakerConfig::default());
    b.force_open();
    assert_eq!(b.state(), BreakerState::ForcedOpen);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state, StateKind::ForcedOpen);
    assert_eq!(rejected.to_string(), "circuit breaker `dep-a` is forced open");
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        b.state(),
        BreakerState::ForcedOpen,
        "no timeout ends a forced open"
    );
    assert!(!b.is_call_permitted());

    b.force_closed();
    assert_eq!(b.state(), BreakerState::ForcedClosed);
    fail(&b, 100);
    assert_eq!(b.state(), BreakerState::ForcedClosed, "failures are ignored");
    assert_eq!(b.stats().consecutive_failures, 0);

    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 5);
    assert!(matches!(b.state(), BreakerState::Open { .. }));

    // Reset from open closes with clean counts.
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
    // Reset while closed clears the counts too (and is not a state change).
    let before = b.stats().transitions.total();
    b.reset();
    let stats = b.stats();
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.transitions.total(), before);

    let t = stats.transitions;
    assert_eq!(t.get(StateKind::Closed, StateKind::ForcedOpen), 1);
    assert_eq!(t.get(StateKind::ForcedOpen, StateKind::ForcedClosed), 1);
    assert_eq!(t.get(StateKind::ForcedClosed, StateKind::Closed), 1);
    assert_eq!(t.get(StateKind::Closed, StateKind::Open), 1);
    assert_eq!(t.get(StateKind::Open, StateKind::Closed), 1);
    assert_eq!(t.total(), 5);
}

#[tokio::test(start_paused = true)]
async fn forcing_the_state_it_is_already_in_changes_nothing() {
    let b = breaker(CircuitBreakerConfig::default());
    let changes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&changes);
    b.on_state_change(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    b.force_open();
    b.force_open();
    b.force_closed();
    b.force_closed();
    assert_eq!(changes.load(Ordering::SeqCst), 2);
    assert_eq!(b.stats().transitions.total(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_state_change_is_counted_and_heard_once() {
    let config = CircuitBreakerConfig::default();
    let b = breaker(config);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&changes);
    b.on_state_change(move |change| {
        assert_eq!(&*change.name, "dep-a");
        seen.lock().push((change.from, change.to, change.reason));
    });

    fail(&b, 5);
    advance(config.open_timeout).await;
    // Many looks, one change.
    for _ in 0..3 {
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.is_call_permitted());
    }
    fail(&b, 1);
    advance(config.open_timeout).await;
    succeed(&b, 3);

    use StateKind::*;
    assert_eq!(
        *changes.lock(),
        [
            (
                Closed,
                Open,
                TransitionReason::ConsecutiveFailures { failures: 5 }
            ),
            (Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            (HalfOpen, Open, TransitionReason::ProbeFailed),
            (Open, HalfOpen, TransitionReason::OpenTimeoutElapsed),
            (
                HalfOpen,
                Closed,
                TransitionReason::ProbesSucceeded { successes: 3 }
            ),
        ]
    );
    let t = b.stats().transitions;
    assert_eq!(t.get(Closed, Open), 1);
    assert_eq!(t.get(Open, HalfOpen), 2);
    assert_eq!(t.get(HalfOpen, Open), 1);
    assert_eq!(t.get(HalfOpen, Closed), 1);
    assert_eq!(t.entering(Open), 2);
    assert_eq!(t.total(), 5);
    assert_eq!(t.iter().count(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_listener_may_call_back_into_the_breaker() {
    let b = breaker(CircuitBreakerConfig::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&changes);
    let handle = b.clone();
    b.on_state_change(move |change| {
        seen.lock().push((change.to, handle.state().kind()));
        // A policy that refuses to let this deployment go: causes a change from inside a listener.
        if change.to == StateKind::Open {
            handle.force_closed();
        }
    });
    fail(&b, 5);
    assert_eq!(b.state(), BreakerState::ForcedClosed);
    assert_eq!(
        *changes.lock(),
        [
            // The listener runs after the change and outside the lock: it sees the breaker open...
            (StateKind::Open, StateKind::Open),
            // ...and then hears about its own change, in order.
            (StateKind::ForcedClosed, StateKind::ForcedClosed),
        ]
    );
}

/// A `tracing` subscriber that keeps each event's level and fields (the crate does not depend on
/// `tracing-subscriber`, and this is all the test needs).
#[derive(Default)]
struct Capture {
    events: Mutex<Vec<(tracing::Level, Fields)>>,
}

/// An event's fields, as `(name, value)`.
type Fields = Vec<(String, String)>;

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Visitor(Fields);
        impl tracing::field::Visit for Visitor {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_owned(), format!("{value:?}")));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push((field.name().to_owned(), value.to_owned()));
            }
        }
        let mut fields = Visitor(Vec::new());
        event.record(&mut fields);
        self.events.lock().push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn state_changes_are_logged_with_name_from_to_and_reason() {
    let capture = Arc::new(Capture::default());
    let dispatch = tracing::Dispatch::new(Arc::clone(&capture));
    // With a single dispatcher registered, tracing decides a callsite's interest by asking only
    // the current thread's subscriber; a log line first reached on another test's thread (which
    // has none) would then be cached as "never" and vanish here. A second live dispatcher makes
    // it ask every registered one, and the rebuild redoes any decision already cached.
    let _second = tracing::Dispatch::new(Capture::default());
    tracing::callsite::rebuild_interest_cache();
    tracing::dispatcher::with_default(&dispatch, || {
        // A zero open timeout half-opens at once, so no clock needs moving.
        let b = breaker(CircuitBreakerConfig {
            open_timeout: Duration::ZERO,
            success_threshold: 1,
            ..CircuitBreakerConfig::default()
        });
        fail(&b, 5);
        succeed(&b, 1);
        b.force_open();
    });
    let events = capture.events.lock();
    let summary: Vec<_> = events
        .iter()
        .map(|(level, fields)| {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(field("breaker"), "dep-a");
            (*level, field("from"), field("to"), field("reason"))
        })
        .collect();
    let row = |level, from: &str, to: &str, reason: &str| {
        (level, from.to_owned(), to.to_owned(), reason.to_owned())
    };
    use tracing::Level;
    assert_eq!(
        summary,
        [
            row(Level::WARN, "closed", "open", "5 consecutive failures"),
            row(Level::INFO, "open", "half_open", "open timeout elapsed"),
            row(Level::INFO, "half_open", "closed", "1 half-open probes succeeded"),
            row(Level::WARN, "closed", "forced_open", "forced open"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_become_unavailable_errors_that_are_not_retried() {
    let b = breaker(CircuitBreakerConfig::default());
    fail(&b, 5);
    let error = b.try_acquire().unwrap_err().into_error();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(!crate::policy::retry::should_retry(&error));
    assert!(error.to_string().contains("dep-a"));
}

#[test]
fn config_defaults_and_validation() {
    let config = CircuitBreakerConfig::default();
    assert_eq!(config.failure_threshold, 5);
    assert_eq!(config.failure_rate_threshold, None);
    assert_eq!(config.min_requests, 20);
    assert_eq!(config.window, 60 * SEC);
    assert_eq!(config.open_timeout, 30 * SEC);
    assert_eq!(config.half_open_max_probes, 1);
    assert_eq!(config.success_threshold, 3);
    assert_eq!(config.reset_timeout, 60 * SEC);
    assert_eq!(config.validate(), Ok(()));

    let bad = |edit: fn(&mut CircuitBreakerConfig)| {
        let mut config = CircuitBreakerConfig::default();
        edit(&mut config);
        config.validate().unwrap_err()
    };
    assert!(bad(|c| c.failure_threshold = 0).starts_with("failure_threshold"));
    assert!(bad(|c| c.min_requests = 0).starts_with("min_requests"));
    assert!(bad(|c| c.half_open_max_probes = 0).starts_with("half_open_max_probes"));
    assert!(bad(|c| c.success_threshold = 0).starts_with("success_threshold"));
    assert!(bad(|c| c.failure_rate_threshold = Some(1.0)).starts_with("failure_rate_threshold"));
    assert!(bad(|c| c.failure_rate_threshold = Some(-0.1)).starts_with("failure_rate_threshold"));
    assert!(bad(|c| c.failure_rate_threshold = Some(f64::NAN)).starts_with("failure_rate_threshold"));
    assert!(bad(|c| c.window = Duration::ZERO).starts_with("window"));
    assert!(bad(|c| c.open_timeout = Duration::ZERO).starts_with("open_timeout"));
    assert!(bad(|c| c.reset_timeout = Duration::ZERO).starts_with("reset_timeout"));
    let rate = CircuitBreakerConfig {
        failure_rate_threshold: Some(0.0),
        ..config
    };
    assert_eq!(rate.validate(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn out_of_range_settings_are_clamped_not_fatal() {
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: 0,
        half_open_max_probes: 0,
        success_threshold: 0,
        open_timeout: Duration::MAX,
        failure_rate_threshold: Some(f64::NAN),
        ..CircuitBreakerConfig::default()
    });
    let config = b.config();
    assert_eq!(
        (
            config.failure_threshold,
            config.half_open_max_probes,
            config.success_threshold
        ),
        (1, 1, 1)
    );
    assert_eq!(config.failure_rate_threshold, None);
    fail(&b, 1);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

/// A `service_fn` that counts its calls and answers with the given status (200 = `Ok`).
fn counting_service(
    calls: Arc<AtomicUsize>,
    status: Arc<Mutex<u16>>,
) -> impl Service<(), Response = u16, Error = Error> + Clone {
    tower::service_fn(move |()| {
        calls.fetch_add(1, Ordering::SeqCst);
        let status = *status.lock();
        async move {
            if status < 400 {
                Ok(status)
            } else {
                Err(upstream(status))
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_layer_passes_calls_through_while_closed_and_rejects_fast_while_open() {
    let calls = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(Mutex::new(200));
    let b = breaker(CircuitBreakerConfig::default());
    let layer = CircuitBreakerLayer::new(b.clone(), classify);
    let mut service = layer.layer(counting_service(Arc::clone(&calls), Arc::clone(&status)));

    assert_eq!(service.ready().await.unwrap().call(()).await.unwrap(), 200);
    *status.lock() = 404;
    for _ in 0..10 {
        let error = service.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(matches!(error, BreakerError::Inner(Error::Upstream { .. })));
    }
    assert_eq!(b.state(), BreakerState::Closed, "4xx are ignored");

    *status.lock() = 503;
    for _ in 0..5 {
        let error = service.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(
            error.into_inner().map(|e| e.kind()),
            Some(crate::ErrorKind::UpstreamServerError)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 16);
    assert!(matches!(b.state(), BreakerState::Open { .. }));

    *status.lock() = 200;
    for _ in 0..10 {
        let error = service.clone().oneshot(()).await.unwrap_err();
        assert!(error.is_open());
        assert_eq!(
            error.to_string(),
            "circuit breaker `dep-a` is open; it may admit calls again in 30s"
        );
        let BreakerError::Open(open) = error else {
            unreachable!()
        };
        assert_eq!(open.retry_in, 30 * SEC);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        16,
        "the inner service was not called"
    );

    // Recovery goes through the layer too.
    advance(30 * SEC).await;
    for _ in 0..3 {
        assert_eq!(service.ready().await.unwrap().call(()).await.unwrap(), 200);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 19);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_layer_future_releases_the_probe_slot() {
    let calls = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(Mutex::new(200));
    let b = half_opened(CircuitBreakerConfig::default()).await;
    let mut service = CircuitBreakerService::new(counting_service(calls, status), b.clone(), classify);

    let abandoned = service.ready().await.unwrap().call(());
    assert!(
        !b.is_call_permitted(),
        "the pending call holds the only probe slot"
    );
    drop(abandoned);
    assert!(b.is_call_permitted());
    assert_eq!(b.stats().probe_successes, 0, "an abandoned call is not a success");
    assert_eq!(service.ready().await.unwrap().call(()).await.unwrap(), 200);
    assert_eq!(b.stats().probe_successes, 1);
}

#[tokio::test(start_paused = true)]
async fn the_layer_takes_any_classifier() {
    // A service with its own error type and a classifier that looks at responses too.
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: 2,
        ..CircuitBreakerConfig::default()
    });
    let layer = CircuitBreakerLayer::new(b.clone(), |result: &Result<u16, std::io::Error>| match result {
        Ok(status) if *status >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    });
    let mut service = layer.layer(tower::service_fn(|status: u16| async move {
        Ok::<_, std::io::Error>(status)
    }));
    service.ready().await.unwrap().call(502).await.unwrap();
    service.ready().await.unwrap().call(502).await.unwrap();
    let error = service.ready().await.unwrap().call(200).await.unwrap_err();
    assert!(error.is_open());
}

#[test]
fn probes_stay_bounded_under_contention() {
    // Real threads hammering a breaker that stays half-open: a zero open timeout half-opens at
    // once, no failure is recorded to re-open it, and no number of successes closes it.
    let b = breaker(CircuitBreakerConfig {
        failure_threshold: 1,
        open_timeout: Duration::ZERO,
        half_open_max_probes: 3,
        success_threshold: u32::MAX,
        ..CircuitBreakerConfig::default()
    });
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let in_flight = AtomicUsize::new(0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let (b, in_flight, admitted) = (&b, &in_flight, &admitted);
            scope.spawn(move || {
                for i in 0..5_000 {
                    let Ok(permit) = b.try_acquire() else {
                        continue;
                    };
                    admitted.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= 3, "{now} probes at once");
                    std::hint::spin_loop();
                    // Leave before the slot is freed, so the count never overstates.
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match (thread + i) % 3 {
                        0 => permit.record(Outcome::Success),
                        1 => permit.record(Outcome::Ignored),
                        _ => drop(permit),
                    }
                }
            });
        }
    });
    let stats = b.stats();
    assert_eq!((stats.state, stats.probes_in_flight), (BreakerState::HalfOpen, 0));
    assert!(admitted.load(Ordering::SeqCst) > 0);
}

mod properties {
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Finish(usize, Outcome),
        Abandon(usize),
        Advance(Duration),
        ForceOpen,
        ForceClosed,
        Reset,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Failure),
            Just(Outcome::Ignored)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => Just(Op::Acquire),
            8 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Finish(i, o)),
            2 => any::<usize>().prop_map(Op::Abandon),
            5 => (0u64..40_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
            1 => Just(Op::ForceOpen),
            1 => Just(Op::ForceClosed),
            1 => Just(Op::Reset),
        ]
    }

    fn config() -> impl Strategy<Value = CircuitBreakerConfig> {
        (
            1u32..5,
            prop::option::of(0.0f64..0.9),
            1u32..6,
            1u64..60,
            1u64..20,
            1u32..4,
            1u32..4,
            1u64..60,
        )
            .prop_map(|(failures, rate, min, window, open, probes, successes, reset)| {
                CircuitBreakerConfig {
                    failure_threshold: failures,
                    failure_rate_threshold: rate,
                    min_requests: min,
                    window: Duration::from_secs(window),
                    open_timeout: Duration::from_secs(open),
                    half_open_max_probes: probes,
                    success_threshold: successes,
                    reset_timeout: Duration::from_secs(reset),
                }
            })
    }

    /// Runs `ops`, checking after every step that an open breaker admitted nothing and a
    /// half-open one never had more than `half_open_max_probes` calls under way.
    fn check(config: CircuitBreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let b = breaker(config);
            // Permits held, each tagged with the half-open episode that admitted it (if any):
            // the transition count at the time, which every state change moves on.
            let mut held: Vec<(BreakerPermit, Option<u64>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => {
                        let before = b.stats();
                        let permitted = b.is_call_permitted();
                        let result = b.try_acquire();
                        prop_assert_eq!(result.is_ok(), permitted, "the peek agrees with acquiring");
                        match before.state {
                            BreakerState::Open { remaining } => {
                                let rejected = result.as_ref().err();
                                prop_assert!(rejected.is_some(), "admitted while open");
                                prop_assert_eq!(rejected.map(|r| r.retry_in), Some(remaining));
                            }
                            BreakerState::ForcedOpen => {
                                prop_assert!(result.is_err(), "admitted while forced open")
                            }
                            BreakerState::Closed | BreakerState::ForcedClosed => prop_assert!(result.is_ok()),
                            BreakerState::HalfOpen => prop_assert_eq!(
                                result.is_ok(),
                                before.probes_in_flight < config.half_open_max_probes
                            ),
                        }
                        if let Ok(permit) = result {
                            let episode = (before.state == BreakerState::HalfOpen)
                                .then_some(before.transitions.total());
                            held.push((permit, episode));
                        }
                    }
                    Op::Finish(i, outcome) if !held.is_empty() => {
                        let (permit, _) = held.remove(i % held.len());
                        permit.record(outcome);
                    }
                    Op::Abandon(i) if !held.is_empty() => {
                        drop(held.remove(i % held.len()));
                    }
                    Op::Finish(..) | Op::Abandon(_) => {}
                    Op::Advance(by) => advance(by).await,
                    Op::ForceOpen => b.force_open(),
                    Op::ForceClosed => b.force_closed(),
                    Op::Reset => b.reset(),
                }
                let stats = b.stats();
                if stats.state == BreakerState::HalfOpen {
                    let episode = Some(stats.transitions.total());
                    let probes = held.iter().filter(|(_, tag)| *tag == episode).count();
                    prop_assert!(probes <= config.half_open_max_probes as usize);
                    prop_assert_eq!(probes, stats.probes_in_flight as usize);
                } else {
                    prop_assert_eq!(stats.probes_in_flight, 0);
                }
            }
            Ok(())
        })
    }

    proptest! {
        #[test]
        fn never_admits_while_open_nor_too_many_probes(
            config in config(),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            check(config, ops)?;
        }
    }
}
