//! The in-process cache: moka (TinyLFU admission, LRU eviction) bounded in bytes by a weigher,
//! with a TTL per entry.
//!
//! moka expires entries on its own clock, which tokio cannot pause; each stored value therefore
//! also carries its deadline on tokio's clock, checked on every read. moka's expiry reclaims the
//! memory; the tokio deadline decides what a reader sees (and lets tests pause time).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::{Expiry, future::Cache, notification::RemovalCause};
use tokio::time::Instant;

use super::{entry::Entry, key::CacheKey};

/// A value in memory: the entry and when it was created and expires, on tokio's clock.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    /// The answer.
    pub entry: Arc<Entry>,
    /// When it was created (for a copy of a Redis entry: when the original was).
    pub created: Instant,
    /// When readers stop seeing it.
    pub expires: Instant,
}

impl Stored {
    /// A value created `age` ago that lives `ttl` from its creation.
    pub(super) fn new(entry: Arc<Entry>, age: Duration, ttl: Duration) -> Stored {
        let now = Instant::now();
        let created = now.checked_sub(age).unwrap_or(now);
        Stored {
            entry,
            created,
            expires: created + ttl,
        }
    }

    /// Time since creation.
    pub(super) fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

struct PerEntryTtl;

impl Expiry<CacheKey, Stored> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Stored,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(Instant::now()))
    }
}

/// The memory tier.
pub(super) struct MemoryCache {
    cache: Cache<CacheKey, Stored>,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of entries (by [`Entry::weight`]).
    pub(super) fn new(max_bytes: u64) -> MemoryCache {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Stored| v.entry.weight())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_k, _v, cause| {
                // Only removals to stay within the byte bound are evictions; expiry is not.
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryCache { cache, evictions }
    }

    /// The live value for `key`, if any.
    pub(super) async fn get(&self, key: &CacheKey) -> Option<Stored> {
        let stored = self.cache.get(key).await?;
        if Instant::now() >= stored.expires {
            self.cache.invalidate(key).await;
            return None;
        }
        Some(stored)
    }

    /// Stores a value (replacing any).
    pub(super) async fn insert(&self, key: CacheKey, stored: Stored) {
        self.cache.insert(key, stored).await;
    }

    /// Applies pending evictions, so the counts below are exact (tests; stats readers).
    pub(super) async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Entries held.
    pub(super) fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Bytes held (sum of weights).
    pub(super) fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Entries removed to stay within the byte bound.
    pub(super) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Payload;
    use bytes::Bytes;

    fn entry(size: usize) -> Arc<Entry> {
        Arc::new(Entry {
            created_unix_ms: 0,
            ttl_ms: 60_000,
            deployment: "d".to_owned(),
            content_type: None,
            payload: Payload::Full(Bytes::from(vec![b'x'; size])),
        })
    }

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_own_ttl() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .insert(
                key(1),
                Stored::new(entry(10), Duration::ZERO, Duration::from_secs(10)),
            )
            .await;
        cache
            .insert(
                key(2),
                Stored::new(entry(10), Duration::ZERO, Duration::from_secs(60)),
            )
            .await;
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(cache.get(&key(1)).await.is_some());
        assert_eq!(cache.get(&key(1)).await.unwrap().age(), Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get(&key(1)).await.is_none(), "past its 10s TTL");
        assert!(cache.get(&key(2)).await.is_some(), "its own TTL is 60s");
        // A copy of an entry already 55s old (from Redis) has 5s left.
        cache
            .insert(
                key(3),
                Stored::new(entry(10), Duration::from_secs(55), Duration::from_secs(60)),
            )
            .await;
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cache.get(&key(3)).await.is_none());
    }

    #[tokio::test]
    async fn the_bound_is_in_bytes_and_evictions_are_counted() {
        // 64 KiB of room; 100 entries of ~4 KiB each cannot all fit.
        let cache = MemoryCache::new(64 << 10);
        for n in 0..100u8 {
            cache
                .insert(
                    key(n),
                    Stored::new(entry(4000), Duration::ZERO, Duration::from_secs(60)),
                )
                .await;
            cache.sync().await;
        }
        cache.sync().await;
        assert!(cache.bytes() <= 64 << 10, "{} bytes held", cache.bytes());
        assert!(cache.entries() <= 16, "{} entries", cache.entries());
        assert!(cache.entries() >= 1);
        assert!(cache.evictions() > 0);
        // A single entry larger than the whole cache is never held.
        cache
            .insert(
                key(200),
                Stored::new(entry(100 << 10), Duration::ZERO, Duration::from_secs(60)),
            )
            .await;
        cache.sync().await;
        assert!(cache.get(&key(200)).await.is_none());
        assert!(cache.bytes() <= 64 << 10);
    }
}
