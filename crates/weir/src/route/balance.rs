//! Load balancing: in which order a request tries the deployments of a group.
//!
//! A model group usually has several deployments (the same model at several providers, regions
//! or keys). For every request the engine asks the group's [`Balancer`] for a *preference order*
//! — [`Balancer::order`] returns every candidate index, best first — and tries the deployments in
//! that order, skipping the ones that turn out unusable right now (cooling down, circuit breaker
//! open, rate-limited) and moving on after a failed attempt. The balancer therefore never has to
//! know about health: it only ranks, and a bad ranking costs at most a skipped entry.
//!
//! # Priority tiers
//!
//! Every deployment has a `priority` (default 0). Lower priorities always come first: the
//! deployments of priority 1 are reached only when every deployment of priority 0 is unusable or
//! has failed, and so on. Use tiers for fallbacks that should take no traffic while the primary
//! tier works — a more expensive provider, a smaller model, a far-away region. The strategy
//! orders the deployments *within* each tier; it never mixes tiers.
//!
//! # Strategies
//!
//! | Strategy (config name)             | First choice                                          | Use when                                                    |
//! |------------------------------------|-------------------------------------------------------|-------------------------------------------------------------|
//! | [`round_robin`](Strategy::RoundRobin) (default) | the next deployment in turn             | deployments are alike; you want an even, predictable spread |
//! | [`weighted`](Strategy::WeightedRandom)          | random, in proportion to `weight`       | deployments differ in capacity or quota, or you shift traffic gradually |
//! | [`least_busy`](Strategy::LeastBusy)             | fewest requests in flight               | request durations vary a lot (long generations, streams)    |
//! | [`lowest_latency`](Strategy::LowestLatency)     | best of two random picks by latency × load | deployments differ in speed and you want the fastest answer |
//!
//! ## Round robin (`round_robin`)
//!
//! Each request starts one step further along the tier: with three deployments the first choices
//! go 0, 1, 2, 0, 1, 2, …, and the rest of the order follows the rotation (after 1 come 2 and 0).
//! One counter is shared by all the requests of the group, so concurrent requests spread too.
//! Weights and live load are ignored. It is the default because it needs no tuning and is easy to
//! reason about; it is the right choice when the deployments are interchangeable (several keys of
//! one provider, identical self-hosted replicas). When a deployment is skipped, its turn goes to
//! the next one in the rotation, so that one briefly takes a double share.
//!
//! ## Weighted random (`weighted`)
//!
//! The order is random, and a deployment's chance to come first is its `weight` divided by the sum
//! of the weights of its tier: weights 3 and 1 give a 75 % / 25 % split. Later places are drawn the
//! same way from the deployments not yet placed (weighted sampling without replacement), so the
//! fallback after a skipped deployment is also weighted. A weight of 0 makes a deployment a last
//! resort *within its tier*: it comes after every positive weight, and only takes traffic when all
//! of them are unusable. Use it when deployments have different capacity (a quota twice as large
//! gets weight 2), or to move traffic gradually (canary at weight 1 against 99). Because it is
//! random, short-term shares wobble; over thousands of requests they converge to the weights.
//!
//! ## Least busy (`least_busy`)
//!
//! The deployment with the fewest requests in flight comes first, then the next least busy, and so
//! on; deployments with equal counts take turns (round robin), so idle deployments share the load
//! instead of the first one in the list taking it all. Use it when request durations vary widely —
//! chat completions of a few tokens next to long streamed generations — and a count of open
//! requests says more about a deployment's load than the number of requests it was sent. It only
//! sees this process's own requests; other gateways sharing an upstream are invisible.
//!
//! ## Lowest latency (`lowest_latency`)
//!
//! Each deployment's *cost* is its latency estimate multiplied by (requests in flight + 1): a fast
//! deployment that is already busy can cost more than a slower idle one. Two deployments of the
//! tier are picked at random and the cheaper one comes first ("power of two choices"); the rest
//! follow cheapest first. Picking the best of two random ones rather than the best of all keeps
//! concurrent requests from stampeding onto whichever deployment looked best a moment ago, before
//! its in-flight count and latency catch up, while still sending most traffic to the fast ones
//! (the slowest deployment never comes first). A deployment with no latency sample yet costs 0 so
//! that new or long-unused deployments get tried. Use it when deployments differ in speed —
//! providers, regions, hardware — and latency matters more than an even spread.
//!
//! The latency estimate is a *peak-EWMA* (as in Finagle and tower's `PeakEwma`): a decaying
//! average that jumps up at once to a sample slower than itself, so a deployment that suddenly
//! slows down loses traffic on the very next request, and comes back down gradually, with a time
//! constant of 10 s by default ([`LoadStats::with_decay`]). Without new samples the estimate keeps
//! decaying toward zero, which makes a deployment that has been avoided for a while look cheap
//! again so that it gets re-probed rather than shunned forever.
//!
//! # Live load
//!
//! Each deployment has one [`LoadStats`], shared (`Arc`) between the engine and the balancer. For
//! every attempt the engine calls [`LoadStats::start`] and keeps the returned [`InFlight`] guard
//! until the attempt is over (dropping it — also when the request is cancelled — ends it), and
//! calls [`LoadStats::observe_latency`] when the first byte of a successful answer arrives. Only
//! successful attempts should be observed: a deployment that fails fast would otherwise look
//! fast; failures are the circuit breaker's business.
//!
//! # Cost
//!
//! [`Balancer::order`] runs on every request. It allocates only the returned `Vec`, takes no lock
//! but the tiny one around each deployment's latency estimate (held for a few float operations,
//! only by `lowest_latency`), and touches one shared atomic counter (not by `weighted`). Weighted
//! sampling is quadratic in the size of a tier, which is fine for the handful of deployments a
//! group has (and still microseconds for a hundred); the other strategies sort.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;

// The strategy is part of the configuration schema (`models[].strategy`).
use crate::config::Strategy;

/// The default time constant of the latency estimate's decay.
pub(crate) const DEFAULT_LATENCY_DECAY: Duration = Duration::from_secs(10);

/// Per-deployment live load: requests in flight and a latency estimate.
///
/// Shared (`Arc`) between the engine, which records, and the [`Balancer`], which reads. Cheap to
/// update from many tasks at once: the in-flight count is an atomic, and the latency estimate sits
/// behind a `parking_lot` mutex held for a few float operations.
#[derive(Debug)]
pub struct LoadStats {
    in_flight: AtomicU64,
    /// Time constant of the decay, in nanoseconds; at least 1 so that no division yields NaN.
    decay_ns: f64,
    latency: Mutex<Option<Ewma>>,
    /// The same samples as quantiles over the last minute or two, for operators (not routing).
    histogram: super::latency::LatencyHistogram,
}

/// The peak-EWMA state: the estimate as of `stamp`, decayed lazily when read or updated, so no
/// timer task is needed.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    estimate_ns: f64,
    stamp: Instant,
    last: Duration,
}

impl Default for LoadStats {
    fn default() -> Self {
        LoadStats::with_decay(DEFAULT_LATENCY_DECAY)
    }
}

impl LoadStats {
    /// Stats with the default latency decay ([`DEFAULT_LATENCY_DECAY`], 10 s).
    pub fn new() -> Self {
        LoadStats::default()
    }

    /// Stats whose latency estimate decays with time constant `decay`: after `decay` without a
    /// sample, an old estimate weighs 1/e (37 %). Shorter reacts faster to recoveries but forgets
    /// a slow spell sooner; a zero `decay` keeps only the latest sample.
    pub fn with_decay(decay: Duration) -> Self {
        LoadStats {
            in_flight: AtomicU64::new(0),
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            latency: Mutex::new(None),
            histogram: super::latency::LatencyHistogram::new(),
        }
    }

    /// The time constant of the latency estimate's decay.
    pub fn decay(&self) -> Duration {
        // `decay_ns` came from a Duration (clamped to ≥ 1 ns), so it fits back.
        Duration::from_nanos(self.decay_ns as u64)
    }

    /// Counts one attempt as in flight until the returned guard is dropped.
    ///
    /// Keep the guard for the whole attempt, stream included; dropping it (also by cancelling
    /// the future that holds it) ends the attempt, so the count cannot leak.
    pub fn start(self: &Arc<Self>) -> InFlight {
        // Relaxed: the count is a load hint read by the balancer, not a synchronisation point.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: Arc::clone(self),
        }
    }

    /// Attempts currently in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records the latency of an attempt: call it when the first byte of a successful answer
    /// arrives (for a stream, the first event).
    ///
    /// A sample slower than the estimate replaces it at once (the *peak*); a faster one is blended
    /// in with a weight that grows with the time since the previous sample, so the estimate
    /// converges to the recent latency over about the decay time constant, however many samples
    /// arrive meanwhile.
    pub fn observe_latency(&self, latency: Duration) {
        let now = Instant::now();
        self.histogram.record(latency, now);
        let sample = latency.as_nanos() as f64;
        let mut state = self.latency.lock();
        let next = match *state {
            None => sample,
            Some(prev) => {
                let decay = self.decay_factor(now.saturating_duration_since(prev.stamp));
                let blended = prev.estimate_ns * decay + sample * (1.0 - decay);
                // `blended` lies between the previous estimate and the sample, so this is the
                // sample when it is slower than the estimate (the peak) and the blend otherwise.
                blended.max(sample)
            }
        };
        *state = Some(Ewma {
            estimate_ns: next,
            stamp: now,
            last: latency,
        });
    }

    /// The latency estimate decayed to now; `None` before the first sample.
    pub fn latency_estimate(&self) -> Option<Duration> {
        let state = *self.latency.lock();
        state.map(|ewma| {
            let elapsed = Instant::now().saturating_duration_since(ewma.stamp);
            // `as u64` saturates (and maps NaN to 0), so no float can make this panic.
            Duration::from_nanos((ewma.estimate_ns * self.decay_factor(elapsed)) as u64)
        })
    }

    /// p50/p99 of the recorded latencies over the last one to two minutes (see
    /// [`super::latency`]); `None` without recent samples.
    pub fn latency_quantiles(&self) -> Option<super::latency::LatencyQuantiles> {
        self.histogram.quantiles()
    }

    /// The latest latency sample; `None` before the first.
    pub fn last_latency(&self) -> Option<Duration> {
        self.latency.lock().map(|ewma| ewma.last)
    }

    /// The weight an estimate `elapsed` old still carries.
    fn decay_factor(&self, elapsed: Duration) -> f64 {
        (-(elapsed.as_nanos() as f64) / self.decay_ns).exp()
    }

    /// The `lowest_latency` cost: estimate (unknown counts as 0) × (in flight + 1), in
    /// nanoseconds. `u128` so that neither factor can overflow it.
    fn cost(&self) -> u128 {
        let latency = self.latency_estimate().map_or(0, |d| d.as_nanos());
        latency * (u128::from(self.in_flight()) + 1)
    }
}

/// One attempt in flight on a deployment; dropping it ends the attempt. See [`LoadStats::start`].
#[derive(Debug)]
#[must_use = "the attempt counts as in flight only while this guard is held"]
pub struct InFlight {
    stats: Arc<LoadStats>,
}

impl InFlight {
    /// The stats this attempt counts in.
    pub fn stats(&self) -> &Arc<LoadStats> {
        &self.stats
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Every guard incremented once in `start`, so this never goes below zero.
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One deployment as the balancer sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    /// Relative share under [`Strategy::WeightedRandom`]; 0 = last resort within the tier.
    /// Ignored by the other strategies.
    pub weight: u32,
    /// Tier: all deployments of a lower priority come before any of a higher one (0 is first).
    pub priority: u32,
    /// The deployment's live load.
    pub load: &'a LoadStats,
}

/// Orders the deployments of a group for each request. See the [module docs](self).
///
/// One per group, shared by all its requests: the round-robin cursor lives here.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    strategy: Strategy,
    /// Advanced once per [`order`](Self::order) call by the strategies that rotate. Wrapping
    /// (after `usize::MAX` calls) only skips a step of the rotation.
    cursor: AtomicUsize,
}

impl Balancer {
    /// A balancer using `strategy`.
    pub(crate) fn new(strategy: Strategy) -> Self {
        Balancer {
            strategy,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The strategy.
    #[cfg(test)]
    pub(crate) fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Every index of `candidates`, best first.
    ///
    /// Lower `priority` tiers always come before higher ones (priority 0 is the first tier; the
    /// engine reaches a tier only when every deployment of the tiers before it was unusable).
    /// Within a tier the strategy decides:
    ///
    /// - [`RoundRobin`](Strategy::RoundRobin): the tier rotated one step further per call — with
    ///   three equal candidates the first choices go 0, 1, 2, 0, 1, 2, …;
    /// - [`WeightedRandom`](Strategy::WeightedRandom): a random order in which each candidate's
    ///   chance to come first is proportional to its weight; weight 0 only after all positive
    ///   weights;
    /// - [`LeastBusy`](Strategy::LeastBusy): fewest in flight first, equal counts taking turns;
    /// - [`LowestLatency`](Strategy::LowestLatency): of two random candidates the one with the
    ///   lower latency estimate × (in flight + 1) first (unknown latency counts as 0), then the
    ///   rest by that cost.
    pub(crate) fn order(&self, candidates: &[Candidate<'_>]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        if candidates.len() < 2 {
            return order;
        }
        let turn = match self.strategy {
            // Weighted random needs no turn; skipping the shared atomic saves a contended write.
            Strategy::WeightedRandom => 0,
            Strategy::RoundRobin | Strategy::LeastBusy | Strategy::LowestLatency => {
                // Relaxed: only the spread of values matters, not ordering with other memory.
                self.cursor.fetch_add(1, Ordering::Relaxed)
            }
        };
        // The index as second key keeps list order within a tier (an unstable sort on unique keys
        // is deterministic and, unlike the stable sort, never allocates).
        order.sort_unstable_by_key(|&i| (candidates[i].priority, i));
        for tier in order.chunk_by_mut(|&a, &b| candidates[a].priority == candidates[b].priority) {
            self.order_tier(tier, candidates, turn);
        }
        order
    }

    /// Orders one tier (indices in list order) in place.
    fn order_tier(&self, tier: &mut [usize], candidates: &[Candidate<'_>], turn: usize) {
        if tier.len() < 2 {
            return;
        }
        match self.strategy {
            Strategy::RoundRobin => tier.rotate_left(turn % tier.len()),
            Strategy::WeightedRandom => weighted_shuffle(tier, candidates),
            Strategy::LeastBusy => sort_by_snapshot(
                tier,
                |i| candidates[i].load.in_flight(),
                |keyed| sort_rotating_ties(keyed, turn),
            ),
            Strategy::LowestLatency => sort_by_snapshot(
                tier,
                |i| candidates[i].load.cost(),
                |keyed| power_of_two_choices(keyed, turn),
            ),
        }
    }
}

/// Weighted sampling without replacement, in place: each place is drawn from the candidates not
/// yet placed with probability proportional to weight; zero weights, when only they are left,
/// are shuffled uniformly.
///
/// Exact integer draws rather than Efraimidis–Spirakis float keys: no float edge cases, and no
/// buffer for the keys. Quadratic, which is nothing for the few deployments of a tier.
fn weighted_shuffle(tier: &mut [usize], candidates: &[Candidate<'_>]) {
    let weight = |i: usize| u64::from(candidates[i].weight);
    // u32 weights summed in u64 cannot overflow for any slice that fits in memory.
    let mut remaining: u64 = tier.iter().map(|&i| weight(i)).sum();
    for place in 0..tier.len().saturating_sub(1) {
        if remaining == 0 {
            fastrand::shuffle(&mut tier[place..]);
            return;
        }
        let mut draw = fastrand::u64(0..remaining);
        // `draw < remaining` = the sum of the weights from `place` on, so the scan always stops
        // at a candidate; the initial value is never used but keeps this panic-free.
        let mut chosen = place;
        for (offset, &i) in tier[place..].iter().enumerate() {
            if draw < weight(i) {
                chosen = place + offset;
                break;
            }
            draw -= weight(i);
        }
        remaining -= weight(tier[chosen]);
        tier.swap(place, chosen);
    }
}

/// Tiers up to this size are sorted in a stack buffer; larger ones (unusual) use the heap.
const INLINE_TIER: usize = 32;

/// A candidate's key as read once, its place in the tier before sorting (the tie-break), and
/// its index.
type Keyed<K> = (K, usize, usize);

/// Reads every candidate's key once, lets `arrange` order the keyed entries, and writes the
/// indices back into `tier`.
///
/// Keys come from atomics that other tasks change concurrently; reading each once gives the sort
/// a consistent total order (a comparison that changed its mind mid-sort could make it panic).
fn sort_by_snapshot<K: Copy + Ord + Default>(
    tier: &mut [usize],
    key: impl Fn(usize) -> K,
    arrange: impl FnOnce(&mut [Keyed<K>]),
) {
    let mut inline = [(K::default(), 0, 0); INLINE_TIER];
    let mut heap = Vec::new();
    let keyed: &mut [Keyed<K>] = if tier.len() <= INLINE_TIER {
        &mut inline[..tier.len()]
    } else {
        heap.resize(tier.len(), (K::default(), 0, 0));
        &mut heap
    };
    for (place, (slot, &i)) in keyed.iter_mut().zip(tier.iter()).enumerate() {
        *slot = (key(i), place, i);
    }
    arrange(keyed);
    for (slot, &(_, _, i)) in tier.iter_mut().zip(keyed.iter()) {
        *slot = i;
    }
}

/// Sorts by key; each run of equal keys is rotated by `turn`, so that tied candidates take turns
/// coming first across calls (rotating the whole tier instead would give the candidate after a
/// busy one a double share).
fn sort_rotating_ties<K: Copy + Ord>(keyed: &mut [Keyed<K>], turn: usize) {
    // (key, place) is unique, so the unstable sort is deterministic.
    keyed.sort_unstable();
    for ties in keyed.chunk_by_mut(|a, b| a.0 == b.0) {
        ties.rotate_left(turn % ties.len());
    }
}

/// Power of two choices: the cheaper of two random entries first, then the rest cheapest first
/// (equal costs — typically several unknown latencies — taking turns). Entries are
/// `(cost, place, index)`.
fn power_of_two_choices(keyed: &mut [Keyed<u128>], turn: usize) {
    let n = keyed.len();
    if n < 2 {
        return;
    }
    let a = fastrand::usize(0..n);
    // Drawn from n - 1 and shifted past `a`: two distinct entries, uniformly.
    let mut b = fastrand::usize(0..n - 1);
    if b >= a {
        b += 1;
    }
    // On a tie the first pick wins; it is random, so ties are broken at random.
    let winner = if keyed[b].0 < keyed[a].0 { b } else { a };
    keyed.swap(0, winner);
    sort_rotating_ties(&mut keyed[1..], turn);
}
