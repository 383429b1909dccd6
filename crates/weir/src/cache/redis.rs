//! The shared tier: Redis through a `ConnectionManager` (which reconnects by itself), behind a
//! gate that keeps a sick Redis from costing requests anything.
//!
//! Every call is bounded by `redis.timeout`. A failure (error or timeout) closes the gate for a
//! backoff that doubles from `timeout` up to `max_backoff`; while closed, calls return at once
//! as skipped. When the backoff is over, one call goes through as a probe (the others still skip);
//! its success opens the gate again. So a dead Redis costs one short timeout per backoff period,
//! not one per request, and a slow one never stalls a request longer than `timeout`.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use redis::{AsyncCommands, aio::ConnectionManager, aio::ConnectionManagerConfig};
use tokio::time::Instant;

use super::{config::RedisCacheConfig, key::CacheKey};

/// Why a Redis call produced nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RedisFailure {
    /// The gate is closed after a recent failure: not attempted.
    Skipped,
    /// Attempted: an error or a timeout.
    Failed,
}

/// The Redis tier.
pub(super) struct RedisCache {
    config: RedisCacheConfig,
    /// `None` when the URL does not parse (config loading rejects such URLs; only a config built
    /// by hand and not validated gets here): every call then fails, as with an unreachable Redis.
    client: Option<redis::Client>,
    /// Created on first use: it needs a running tokio runtime, which config loading may not have.
    manager: parking_lot::Mutex<Option<ConnectionManager>>,
    gate: parking_lot::Mutex<Gate>,
    probing: AtomicBool,
    errors: AtomicU64,
    skipped: AtomicU64,
}

#[derive(Debug, Default)]
struct Gate {
    /// Closed until then.
    closed_until: Option<Instant>,
    /// The current backoff; zero when healthy.
    backoff: Duration,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisCache")
            .field("key_prefix", &self.config.key_prefix)
            .field("timeout", &self.config.timeout)
            .finish()
    }
}

impl RedisCache {
    /// A Redis tier; connects lazily.
    ///
    /// It does not fail: `config` is expected to be valid ([`RedisCacheConfig::validate`], which
    /// config loading runs). With a URL that does not parse, every call fails and counts as an
    /// error, as if Redis were unreachable (the cache then serves from memory or the upstream).
    pub(super) fn new(config: RedisCacheConfig) -> RedisCache {
        let client = redis::Client::open(config.url.as_str()).ok();
        if client.is_none() {
            // Never the URL itself: it may carry a password.
            tracing::error!("cache.redis.url is not a valid Redis URL; the Redis cache is unavailable");
        }
        RedisCache {
            config,
            client,
            manager: parking_lot::Mutex::new(None),
            gate: parking_lot::Mutex::new(Gate::default()),
            probing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Failed or timed-out calls so far.
    pub(super) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Calls not attempted because Redis was failing.
    pub(super) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether the gate is open (Redis believed healthy).
    pub(super) fn is_up(&self) -> bool {
        self.gate.lock().closed_until.is_none()
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}:{}", self.config.key_prefix, key.hex())
    }

    fn manager(&self) -> Result<ConnectionManager, RedisFailure> {
        let mut slot = self.manager.lock();
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
            // The gate does the backing off; the manager should fail fast rather than retry inside a call.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.config.max_backoff);
        let manager = self
            .client
            .as_ref()
            .ok_or(RedisFailure::Failed)?
            .get_connection_manager_lazy(config)
            .map_err(|_| RedisFailure::Failed)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Admits a call, or says it is skipped. `true` in the result marks the call as the probe.
    fn admit(&self) -> Result<bool, RedisFailure> {
        let gate = self.gate.lock();
        match gate.closed_until {
            None => Ok(false),
            Some(until) if Instant::now() < until => Err(RedisFailure::Skipped),
            Some(_) => {
                if self.probing.swap(true, Ordering::AcqRel) {
                    Err(RedisFailure::Skipped)
                } else {
                    Ok(true)
                }
            }
        }
    }

    fn settle(&self, ok: bool) {
        let mut gate = self.gate.lock();
        if ok {
            if gate.closed_until.is_some() {
                tracing::info!("redis cache reachable again");
            }
            *gate = Gate::default();
        } else {
            gate.backoff = if gate.backoff.is_zero() {
                self.config.timeout.max(Duration::from_millis(50))
            } else {
                (gate.backoff * 2).min(self.config.max_backoff)
            };
            if gate.closed_until.is_none() {
                tracing::warn!(
                    backoff_ms = gate.backoff.as_millis() as u64,
                    "redis cache failing: serving without it for a while"
                );
            }
            gate.closed_until = Some(Instant::now() + gate.backoff);
        }
    }

    async fn call<T, F>(&self, op: impl FnOnce(ConnectionManager) -> F) -> Result<T, RedisFailure>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let probe = match self.admit() {
            Ok(probe) => probe,
            Err(failure) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Err(failure);
            }
        };
        // Frees the probe slot however this call ends, cancellation included (a request dropped
        // mid-probe must not keep Redis from ever being probed again).
        let _probe = probe.then(|| ProbeSlot(&self.probing));
        let result = match self.manager() {
            Ok(manager) => tokio::time::timeout(self.config.timeout, op(manager)).await,
            Err(failure) => {
                self.settle(false);
                self.errors.fetch_add(1, Ordering::Relaxed);
                return Err(failure);
            }
        };
        match result {
            Ok(Ok(value)) => {
                self.settle(true);
                Ok(value)
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err.kind_str(), "redis cache call failed");
                self.settle(false);
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(RedisFailure::Failed)
            }
            Err(_) => {
                tracing::debug!("redis cache call timed out");
                self.settle(false);
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(RedisFailure::Failed)
            }
        }
    }

    /// The stored bytes for `key`; `Ok(None)` on a plain miss.
    pub(super) async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, RedisFailure> {
        let k = self.redis_key(key);
        self.call(|mut m| async move { m.get::<_, Option<Vec<u8>>>(k).await })
            .await
    }

    /// Stores `value` under `key` for `ttl` (millisecond precision: `SET ... PX`).
    pub(super) async fn set(
        &self,
        key: &CacheKey,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), RedisFailure> {
        let k = self.redis_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call(|mut m| async move {
            redis::cmd("SET")
                .arg(k)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut m)
                .await
        })
        .await
    }
}

struct ProbeSlot<'a>(&'a AtomicBool);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error's category only: messages can echo connection details.
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "Redis" that accepts connections (the kernel's backlog) but never answers: every call
    /// times out. Paused time makes the timeouts and backoffs instant and exact.
    fn silent_redis() -> (std::net::TcpListener, RedisCache) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let cache = RedisCache::new(RedisCacheConfig {
            url,
            key_prefix: "t".to_owned(),
            timeout: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
        });
        (listener, cache)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_close_the_gate_with_a_growing_backoff_and_one_probe() {
        let (_listener, redis) = silent_redis();
        let key = CacheKey([7; 32]);
        assert_eq!(redis.get(&key).await, Err(RedisFailure::Failed));
        assert!(!redis.is_up());
        // During the backoff (50ms), calls cost nothing.
        for _ in 0..10 {
            assert_eq!(redis.get(&key).await, Err(RedisFailure::Skipped));
        }
        tokio::time::advance(Duration::from_millis(60)).await;
        // The probe fails: the backoff doubles (100ms).
        assert_eq!(redis.get(&key).await, Err(RedisFailure::Failed));
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(redis.get(&key).await, Err(RedisFailure::Skipped));
        assert_eq!((redis.errors(), redis.skipped()), (2, 11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_the_probe_slot() {
        let (_listener, redis) = silent_redis();
        let key = CacheKey([7; 32]);
        assert_eq!(redis.get(&key).await, Err(RedisFailure::Failed));
        tokio::time::advance(Duration::from_millis(60)).await;
        {
            let probe = redis.get(&key);
            futures::pin_mut!(probe);
            assert!(futures::poll!(probe.as_mut()).is_pending());
            // While the probe is under way, others skip.
            assert_eq!(redis.get(&key).await, Err(RedisFailure::Skipped));
            // The request holding the probe goes away.
        }
        // The next call probes (and fails) rather than being skipped forever.
        assert_eq!(redis.get(&key).await, Err(RedisFailure::Failed));
    }
}
