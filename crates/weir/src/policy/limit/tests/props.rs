//! Property tests: whatever the sequence of demands and delays, no window of 60 s ever sees more
//! than the limits, and the bucket never admits more than `burst + rate × T` in any interval `T`.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use crate::policy::limit::bucket::Gcra;
use crate::policy::limit::window::{RESOLUTION, WINDOW, WindowLog, WindowRefusal};
use crate::policy::limit::{Demand, LimitMode, RateLimitConfig, RateLimitError, RateLimiter, Reservation};

/// What happens to an admitted reservation.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// Reconcile at once with the actual usage.
    Reconcile,
    /// Refund at once.
    Refund,
    /// Drop: the estimate stays.
    Keep,
    /// Reconcile later, after other admissions.
    Later,
}

#[derive(Debug, Clone)]
struct Op {
    /// Time since the previous operation.
    advance_ms: u64,
    requests: u64,
    input: u64,
    output: u64,
    settle: Settle,
    /// Actual usage as a percentage of the estimate (at most 100).
    actual_input_pct: u64,
    actual_output_pct: u64,
    /// Whether to settle the oldest `Later` reservation first.
    settle_one_later: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![3 => 0u64..20, 2 => 0u64..3_000, 1 => 59_950u64..60_050, 1 => 0u64..70_000],
        prop_oneof![8 => Just(1u64), 1 => Just(0u64), 1 => 2u64..4],
        0u64..700,
        0u64..700,
        prop_oneof![
            Just(Settle::Reconcile),
            Just(Settle::Refund),
            Just(Settle::Keep),
            Just(Settle::Later)
        ],
        0u64..=100,
        0u64..=100,
        any::<bool>(),
    )
        .prop_map(
            |(advance_ms, requests, input, output, settle, actual_input_pct, actual_output_pct, later)| Op {
                advance_ms,
                requests,
                input,
                output,
                settle,
                actual_input_pct,
                actual_output_pct,
                settle_one_later: later,
            },
        )
}

/// Checks that in every 60 s window (starting at an admission, which is where the worst windows
/// start) the final amounts stay within `limits`.
fn assert_windows_within(admitted: &[(Instant, [u64; 3])], limits: [u64; 3]) -> Result<(), TestCaseError> {
    for (i, &(start, _)) in admitted.iter().enumerate() {
        let mut sums = [0u64; 3];
        for &(at, amounts) in &admitted[i..] {
            if at >= start + WINDOW {
                break;
            }
            for r in 0..3 {
                sums[r] += amounts[r];
            }
        }
        for r in 0..3 {
            prop_assert!(
                sums[r] <= limits[r],
                "window from admission {i}: resource {r} used {} > limit {}",
                sums[r],
                limits[r]
            );
        }
    }
    Ok(())
}

fn scaled(estimate: u64, pct: u64) -> u64 {
    estimate * pct / 100
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The pure sliding log, with and without merging of close admissions.
    #[test]
    fn windows_never_exceed_limits(
        limits in (1u64..12, 100u64..3_000, 100u64..3_000),
        merge in any::<bool>(),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let limits = [limits.0, limits.1, limits.2];
        let resolution = if merge { RESOLUTION } else { Duration::ZERO };
        let mut log = WindowLog::new(limits.map(Some), WINDOW, resolution);
        let mut now = Instant::now();
        // Admission time and final (charged) amounts of every admitted demand.
        let mut admitted: Vec<(Instant, [u64; 3])> = Vec::new();
        // (index in `admitted`, entry id, charged, actual) of reservations settled later.
        let mut later: Vec<(usize, u64, [u64; 3], [u64; 3])> = Vec::new();

        for op in ops {
            now += Duration::from_millis(op.advance_ms);
            if op.settle_one_later && !later.is_empty() {
                let (index, id, charged, actual) = later.remove(0);
                log.adjust(id, charged, actual);
                admitted[index].1 = actual;
            }
            let demand = [op.requests, op.input, op.output];
            let actual = [
                op.requests,
                scaled(op.input, op.actual_input_pct),
                scaled(op.output, op.actual_output_pct),
            ];
            match log.reserve(now, demand) {
                Ok(id) => {
                    admitted.push((now, demand));
                    let index = admitted.len() - 1;
                    match op.settle {
                        Settle::Reconcile => {
                            log.adjust(id, demand, actual);
                            admitted[index].1 = actual;
                        }
                        Settle::Refund => {
                            log.adjust(id, demand, [0; 3]);
                            admitted[index].1 = [0; 3];
                        }
                        Settle::Keep => {}
                        Settle::Later => later.push((index, id, demand, actual)),
                    }
                }
                Err(WindowRefusal::Full { retry_after, .. }) => {
                    // retry_after is exact: the demand fits then, and not a moment before.
                    prop_assert!(retry_after > Duration::ZERO && retry_after <= WINDOW);
                    prop_assert!(log.clone().check(now + retry_after, demand).is_ok());
                    let just_before = now + retry_after - Duration::from_nanos(1);
                    prop_assert!(log.clone().check(just_before, demand).is_err());
                }
                Err(WindowRefusal::TooLarge(large)) => {
                    prop_assert!((0..3).any(|r| demand[r] > limits[r]));
                    prop_assert!(large.demand > large.limit);
                }
            }
            // Memory: at most one entry per admission still inside the window.
            let live = admitted.iter().filter(|&&(at, _)| at + WINDOW > now).count();
            prop_assert!(log.len() <= live);
        }
        assert_windows_within(&admitted, limits)?;
    }

    /// The pure bucket: admissions (immediate, or at a booked future slot) never exceed
    /// `burst + rate × T` over any interval `T`, and booked slots come in arrival order.
    #[test]
    fn bucket_never_exceeds_burst_plus_rate(
        rate in 0.5f64..50.0,
        burst in 1u32..10,
        ops in prop::collection::vec((0u64..400, 1u64..4, any::<bool>(), any::<bool>()), 1..300),
    ) {
        let start = Instant::now();
        let mut now = start;
        let mut gcra = Gcra::new(rate, burst, now);
        let mut starts: Vec<(Instant, u64)> = Vec::new();
        for (advance_ms, cost, may_wait, cancel) in ops {
            now += Duration::from_millis(advance_ms);
            match gcra.slot(now, cost) {
                Ok(slot) if slot.start == now || may_wait => {
                    gcra.commit(&slot);
                    if let Some(&(last, _)) = starts.last() {
                        prop_assert!(slot.start >= last, "served out of arrival order");
                    }
                    if cancel {
                        gcra.undo(&slot);
                    } else {
                        starts.push((slot.start, cost));
                    }
                }
                Ok(slot) => {
                    // A refusal's retry_after (slot.start - now) is exact.
                    let retry = slot.start;
                    prop_assert_eq!(gcra.slot(retry, cost).map(|slot| slot.start), Ok(retry));
                }
                Err(large) => prop_assert!(cost > u64::from(burst) && large.limit == u64::from(burst)),
            }
        }
        for i in 0..starts.len() {
            let mut admitted = 0u64;
            for &(at, cost) in &starts[i..] {
                admitted += cost;
                let span = (at - starts[i].0).as_secs_f64();
                prop_assert!(
                    admitted as f64 <= f64::from(burst) + rate * span + 1e-9,
                    "{admitted} admitted over {span} s (burst {burst}, rate {rate})"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The public limiter (bucket and windows together) on tokio's paused clock.
    #[test]
    fn limiter_never_exceeds_limits_on_the_paused_clock(
        limits in (1u64..12, 100u64..3_000, 100u64..3_000),
        rate in 0.5f64..20.0,
        burst in 1u32..6,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = RateLimiter::new(RateLimitConfig {
                requests_per_second: Some(rate),
                burst: Some(burst),
                mode: LimitMode::FailFast,
                requests_per_minute: Some(limits.0),
                input_tokens_per_minute: Some(limits.1),
                output_tokens_per_minute: Some(limits.2),
                ..RateLimitConfig::default()
            });
            let limits = [limits.0, limits.1, limits.2];
            let mut admitted: Vec<(Instant, [u64; 3])> = Vec::new();
            // Requests through the bucket: a refund gives back the windows, not the bucket slot.
            let mut sent: Vec<(Instant, u64)> = Vec::new();
            let mut later: Vec<(usize, Reservation, [u64; 3])> = Vec::new();
            for op in ops {
                tokio::time::advance(Duration::from_millis(op.advance_ms)).await;
                if op.settle_one_later && !later.is_empty() {
                    let (index, reservation, actual) = later.remove(0);
                    reservation.reconcile(actual[1], actual[2]);
                    admitted[index] = (admitted[index].0, actual);
                }
                let demand = Demand { requests: op.requests, input_tokens: op.input, output_tokens: op.output };
                let actual = [
                    op.requests,
                    scaled(op.input, op.actual_input_pct),
                    scaled(op.output, op.actual_output_pct),
                ];
                match limiter.try_reserve(demand) {
                    Ok(reservation) => {
                        admitted.push((Instant::now(), [op.requests, op.input, op.output]));
                        sent.push((Instant::now(), op.requests));
                        let index = admitted.len() - 1;
                        match op.settle {
                            Settle::Reconcile => {
                                reservation.reconcile(actual[1], actual[2]);
                                admitted[index].1 = actual;
                            }
                            Settle::Refund => {
                                reservation.refund();
                                admitted[index].1 = [0; 3];
                            }
                            Settle::Keep => drop(reservation),
                            Settle::Later => later.push((index, reservation, actual)),
                        }
                    }
                    Err(RateLimitError::Limited(limited)) => {
                        prop_assert!(limited.retry_after > Duration::ZERO);
                    }
                    Err(RateLimitError::TooLarge(large)) => prop_assert!(large.demand > large.limit),
                }
            }
            assert_windows_within(&admitted, limits)?;
            for i in 0..sent.len() {
                let mut requests = 0u64;
                for &(at, count) in &sent[i..] {
                    requests += count;
                    let span = (at - sent[i].0).as_secs_f64();
                    prop_assert!(requests as f64 <= f64::from(burst) + rate * span + 1e-9);
                }
            }
            Ok(())
        })?;
    }
}
