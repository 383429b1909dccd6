//! One limiter per key.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::window::WINDOW;
use super::{Demand, RateLimitConfig, RateLimitError, RateLimiter, RedisLimits, Reservation};

/// One [`RateLimiter`] per key, all with the same [`RateLimitConfig`]: e.g. per gateway client key,
/// so that one tenant using up its limits leaves the others theirs.
///
/// A key's limiter is created on its first use. Memory stays bounded by the keys in recent use:
/// a limiter is evicted once its key has been unused for longer than the 60 s window *and* the
/// limiter is back in the state of a new one (bucket full, nobody waiting, nothing counted in the
/// windows), so eviction never forgives anything: re-creating it later behaves exactly as keeping
/// it would have. A limiter someone still holds (from [`limiter`](Self::limiter)) is kept too, so
/// that a key never has two limiters at once. Eviction runs as a sweep at most once per window,
/// from whichever call comes along (no background task), or on demand with
/// [`evict_idle`](Self::evict_idle); each sweep is O(keys), so the cost per call stays O(1)
/// amortised.
pub struct KeyedLimiter<K> {
    config: RateLimitConfig,
    state: Mutex<KeyedState<K>>,
    /// Shared through Redis: each key's limiter is named by this function.
    shared: Option<(RedisLimits, Namer<K>)>,
}

/// Names a key's shared limiter (the same name on every instance).
type Namer<K> = Arc<dyn Fn(&K) -> String + Send + Sync>;

struct KeyedState<K> {
    limiters: HashMap<K, Slot>,
    next_sweep: Instant,
}

struct Slot {
    limiter: RateLimiter,
    last_used: Instant,
}

impl<K> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("config", &self.config)
            .field("keys", &self.state.lock().limiters.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// Limits each key with `config`, which is expected to be valid (see [`RateLimiter::new`]).
    pub fn new(config: RateLimitConfig) -> Self {
        KeyedLimiter {
            config,
            state: Mutex::new(KeyedState {
                limiters: HashMap::new(),
                next_sweep: Instant::now() + WINDOW,
            }),
            shared: None,
        }
    }

    /// Limits each key with `config` across every instance sharing `redis`
    /// ([`RateLimiter::shared`]); `name` names a key's limiter, the same on every instance (and
    /// without secrets: it is part of a Redis key). Evicting an idle key's limiter forgets only
    /// its local share; its shared state stays in Redis.
    pub fn shared(
        config: RateLimitConfig,
        redis: RedisLimits,
        name: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> Self {
        KeyedLimiter {
            shared: Some((redis, Arc::new(name))),
            ..KeyedLimiter::new(config)
        }
    }

    /// The limits each key gets.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The limiter of `key`, created if it has none.
    pub fn limiter(&self, key: &K) -> RateLimiter {
        let now = Instant::now();
        let mut state = self.state.lock();
        if now >= state.next_sweep {
            state.sweep(now);
        }
        if let Some(slot) = state.limiters.get_mut(key) {
            slot.last_used = now;
            return slot.limiter.clone();
        }
        let limiter = match &self.shared {
            Some((redis, name)) => RateLimiter::shared(self.config.clone(), redis, &name(key)),
            None => RateLimiter::new(self.config.clone()),
        };
        state.limiters.insert(
            key.clone(),
            Slot {
                limiter: limiter.clone(),
                last_used: now,
            },
        );
        limiter
    }

    /// [`RateLimiter::reserve`] on `key`'s limiter.
    pub fn reserve(
        &self,
        key: &K,
        demand: Demand,
    ) -> impl Future<Output = Result<Reservation, RateLimitError>> + Send + use<K> {
        self.limiter(key).reserve(demand)
    }

    /// [`RateLimiter::try_reserve`] on `key`'s limiter.
    pub fn try_reserve(&self, key: &K, demand: Demand) -> Result<Reservation, RateLimitError> {
        self.limiter(key).try_reserve(demand)
    }

    /// How many keys have a limiter.
    pub fn len(&self) -> usize {
        self.state.lock().limiters.len()
    }

    /// Whether no key has a limiter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts every idle limiter now (see the type docs); returns how many.
    pub fn evict_idle(&self) -> usize {
        self.state.lock().sweep(Instant::now())
    }
}

impl<K: Hash + Eq> KeyedState<K> {
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.limiters.len();
        self.limiters.retain(|_, slot| {
            let idle = now.saturating_duration_since(slot.last_used) >= WINDOW
                && Arc::strong_count(&slot.limiter.inner) == 1
                && slot.limiter.is_idle(now);
            !idle
        });
        self.next_sweep = now + WINDOW;
        before - self.limiters.len()
    }
}
