//! Pooled HTTP clients, one per distinct upstream setting, shared process-wide.
//!
//! Building a `reqwest::Client` per request (or per `weir::Client`) would throw away keep-alive
//! connections and TLS sessions. Instead every deployment asks [`HttpPool::shared`] for the pool
//! matching its [`PoolSettings`]: equal settings get the same pool (and so the same connections),
//! different timeouts or limits get their own. The registry holds weak references, so a pool closes
//! its connections once the last engine using it is dropped (e.g. at shutdown).
//!
//! reqwest has no cap on total connections, so the pool enforces `max_connections` (and a per-host
//! cap) with semaphores: a request holds a permit for its whole life, streaming body included.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Weak},
};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::{PoolLimits, Timeouts},
    error::Error,
};

/// Everything that makes two pools different.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolSettings {
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Connection limits.
    pub limits: PoolLimits,
}

/// A shared HTTP client plus the semaphores that bound its connections.
#[derive(Debug)]
pub(crate) struct HttpPool {
    /// The client; cheap to clone, all clones share connections. An error if it could not be
    /// built (reqwest's TLS setup failed): every call through the pool then fails with it.
    client: Result<reqwest::Client, String>,
    /// What this pool was built with.
    settings: PoolSettings,
    /// Caps requests in flight over the whole pool.
    permits: Arc<Semaphore>,
    /// Caps requests in flight per upstream host.
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
}

static REGISTRY: LazyLock<Mutex<HashMap<PoolSettings, Weak<HttpPool>>>> = LazyLock::new(Default::default);

/// Proof that a request may use a connection; released when dropped.
#[derive(Debug)]
pub(crate) struct PoolPermit {
    _pool: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

/// A snapshot of a pool's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests currently holding a connection permit.
    pub in_flight: usize,
    /// The cap.
    pub max_connections: usize,
}

impl HttpPool {
    /// The process-wide pool for these settings, created on first use.
    ///
    /// Building it cannot fail: should the HTTP client itself not build (reqwest's TLS setup
    /// failing, which a config cannot cause), that is logged once and every call through the pool
    /// fails with it, so an engine is always built from a valid config.
    pub(crate) fn shared(settings: PoolSettings) -> Arc<HttpPool> {
        let mut registry = REGISTRY.lock();
        if let Some(pool) = registry.get(&settings).and_then(Weak::upgrade) {
            return pool;
        }
        registry.retain(|_, weak| weak.strong_count() > 0);
        let pool = Arc::new(HttpPool::new(settings));
        registry.insert(settings, Arc::downgrade(&pool));
        pool
    }

    fn new(settings: PoolSettings) -> HttpPool {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            // Per read, so it bounds the wait for a response head and each body read, but never a
            // whole stream. Unary calls are also bounded by the total timeout around them.
            .read_timeout(settings.timeouts.read)
            .pool_max_idle_per_host(settings.limits.max_connections_per_host)
            .pool_idle_timeout(settings.limits.idle_timeout)
            .tcp_nodelay(true)
            // Retries happen in exactly one place (the resilience layer); the client's own
            // retries would multiply upstream calls behind its back.
            .retry(reqwest::retry::never())
            // A redirect could carry our upstream key to another host: treat it as an answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
            .inspect_err(|e| tracing::error!(error = %e, "upstream calls will fail"));
        HttpPool {
            client,
            settings,
            permits: Arc::new(Semaphore::new(settings.limits.max_connections)),
            per_host: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP client (an error if it could not be built).
    pub(crate) fn client(&self) -> Result<&reqwest::Client, Error> {
        self.client.as_ref().map_err(|e| Error::Internal(e.clone()))
    }

    /// Waits (up to the connect timeout) for a connection slot towards `host`.
    pub(crate) async fn acquire(&self, host: &str) -> Result<PoolPermit, Error> {
        let host_sem = {
            let mut map = self.per_host.lock();
            map.entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.limits.max_connections_per_host)))
                .clone()
        };
        // Fast path: free slots are taken without arming a timer.
        if let Ok(host) = host_sem.clone().try_acquire_owned()
            && let Ok(pool) = self.permits.clone().try_acquire_owned()
        {
            return Ok(PoolPermit {
                _pool: pool,
                _host: host,
            });
        }
        let wait = self.settings.timeouts.connect;
        let exhausted = || Error::PoolExhausted { waited: wait };
        let acquire = async {
            // Host first: waiting for a busy host while holding a global slot would starve
            // requests to other hosts.
            let host = host_sem.acquire_owned().await;
            let pool = self.permits.clone().acquire_owned().await;
            match (pool, host) {
                (Ok(p), Ok(h)) => Ok(PoolPermit { _pool: p, _host: h }),
                _ => Err(Error::Unavailable {
                    message: "the upstream connection pool is closed".to_owned(),
                }),
            }
        };
        tokio::time::timeout(wait, acquire)
            .await
            .map_err(|_| exhausted())?
    }

    /// Current use.
    pub(crate) fn stats(&self) -> PoolStats {
        let max = self.settings.limits.max_connections;
        PoolStats {
            in_flight: max - self.permits.available_permits(),
            max_connections: max,
        }
    }
}

/// Connection slots in use per upstream host (`host:port`), over every live pool: what the
/// `weir_upstream_connections_*` gauges show. Pools with equal hosts (different timeouts, same
/// upstream) are added up.
///
/// These are the pool's permits, i.e. requests holding a connection (HTTP/1: one connection each).
/// Idle keep-alive connections are not counted: reqwest does not expose its idle pool.
pub(crate) fn host_stats() -> Vec<(String, PoolStats)> {
    let pools: Vec<Arc<HttpPool>> = REGISTRY.lock().values().filter_map(Weak::upgrade).collect();
    let mut out: Vec<(String, PoolStats)> = Vec::new();
    for pool in pools {
        let cap = pool.settings.limits.max_connections_per_host;
        for (host, sem) in pool.per_host.lock().iter() {
            let in_flight = cap.saturating_sub(sem.available_permits());
            match out.iter_mut().find(|(h, _)| h == host) {
                Some((_, stats)) => {
                    stats.in_flight += in_flight;
                    stats.max_connections += cap;
                }
                None => out.push((
                    host.clone(),
                    PoolStats {
                        in_flight,
                        max_connections: cap,
                    },
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(read_secs: u64) -> PoolSettings {
        PoolSettings {
            timeouts: Timeouts {
                read: Duration::from_secs(read_secs),
                ..Timeouts::default()
            },
            limits: PoolLimits {
                max_connections: 2,
                max_connections_per_host: 1,
                ..PoolLimits::default()
            },
        }
    }

    #[test]
    fn equal_settings_share_a_pool_and_different_ones_do_not() {
        let a = HttpPool::shared(settings(31));
        let b = HttpPool::shared(settings(31));
        let c = HttpPool::shared(settings(32));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[tokio::test(start_paused = true)]
    async fn per_host_cap_waits_then_times_out() {
        let pool = HttpPool::shared(settings(33));
        let first = pool.acquire("a").await.unwrap();
        assert_eq!(pool.stats().in_flight, 1);
        // Host "a" is at its cap of 1: the second waits the connect timeout, then fails as pool exhaustion.
        let err = pool.acquire("a").await.unwrap_err();
        assert!(matches!(err, Error::PoolExhausted { .. }), "{err:?}");
        // Another host still has room.
        let _other = pool.acquire("b").await.unwrap();
        drop(first);
        let _again = pool.acquire("a").await.unwrap();
    }
}
