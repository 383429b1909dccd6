//! The response cache: exact-match answers kept in memory (moka) and/or Redis, looked up before a
//! request is routed.
//!
//! - [`key`]: what identifies an answer (tenant + model group + path + canonical body, hashed).
//! - [`strategy`]: which requests are worth caching (`conservative`, `selective`, `aggressive`).
//! - [`entry`]: a stored answer, its compressed encoding, streamed ⇄ whole conversions.
//! - `memory` / `redis`: the two tiers; memory is also the near cache in front of Redis.
//!
//! [`CacheLayer`] puts the cache in front of the engine's admission and routing (or any service of
//! [`crate::ProxyRequest`]s): look up (memory, then Redis), else join an identical request already
//! on its way upstream (coalescing), else pass it on and store the answer — a stream only once it
//! has completed normally. Every response gets `x-weir-cache`
//! (`hit`, `miss` or `bypass`) and, on a hit, `age`. The cache never fails a request: a broken
//! Redis is a miss and a counted error. See `docs/caching.md`.

pub mod config;
pub mod entry;
pub mod key;
mod layer;
mod memory;
mod redis;
pub mod strategy;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::watch;

pub use self::config::{CacheConfig, CacheStrategy, MemoryCacheConfig, RedisCacheConfig};
pub use self::key::{CacheKey, request_key, tenant_for_key};
pub use self::layer::{CacheLayer, CacheService};
use self::{
    entry::{Entry, Payload},
    layer::Plan,
    memory::{MemoryCache, Stored},
    redis::RedisCache,
};
pub use crate::request::CacheDirectives;

/// The response header saying what the cache did.
pub const CACHE_HEADER: &str = "x-weir-cache";

/// What the cache did for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache (or from an identical request's upstream call, when coalesced).
    Hit,
    /// Cacheable, not found: the upstream answered (and the answer was stored if allowed).
    Miss,
    /// Not looked up: the cache is off, the strategy does not cache this request, or the client
    /// said `no-cache`.
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// A snapshot of the cache's counters (since start) and size (now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// The configured strategy.
    pub strategy: &'static str,
    /// Requests answered from the cache (all tiers, coalesced included).
    pub hits: u64,
    /// Hits from process memory.
    pub memory_hits: u64,
    /// Hits from Redis.
    pub redis_hits: u64,
    /// Hits that waited for an identical request's upstream call.
    pub coalesced: u64,
    /// Cacheable requests that went upstream.
    pub misses: u64,
    /// Requests the cache did not look up.
    pub bypasses: u64,
    /// Answers stored.
    pub stores: u64,
    /// Answers not stored because they exceeded `max_entry_size`.
    pub too_large: u64,
    /// Entries in process memory.
    pub entries: u64,
    /// Bytes of entries in process memory.
    pub bytes: u64,
    /// Entries evicted from memory to stay within its byte bound.
    pub evictions: u64,
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// Redis calls skipped while Redis was failing (backoff).
    pub redis_skipped: u64,
    /// Whether Redis is believed reachable (`None` without Redis).
    pub redis_up: Option<bool>,
}

/// What followers of an in-flight request learn.
#[derive(Debug, Clone)]
enum Flight {
    Pending,
    Done(Arc<Entry>),
    /// The leader failed, was cancelled, or its answer could not be shared.
    Abandoned,
}

type InFlight = parking_lot::Mutex<HashMap<CacheKey, watch::Sender<Flight>>>;

/// The response cache of one engine.
pub struct Cache {
    config: CacheConfig,
    memory: Option<MemoryCache>,
    redis: Option<RedisCache>,
    in_flight: Arc<InFlight>,
    hits: AtomicU64,
    memory_hits: AtomicU64,
    redis_hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    stores: AtomicU64,
    too_large: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("strategy", &self.config.strategy)
            .field("memory", &self.memory)
            .field("redis", &self.redis)
            .finish()
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Memory,
    Redis,
    Coalesced,
}

impl Cache {
    /// A cache for `config` (tiers are created only when the cache is enabled). It does not fail:
    /// `config` is expected to be valid ([`CacheConfig::validate`], which config loading runs).
    pub fn new(config: CacheConfig) -> Cache {
        let enabled = config.enabled();
        let memory = (enabled && config.memory.enabled).then(|| MemoryCache::new(config.memory.max_bytes));
        let redis = match (&config.redis, enabled) {
            (Some(r), true) => Some(RedisCache::new(r.clone())),
            _ => None,
        };
        Cache {
            config,
            memory,
            redis,
            in_flight: Arc::default(),
            hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            redis_hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypasses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> CacheStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            strategy: self.config.strategy.as_str(),
            hits: n(&self.hits),
            memory_hits: n(&self.memory_hits),
            redis_hits: n(&self.redis_hits),
            coalesced: n(&self.coalesced),
            misses: n(&self.misses),
            bypasses: n(&self.bypasses),
            stores: n(&self.stores),
            too_large: n(&self.too_large),
            entries: self.memory.as_ref().map_or(0, MemoryCache::entries),
            bytes: self.memory.as_ref().map_or(0, MemoryCache::bytes),
            evictions: self.memory.as_ref().map_or(0, MemoryCache::evictions),
            redis_errors: self.redis.as_ref().map_or(0, RedisCache::errors),
            redis_skipped: self.redis.as_ref().map_or(0, RedisCache::skipped),
            redis_up: self.redis.as_ref().map(RedisCache::is_up),
        }
    }

    /// Applies the memory tier's pending housekeeping, so `stats()` entries and bytes are exact.
    pub async fn sync(&self) {
        if let Some(memory) = &self.memory {
            memory.sync().await;
        }
    }

    /// Memory first, then Redis (copying a Redis hit into memory).
    async fn lookup(&self, plan: &Plan) -> Option<(Stored, Tier)> {
        if let Some(memory) = &self.memory
            && let Some(stored) = memory.get(&plan.key).await
        {
            return within_max_age(plan, stored.age()).then_some((stored, Tier::Memory));
        }
        let redis = self.redis.as_ref()?;
        let bytes = redis.get(&plan.key).await.ok()??;
        let entry = match Entry::decode(&bytes, self.config.max_entry_bytes) {
            Ok(entry) => entry,
            Err(why) => {
                tracing::warn!(error = %why, "unreadable redis cache entry: ignored");
                return None;
            }
        };
        let age = Duration::from_millis(unix_ms().saturating_sub(entry.created_unix_ms));
        let ttl = Duration::from_millis(entry.ttl_ms);
        if age >= ttl {
            return None;
        }
        let stored = Stored::new(Arc::new(entry), age, ttl);
        if let Some(memory) = &self.memory {
            memory.insert(plan.key, stored.clone()).await;
        }
        within_max_age(plan, age).then_some((stored, Tier::Redis))
    }

    fn new_entry(&self, deployment: &str, content_type: Option<String>, payload: Payload) -> Entry {
        Entry {
            created_unix_ms: unix_ms(),
            ttl_ms: u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX),
            deployment: deployment.to_owned(),
            content_type,
            payload,
        }
    }

    /// Whether `entry` is within `max_entry_size` (counting it as too large if not).
    fn fits(&self, entry: &Entry) -> bool {
        let fits = entry.payload_bytes() <= self.config.max_entry_bytes;
        if !fits {
            self.too_large.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// Stores in every tier. Redis is awaited (bounded by its timeout) so that an answer is
    /// visible to other instances by the time the client has it.
    async fn store(&self, key: CacheKey, entry: Arc<Entry>) {
        self.stores.fetch_add(1, Ordering::Relaxed);
        let ttl = self.config.ttl;
        if let Some(redis) = &self.redis {
            match entry.encode(self.config.compression_threshold) {
                Ok(bytes) => {
                    let _ = redis.set(&key, bytes, ttl).await;
                }
                Err(why) => tracing::warn!(error = %why, "could not encode a cache entry"),
            }
        }
        if let Some(memory) = &self.memory {
            memory.insert(key, Stored::new(entry, Duration::ZERO, ttl)).await;
        }
    }

    fn join_or_lead(&self, plan: &Plan) -> Role {
        if !self.config.coalesce {
            return Role::Alone;
        }
        let mut map = self.in_flight.lock();
        if let Some(tx) = map.get(&plan.key) {
            return Role::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(Flight::Pending);
        map.insert(plan.key, tx.clone());
        Role::Leader(LeaderGuard {
            in_flight: self.in_flight.clone(),
            key: plan.key,
            tx,
            published: false,
        })
    }
}

enum Role {
    Leader(LeaderGuard),
    Follower(watch::Receiver<Flight>),
    Alone,
}

/// Held by the request that calls upstream for a key others wait on. Publishing hands them the
/// answer; dropping it unpublished (failure, cancellation, interrupted stream) releases them.
struct LeaderGuard {
    in_flight: Arc<InFlight>,
    key: CacheKey,
    tx: watch::Sender<Flight>,
    published: bool,
}

impl LeaderGuard {
    fn publish(mut self, entry: Arc<Entry>) {
        self.published = true;
        self.tx.send_replace(Flight::Done(entry));
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        {
            let mut map = self.in_flight.lock();
            if map.get(&self.key).is_some_and(|tx| tx.same_channel(&self.tx)) {
                map.remove(&self.key);
            }
        }
        if !self.published {
            self.tx.send_replace(Flight::Abandoned);
        }
    }
}

async fn wait_for_leader(mut rx: watch::Receiver<Flight>, wait: Duration) -> Option<Arc<Entry>> {
    let outcome = tokio::time::timeout(wait, rx.wait_for(|f| !matches!(f, Flight::Pending))).await;
    match outcome {
        Ok(Ok(flight)) => match &*flight {
            Flight::Done(entry) => Some(entry.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn within_max_age(plan: &Plan, age: Duration) -> bool {
    plan.max_age.is_none_or(|max| age <= max)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
