//! Usage accounting: requests, errors, tokens and cost, by model, deployment and client key.
//!
//! The engine records into one [`UsageLedger`] as requests settle; [`UsageLedger::snapshot`]
//! (also [`crate::Engine::usage`]) reads it for the admin API, metrics and library callers.
//!
//! - **By model** (the model the client asked for) and **by client** (the identity of the
//!   client's gateway key, such as `key-0`; `anonymous` without one): one request per client
//!   request, an error when it ended in one.
//! - **By deployment**: one request per upstream attempt (retries and fallbacks included), an
//!   error per failed attempt.
//! - Tokens and cost come from the usage the upstream reported on the response that answered
//!   (its body, or a stream's final usage chunk when the stream ends); they count under the
//!   model, the deployment that answered, and the client.
//!
//! Recording is a read lock and a few relaxed atomic adds (a write lock only the first time a
//! name is seen). Cardinality is bounded: model names can come from clients (wildcard groups), so
//! past [`MAX_MODELS`] distinct models the rest fold into `other`; clients and deployments come from
//! config, with the same kind of cap as a safety net.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use parking_lot::RwLock;
use serde::Serialize;

use super::pricing::Cost;
use crate::api::Usage;

/// Distinct model names tracked before the rest fold into [`OTHER`].
pub const MAX_MODELS: usize = 256;
/// Distinct client identities tracked before the rest fold into [`OTHER`].
pub const MAX_CLIENTS: usize = 1024;
/// Distinct deployments tracked before the rest fold into [`OTHER`].
pub const MAX_DEPLOYMENTS: usize = 1024;
/// Where names beyond a cap are counted.
pub const OTHER: &str = "other";
/// The client key of requests without a gateway key.
pub const ANONYMOUS: &str = "anonymous";

/// Cost is summed in nano-dollars so it can be an atomic integer.
const NANOS_PER_USD: f64 = 1e9;

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    cache_write_tokens: AtomicU64,
    cost_nano_usd: AtomicU64,
    unpriced: AtomicU64,
}

impl Counters {
    fn outcome(&self, ok: bool) {
        self.requests.fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    fn tokens(&self, usage: &Usage, cost: Option<&Cost>) {
        let (_, cached, writes, _) = super::pricing::split_usage(usage);
        self.input_tokens.fetch_add(usage.prompt_tokens, Relaxed);
        self.output_tokens.fetch_add(usage.completion_tokens, Relaxed);
        self.cached_tokens.fetch_add(cached, Relaxed);
        self.cache_write_tokens.fetch_add(writes, Relaxed);
        match cost {
            Some(cost) => {
                let nanos = (cost.usd * NANOS_PER_USD).round();
                if nanos.is_finite() && nanos > 0.0 {
                    self.cost_nano_usd.fetch_add(nanos as u64, Relaxed);
                }
            }
            None => {
                self.unpriced.fetch_add(1, Relaxed);
            }
        }
    }

    fn totals(&self) -> UsageTotals {
        UsageTotals {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            cached_tokens: self.cached_tokens.load(Relaxed),
            cache_write_tokens: self.cache_write_tokens.load(Relaxed),
            cost_usd: self.cost_nano_usd.load(Relaxed) as f64 / NANOS_PER_USD,
            unpriced_responses: self.unpriced.load(Relaxed),
        }
    }
}

#[derive(Debug)]
struct Table {
    map: RwLock<HashMap<Arc<str>, Arc<Counters>>>,
    cap: usize,
}

impl Table {
    fn new(cap: usize) -> Table {
        Table {
            map: RwLock::new(HashMap::new()),
            cap,
        }
    }

    fn entry(&self, name: &str) -> Arc<Counters> {
        if let Some(counters) = self.map.read().get(name) {
            return counters.clone();
        }
        let mut map = self.map.write();
        if let Some(counters) = map.get(name) {
            return counters.clone();
        }
        // `other` itself does not count against the cap.
        let full = map.len() - usize::from(map.contains_key(OTHER)) >= self.cap;
        let key: Arc<str> = Arc::from(if full { OTHER } else { name });
        map.entry(key).or_default().clone()
    }

    fn snapshot(&self) -> BTreeMap<String, UsageTotals> {
        self.map
            .read()
            .iter()
            .map(|(name, counters)| (name.to_string(), counters.totals()))
            .collect()
    }
}

/// Running totals; see the module docs for what counts where.
#[derive(Debug)]
pub struct UsageLedger {
    total: Counters,
    by_model: Table,
    by_deployment: Table,
    by_client: Table,
}

impl Default for UsageLedger {
    fn default() -> Self {
        UsageLedger::new()
    }
}

/// Totals of one model, deployment, client, or everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    /// Requests (for a deployment: upstream attempts).
    pub requests: u64,
    /// Of which ended in an error.
    pub errors: u64,
    /// Input tokens as the upstream reported them (cached ones included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
    /// Cost of the priced responses, in USD.
    pub cost_usd: f64,
    /// Responses with usage but no price for their model (their tokens count, their cost does not).
    pub unpriced_responses: u64,
}

/// A point-in-time copy of the ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageSnapshot {
    /// Every request (client requests; attempts are only in `by_deployment`).
    pub total: UsageTotals,
    /// By the model the client asked for.
    pub by_model: BTreeMap<String, UsageTotals>,
    /// By deployment id (requests are upstream attempts).
    pub by_deployment: BTreeMap<String, UsageTotals>,
    /// By client identity (`key-N`, or `anonymous`).
    pub by_client: BTreeMap<String, UsageTotals>,
}

impl UsageLedger {
    /// An empty ledger.
    pub fn new() -> UsageLedger {
        UsageLedger {
            total: Counters::default(),
            by_model: Table::new(MAX_MODELS),
            by_deployment: Table::new(MAX_DEPLOYMENTS),
            by_client: Table::new(MAX_CLIENTS),
        }
    }

    /// A client request ended (`ok`: with a response; a stream counts when it starts).
    pub fn record_request(&self, model: &str, client: Option<&str>, ok: bool) {
        self.total.outcome(ok);
        self.by_model.entry(model).outcome(ok);
        self.by_client.entry(client.unwrap_or(ANONYMOUS)).outcome(ok);
    }

    /// An upstream attempt on `deployment` ended.
    pub fn record_attempt(&self, deployment: &str, ok: bool) {
        self.by_deployment.entry(deployment).outcome(ok);
    }

    /// The usage (and cost, when the model has a price) of a response.
    pub fn record_usage(
        &self,
        model: &str,
        deployment: &str,
        client: Option<&str>,
        usage: &Usage,
        cost: Option<&Cost>,
    ) {
        self.total.tokens(usage, cost);
        self.by_model.entry(model).tokens(usage, cost);
        self.by_deployment.entry(deployment).tokens(usage, cost);
        self.by_client
            .entry(client.unwrap_or(ANONYMOUS))
            .tokens(usage, cost);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            total: self.total.totals(),
            by_model: self.by_model.snapshot(),
            by_deployment: self.by_deployment.snapshot(),
            by_client: self.by_client.snapshot(),
        }
    }
}
