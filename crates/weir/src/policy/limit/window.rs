//! The per-minute limits: an exact sliding log with reservations.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::error::{DemandTooLarge, LimitKind, RateLimitError, RateLimited, Refusal};
use super::shared::SharedCharge;
use super::snapshot::{LimitStatus, RateLimitSnapshot};
use super::{Demand, RateLimitConfig};

/// The length of the sliding window of the per-minute limits.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Admissions this close together share one log entry. This bounds the log at
/// `WINDOW / RESOLUTION + 1` entries (6001) however busy the limiter is, at the cost of counting a
/// request for at most 10 ms more than 60 s (a shared entry is stamped with its latest
/// admission, so the error only ever refuses, never over-admits).
pub(crate) const RESOLUTION: Duration = Duration::from_millis(10);

/// Indexes into [`Amounts`].
const REQUESTS: usize = 0;
const INPUT: usize = 1;
const OUTPUT: usize = 2;
const KINDS: [LimitKind; 3] = [
    LimitKind::RequestsPerMinute,
    LimitKind::InputTokensPerMinute,
    LimitKind::OutputTokensPerMinute,
];

/// Requests, input tokens, output tokens.
pub(crate) type Amounts = [u64; 3];

/// Admissions at (about) one instant.
#[derive(Debug, Clone)]
struct Entry {
    /// Increasing along the log, so a reservation finds its entry by binary search.
    id: u64,
    /// The first admission merged into this entry; later ones within [`RESOLUTION`] join it.
    first: Instant,
    /// The latest admission merged into it: the entry counts until `at + window`.
    at: Instant,
    amounts: Amounts,
}

/// Why the log refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowRefusal {
    /// The demand alone exceeds a limit.
    TooLarge(DemandTooLarge),
    /// Not enough room now; `retry_after` until enough old entries expire.
    Full { which: LimitKind, retry_after: Duration },
}

/// The pure core of the per-minute limits: time is a parameter, so it is testable without a
/// clock. Callers pass non-decreasing `now`s; an earlier one is treated as the latest seen, which
/// keeps the log in time order when threads read the clock and take the lock in different
/// orders.
#[derive(Debug, Clone)]
pub(crate) struct WindowLog {
    limits: [Option<u64>; 3],
    window: Duration,
    resolution: Duration,
    /// In admission order (so also in `at` and `id` order).
    entries: VecDeque<Entry>,
    /// The sum of `entries`' amounts: admission is O(1) when it fits.
    used: Amounts,
    next_id: u64,
    latest: Option<Instant>,
}

impl WindowLog {
    /// A log enforcing `limits` (requests, input tokens, output tokens; `None` = unlimited) over
    /// any `window`, merging admissions closer than `resolution` (zero: never merge).
    pub(crate) fn new(limits: [Option<u64>; 3], window: Duration, resolution: Duration) -> Self {
        WindowLog {
            limits,
            window,
            resolution,
            entries: VecDeque::new(),
            used: [0; 3],
            next_id: 0,
            latest: None,
        }
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.latest.map_or(now, |latest| latest.max(now));
        self.latest = Some(now);
        while let Some(front) = self.entries.front() {
            if front.at + self.window > now {
                break;
            }
            for (used, amount) in self.used.iter_mut().zip(front.amounts) {
                *used = used.saturating_sub(amount);
            }
            self.entries.pop_front();
        }
        now
    }

    /// Whether `demand` would be admitted at `now`, without admitting it.
    pub(crate) fn check(&mut self, now: Instant, demand: Amounts) -> Result<(), WindowRefusal> {
        let now = self.advance(now);
        self.fits(now, demand)
    }

    fn fits(&self, now: Instant, demand: Amounts) -> Result<(), WindowRefusal> {
        // A demand larger than a limit is refused outright, before any wait is computed: no
        // amount of expiry would make it fit.
        for (r, limit) in self.limits.iter().enumerate() {
            if let Some(limit) = *limit
                && demand[r] > limit
            {
                return Err(WindowRefusal::TooLarge(DemandTooLarge {
                    which_limit: KINDS[r],
                    demand: demand[r],
                    limit,
                }));
            }
        }
        let mut longest: Option<(LimitKind, Duration)> = None;
        for (r, limit) in self.limits.iter().enumerate() {
            let Some(limit) = *limit else { continue };
            let after = self.used[r].saturating_add(demand[r]);
            if after > limit {
                let wait = self.time_to_free(now, r, after - limit);
                if longest.is_none_or(|(_, longest)| wait > longest) {
                    longest = Some((KINDS[r], wait));
                }
            }
        }
        match longest {
            // The demand must fit every limit at once, so the longest wait is the answer.
            Some((which, retry_after)) => Err(WindowRefusal::Full { which, retry_after }),
            None => Ok(()),
        }
    }

    /// How long until entries holding at least `need` of resource `r` have expired.
    fn time_to_free(&self, now: Instant, r: usize, need: u64) -> Duration {
        let mut freed = 0u64;
        for entry in &self.entries {
            freed = freed.saturating_add(entry.amounts[r]);
            if freed >= need {
                return (entry.at + self.window).saturating_duration_since(now);
            }
        }
        // Unreachable while `used` is the sum of the entries and the demand is within the limit
        // (then `need <= used`); a full window is a safe answer regardless.
        self.window
    }

    /// Admits `demand` at `now`, or says why not. Returns the id of the entry that holds it.
    pub(crate) fn reserve(&mut self, now: Instant, demand: Amounts) -> Result<u64, WindowRefusal> {
        let now = self.advance(now);
        self.fits(now, demand)?;
        for (used, amount) in self.used.iter_mut().zip(demand) {
            *used = used.saturating_add(amount);
        }
        if let Some(tail) = self.entries.back_mut()
            && now.saturating_duration_since(tail.first) < self.resolution
        {
            tail.at = now;
            for (total, amount) in tail.amounts.iter_mut().zip(demand) {
                *total = total.saturating_add(amount);
            }
            return Ok(tail.id);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            first: now,
            at: now,
            amounts: demand,
        });
        Ok(id)
    }

    /// Replaces what a reservation charged to entry `id` (`from`) with `to`, in place: the entry
    /// keeps its admission time. Nothing happens if the entry has expired, since it no longer
    /// counts either way.
    pub(crate) fn adjust(&mut self, id: u64, from: Amounts, to: Amounts) {
        let Ok(index) = self.entries.binary_search_by_key(&id, |entry| entry.id) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        for r in 0..3 {
            let old = entry.amounts[r];
            let new = old.saturating_sub(from[r]).saturating_add(to[r]);
            entry.amounts[r] = new;
            self.used[r] = self.used[r].saturating_sub(old).saturating_add(new);
        }
    }

    /// The configured limits as they stand at `now`.
    pub(crate) fn snapshot(&mut self, now: Instant) -> RateLimitSnapshot {
        let now = self.advance(now);
        let status = |r: usize| {
            self.limits[r].map(|limit| LimitStatus {
                limit,
                remaining: limit.saturating_sub(self.used[r]),
                reset: self
                    .entries
                    .iter()
                    .rev()
                    .find(|entry| entry.amounts[r] > 0)
                    .map_or(Duration::ZERO, |entry| {
                        (entry.at + self.window).saturating_duration_since(now)
                    }),
            })
        };
        RateLimitSnapshot {
            requests: status(REQUESTS),
            input_tokens: status(INPUT),
            output_tokens: status(OUTPUT),
            retry_after: None,
        }
    }

    /// Whether nothing admitted is still counted: the log is then the same as a new one.
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.entries.is_empty()
    }

    /// How many entries the log holds (for tests of its memory bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The per-minute limits of a [`RateLimitConfig`]: requests, input tokens and output tokens in any
/// 60 s, each optional.
///
/// A cheap handle (an `Arc`); clones share the limits. Refusals are immediate: see the
/// [module docs](super) for the reserve → reconcile flow and why a sliding log.
#[derive(Clone)]
pub struct SlidingWindow {
    log: Arc<Mutex<WindowLog>>,
}

impl fmt::Debug for SlidingWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.log.lock();
        f.debug_struct("SlidingWindow")
            .field("limits", &log.limits)
            .field("used", &log.used)
            .field("entries", &log.entries.len())
            .finish()
    }
}

impl SlidingWindow {
    /// The per-minute limits of `config` (its bucket fields are ignored).
    ///
    /// It does not fail: `config` is expected to be valid (config loading checks it; check a
    /// config built by hand with [`RateLimitConfig::validate`]). A limit of zero, which validation
    /// rejects, admits nothing.
    pub fn new(config: &RateLimitConfig) -> Self {
        SlidingWindow {
            log: Arc::new(Mutex::new(WindowLog::new(
                [
                    config.requests_per_minute,
                    config.input_tokens_per_minute,
                    config.output_tokens_per_minute,
                ],
                WINDOW,
                RESOLUTION,
            ))),
        }
    }

    /// Admits `demand` now, or refuses at once.
    pub fn reserve(&self, demand: Demand) -> Result<Reservation, RateLimitError> {
        self.reserve_at(Instant::now(), demand)
    }

    /// The limits as they stand now.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        self.log.lock().snapshot(Instant::now())
    }

    pub(crate) fn check_at(&self, now: Instant, demand: Demand) -> Result<(), RateLimitError> {
        let mut log = self.log.lock();
        log.check(now, demand.amounts())
            .map_err(|refusal| refused(&mut log, now, refusal))
    }

    pub(crate) fn reserve_at(&self, now: Instant, demand: Demand) -> Result<Reservation, RateLimitError> {
        let amounts = demand.amounts();
        let mut log = self.log.lock();
        match log.reserve(now, amounts) {
            Ok(id) => Ok(Reservation {
                charge: Some(Charge::Local {
                    log: self.log.clone(),
                    id,
                    amounts,
                }),
                snapshot: log.snapshot(now),
            }),
            Err(refusal) => Err(refused(&mut log, now, refusal)),
        }
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> RateLimitSnapshot {
        self.log.lock().snapshot(now)
    }

    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.log.lock().is_idle(now)
    }

    /// How many entries the log holds (for tests of its memory bound).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.log.lock().len()
    }
}

fn refused(log: &mut WindowLog, now: Instant, refusal: WindowRefusal) -> RateLimitError {
    match refusal {
        WindowRefusal::TooLarge(large) => RateLimitError::TooLarge(large),
        WindowRefusal::Full { which, retry_after } => {
            let mut snapshot = log.snapshot(now);
            snapshot.retry_after = Some(retry_after);
            RateLimitError::Limited(RateLimited {
                which_limit: which,
                reason: Refusal::Exhausted,
                retry_after,
                snapshot: Box::new(snapshot),
            })
        }
    }
}

/// What an admitted request holds against the per-minute limits.
///
/// It counts at its admission time with the estimated [`Demand`] until one of:
///
/// - [`reconcile`](Self::reconcile) with the real token counts once they are known: unused
///   tokens go back at once; extra tokens are charged (which can take the window past its limit,
///   see the [module docs](super));
/// - [`refund`](Self::refund) when the call never reached the upstream: nothing is charged;
/// - dropping it: the estimate stays charged. That is the safe default for a call whose outcome
///   is unknown, such as a stream the client cut off: the upstream may well have counted it.
///
/// Either way the charge stays at the admission time and expires 60 s after it.
#[must_use = "dropping a reservation keeps its estimate charged; reconcile it with the real usage or refund it"]
pub struct Reservation {
    /// `None` when no per-minute limit is configured.
    charge: Option<Charge>,
    snapshot: RateLimitSnapshot,
}

/// Where a reservation is counted.
enum Charge {
    /// In this process's log.
    Local {
        log: Arc<Mutex<WindowLog>>,
        id: u64,
        amounts: Amounts,
    },
    /// In Redis, shared with other instances (`super::shared`). Boxed: it is large, and
    /// in-process reservations should not pay for it.
    Shared(Box<SharedCharge>),
}

impl Charge {
    fn amounts(&self) -> Amounts {
        match self {
            Charge::Local { amounts, .. } => *amounts,
            Charge::Shared(shared) => shared.amounts,
        }
    }

    fn adjust(&self, to: Amounts) {
        match self {
            Charge::Local { log, id, amounts } => log.lock().adjust(*id, *amounts, to),
            Charge::Shared(shared) => shared.adjust(to),
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Reservation");
        match &self.charge {
            Some(Charge::Local { id, amounts, .. }) => {
                debug.field("entry", id).field("charged", amounts);
            }
            Some(Charge::Shared(shared)) => {
                debug
                    .field("shared_at_us", &shared.reserved_at_us)
                    .field("charged", &shared.amounts);
            }
            None => {}
        }
        debug.field("snapshot", &self.snapshot).finish()
    }
}

impl Reservation {
    /// A reservation against no per-minute limit: reconciling or refunding it does nothing.
    pub(crate) fn unlimited() -> Self {
        Reservation {
            charge: None,
            snapshot: RateLimitSnapshot::default(),
        }
    }

    /// The per-minute limits just after this admission.
    pub fn snapshot(&self) -> &RateLimitSnapshot {
        &self.snapshot
    }

    /// The `x-ratelimit-*` headers for this admission (see [`RateLimitSnapshot::headers`]).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.snapshot.headers()
    }

    /// Replaces the estimated tokens with what the call really used (e.g. the response's
    /// `usage`). Tokens below the estimate are returned to the window; tokens above it are charged
    /// at the admission time, even if that takes the window over its limit. The request itself
    /// stays counted.
    pub fn reconcile(self, actual_input_tokens: u64, actual_output_tokens: u64) {
        if let Some(charge) = &self.charge {
            let actual = [
                charge.amounts()[REQUESTS],
                actual_input_tokens,
                actual_output_tokens,
            ];
            charge.adjust(actual);
        }
    }

    /// Returns the whole reservation, the request included: for calls that never reached the
    /// upstream (refused by a circuit breaker, failed to connect, cancelled while waiting).
    pub fn refund(self) {
        if let Some(charge) = &self.charge {
            charge.adjust([0; 3]);
        }
    }

    /// A reservation held in Redis (see `super::shared`).
    pub(crate) fn shared(charge: SharedCharge, snapshot: RateLimitSnapshot) -> Self {
        Reservation {
            charge: Some(Charge::Shared(Box::new(charge))),
            snapshot,
        }
    }

    /// The Redis charge, for tests that await its adjustments.
    #[cfg(test)]
    pub(crate) fn shared_charge(&self) -> Option<&SharedCharge> {
        match &self.charge {
            Some(Charge::Shared(shared)) => Some(shared),
            _ => None,
        }
    }
}
