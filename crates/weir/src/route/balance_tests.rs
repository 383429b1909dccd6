//! Tests of the load-balancing strategies and the live load they read.
//!
//! Random strategies are tested two ways: properties that hold for every draw are asserted on
//! every call, and shares are asserted within bounds several standard deviations wide (stated at
//! each test) so they cannot fail by chance. The thread-local RNG is also seeded, so a run is
//! reproducible.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Generator;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Candidates over `stats` with the given (weight, priority) pairs.
fn candidates<'a>(stats: &'a [Arc<LoadStats>], params: &[(u32, u32)]) -> Vec<Candidate<'a>> {
    stats
        .iter()
        .zip(params)
        .map(|(load, &(weight, priority))| Candidate {
            weight,
            priority,
            load,
        })
        .collect()
}

fn stats(n: usize) -> Vec<Arc<LoadStats>> {
    (0..n).map(|_| Arc::new(LoadStats::default())).collect()
}

/// Equal weights, one tier.
fn equal(stats: &[Arc<LoadStats>]) -> Vec<Candidate<'_>> {
    candidates(stats, &vec![(1, 0); stats.len()])
}

// ---------------------------------------------------------------------------------------------
// Strategy names

#[test]
fn strategy_names_round_trip() {
    assert_eq!(Strategy::default(), Strategy::RoundRobin);
    for strategy in Strategy::ALL {
        assert_eq!(strategy.as_str().parse::<Strategy>(), Ok(strategy));
        assert_eq!(strategy.to_string(), strategy.as_str());
    }
    assert_eq!("weighted".parse(), Ok(Strategy::WeightedRandom));
    assert_eq!("least_busy".parse(), Ok(Strategy::LeastBusy));
}

#[test]
fn unknown_strategy_lists_the_valid_names() {
    let err = "fastest".parse::<Strategy>().unwrap_err();
    assert_eq!(err.given, "fastest");
    assert_eq!(
        err.to_string(),
        "unknown load-balancing strategy \"fastest\"; expected one of round_robin, weighted, \
         least_busy or lowest_latency"
    );
    // Names are exact: no case folding, so config errors point at the typo.
    assert!("Round_Robin".parse::<Strategy>().is_err());
}

// ---------------------------------------------------------------------------------------------
// Shape: every strategy

#[test]
fn empty_and_single_groups() {
    let stats = stats(1);
    for strategy in Strategy::ALL {
        let balancer = Balancer::new(strategy);
        assert_eq!(balancer.strategy(), strategy);
        assert!(balancer.order(&[]).is_empty());
        assert_eq!(balancer.order(&equal(&stats)), vec![0]);
    }
}

#[test]
fn lower_priority_tiers_always_come_first() {
    fastrand::seed(1);
    let stats = stats(5);
    // Tier 1 is listed first, weighted heavier, idle and fast; tier 0 is still always first.
    let _busy = [stats[1].start(), stats[1].start(), stats[3].start()];
    stats[0].observe_latency(ms(1));
    stats[1].observe_latency(ms(900));
    stats[2].observe_latency(ms(1));
    stats[3].observe_latency(ms(900));
    let list = candidates(&stats, &[(100, 1), (1, 0), (100, 2), (1, 0), (0, 1)]);
    for strategy in Strategy::ALL {
        let balancer = Balancer::new(strategy);
        for _ in 0..500 {
            let order = balancer.order(&list);
            let tiers: Vec<u32> = order.iter().map(|&i| list[i].priority).collect();
            assert_eq!(tiers, [0, 0, 1, 1, 2], "{strategy}: {order:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round robin

#[test]
fn round_robin_cycles_exactly() {
    let stats = stats(3);
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::RoundRobin);
    let orders: Vec<Vec<usize>> = (0..7).map(|_| balancer.order(&list)).collect();
    assert_eq!(
        orders,
        [
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
            [0, 1, 2]
        ]
    );
}

#[test]
fn round_robin_ignores_weights_and_rotates_each_tier() {
    let stats = stats(5);
    let list = candidates(&stats, &[(9, 0), (1, 1), (0, 0), (1, 1), (5, 1)]);
    let balancer = Balancer::new(Strategy::RoundRobin);
    let firsts: Vec<(usize, usize)> = (0..6)
        .map(|_| {
            let order = balancer.order(&list);
            (order[0], order[2])
        })
        .collect();
    // Tier 0 = [0, 2] alternates; tier 1 = [1, 3, 4] cycles with the same cursor.
    assert_eq!(firsts, [(0, 1), (2, 3), (0, 4), (2, 1), (0, 3), (2, 4)]);
}

// ---------------------------------------------------------------------------------------------
// Weighted random

#[test]
fn weights_3_to_1_give_about_3_to_1_first_choices() {
    fastrand::seed(3);
    let stats = stats(2);
    let list = candidates(&stats, &[(3, 0), (1, 0)]);
    let balancer = Balancer::new(Strategy::WeightedRandom);
    const CALLS: u32 = 8_000;
    let mut heavy_first = 0;
    for _ in 0..CALLS {
        let order = balancer.order(&list);
        assert!(order == [0, 1] || order == [1, 0], "{order:?}");
        heavy_first += u32::from(order[0] == 0);
    }
    // Binomial(n = 8000, p = 0.75): sd = sqrt(p(1-p)/n) = sqrt(0.1875/8000) ≈ 0.00484, so
    // ±0.03 is ±6.2 sd: a miss by chance has probability ≈ 6e-10.
    let share = f64::from(heavy_first) / f64::from(CALLS);
    assert!((0.72..=0.78).contains(&share), "heavy share {share}");
}

#[test]
fn weighted_later_places_follow_the_weights_too() {
    fastrand::seed(4);
    let stats = stats(3);
    // After 0 (weight 6) comes first, the second place is 1 vs 2 at 3:1.
    let list = candidates(&stats, &[(6, 0), (3, 0), (1, 0)]);
    let balancer = Balancer::new(Strategy::WeightedRandom);
    let (mut after_heavy, mut one_second) = (0u32, 0u32);
    for _ in 0..20_000 {
        let order = balancer.order(&list);
        if order[0] == 0 {
            after_heavy += 1;
            one_second += u32::from(order[1] == 1);
        }
    }
    // 0 is first with p = 0.6 (≈ 12,000 calls, sd ≈ 69); given that, 1 is second with p = 0.75:
    // sd = sqrt(0.1875/12000) ≈ 0.004, and ±0.04 is ±10 sd.
    assert!((11_500..=12_500).contains(&after_heavy), "{after_heavy}");
    let share = f64::from(one_second) / f64::from(after_heavy);
    assert!((0.71..=0.79).contains(&share), "share {share}");
}

#[test]
fn weight_zero_is_a_last_resort() {
    fastrand::seed(5);
    let stats = stats(4);
    let list = candidates(&stats, &[(0, 0), (5, 0), (0, 0), (1, 0)]);
    let balancer = Balancer::new(Strategy::WeightedRandom);
    let mut zero_order = [0u32; 4];
    for _ in 0..2_000 {
        let order = balancer.order(&list);
        let mut positive = [order[0], order[1]];
        positive.sort_unstable();
        assert_eq!(positive, [1, 3], "{order:?}");
        zero_order[order[2]] += 1;
    }
    // The zero weights still come in a random order among themselves: each of the two is third
    // with p = 0.5 (sd ≈ 22 over 2000), so 800 is 9 sd away.
    assert!(zero_order[0] > 800 && zero_order[2] > 800, "{zero_order:?}");
}

#[test]
fn all_zero_weights_are_shuffled_uniformly() {
    fastrand::seed(6);
    let stats = stats(3);
    let list = candidates(&stats, &[(0, 0); 3]);
    let balancer = Balancer::new(Strategy::WeightedRandom);
    let mut firsts = [0u32; 3];
    for _ in 0..600 {
        firsts[balancer.order(&list)[0]] += 1;
    }
    // Each is first with p = 1/3: 200 expected, sd ≈ 11.5; 100 is 8.7 sd below.
    assert!(firsts.iter().all(|&n| n > 100), "{firsts:?}");
}

// ---------------------------------------------------------------------------------------------
// Least busy

#[test]
fn least_busy_prefers_the_idle_deployment() {
    let stats = stats(3);
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LeastBusy);
    let _zero = [stats[0].start(), stats[0].start()];
    let _one = stats[1].start();
    for _ in 0..10 {
        assert_eq!(balancer.order(&list), [2, 1, 0]);
    }
}

#[test]
fn least_busy_ties_rotate() {
    let stats = stats(3);
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LeastBusy);
    let firsts: Vec<usize> = (0..6).map(|_| balancer.order(&list)[0]).collect();
    assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);

    // With one busy, the two idle ones alternate exactly (neither takes the busy one's turns)
    // and the busy one stays last.
    let _busy = stats[0].start();
    let orders: Vec<Vec<usize>> = (0..6).map(|_| balancer.order(&list)).collect();
    for order in &orders {
        assert_eq!(order[2], 0, "{orders:?}");
    }
    for pair in orders.windows(2) {
        assert_ne!(pair[0][0], pair[1][0], "{orders:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_unknown_deployments_take_turns_in_the_fallback_places() {
    fastrand::seed(9);
    let stats = stats(4);
    stats[0].observe_latency(ms(100));
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LowestLatency);
    let mut second = [0u32; 4];
    for _ in 0..300 {
        let order = balancer.order(&list);
        // The known one (cost > 0) is always last; the three unknown ones lead.
        assert_eq!(order[3], 0, "{order:?}");
        second[order[1]] += 1;
    }
    // Without turns, the lowest-listed unknown one would nearly always be the fallback.
    assert!(second[1..].iter().all(|&n| n >= 50), "{second:?}");
}

#[test]
fn least_busy_follows_guards_as_they_drop() {
    let stats = stats(2);
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LeastBusy);
    let guard = stats[0].start();
    assert_eq!(balancer.order(&list), [1, 0]);
    let other = [stats[1].start(), stats[1].start()];
    assert_eq!(balancer.order(&list), [0, 1]);
    drop(other);
    drop(guard);
    assert_eq!(stats[0].in_flight() + stats[1].in_flight(), 0);
}

#[test]
fn least_busy_sorts_tiers_larger_than_the_stack_buffer() {
    let stats = stats(INLINE_TIER * 2 + 3);
    let _guards: Vec<InFlight> = stats
        .iter()
        .enumerate()
        .flat_map(|(i, s)| (0..(i * 7) % 5).map(move |_| s.start()))
        .collect();
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LeastBusy);
    let order = balancer.order(&list);
    let loads: Vec<u64> = order.iter().map(|&i| stats[i].in_flight()).collect();
    assert!(loads.is_sorted(), "{loads:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..stats.len()).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Lowest latency

#[tokio::test(start_paused = true)]
async fn lowest_latency_prefers_the_faster_deployment() {
    fastrand::seed(7);
    let stats = stats(3);
    stats[0].observe_latency(ms(300));
    stats[1].observe_latency(ms(100));
    stats[2].observe_latency(ms(200));
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LowestLatency);

    // With two, both are always the two choices: the faster always wins.
    for _ in 0..50 {
        assert_eq!(balancer.order(&list[1..]), [0, 1]);
    }

    const CALLS: u32 = 6_000;
    let mut firsts = [0u32; 3];
    for _ in 0..CALLS {
        let order = balancer.order(&list);
        firsts[order[0]] += 1;
        // The rest are cheapest first: after whatever won, 100 ms before 200 ms before 300 ms.
        let rest: Vec<usize> = order[1..].to_vec();
        let mut by_cost = rest.clone();
        by_cost.sort_by_key(|&i| stats[i].latency_estimate());
        assert_eq!(rest, by_cost);
    }
    // The slowest loses every pair it is in.
    assert_eq!(firsts[0], 0, "{firsts:?}");
    // The fastest wins every pair it is in, p = 2/3: sd = sqrt((2/9)/6000) ≈ 0.0061, and the
    // bounds are ≥ 7 sd away.
    let share = f64::from(firsts[1]) / f64::from(CALLS);
    assert!((0.62..=0.71).contains(&share), "fast share {share}");
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_tries_unknown_deployments() {
    fastrand::seed(8);
    let stats = stats(3);
    stats[0].observe_latency(ms(100));
    stats[1].observe_latency(ms(50));
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LowestLatency);
    // Against one known deployment, the unknown one always wins.
    assert_eq!(balancer.order(&[list[0], list[2]]), [1, 0]);
    let mut first = 0u32;
    for _ in 0..3_000 {
        let order = balancer.order(&list);
        // Cost 0: it wins every pair it is in, and otherwise leads the rest.
        let place = order.iter().position(|&i| i == 2).unwrap();
        assert!(place <= 1, "{order:?}");
        first += u32::from(place == 0);
    }
    // p = 2/3 over 3000: sd ≈ 26 calls; [1800, 2200] is ≥ 7 sd wide on each side.
    assert!((1_800..=2_200).contains(&first), "{first}");
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_penalises_many_in_flight() {
    let stats = stats(2);
    stats[0].observe_latency(ms(100));
    stats[1].observe_latency(ms(200));
    let list = equal(&stats);
    let balancer = Balancer::new(Strategy::LowestLatency);
    assert_eq!(balancer.order(&list), [0, 1]);
    // 100 ms × 6 = 600 ms against 200 ms × 1.
    let guards: Vec<InFlight> = (0..5).map(|_| stats[0].start()).collect();
    for _ in 0..20 {
        assert_eq!(balancer.order(&list), [1, 0]);
    }
    drop(guards);
    assert_eq!(balancer.order(&list), [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Peak-EWMA latency estimate

#[tokio::test(start_paused = true)]
async fn latency_unknown_before_the_first_sample() {
    let stats = LoadStats::new();
    assert_eq!(stats.latency_estimate(), None);
    assert_eq!(stats.last_latency(), None);
    assert_eq!(stats.decay(), DEFAULT_LATENCY_DECAY);
    stats.observe_latency(ms(250));
    assert_eq!(stats.latency_estimate(), Some(ms(250)));
    assert_eq!(stats.last_latency(), Some(ms(250)));
}

/// Asserts `actual` is within 1 ms of `expected` (float rounding of the decay).
fn assert_near(actual: Option<Duration>, expected: Duration) {
    let actual = actual.unwrap();
    let diff = actual.abs_diff(expected);
    assert!(diff <= ms(1), "{actual:?} vs {expected:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_sample_raises_the_estimate_at_once() {
    let stats = LoadStats::new();
    for _ in 0..10 {
        stats.observe_latency(ms(100));
        tokio::time::advance(ms(500)).await;
    }
    assert!(stats.latency_estimate().unwrap() <= ms(100));
    stats.observe_latency(ms(2_000));
    assert_eq!(stats.latency_estimate(), Some(ms(2_000)));
    assert_eq!(stats.last_latency(), Some(ms(2_000)));
    // A fast sample at the same instant carries no weight yet: one lucky answer does not undo
    // the peak.
    stats.observe_latency(ms(100));
    assert_eq!(stats.latency_estimate(), Some(ms(2_000)));
    assert_eq!(stats.last_latency(), Some(ms(100)));
}

#[tokio::test(start_paused = true)]
async fn the_estimate_decays_back_with_fast_samples() {
    let stats = LoadStats::new();
    stats.observe_latency(ms(100));
    tokio::time::advance(ms(1_000)).await;
    stats.observe_latency(ms(2_000));
    // One time constant later, one fast sample: 2000·e^-1 + 100·(1 - e^-1) ≈ 799.0 ms.
    tokio::time::advance(DEFAULT_LATENCY_DECAY).await;
    stats.observe_latency(ms(100));
    let expected = 2_000.0 * (-1f64).exp() + 100.0 * (1.0 - (-1f64).exp());
    assert_near(stats.latency_estimate(), Duration::from_secs_f64(expected / 1e3));
    // Samples every second keep pulling it down, monotonically, to the recent latency.
    let mut previous = stats.latency_estimate().unwrap();
    for _ in 0..60 {
        tokio::time::advance(ms(1_000)).await;
        stats.observe_latency(ms(100));
        let now = stats.latency_estimate().unwrap();
        assert!(now <= previous, "{now:?} > {previous:?}");
        previous = now;
    }
    assert!(previous < ms(105), "{previous:?}");
}

#[tokio::test(start_paused = true)]
async fn without_samples_the_estimate_decays_toward_zero() {
    let stats = LoadStats::new();
    stats.observe_latency(ms(2_000));
    tokio::time::advance(DEFAULT_LATENCY_DECAY).await;
    assert_near(
        stats.latency_estimate(),
        Duration::from_secs_f64(2.0 * (-1f64).exp()),
    );
    // Reading does not change the state: the same read later decays from the same sample.
    tokio::time::advance(DEFAULT_LATENCY_DECAY * 2).await;
    assert_near(
        stats.latency_estimate(),
        Duration::from_secs_f64(2.0 * (-3f64).exp()),
    );
    assert_eq!(stats.last_latency(), Some(ms(2_000)));
}

#[tokio::test(start_paused = true)]
async fn the_decay_time_constant_is_configurable() {
    let stats = LoadStats::with_decay(ms(1_000));
    assert_eq!(stats.decay(), ms(1_000));
    stats.observe_latency(ms(1_000));
    tokio::time::advance(ms(1_000)).await;
    assert_near(stats.latency_estimate(), Duration::from_secs_f64((-1f64).exp()));

    // Zero keeps only the latest sample (and never divides by zero).
    let stats = LoadStats::with_decay(Duration::ZERO);
    stats.observe_latency(ms(2_000));
    tokio::time::advance(ms(1)).await;
    stats.observe_latency(ms(100));
    assert_eq!(stats.latency_estimate(), Some(ms(100)));
    tokio::time::advance(ms(1)).await;
    assert_eq!(stats.latency_estimate(), Some(Duration::ZERO));
}

// ---------------------------------------------------------------------------------------------
// In flight

#[test]
fn in_flight_decrements_on_drop() {
    let stats = Arc::new(LoadStats::default());
    let a = stats.start();
    let b = stats.start();
    assert_eq!(stats.in_flight(), 2);
    assert!(Arc::ptr_eq(a.stats(), &stats));
    drop(a);
    assert_eq!(stats.in_flight(), 1);
    drop(b);
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn in_flight_decrements_when_the_request_is_cancelled() {
    let stats = Arc::new(LoadStats::default());
    let guard = stats.start();
    let task = tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    tokio::task::yield_now().await;
    assert_eq!(stats.in_flight(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(stats.in_flight(), 0);
}

// ---------------------------------------------------------------------------------------------
// Properties

/// One generated deployment: weight, priority, attempts in flight, latency sample (ms).
type Spec = (u32, u32, usize, Option<u64>);

fn spec() -> impl Generator<Value = Spec> {
    (
        prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX)],
        0u32..4,
        0usize..4,
        proptest::option::of(0u64..5_000),
    )
}

fn strategy() -> impl Generator<Value = Strategy> {
    proptest::sample::select(Strategy::ALL.to_vec())
}

proptest! {
    #[test]
    fn order_is_a_permutation_with_tiers_non_decreasing(
        specs in proptest::collection::vec(spec(), 0..(INLINE_TIER + 8)),
        strategy in strategy(),
        calls in 1usize..4,
        seed in any::<u64>(),
    ) {
        fastrand::seed(seed);
        let stats = stats(specs.len());
        let mut guards = Vec::new();
        for (load, &(_, _, in_flight, latency)) in stats.iter().zip(&specs) {
            guards.extend((0..in_flight).map(|_| load.start()));
            if let Some(latency) = latency {
                load.observe_latency(ms(latency));
            }
        }
        let params: Vec<(u32, u32)> = specs.iter().map(|&(w, p, _, _)| (w, p)).collect();
        let list = candidates(&stats, &params);
        let balancer = Balancer::new(strategy);
        for _ in 0..calls {
            let order = balancer.order(&list);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..list.len()).collect::<Vec<_>>());
            let tiers: Vec<u32> = order.iter().map(|&i| list[i].priority).collect();
            prop_assert!(tiers.is_sorted(), "{:?}", tiers);
            for tier in order.chunk_by(|&a, &b| list[a].priority == list[b].priority) {
                match strategy {
                    Strategy::LeastBusy => {
                        let loads: Vec<u64> = tier.iter().map(|&i| stats[i].in_flight()).collect();
                        prop_assert!(loads.is_sorted(), "{:?}", loads);
                    }
                    Strategy::WeightedRandom => {
                        let zero: Vec<bool> = tier.iter().map(|&i| list[i].weight == 0).collect();
                        prop_assert!(zero.is_sorted(), "zero weights last: {:?}", zero);
                    }
                    Strategy::RoundRobin | Strategy::LowestLatency => {}
                }
            }
        }
    }
}
