//! Rate limits: keep a deployment within its upstream's quotas, and one client from starving the
//! others.
//!
//! Upstream LLM APIs limit each API key twice: requests per minute, and tokens per minute. A
//! gateway that ignores this finds out by 429s, which cost a round trip each, come with a
//! `Retry-After` that stalls the request anyway, and (on some providers) count against the quota
//! themselves. Limiting on our side turns those into a decision made before any byte leaves,
//! which the router can use to pick another deployment, and it lets the gateway enforce its
//! own per-client limits the same way.
//!
//! # The limiters
//!
//! - [`TokenBucket`] — `requests_per_second` with a `burst`: smooths bursts into a steady
//!   rate. It is virtual-time scheduling (GCRA): one instant of state, no refill task, exact
//!   arithmetic on `Instant`s. In [`LimitMode::Wait`] a request that finds it empty waits for its
//!   turn, strictly first come first served (a later, smaller request never overtakes), with at
//!   most `max_queue` waiting; a request that would wait longer than `max_wait`, or find the
//!   queue full, is refused at once, as is every request in [`LimitMode::FailFast`].
//! - [`SlidingWindow`] — `requests_per_minute`, `input_tokens_per_minute`,
//!   `output_tokens_per_minute`, each optional, over any 60 s. Always refuses at once: its
//!   waits run to tens of seconds, which is better spent on another deployment (or reported to
//!   the client) than holding a connection.
//! - [`RateLimiter`] — both, for one deployment (one upstream key). This is what the engine
//!   uses.
//! - [`KeyedLimiter`] — one [`RateLimiter`] per key (e.g. per gateway client key, so a tenant
//!   can't starve the others), created on first use from a shared config. A key's limiter is
//!   evicted once the key has been unused for longer than the 60 s window and the limiter has
//!   returned to the state of a new one (so eviction forgives nothing); a sweep runs at most once
//!   per window from ordinary calls, so memory is bounded by the keys in recent use, with no
//!   background task.
//! - [`RateLimitLayer`] — a [`RateLimiter`] as a tower layer.
//! - [`RateLimiter::shared`], [`KeyedLimiter::shared`] — the same limits held in Redis
//!   ([`RedisLimits`], the top-level `redis:` section) so that every gateway instance sharing it
//!   enforces one set of limits: one atomic script per decision on Redis's clock, the same exact
//!   windows and bucket, reserve → reconcile → refund in place; see [`shared`].
//!
//! Time is tokio's clock, so tests pause and advance it; the arithmetic lives in pure cores that
//! take `now` as a parameter.
//!
//! # Why a sliding log for the per-minute limits
//!
//! Fixed windows (a counter reset every minute) admit twice the limit around a boundary: a full
//! minute's worth at 0:59 and another at 1:00. The upstream counts over a rolling window and
//! answers the second half with 429s. So the windows here are exact: a log of admissions, and
//! a request is admitted only if everything admitted in the 60 s before it, plus itself, is within
//! every limit. In any 60 s interval at most the limit is admitted (short of the reconcile
//! overshoot below).
//!
//! A GCRA such as the [`governor`](https://docs.rs/governor) crate's would be O(1), but it
//! cannot give anything back: it has no record of *which* admission to un-count. Token limits need
//! exactly that, because a request's size is only an estimate when it is admitted (the prompt is
//! counted roughly, and `max_tokens` bounds the output) and the real count arrives with the
//! response. The log keeps each admission's amounts, so the estimate can be replaced by the real
//! usage in place, at the admission time where the upstream counted it.
//!
//! Memory: admissions within 10 ms of each other share one log entry (stamped with the latest of
//! them, so the merge can only make the limiter stricter, by at most 10 ms), so a window holds at
//! most 6001 entries however busy; usually it holds one per admission in the last 60 s.
//! Admission is O(1) when the request fits (running sums); a refusal walks the log to find when
//! enough will have expired.
//!
//! # Reserve → reconcile
//!
//! ```text
//! let reservation = limiter.reserve(Demand::request(estimated_input, max_tokens)).await?;
//! //   ...call the upstream...
//! reservation.reconcile(usage.prompt_tokens, usage.completion_tokens);   // the real usage
//! // or: reservation.refund();   the call never reached the upstream
//! // or: drop(reservation);      outcome unknown (e.g. a stream cut off): the estimate stays
//! ```
//!
//! A [`Reservation`] counts its [`Demand`] at its admission time. Reconciling returns unused
//! tokens at once (a following request can use them) and charges tokens beyond the estimate,
//! still at the admission time. That extra charge is never refused (the tokens are already
//! spent), so **a window can overshoot its limit** by the sum of under-estimates; requests after
//! it are refused until it is back under, so the overshoot does not compound. Estimates that are
//! upper bounds (output from `max_tokens`) rule it out. An entry that expired before its reconcile is not
//! adjusted: it no longer counts either way. Refunding removes the request too. Dropping keeps
//! the estimate, the conservative choice when the upstream may have counted the call.
//!
//! Refusals are a [`RateLimitError`]: [`RateLimited`] (with `retry_after`, `which_limit` and a
//! snapshot for headers) when the request fits later, or [`DemandTooLarge`] when it never will.
//! A demand larger than a limit on its own (a 10 000-token prompt under a 5 000-token limit, or
//! more requests than the burst) can never be admitted, and is refused with
//! [`RateLimitError::TooLarge`] instead of a `retry_after` that would never come true.
//!
//! # The combined limiter
//!
//! [`RateLimiter::reserve`] checks the per-minute windows first (a request they refuse should not
//! take a bucket slot or wait for one), then takes its slot in the bucket (waiting if the mode
//! says so), then reserves in the windows at the moment it is let through. If the windows refuse
//! at that point (others used them while it waited), its bucket slot goes back if nothing was
//! queued after it. Only `demand.requests` counts in the bucket; a refunded reservation does not
//! return its bucket slot, which was spent in time.
//!
//! # Defaults
//!
//! | Field                      | Default                  |
//! |----------------------------|--------------------------|
//! | `requests_per_second`      | off                      |
//! | `burst`                    | 10                       |
//! | `mode`                     | `Wait { max_wait: 10s }` |
//! | `max_queue`                | 1024                     |
//! | `requests_per_minute`      | off                      |
//! | `input_tokens_per_minute`  | off                      |
//! | `output_tokens_per_minute` | off                      |
//!
//! Waiting by default: the bucket's waits are normally fractions of a second, and a short queue
//! is kinder than a 429 the client would retry anyway; beyond 10 s the deployment is overloaded
//! and a prompt refusal lets the router or client go elsewhere.
//!
//! # Headers
//!
//! Every decision carries a [`RateLimitSnapshot`] of the per-minute limits —
//! [`Reservation::snapshot`] after an admission, [`RateLimited::snapshot`] with a refusal — whose
//! [`headers`](RateLimitSnapshot::headers) are OpenAI's:
//!
//! - `x-ratelimit-limit-requests`: `requests_per_minute`;
//! - `x-ratelimit-remaining-requests`: what is left of it now;
//! - `x-ratelimit-reset-requests`: how long until everything counted has expired (the limit is
//!   back to its initial state), as OpenAI writes it (Go's duration format: `"20ms"`, `"1s"`,
//!   `"6m0s"`), rounded up to the millisecond;
//! - the same three for `-tokens`, input and output combined (limits and remainders added, the
//!   later reset), and, beyond OpenAI's set, for `-input-tokens` and `-output-tokens` apart;
//! - on a refusal, `retry-after` in whole seconds (rounded up) and `retry-after-ms`, which
//!   OpenAI's SDKs read first.
//!
//! Headers appear only for configured limits. The per-second bucket has none (OpenAI's limits are
//! per minute); its refusals still carry `retry-after`.
//!
//! # As a tower layer
//!
//! [`RateLimitLayer`] reserves a `Fn(&Request) -> Demand` worth for each call before calling the
//! inner service (waiting in `Wait` mode, unless the call asks not to: see [`Ask`]), and refuses
//! with [`RateLimitServiceError::Limited`] without calling it. When the call finishes, its
//! reservation goes to a [`Settle`] policy: by default [`KeepCharged`] (the estimate stays
//! charged, since only the caller can read the real usage); the engine's settles it with the
//! response's usage and the failure's [disposition](crate::policy::disposition). This layer is
//! how the engine applies per-deployment and per-client limits.

mod bucket;
mod error;
pub mod future;
mod keyed;
mod layer;
mod service;
pub mod shared;
mod snapshot;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

pub use self::bucket::TokenBucket;
// The settings are part of the configuration schema; re-exported here, where limiters are built.
pub use self::error::{
    DemandTooLarge, LimitKind, RateLimitError, RateLimitServiceError, RateLimited, Refusal,
};
pub use self::keyed::KeyedLimiter;
pub use self::layer::{Ask, KeepCharged, RateLimitLayer, Settle};
pub use self::service::RateLimitService;
pub use self::shared::RedisLimits;
pub use self::snapshot::{LimitStatus, RateLimitSnapshot, format_reset};
pub use self::window::{Reservation, SlidingWindow, WINDOW};
pub use crate::config::{DEFAULT_BURST, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT, LimitMode, RateLimitConfig};

use self::bucket::Ticket;
use crate::config::RedisOnError;

/// What one request counts against the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Demand {
    /// Requests (normally 1); counted by the bucket and `requests_per_minute`.
    pub requests: u64,
    /// Estimated prompt tokens.
    pub input_tokens: u64,
    /// Estimated completion tokens: `max_tokens` (or the model's default) rules out an overshoot
    /// when reconciling.
    pub output_tokens: u64,
}

impl Demand {
    /// One request with these token estimates.
    pub const fn request(input_tokens: u64, output_tokens: u64) -> Self {
        Demand {
            requests: 1,
            input_tokens,
            output_tokens,
        }
    }

    fn amounts(&self) -> [u64; 3] {
        [self.requests, self.input_tokens, self.output_tokens]
    }
}

/// The rate limits of one deployment: the per-second [`TokenBucket`] and the per-minute
/// [`SlidingWindow`] of one [`RateLimitConfig`], either of which may be off.
///
/// A cheap handle (an `Arc`); clones share the limits. See the [module docs](self) for the
/// order in which the two are consulted.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: RateLimitConfig,
    bucket: Option<TokenBucket>,
    window: Option<SlidingWindow>,
    /// Shared through Redis: decisions are made there, and `bucket`/`window` (this instance's
    /// share of the limits) only while Redis is down, with `on_error: local`.
    shared: Option<shared::Scope>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bucket", &self.inner.bucket)
            .field("window", &self.inner.window)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter enforcing `config`.
    ///
    /// It does not fail: `config` is expected to be valid (config loading checks it; check a
    /// config built by hand with [`RateLimitConfig::validate`]). An invalid value is read as the
    /// strictest usable one (see [`TokenBucket::new`] and [`SlidingWindow::new`]).
    pub fn new(config: RateLimitConfig) -> Self {
        let bucket = config
            .requests_per_second
            .is_some()
            .then(|| TokenBucket::new(&config));
        let window = config.has_window_limits().then(|| SlidingWindow::new(&config));
        RateLimiter {
            inner: Arc::new(Inner {
                config,
                bucket,
                window,
                shared: None,
            }),
        }
    }

    /// A limiter enforcing `config` across every instance sharing `redis`, as the limiter called
    /// `name` (the same name on every instance: `dep:<deployment id>`, `client:<key hash>`); see
    /// [`shared`]. While Redis is down it decides as `redis.on_error` says, in process with
    /// this instance's share of the limits for `local`.
    pub fn shared(config: RateLimitConfig, redis: &RedisLimits, name: &str) -> Self {
        let local = shared::local_share(&config, redis.config().instances);
        let bucket = local
            .requests_per_second
            .is_some()
            .then(|| TokenBucket::new(&local));
        let window = local.has_window_limits().then(|| SlidingWindow::new(&local));
        RateLimiter {
            inner: Arc::new(Inner {
                shared: Some(shared::Scope::new(redis, name, &config)),
                config,
                bucket,
                window,
            }),
        }
    }

    /// Whether its limits are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// A limiter that admits everything.
    pub fn unlimited() -> Self {
        RateLimiter {
            inner: Arc::new(Inner {
                config: RateLimitConfig::default(),
                bucket: None,
                window: None,
                shared: None,
            }),
        }
    }

    /// The limits it enforces.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// Admits `demand`, waiting for the bucket if the mode allows; see the [module docs](self).
    ///
    /// The place in the bucket's line is taken when this is *called*, not when the future is
    /// first polled (for a shared limiter, when Redis answers). Dropping the future while it
    /// waits gives the place up.
    pub fn reserve(
        &self,
        demand: Demand,
    ) -> impl Future<Output = Result<Reservation, RateLimitError>> + Send + use<> {
        let limiter = self.clone();
        let booked = self
            .inner
            .shared
            .is_none()
            .then(|| self.book(Instant::now(), demand, true));
        async move {
            let Some(booked) = booked else {
                return limiter.reserve_shared(demand, true).await;
            };
            let ticket = match booked? {
                Some(ticket) => Some(ticket.ready().await),
                None => None,
            };
            limiter.admit(Instant::now(), demand, ticket)
        }
    }

    /// Admits `demand` now, or refuses at once whatever the mode: [`try_reserve`](Self::try_reserve)
    /// for any limiter, shared ones included (which must ask Redis, hence the future).
    pub fn reserve_now(
        &self,
        demand: Demand,
    ) -> impl Future<Output = Result<Reservation, RateLimitError>> + Send + use<> {
        let limiter = self.clone();
        let decided = self.inner.shared.is_none().then(|| self.try_reserve(demand));
        async move {
            match decided {
                Some(decided) => decided,
                None => limiter.reserve_shared(demand, false).await,
            }
        }
    }

    /// Admits `demand` now, or refuses at once whatever the mode.
    ///
    /// In process only: a shared limiter answers from this instance's share of its limits, as
    /// while Redis is down; use [`reserve_now`](Self::reserve_now) to ask Redis.
    pub fn try_reserve(&self, demand: Demand) -> Result<Reservation, RateLimitError> {
        let now = Instant::now();
        let ticket = self.book(now, demand, false)?;
        self.admit(now, demand, ticket)
    }

    /// One decision in Redis; `redis.on_error` when Redis cannot decide.
    async fn reserve_shared(&self, demand: Demand, may_wait: bool) -> Result<Reservation, RateLimitError> {
        let Some(scope) = &self.inner.shared else {
            return self.try_reserve(demand);
        };
        if let Some(too_large) = scope.too_large(demand) {
            return Err(RateLimitError::TooLarge(too_large));
        }
        match scope.reserve(demand, may_wait).await {
            Ok(shared::Decision::Admitted(reservation, wait)) => {
                if !wait.is_zero() {
                    // Given up while waiting: the window entry goes back (the guard refunds it).
                    let guard = RefundOnDrop(Some(reservation));
                    tokio::time::sleep(wait).await;
                    return guard.take();
                }
                Ok(reservation)
            }
            Ok(shared::Decision::Refused(error)) => {
                log_refusal(&error);
                Err(error)
            }
            Err(shared::Unavailable) => {
                scope.fell_back();
                match scope.on_error() {
                    RedisOnError::Local if may_wait => {
                        let booked = self.book(Instant::now(), demand, true);
                        let ticket = match booked? {
                            Some(ticket) => Some(ticket.ready().await),
                            None => None,
                        };
                        self.admit(Instant::now(), demand, ticket)
                    }
                    RedisOnError::Local => self.try_reserve(demand),
                    RedisOnError::FailOpen => Ok(Reservation::unlimited()),
                    RedisOnError::FailClosed => Err(scope.unavailable()),
                }
            }
        }
    }

    /// The per-minute limits as they stand now, in this process (for a shared limiter, its
    /// local share: Redis's state comes with each decision, in [`Reservation::snapshot`]).
    pub fn snapshot(&self) -> RateLimitSnapshot {
        self.inner
            .window
            .as_ref()
            .map(|window| window.snapshot_at(Instant::now()))
            .unwrap_or_default()
    }

    /// Requests waiting for the per-second bucket right now (0 without one).
    pub fn waiting(&self) -> usize {
        self.inner.bucket.as_ref().map_or(0, TokenBucket::waiting)
    }

    /// Whether the limiter is in the state of a new one: bucket full, nobody waiting, nothing
    /// counted in the windows. Such a limiter can be dropped and re-created without anyone being
    /// able to tell.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.inner
            .bucket
            .as_ref()
            .is_none_or(|bucket| bucket.is_idle(now))
            && self
                .inner
                .window
                .as_ref()
                .is_none_or(|window| window.is_idle(now))
    }

    /// Checks the windows, then books the bucket slot.
    fn book(&self, now: Instant, demand: Demand, may_wait: bool) -> Result<Option<Ticket>, RateLimitError> {
        if let Some(window) = &self.inner.window {
            window.check_at(now, demand).inspect_err(log_refusal)?;
        }
        let Some(bucket) = &self.inner.bucket else {
            return Ok(None);
        };
        if demand.requests == 0 {
            return Ok(None);
        }
        match bucket.schedule(now, demand.requests, may_wait) {
            Ok(ticket) => Ok(Some(ticket)),
            Err(mut error) => {
                // The bucket knows nothing of the windows; the headers should still report them.
                if let (RateLimitError::Limited(limited), Some(window)) = (&mut error, &self.inner.window) {
                    *limited.snapshot = RateLimitSnapshot {
                        retry_after: Some(limited.retry_after),
                        ..window.snapshot_at(now)
                    };
                }
                log_refusal(&error);
                Err(error)
            }
        }
    }

    /// Reserves in the windows once the bucket lets the request through.
    fn admit(
        &self,
        now: Instant,
        demand: Demand,
        ticket: Option<Ticket>,
    ) -> Result<Reservation, RateLimitError> {
        let Some(window) = &self.inner.window else {
            return Ok(Reservation::unlimited());
        };
        window.reserve_at(now, demand).inspect_err(|error| {
            // Someone used the windows while this request waited: it won't be sent, so its bucket
            // slot goes back (if nobody queued behind it).
            if let Some(ticket) = ticket {
                ticket.cancel();
            }
            log_refusal(error);
        })
    }
}

/// Refunds a shared reservation whose request went away while it waited for its bucket slot.
struct RefundOnDrop(Option<Reservation>);

impl RefundOnDrop {
    fn take(mut self) -> Result<Reservation, RateLimitError> {
        // Always `Some` until taken; an unlimited reservation is a harmless stand-in.
        Ok(self.0.take().unwrap_or_else(Reservation::unlimited))
    }
}

impl Drop for RefundOnDrop {
    fn drop(&mut self) {
        if let Some(reservation) = self.0.take() {
            reservation.refund();
        }
    }
}

fn log_refusal(error: &RateLimitError) {
    tracing::debug!(
        limit = %error.which_limit(),
        retry_after = ?error.retry_after(),
        "rate limited: {error}"
    );
}
