//! The link to Redis: one connection for every shared limiter of an engine, the failure gate
//! (timeout, backoff, one probe), the scripts, and the shared cooldowns.

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

use super::{FALLBACKS, RECOVERIES, REDIS_ERRORS, REDIS_UP};
use crate::config::RedisConfig;

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
pub(super) enum Failure {
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
    pub(super) fn keys(&self, name: &str) -> Keys {
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
    pub(super) fn retry_in(&self) -> Duration {
        let gate = self.inner.gate.lock();
        gate.closed_until
            .map_or(Duration::ZERO, |until| {
                until.saturating_duration_since(Instant::now())
            })
            .max(Duration::from_secs(1))
    }

    /// Runs the script on `keys` with `args`, bounded by the timeout and the gate.
    pub(super) async fn eval(&self, keys: &Keys, args: &[String]) -> Result<Value, Failure> {
        let probe = self.admit()?;
        // Frees the probe slot however the call ends, cancellation included.
        let _probe = probe.then(|| ProbeSlot(&self.inner.probing));
        let result = self.eval_ungated(keys, args).await;
        self.settle(result.is_ok());
        result
    }

    /// One bounded script call, whatever the gate says (and without moving it).
    pub(super) async fn eval_ungated(&self, keys: &Keys, args: &[String]) -> Result<Value, Failure> {
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
    /// (The engine hands this link to a deployment's gate only with `share_cooldowns`.)
    pub async fn cooldown_remaining(&self, id: &str) -> Option<Duration> {
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

    pub(super) fn fell_back(&self) {
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
    pub(super) log: String,
    pub(super) amt: String,
    pub(super) tat: String,
}
