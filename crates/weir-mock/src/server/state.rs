//! Shared server state: configuration, counters, `fail_times` bookkeeping and recorded requests.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;
use parking_lot::{Mutex, RwLock};

use super::chaos::{Chaos, ChaosConfig};

/// How many requests [`MockState::recorded`] keeps (oldest dropped first).
pub const RECORD_LIMIT: usize = 256;

/// Distinct paths counted by [`MockState::count_for_path`]; beyond this new paths are not
/// tracked, so a fuzzing client cannot grow the map without bound.
const MAX_TRACKED_PATHS: usize = 10_000;

/// Server configuration.
#[derive(Clone)]
pub struct MockConfig {
    /// When set, every request must carry `Authorization: Bearer <key>` or gets a 401.
    pub required_api_key: Option<String>,
    /// Keep the last [`RECORD_LIMIT`] requests (method, path, headers, body) for inspection.
    /// Turn off for benchmarks: recording copies every header map.
    pub record_bodies: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            required_api_key: None,
            record_bodies: true,
        }
    }
}

impl fmt::Debug for MockConfig {
    // The key is a secret in spirit even in tests: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field(
                "required_api_key",
                &self.required_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("record_bodies", &self.record_bodies)
            .finish()
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Path and query as sent, e.g. `"/v1/chat/completions"`.
    pub path_and_query: String,
    /// All request headers.
    pub headers: HeaderMap,
    /// The complete request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Counters and recordings shared by every request a mock server handles.
///
/// Counting is lock-free (atomics) except the per-path map, which takes a read lock on the hot
/// path and a write lock only the first time a path is seen.
#[derive(Debug, Default)]
pub struct MockState {
    /// Immutable configuration.
    config: MockConfig,
    /// Requests received since start or the last [`reset`](Self::reset).
    requests: AtomicU64,
    /// Requests whose response (including a streamed body) is not finished yet.
    in_flight: AtomicU64,
    /// Requests per path (no query).
    paths: RwLock<HashMap<Box<str>, AtomicU64>>,
    /// How many requests each `fail_key` has seen, for `fail_times`.
    fail_counts: Mutex<HashMap<String, u64>>,
    /// The last [`RECORD_LIMIT`] requests, oldest first.
    recorded: Mutex<VecDeque<RecordedRequest>>,
    /// Fault mix, derived content and per-prompt counts, when chaos mode is on.
    chaos: Option<Chaos>,
    /// Error answers quote the `Authorization` header received (see [`set_echo_auth`](Self::set_echo_auth)).
    echo_auth: AtomicBool,
}

impl MockState {
    /// A fresh state with `config`.
    pub fn new(config: MockConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// A fresh state with `config` and chaos mode (faults drawn per request, derived content).
    pub fn with_chaos(config: MockConfig, chaos: ChaosConfig) -> Self {
        Self {
            config,
            chaos: Some(Chaos::new(chaos)),
            ..Self::default()
        }
    }

    /// The chaos configuration, if chaos mode is on.
    pub fn chaos_config(&self) -> Option<&ChaosConfig> {
        self.chaos.as_ref().map(|chaos| &chaos.config)
    }

    /// Generation calls received for `prompt` (the text of the last message, see
    /// [`prompt_text`](crate::content::prompt_text)); counted only in chaos mode with derived
    /// content. A driver compares it with the gateway's attempt limit.
    pub fn calls_for_prompt(&self, prompt: &str) -> u32 {
        self.chaos
            .as_ref()
            .map_or(0, |chaos| chaos.calls_for(crate::content::prompt_hash(prompt)))
    }

    /// How many generation requests got each fault (and `none`), in chaos mode.
    pub fn injected_faults(&self) -> Vec<(String, u64)> {
        self.chaos.as_ref().map_or_else(Vec::new, Chaos::injected)
    }

    pub(crate) fn chaos(&self) -> Option<&Chaos> {
        self.chaos.as_ref()
    }

    /// Makes every error answer (scripted faults, the 401 of a wrong key) quote the
    /// `Authorization` header it received, as a careless upstream does: for testing that the
    /// gateway never relays the key it sent.
    pub fn set_echo_auth(&self, on: bool) {
        self.echo_auth.store(on, Ordering::Relaxed);
    }

    /// Whether error answers quote the `Authorization` header.
    pub fn echo_auth(&self) -> bool {
        self.echo_auth.load(Ordering::Relaxed)
    }

    /// The configuration this state was built with.
    pub fn config(&self) -> &MockConfig {
        &self.config
    }

    /// Every request received, counted on arrival (before authentication or any fault).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests received for `path`, e.g. `"/v1/chat/completions"` (a `?query` is ignored).
    pub fn count_for_path(&self, path: &str) -> u64 {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        self.paths
            .read()
            .get(path)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Requests not finished yet; a stream counts until its body ends or is dropped.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many requests carrying `fail_times` with this `fail_key` were seen ("" when the
    /// requests gave no key).
    pub fn fail_key_count(&self, fail_key: &str) -> u64 {
        self.fail_counts.lock().get(fail_key).copied().unwrap_or(0)
    }

    /// The recorded requests, oldest first (at most [`RECORD_LIMIT`]; empty when
    /// [`MockConfig::record_bodies`] is off).
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().iter().cloned().collect()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.recorded.lock().back().cloned()
    }

    /// Zeroes the counters and forgets recordings and `fail_times` progress. Requests still in
    /// flight stay counted in [`in_flight`](Self::in_flight), which is live, not historical.
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.paths.write().clear();
        self.fail_counts.lock().clear();
        self.recorded.lock().clear();
    }

    /// Counts a request on arrival; the guard keeps it in flight until dropped.
    pub(crate) fn arrive(self: &Arc<Self>, path: &str) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let counted = self
            .paths
            .read()
            .get(path)
            .map(|count| count.fetch_add(1, Ordering::Relaxed))
            .is_some();
        if !counted {
            let mut paths = self.paths.write();
            // Another request may have inserted the path between the two locks.
            if let Some(count) = paths.get(path) {
                count.fetch_add(1, Ordering::Relaxed);
            } else if paths.len() < MAX_TRACKED_PATHS {
                paths.insert(path.into(), AtomicU64::new(1));
            }
        }
        InFlight(Arc::clone(self))
    }

    /// Records a request if recording is on.
    pub(crate) fn record(&self, parts: &Parts, body: &Bytes) {
        if !self.config.record_bodies {
            return;
        }
        let request = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        let mut recorded = self.recorded.lock();
        if recorded.len() >= RECORD_LIMIT {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }

    /// Counts one more request for `fail_key` and returns how many it has now seen.
    pub(crate) fn bump_fail_count(&self, fail_key: &str) -> u64 {
        let mut counts = self.fail_counts.lock();
        let count = counts.entry(fail_key.to_owned()).or_insert(0);
        *count += 1;
        *count
    }
}

/// Keeps a request counted in [`MockState::in_flight`] while alive.
pub(crate) struct InFlight(Arc<MockState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
