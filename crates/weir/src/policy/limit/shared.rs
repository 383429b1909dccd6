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

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use redis::{Value, aio::ConnectionManager, aio::ConnectionManagerConfig};
use tokio::time::Instant;

use super::error::{DemandTooLarge, LimitKind, RateLimitError, RateLimited, Refusal};
use super::snapshot::{LimitStatus, RateLimitSnapshot};
use super::window::{Reservation, WINDOW};
use super::{Demand, LimitMode, RateLimitConfig};
use crate::config::{RedisConfig, RedisOnError};

/// Counter: shared-limit Redis calls that failed or timed out.
pub const REDIS_ERRORS: &str = "weir_shared_limits_redis_errors_total";
/// Counter, by `on_error`: limit decisions made without Redis (it was failing).
pub const FALLBACKS: &str = "weir_shared_limits_fallbacks_total";
/// Counter: times Redis answered again after failing (shared limits resumed).
pub const RECOVERIES: &str = "weir_shared_limits_recoveries_total";
/// Gauge: 1 while shared limits reach Redis, 0 while they fall back.
pub const REDIS_UP: &str = "weir_shared_limits_redis_up";

/// The script, versioned by its first line and by the `:v1:` in the keys.
const SCRIPT: &str = include_str!("shared.lua");
const LAYOUT: &str = "v1";
/// KEYS[1] the cooldown key, ARGV[1] its length (ms): only ever lengthened.
const COOLDOWN_SCRIPT: &str = "-- weir shared cooldown v1
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1";

/// One Redis for shared limits: its connection, the failure gate and the script. A cheap handle
/// (an `Arc`); every limiter of an engine shares one.
#[derive(Clone)]
pub struct RedisLimits {
    inner: Arc<Backend>,
}

struct Backend {
    config: RedisConfig,
    /// `None` when the URL does not parse (validation rejects that; a hand-built config may not):
    /// every call then fails, as with an unreachable Redis.
    client: Option<redis::Client>,
    /// Created on first use: it needs a running tokio runtime.
    manager: Mutex<Option<ConnectionManager>>,
    gate: Mutex<Gate>,
    probing: AtomicBool,
    script: redis::Script,
    /// Sets a deployment's shared cooldown unless a longer one is set.
    cooldown_script: redis::Script,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    recoveries: AtomicU64,
}

#[derive(Debug, Default)]
struct Gate {
    closed_until: Option<Instant>,
    backoff: Duration,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisLimits")
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("on_error", &self.inner.config.on_error)
            .field("up", &self.is_up())
            .finish()
    }
}

/// Redis could not decide (failing, timed out, or skipped while the gate is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

/// Why a call produced nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Not attempted: the gate is closed.
    Skipped,
    /// Attempted: an error or a timeout (the script may still have run).
    Failed,
}

impl From<Failure> for Unavailable {
    fn from(_: Failure) -> Unavailable {
        Unavailable
    }
}

impl RedisLimits {
    /// Shared limits through the Redis of `config`; connects lazily.
    ///
    /// It does not fail: `config` is expected to be valid ([`RedisConfig::validate`]). With a
    /// URL that does not parse, every call fails and `on_error` decides.
    pub fn new(config: RedisConfig) -> RedisLimits {
        let client = redis::Client::open(config.url.expose()).ok();
        if client.is_none() {
            tracing::error!("redis.url is not a valid Redis URL; shared rate limits use redis.on_error");
        }
        metrics::gauge!(REDIS_UP).set(1.0);
        RedisLimits {
            inner: Arc::new(Backend {
                config,
                client,
                manager: Mutex::new(None),
                gate: Mutex::new(Gate::default()),
                probing: AtomicBool::new(false),
                script: redis::Script::new(SCRIPT),
                cooldown_script: redis::Script::new(COOLDOWN_SCRIPT),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Whether Redis is believed reachable (the gate is open).
    pub fn is_up(&self) -> bool {
        self.inner.gate.lock().closed_until.is_none()
    }

    /// Failed or timed-out calls so far.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Decisions made without Redis so far (by `on_error`).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// Times Redis answered again after failing.
    pub fn recoveries(&self) -> u64 {
        self.inner.recoveries.load(Ordering::Relaxed)
    }

    /// The keys of the limiter called `name` (`dep:<id>`, `client:<hash>`): one hash tag.
    pub(crate) fn keys(&self, name: &str) -> Keys {
        // Braces would end the hash tag early.
        let name: String = name
            .chars()
            .map(|c| if c == '{' || c == '}' { '_' } else { c })
            .collect();
        let base = format!("{}:rl:{{{name}}}:{LAYOUT}", self.inner.config.key_prefix);
        Keys {
            log: format!("{base}:log"),
            amt: format!("{base}:amt"),
            tat: format!("{base}:tat"),
        }
    }

    fn manager(&self) -> Result<ConnectionManager, Failure> {
        let mut slot = self.inner.manager.lock();
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let timeout = self.inner.config.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // The gate does the backing off; a call should fail fast rather than retry inside.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.inner.config.max_backoff);
        let manager = self
            .inner
            .client
            .as_ref()
            .ok_or(Failure::Failed)?
            .get_connection_manager_lazy(config)
            .map_err(|_| Failure::Failed)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Lets a call through (`Ok(true)`: as the probe), or says the gate is closed.
    fn admit(&self) -> Result<bool, Failure> {
        let gate = self.inner.gate.lock();
        match gate.closed_until {
            None => Ok(false),
            Some(until) if Instant::now() < until => Err(Failure::Skipped),
            Some(_) if self.inner.probing.swap(true, Ordering::AcqRel) => Err(Failure::Skipped),
            Some(_) => Ok(true),
        }
    }

    fn settle(&self, ok: bool) {
        let mut gate = self.inner.gate.lock();
        if ok {
            if gate.closed_until.is_some() {
                tracing::info!("redis reachable again: rate limits are shared again");
                self.inner.recoveries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(RECOVERIES).increment(1);
                metrics::gauge!(REDIS_UP).set(1.0);
            }
            *gate = Gate::default();
            return;
        }
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REDIS_ERRORS).increment(1);
        let config = &self.inner.config;
        gate.backoff = if gate.backoff.is_zero() {
            config.timeout.max(Duration::from_millis(50))
        } else {
            (gate.backoff * 2).min(config.max_backoff)
        };
        if gate.closed_until.is_none() {
            tracing::warn!(
                on_error = config.on_error.as_str(),
                backoff_ms = gate.backoff.as_millis() as u64,
                "redis unreachable: shared rate limits fall back to redis.on_error"
            );
            metrics::gauge!(REDIS_UP).set(0.0);
        }
        gate.closed_until = Some(Instant::now() + gate.backoff);
    }

    /// How long until Redis is tried again (for a fail-closed refusal's `Retry-After`).
    fn retry_in(&self) -> Duration {
        let gate = self.inner.gate.lock();
        gate.closed_until
            .map_or(Duration::ZERO, |until| {
                until.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_secs(1))
    }

    /// Runs the script on `keys` with `args`, bounded by the timeout and the gate.
    async fn eval(&self, keys: &Keys, args: &[String]) -> Result<Value, Failure> {
        let probe = self.admit()?;
        // Frees the probe slot however the call ends, cancellation included.
        let _probe = probe.then(|| ProbeSlot(&self.inner.probing));
        let result = self.eval_ungated(keys, args).await;
        self.settle(result.is_ok());
        result
    }

    /// One bounded script call, whatever the gate says (and without moving it).
    async fn eval_ungated(&self, keys: &Keys, args: &[String]) -> Result<Value, Failure> {
        let mut manager = self.manager()?;
        let mut invocation = self.inner.script.key(&keys.log);
        invocation.key(&keys.amt).key(&keys.tat);
        for arg in args {
            invocation.arg(arg);
        }
        let call = invocation.invoke_async::<Value>(&mut manager);
        match tokio::time::timeout(self.inner.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                // The category only: messages can echo connection details.
                tracing::debug!(error = ?err.kind(), "shared rate limit call failed");
                Err(Failure::Failed)
            }
            Err(_) => {
                tracing::debug!("shared rate limit call timed out");
                Err(Failure::Failed)
            }
        }
    }

    /// The key of deployment `id`'s shared cooldown.
    fn cooldown_key(&self, id: &str) -> String {
        let id: String = id
            .chars()
            .map(|c| if c == '{' || c == '}' { '_' } else { c })
            .collect();
        format!("{}:cd:{{dep:{id}}}:{LAYOUT}", self.inner.config.key_prefix)
    }

    /// How long deployment `id` still rests after a 429 some instance saw (`None`: it does not,
    /// or Redis cannot say, in which case only this instance's own cooldowns apply).
    pub async fn cooldown_remaining(&self, id: &str) -> Option<Duration> {
        if !self.inner.config.share_cooldowns {
            return None;
        }
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.cooldown_key(id));
        let ttl: i64 = self.command(cmd).await.ok()?;
        u64::try_from(ttl)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// Tells every instance that deployment `id` rests for `rest` (in the background; a longer
    /// cooldown already set is kept).
    pub fn start_cooldown(&self, id: &str, rest: Duration) {
        if !self.inner.config.share_cooldowns {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ms = u64::try_from(rest.as_millis()).unwrap_or(u64::MAX).max(1);
        let (this, key) = (self.clone(), self.cooldown_key(id));
        runtime.spawn(async move {
            let probe = match this.admit() {
                Ok(probe) => probe,
                Err(_) => return,
            };
            let _probe = probe.then(|| ProbeSlot(&this.inner.probing));
            let Ok(mut manager) = this.manager() else {
                return;
            };
            let mut invocation = this.inner.cooldown_script.key(key);
            invocation.arg(ms);
            let call = invocation.invoke_async::<i64>(&mut manager);
            let ok = matches!(
                tokio::time::timeout(this.inner.config.timeout, call).await,
                Ok(Ok(_))
            );
            this.settle(ok);
        });
    }

    /// One bounded command through the gate.
    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, Failure> {
        let probe = self.admit()?;
        let _probe = probe.then(|| ProbeSlot(&self.inner.probing));
        let mut manager = self.manager()?;
        let call = cmd.query_async::<T>(&mut manager);
        let ok = match tokio::time::timeout(self.inner.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(Failure::Failed),
        };
        self.settle(ok.is_ok());
        ok
    }

    fn fell_back(&self) {
        self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FALLBACKS, "on_error" => self.inner.config.on_error.as_str()).increment(1);
    }
}

struct ProbeSlot<'a>(&'a AtomicBool);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One limiter's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    log: String,
    amt: String,
    tat: String,
}

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
        self.redis.inner.config.on_error
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
