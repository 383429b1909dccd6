//! The response cache: exact-match answers kept in memory (moka) and/or Redis, looked up before a
//! request is routed.
//!
//! - [`key`]: what identifies an answer (tenant + model group + path + canonical body, hashed).
//! - [`strategy`]: which requests are worth caching (`conservative`, `selective`, `aggressive`).
//! - [`entry`]: a stored answer, its compressed encoding, streamed ⇄ whole conversions.
//! - `memory` / `redis`: the two tiers; memory is also the near cache in front of Redis.
//!
//! [`Cache::execute`] wraps the engine's uncached path: look up (memory, then Redis), else join
//! an identical request already on its way upstream (coalescing), else call upstream and store the
//! answer — a stream only once it has completed normally. Every response gets `x-weir-cache`
//! (`hit`, `miss` or `bypass`) and, on a hit, `age`. The cache never fails a request: a broken
//! Redis is a miss and a counted error. See `docs/caching.md`.

pub mod config;
pub mod entry;
pub mod key;
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

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

pub use self::config::{CacheConfig, CacheStrategy, MemoryCacheConfig, RedisCacheConfig};
pub use self::key::{CacheKey, request_key, tenant_for_key};
use self::{
    entry::{Entry, Payload},
    memory::{MemoryCache, Stored},
    redis::RedisCache,
    strategy::Kind,
};
use crate::{
    engine::{Engine, ProxyBody, ProxyRequest, ProxyResponse},
    error::Error,
    sse::GuardItem,
};

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

/// Per-request cache controls (the client's `Cache-Control`) and whose cache it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// `no-cache`: don't answer from the cache (the fresh answer may still be stored).
    pub no_cache: bool,
    /// `no-store`: don't store this answer.
    pub no_store: bool,
    /// `max-age=N`: only accept a cached answer at most this old.
    pub max_age: Option<Duration>,
    /// Whose cache: entries of one tenant are never served to another. `None` falls back to the
    /// request's client identity (`ProxyRequest::client`), then to one shared anonymous tenant.
    /// The gateway sets it to [`tenant_for_key`] of the client's key.
    pub tenant: Option<Arc<str>>,
}

impl CacheDirectives {
    /// Reads `Cache-Control` (and the HTTP/1.0 `Pragma: no-cache`). Unknown directives are ignored.
    pub fn from_headers(headers: &HeaderMap) -> CacheDirectives {
        let mut d = CacheDirectives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in text.split(',') {
                let directive = directive.trim().to_ascii_lowercase();
                match directive.split_once('=') {
                    None if directive == "no-cache" => d.no_cache = true,
                    None if directive == "no-store" => d.no_store = true,
                    Some((name, value)) if name.trim() == "max-age" => {
                        if let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() {
                            d.max_age = Some(Duration::from_secs(secs));
                        }
                    }
                    _ => {}
                }
            }
        }
        if headers
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        {
            d.no_cache = true;
        }
        d
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

/// What the cache will do for one request.
struct Plan {
    key: CacheKey,
    kind: Kind,
    stream: bool,
    include_usage: bool,
    read: bool,
    write: bool,
    max_age: Option<Duration>,
    model_group: String,
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

    /// Executes `req` through the cache: `engine.execute_uncached` on a miss.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        engine: &Engine,
        req: ProxyRequest,
    ) -> Result<ProxyResponse, Error> {
        let Some(plan) = self.plan(engine, &req) else {
            self.bypasses.fetch_add(1, Ordering::Relaxed);
            return engine
                .execute_uncached(req)
                .await
                .map(|r| mark(r, CacheStatus::Bypass, None));
        };
        let mut leader = None;
        if plan.read {
            if let Some((stored, tier)) = self.lookup(&plan).await
                && let Some(resp) = self.respond(engine, &plan, &stored.entry, stored.age(), tier)
            {
                return Ok(resp);
            }
            match self.join_or_lead(&plan) {
                Role::Leader(guard) => {
                    // Another leader may have stored the answer between our lookup and now.
                    if let Some(memory) = &self.memory
                        && let Some(stored) = memory.get(&plan.key).await
                        && within_max_age(&plan, stored.age())
                        && let Some(resp) =
                            self.respond(engine, &plan, &stored.entry, stored.age(), Tier::Memory)
                    {
                        return Ok(resp);
                    }
                    leader = Some(guard);
                }
                Role::Follower(rx) => {
                    let wait = req.deadline.map_or(self.config.coalesce_timeout, |d| {
                        d.min(self.config.coalesce_timeout)
                    });
                    if let Some(entry) = wait_for_leader(rx, wait).await
                        && let Some(resp) =
                            self.respond(engine, &plan, &entry, Duration::ZERO, Tier::Coalesced)
                    {
                        return Ok(resp);
                    }
                    // The leader failed or is too slow: this request calls the upstream itself.
                }
                Role::Alone => {}
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let status = if plan.read {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        let resp = engine.execute_uncached(req).await?;
        let storable = resp.status == StatusCode::OK;
        let resp = match resp.body {
            ProxyBody::Full(bytes) => {
                if storable {
                    let content_type = resp
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let entry = Arc::new(self.new_entry(
                        &resp.deployment.config.id,
                        content_type,
                        Payload::Full(bytes.clone()),
                    ));
                    if plan.write && self.fits(&entry) {
                        self.store(plan.key, entry.clone()).await;
                    }
                    // Waiting requests get the answer even when it is too large to keep.
                    if let Some(leader) = leader.take() {
                        leader.publish(entry);
                    }
                }
                ProxyResponse {
                    body: ProxyBody::Full(bytes),
                    ..resp
                }
            }
            ProxyBody::Stream(stream) => {
                let recorder = Recorder {
                    cache: self.clone(),
                    key: plan.key,
                    write: plan.write && storable,
                    deployment: resp.deployment.config.id.clone(),
                    leader: leader.take(),
                    events: Vec::new(),
                    size: 0,
                    spoiled: !storable,
                };
                ProxyResponse {
                    body: ProxyBody::Stream(recorder.wrap(stream)),
                    ..resp
                }
            }
        };
        Ok(mark(resp, status, None))
    }

    /// Decides whether and how the cache handles `req`; `None` to bypass it.
    fn plan(&self, engine: &Engine, req: &ProxyRequest) -> Option<Plan> {
        if !self.config.enabled() {
            return None;
        }
        let kind = strategy::kind_of(req.endpoint, &req.method, req.path.as_str())?;
        let directives = &req.cache;
        let no_cache = directives.no_cache || directives.max_age == Some(Duration::ZERO);
        if no_cache && directives.no_store {
            return None;
        }
        // Bad JSON is the engine's to reject with a proper 400.
        let body: Value = serde_json::from_slice(&req.body).ok()?;
        if !body.is_object() {
            return None;
        }
        if let Err(why) = strategy::decide(&self.config, kind, &body) {
            tracing::debug!(reason = why, "not cacheable");
            return None;
        }
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => engine.config().default_model.clone()?,
        };
        let model_group = engine.config().group_for(&model)?.name.clone();
        let tenant: &str = directives
            .tenant
            .as_deref()
            .or(req.client.as_deref())
            .unwrap_or("anonymous");
        let key = request_key(tenant, &model_group, req.path.as_str(), &body);
        Some(Plan {
            key,
            kind,
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            read: !no_cache,
            write: !directives.no_store,
            max_age: directives.max_age,
            model_group,
        })
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

    /// The answer to `plan`'s request from `entry`, converted between streamed and whole when
    /// needed; `None` if it can't be (the request then goes upstream).
    fn respond(
        &self,
        engine: &Engine,
        plan: &Plan,
        entry: &Entry,
        age: Duration,
        tier: Tier,
    ) -> Option<ProxyResponse> {
        let chat = plan.kind == Kind::Chat;
        let body = match (&entry.payload, plan.stream) {
            (Payload::Full(bytes), false) => ProxyBody::Full(bytes.clone()),
            (Payload::Events(events), true) => {
                if plan.include_usage && chat && !entry::events_have_usage(events) {
                    return None;
                }
                let events: Vec<Bytes> = events
                    .iter()
                    .filter(|e| plan.include_usage || !chat || !entry::is_usage_only_chunk(e))
                    .cloned()
                    .collect();
                replay(events)
            }
            (Payload::Full(bytes), true) if chat => {
                replay(entry::completion_to_events(bytes, plan.include_usage)?)
            }
            (Payload::Events(events), false) if chat => ProxyBody::Full(entry::events_to_completion(events)?),
            _ => return None,
        };
        let deployment = engine
            .deployment(&entry.deployment)
            .filter(|d| *d.model_group == *plan.model_group)
            .or_else(|| engine.deployments().find(|d| *d.model_group == *plan.model_group))?
            .clone();
        let mut headers = HeaderMap::new();
        let content_type = match (&body, &entry.content_type) {
            (ProxyBody::Stream(_), _) => "text/event-stream",
            (ProxyBody::Full(_), Some(ct)) if !ct.starts_with("text/event-stream") => ct.as_str(),
            (ProxyBody::Full(_), _) => "application/json",
        };
        if let Ok(v) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        match tier {
            Tier::Memory => &self.memory_hits,
            Tier::Redis => &self.redis_hits,
            Tier::Coalesced => &self.coalesced,
        }
        .fetch_add(1, Ordering::Relaxed);
        let resp = ProxyResponse {
            status: StatusCode::OK,
            headers,
            body,
            model_group: deployment.model_group.clone(),
            deployment,
        };
        Some(mark(resp, CacheStatus::Hit, Some(age)))
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

/// Records a stream as it passes to the client and stores it when it ends normally. A stream
/// that fails, is cut off, grows past `max_entry_size`, or is dropped by a departing client is
/// never stored (the recorder is simply dropped with it).
struct Recorder {
    cache: Arc<Cache>,
    key: CacheKey,
    write: bool,
    deployment: String,
    leader: Option<LeaderGuard>,
    events: Vec<Bytes>,
    size: usize,
    /// Not storable any more (failed, too large, or not a 200).
    spoiled: bool,
}

impl Recorder {
    fn wrap(self, inner: BoxStream<'static, GuardItem>) -> BoxStream<'static, GuardItem> {
        futures::stream::unfold((inner, Some(self)), |(mut inner, mut rec)| async move {
            match inner.next().await {
                Some(GuardItem::Events(bytes)) => {
                    if let Some(r) = rec.as_mut() {
                        r.record(&bytes);
                    }
                    Some((GuardItem::Events(bytes), (inner, rec)))
                }
                Some(failed @ GuardItem::Failed(..)) => {
                    // Dropping the recorder releases any followers to call upstream themselves.
                    Some((failed, (inner, None)))
                }
                None => {
                    if let Some(r) = rec.take() {
                        r.finish().await;
                    }
                    None
                }
            }
        })
        .boxed()
    }

    fn record(&mut self, bytes: &Bytes) {
        if self.spoiled {
            return;
        }
        self.size += bytes.len();
        if self.size > self.cache.config.max_entry_bytes {
            self.spoiled = true;
            self.events = Vec::new();
            self.cache.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        entry::split_events(bytes, &mut self.events);
    }

    async fn finish(mut self) {
        if self.spoiled || self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        // (`record` already stopped at the size limit.)
        let entry = Arc::new(self.cache.new_entry(
            &self.deployment,
            Some("text/event-stream".to_owned()),
            Payload::Events(events),
        ));
        if self.write {
            self.cache.store(self.key, entry.clone()).await;
        }
        if let Some(leader) = self.leader.take() {
            leader.publish(entry);
        }
    }
}

fn replay(events: Vec<Bytes>) -> ProxyBody {
    ProxyBody::Stream(futures::stream::iter(events.into_iter().map(GuardItem::Events)).boxed())
}

fn within_max_age(plan: &Plan, age: Duration) -> bool {
    plan.max_age.is_none_or(|max| age <= max)
}

/// Adds `x-weir-cache` (and `age` on a hit, in whole seconds as HTTP says).
fn mark(mut resp: ProxyResponse, status: CacheStatus, age: Option<Duration>) -> ProxyResponse {
    resp.headers
        .insert(CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    if let Some(age) = age {
        resp.headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    resp
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_parsed_leniently() {
        let parse = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CACHE_CONTROL, v.parse().unwrap());
            }
            CacheDirectives::from_headers(&h)
        };
        assert_eq!(parse(&[]), CacheDirectives::default());
        let d = parse(&["No-Cache, max-age=\"30\"", "no-store"]);
        assert!(d.no_cache && d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        let d = parse(&["max-age=abc, private, no-transform"]);
        assert_eq!(d, CacheDirectives::default());
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, "no-cache".parse().unwrap());
        assert!(CacheDirectives::from_headers(&h).no_cache);
    }
}
