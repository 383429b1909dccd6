//! Rate limits shared by every gateway instance through one Redis (the top-level `redis:`
//! section).
//!
//! Each decision is **one** call of one Lua script (`shared.lua`, run with `EVALSHA`, loaded on
//! `NOSCRIPT`) that checks and reserves all of a limiter's limits at once — the per-second bucket
//! and the per-minute requests, input-token and output-token windows — on Redis's clock (`TIME`,
//! so clock skew between instances cannot matter), all or nothing: a refused request consumes
//! nothing. The windows are the same exact sliding logs as the in-process ones (`window.rs`): a
//! sorted set of admissions with their amounts, so a reservation is reconciled in place with the
//! real usage, or refunded, at its admission time. Every key expires a minute after its last
//! admission, so a crashed instance's holds free themselves.
//!
//! A limiter's keys share one hash tag (`weir:rl:{dep:openai-1}:v1:log`), so a decision touches
//! one Redis Cluster slot; the layout version (`v1`) is in the keys and the script, so instances
//! of different versions never read each other's state wrongly during a rolling deploy.
//!
//! Wait mode: a request the bucket makes wait is booked at its slot (`now + wait`, in Redis's
//! time) and waits here; the windows count it from that slot, so they stay exact. A request given
//! up while it waits refunds its window entry (its bucket slot, like the in-process one's after a
//! refund, was spent in time).
//!
//! Redis slow or down: every call is bounded by `redis.timeout`; a failure closes a gate for a
//! backoff that doubles from `timeout` up to `max_backoff`, during which decisions are made
//! without trying Redis, as `redis.on_error` says (see [`RedisOnError`]); then one call probes,
//! and its success reopens the gate (counted in [`RECOVERIES`]).

mod link;

use std::{sync::Arc, time::Duration};

use redis::Value;

pub use self::link::RedisLimits;
pub(crate) use self::link::Unavailable;
use self::link::{Failure, Keys};

use super::error::{DemandTooLarge, LimitKind, RateLimitError, RateLimited, Refusal};
use super::snapshot::{LimitStatus, RateLimitSnapshot};
use super::window::{Reservation, WINDOW};
use super::{Demand, LimitMode, RateLimitConfig};
use crate::config::RedisOnError;

/// Counter: shared-limit Redis calls that failed or timed out.
pub const REDIS_ERRORS: &str = "weir_shared_limits_redis_errors_total";
/// Counter, by `on_error`: limit decisions made without Redis (it was failing).
pub const FALLBACKS: &str = "weir_shared_limits_fallbacks_total";
/// Counter: times Redis answered again after failing (shared limits resumed).
pub const RECOVERIES: &str = "weir_shared_limits_recoveries_total";
/// Gauge: 1 while shared limits reach Redis, 0 while they fall back.
pub const REDIS_UP: &str = "weir_shared_limits_redis_up";

/// A limiter's share of Redis: its keys and its limits as script arguments.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) redis: RedisLimits,
    keys: Arc<Keys>,
    limits: [Option<u64>; 3],
    /// The bucket: emission interval (µs), burst, longest wait; `None` without a bucket.
    bucket: Option<(u64, u64, Option<Duration>)>,
    /// The window length: a minute (shorter only in tests).
    window: Duration,
}

/// What a reservation holds in Redis.
#[derive(Debug)]
pub(crate) struct SharedCharge {
    scope: Scope,
    id: String,
    pub(crate) amounts: [u64; 3],
    /// When Redis reserved it (µs of Redis's clock).
    pub(crate) reserved_at_us: u64,
}

/// What Redis answered a reserve with.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Admitted; wait this long for the bucket slot first.
    Admitted(Reservation, Duration),
    Refused(RateLimitError),
}

impl Scope {
    /// The scope of the limiter `name` enforcing `config`.
    pub(crate) fn new(redis: &RedisLimits, name: &str, config: &RateLimitConfig) -> Scope {
        let bucket = config.requests_per_second.map(|rate| {
            // A rate that is not a positive number (validation rejects it) is one per day.
            let interval = if rate.is_finite() && rate > 0.0 {
                (1_000_000.0 / rate).ceil().max(1.0) as u64
            } else {
                86_400_000_000
            };
            let max_wait = match config.mode {
                LimitMode::Wait { max_wait } => Some(max_wait),
                LimitMode::FailFast => None,
            };
            (interval, u64::from(config.burst_or_default().max(1)), max_wait)
        });
        Scope {
            redis: redis.clone(),
            keys: Arc::new(redis.keys(name)),
            limits: [
                config.requests_per_minute,
                config.input_tokens_per_minute,
                config.output_tokens_per_minute,
            ],
            bucket,
            window: WINDOW,
        }
    }

    /// The same scope over a shorter window (tests of expiry on Redis's real clock).
    #[cfg(test)]
    pub(crate) fn with_window(mut self, window: Duration) -> Scope {
        self.window = window;
        self
    }

    /// A demand no amount of waiting admits, refused without asking Redis.
    pub(crate) fn too_large(&self, demand: Demand) -> Option<DemandTooLarge> {
        if let Some((_, burst, _)) = self.bucket
            && demand.requests > burst
        {
            return Some(DemandTooLarge {
                which_limit: LimitKind::RequestsPerSecond,
                demand: demand.requests,
                limit: burst,
            });
        }
        let kinds = [
            LimitKind::RequestsPerMinute,
            LimitKind::InputTokensPerMinute,
            LimitKind::OutputTokensPerMinute,
        ];
        self.limits
            .iter()
            .zip(demand.amounts())
            .zip(kinds)
            .find_map(|((limit, amount), which_limit)| {
                limit.filter(|limit| amount > *limit).map(|limit| DemandTooLarge {
                    which_limit,
                    demand: amount,
                    limit,
                })
            })
    }

    /// Checks and reserves `demand` in one script call; `may_wait` lets the bucket book a later
    /// slot (up to `max_wait`).
    pub(crate) async fn reserve(&self, demand: Demand, may_wait: bool) -> Result<Decision, Unavailable> {
        let (interval, burst, max_wait) = self.bucket.unwrap_or((0, 1, None));
        let max_wait = match max_wait {
            Some(wait) if may_wait => i64::try_from(wait.as_micros()).unwrap_or(i64::MAX),
            _ => -1,
        };
        let [r, i, o] = demand.amounts();
        // Random, so unique across instances and across the state's expiry: a late reconcile can
        // never adjust someone else's entry.
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut args = vec!["reserve".to_owned(), self.window_us()];
        args.extend(self.limits.map(|l| l.unwrap_or(0).to_string()));
        args.extend([r, i, o, interval, burst].map(|n| n.to_string()));
        args.push(max_wait.to_string());
        args.push(id.clone());
        let reply = match self.redis.eval(&self.keys, &args).await {
            Ok(reply) => reply,
            Err(Failure::Skipped) => return Err(Unavailable),
            Err(Failure::Failed) => {
                // The script may have run with only its reply lost (a timeout): take back what
                // it may have reserved, so a slow Redis does not leak capacity. Sent on the same
                // connection, it runs after the reserve if that ever arrived.
                let charge = SharedCharge {
                    scope: self.clone(),
                    id,
                    amounts: demand.amounts(),
                    reserved_at_us: 0,
                };
                charge.cleanup();
                return Err(Unavailable);
            }
        };
        let Some(reply) = Reply::parse(reply) else {
            tracing::warn!("unexpected reply from the shared rate limit script");
            return Err(Unavailable);
        };
        Ok(match reply {
            Reply::Admitted {
                at,
                wait,
                used,
                reset,
            } => {
                let snapshot = self.snapshot(used, reset, None);
                let charge = SharedCharge {
                    scope: self.clone(),
                    id,
                    amounts: demand.amounts(),
                    reserved_at_us: at,
                };
                Decision::Admitted(Reservation::shared(charge, snapshot), wait)
            }
            Reply::Refused {
                which,
                retry,
                wait_too_long,
                used,
                reset,
            } => {
                let which_limit = match which {
                    1 => LimitKind::RequestsPerMinute,
                    2 => LimitKind::InputTokensPerMinute,
                    3 => LimitKind::OutputTokensPerMinute,
                    _ => LimitKind::RequestsPerSecond,
                };
                let reason = if wait_too_long {
                    Refusal::WaitTooLong
                } else {
                    Refusal::Exhausted
                };
                Decision::Refused(RateLimitError::Limited(RateLimited {
                    which_limit,
                    reason,
                    retry_after: retry,
                    snapshot: Box::new(self.snapshot(used, reset, Some(retry))),
                }))
            }
        })
    }

    /// What a fail-closed limiter answers while Redis is down.
    pub(crate) fn unavailable(&self) -> RateLimitError {
        let retry_after = self.redis.retry_in();
        let which_limit = if self.bucket.is_some() {
            LimitKind::RequestsPerSecond
        } else if self.limits[0].is_some() {
            LimitKind::RequestsPerMinute
        } else if self.limits[1].is_some() {
            LimitKind::InputTokensPerMinute
        } else {
            LimitKind::OutputTokensPerMinute
        };
        RateLimitError::Limited(RateLimited {
            which_limit,
            reason: Refusal::Unavailable,
            retry_after,
            snapshot: Box::new(RateLimitSnapshot {
                retry_after: Some(retry_after),
                ..RateLimitSnapshot::default()
            }),
        })
    }

    pub(crate) fn on_error(&self) -> RedisOnError {
        self.redis.config().on_error
    }

    pub(crate) fn fell_back(&self) {
        self.redis.fell_back();
    }

    fn window_us(&self) -> String {
        self.window.as_micros().to_string()
    }

    fn snapshot(&self, used: [u64; 3], reset: Duration, retry_after: Option<Duration>) -> RateLimitSnapshot {
        let status = |r: usize| {
            self.limits[r].map(|limit| LimitStatus {
                limit,
                remaining: limit.saturating_sub(used[r]),
                reset,
            })
        };
        RateLimitSnapshot {
            requests: status(0),
            input_tokens: status(1),
            output_tokens: status(2),
            retry_after,
        }
    }
}

impl SharedCharge {
    /// Replaces what the reservation charged with `to`, in place, in the background (the
    /// caller is settling a finished answer and must not wait). Skipped while Redis is failing:
    /// the estimate then stays charged until it expires, the conservative side.
    pub(crate) fn adjust(&self, to: [u64; 3]) {
        // Without per-minute limits nothing in the log is ever read.
        let counted = self.scope.limits.iter().any(Option::is_some);
        if !counted || to == self.amounts || !self.scope.redis.is_up() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (scope, args) = (self.scope.clone(), self.adjust_args(to));
        runtime.spawn(async move {
            let _ = scope.redis.eval(&scope.keys, &args).await;
        });
    }

    /// [`adjust`](Self::adjust), awaited (tests).
    #[cfg(test)]
    pub(crate) async fn adjust_now(&self, to: [u64; 3]) -> Result<(), Unavailable> {
        let args = self.adjust_args(to);
        self.scope
            .redis
            .eval(&self.scope.keys, &args)
            .await
            .map(drop)
            .map_err(Unavailable::from)
    }

    /// Refunds what a failed reserve call may have reserved, in the background, whatever the
    /// gate says (one bounded attempt; nothing to do if the reserve never ran).
    fn cleanup(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let args = self.adjust_args([0; 3]);
        runtime.spawn(async move {
            let _ = self.scope.redis.eval_ungated(&self.scope.keys, &args).await;
        });
    }

    fn adjust_args(&self, to: [u64; 3]) -> Vec<String> {
        let mut args = vec!["adjust".to_owned(), self.scope.window_us(), self.id.clone()];
        args.extend(self.amounts.iter().chain(&to).map(u64::to_string));
        args
    }
}

/// The script's reply, parsed.
enum Reply {
    Admitted {
        /// Redis's clock (µs) when it decided.
        at: u64,
        wait: Duration,
        used: [u64; 3],
        reset: Duration,
    },
    Refused {
        which: i64,
        retry: Duration,
        wait_too_long: bool,
        used: [u64; 3],
        reset: Duration,
    },
}

impl Reply {
    fn parse(value: Value) -> Option<Reply> {
        let Value::Array(items) = value else {
            return None;
        };
        let int = |k: usize| match items.get(k) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let micros = |k: usize| int(k).map(|n| Duration::from_micros(u64::try_from(n).unwrap_or(0)));
        let count = |k: usize| int(k).map(|n| u64::try_from(n).unwrap_or(0));
        match int(0)? {
            1 => Some(Reply::Admitted {
                at: count(1)?,
                wait: micros(2)?,
                used: [count(3)?, count(4)?, count(5)?],
                reset: micros(6)?,
            }),
            _ => Some(Reply::Refused {
                which: int(1)?,
                retry: micros(2)?,
                wait_too_long: int(3)? == 1,
                used: [count(4)?, count(5)?, count(6)?],
                reset: micros(7)?,
            }),
        }
    }
}

/// `config` as one of `instances` local shares: what each instance enforces in process while
/// Redis is down (`on_error: local`). Rounded up, so a limit never becomes zero.
pub(crate) fn local_share(config: &RateLimitConfig, instances: u32) -> RateLimitConfig {
    if instances <= 1 {
        return config.clone();
    }
    let n = u64::from(instances);
    let share = |limit: Option<u64>| limit.map(|l| l.div_ceil(n).max(1));
    RateLimitConfig {
        requests_per_second: config.requests_per_second.map(|r| r / f64::from(instances)),
        burst: Some(config.burst_or_default().div_ceil(instances).max(1)),
        requests_per_minute: share(config.requests_per_minute),
        input_tokens_per_minute: share(config.input_tokens_per_minute),
        output_tokens_per_minute: share(config.output_tokens_per_minute),
        ..config.clone()
    }
}
