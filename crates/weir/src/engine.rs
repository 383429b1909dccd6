//! The engine: one request in, one upstream answer (or error) out.
//!
//! Both faces of Weir call [`Engine::execute`]: the gateway with the client's raw bytes, the
//! library's [`crate::Client`] with serialised typed requests. The engine reads only the fields it
//! routes on (`model`, `stream`), picks a deployment of the model's group, rewrites `model` when the
//! upstream names it differently (leaving every other byte alone), calls the provider, and turns
//! non-success answers into [`Error`]s, in one place for every provider.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, future::join_all};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    api::{Model, ModelList, Usage, parse_upstream_error},
    body::RawObject,
    config::{Config, DeploymentConfig, ProviderKind},
    error::Error,
    error::TimeoutPhase,
    path::ApiPath,
    policy::retry::RetryBudget,
    policy::{
        breaker::{BreakerPermit, CircuitBreaker, Outcome},
        limit::{Demand, KeyedLimiter, RateLimitError, RateLimiter, Reservation},
    },
    route::{
        balance::{Balancer, Candidate, InFlight, LoadStats},
        health::{Health, HealthCheckHandle, spawn_checker},
    },
    sse::{GuardItem, OnStreamEnd, StreamEnd, guard, usage_in},
    telemetry::{self, RequestSummary, ThrottleScope},
    tokens::{PriceTable, UsageLedger, UsageSnapshot},
    upstream::{
        AnthropicProvider, ByteStream, GeminiProvider, MockProvider, OpenAiProvider, Provider, UpstreamBody,
        UpstreamRequest,
    },
};

mod reload;
mod status;

pub use status::{
    BreakerDetail, DeploymentStats, DeploymentStatus, LatencySummary, LimitUsage, PoolUsage, RateLimitUsage,
};
use tracing::Instrument;

/// Which API a request is for; decides validation and stream handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// Any other `/v1/*` path, forwarded as it is.
    Passthrough,
}

impl Endpoint {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::ImageGenerations => "image_generations",
            Endpoint::Passthrough => "passthrough",
        }
    }
}

/// A request for the engine.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// Which API.
    pub endpoint: Endpoint,
    /// HTTP method (POST for the typed endpoints).
    pub method: Method,
    /// Path relative to `/v1`, e.g. `chat/completions`.
    pub path: ApiPath,
    /// Query string without `?`.
    pub query: Option<String>,
    /// The body as received.
    pub body: Bytes,
    /// The body's content type, when not JSON (multipart uploads on pass-through paths).
    pub content_type: Option<HeaderValue>,
    /// Correlation id, forwarded upstream.
    pub request_id: Option<String>,
    /// The client's own deadline for this request, if shorter than the configured one.
    pub deadline: Option<Duration>,
    /// Which client sent it (an identity such as `key-0`, never a key), for per-client limits.
    pub client: Option<Arc<str>>,
    /// The client's cache controls (`Cache-Control`) and cache tenant.
    pub cache: crate::cache::CacheDirectives,
}

impl ProxyRequest {
    /// A bodiless `GET` of an API path (model listings, probes).
    pub fn get(path: ApiPath) -> ProxyRequest {
        ProxyRequest {
            method: Method::GET,
            path,
            ..ProxyRequest::json(Endpoint::Passthrough, Bytes::new())
        }
    }

    /// A JSON POST to one of the typed endpoints.
    pub fn json(endpoint: Endpoint, body: Bytes) -> ProxyRequest {
        let path = match endpoint {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::ImageGenerations => "images/generations",
            Endpoint::Passthrough => "models",
        };
        ProxyRequest {
            endpoint,
            method: Method::POST,
            path: ApiPath::known(path),
            query: None,
            body,
            content_type: None,
            request_id: None,
            deadline: None,
            client: None,
            cache: Default::default(),
        }
    }
}

/// The engine's answer.
pub struct ProxyResponse {
    /// Status from the upstream (always a success: failures are [`Error`]s).
    pub status: StatusCode,
    /// Headers worth passing to the client (content type, processing time).
    pub headers: HeaderMap,
    /// The body.
    pub body: ProxyBody,
    /// Which deployment served it.
    pub deployment: Arc<Deployment>,
    /// The model group.
    pub model_group: Arc<str>,
}

impl ProxyResponse {
    /// The response's cost in USD (the [`crate::tokens::COST_HEADER`] header): set on complete
    /// responses whose usage was reported and whose model has a price. A stream's cost is only
    /// known when it ends; it lands in the usage ledger ([`Engine::usage`]).
    pub fn cost_usd(&self) -> Option<f64> {
        self.headers
            .get(crate::tokens::COST_HEADER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// A successful answer's body.
pub enum ProxyBody {
    /// Complete.
    Full(Bytes),
    /// An SSE stream, guarded: if it breaks, its last item is an error event.
    Stream(futures::stream::BoxStream<'static, GuardItem>),
}

/// One upstream, ready to call.
#[derive(Debug)]
pub struct Deployment {
    /// From config.
    pub config: DeploymentConfig,
    /// Model group it belongs to.
    pub model_group: Arc<str>,
    provider: Arc<dyn Provider>,
    /// Until when it rests after the upstream answered 429 (it is skipped by routing meanwhile).
    cooldown_until: parking_lot::Mutex<Option<Instant>>,
    /// Stops calls to a failing upstream for a while; `None` when disabled in config.
    breaker: Option<CircuitBreaker>,
    /// This deployment's (this upstream key's) rate limits; `None` when unlimited.
    limiter: Option<RateLimiter>,
    /// Requests in flight and a decaying latency average, for the balancer.
    load: Arc<LoadStats>,
    /// What background probes say (always healthy when health checks are off).
    health: Health,
}

/// How long a deployment rests after a 429 that came without `Retry-After`.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// A sanity cap on an upstream's `Retry-After`, so a bogus value can't bench a deployment for days.
const MAX_COOLDOWN: Duration = Duration::from_secs(300);

impl Deployment {
    /// The deployment's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// How long it still rests after a 429, if it does.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let until = (*self.cooldown_until.lock())?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Takes the deployment out of rotation for `rest` (a 429's `Retry-After`). A 429 means "not
    /// now", not "broken": it does not count against the circuit breaker.
    fn start_cooldown(&self, rest: Duration) {
        let until = Instant::now() + rest;
        let mut current = self.cooldown_until.lock();
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
        tracing::warn!(
            deployment = self.id(),
            rest_ms = rest.as_millis() as u64,
            "upstream rate-limited us: cooling down"
        );
    }

    /// The deployment's circuit breaker, for inspection and manual control (`force_open`...).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// Live load: requests in flight and the latency estimate.
    pub fn load(&self) -> &Arc<LoadStats> {
        &self.load
    }

    /// What its background health checks say.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// This deployment's rate limiter, for inspection (`snapshot()`).
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }

    /// Claims the right to call this deployment now for `demand`: not cooling down after a 429,
    /// its breaker admitting (which may take a half-open probe slot), and its rate limits having
    /// room (a reservation). Otherwise says why and for how long.
    fn admit(&self, demand: Demand) -> Result<Settlement, Unusable> {
        let unusable = |kind, wait, reason: String| Unusable { kind, wait, reason };
        if let Some(rest) = self.cooldown_remaining() {
            let reason = format!("`{}` is cooling down after a 429", self.id());
            return Err(unusable(UnusableKind::Cooldown, rest, reason));
        }
        if !self.health.is_healthy() {
            // Not worth waiting for: probes run every interval and need several successes.
            let reason = format!("`{}` is failing its health checks", self.id());
            return Err(unusable(
                UnusableKind::BreakerOpen,
                Duration::from_secs(1),
                reason,
            ));
        }
        if let Some(breaker) = &self.breaker
            && !breaker.is_call_permitted()
        {
            let wait = match breaker.state() {
                crate::policy::breaker::BreakerState::Open { remaining } => remaining,
                // All probe slots busy: one frees as soon as a probe answers.
                crate::policy::breaker::BreakerState::HalfOpen => Duration::from_secs(1),
                _ => breaker.config().open_timeout,
            };
            let reason = format!("`{}` has its circuit breaker open", self.id());
            return Err(unusable(UnusableKind::BreakerOpen, wait, reason));
        }
        let reservation = match &self.limiter {
            None => None,
            Some(limiter) => match limiter.try_reserve(demand) {
                Ok(reservation) => Some(reservation),
                Err(RateLimitError::Limited(limited)) => {
                    let reason = format!("`{}` is at its rate limit ({limited})", self.id());
                    return Err(unusable(UnusableKind::RateLimited, limited.retry_after, reason));
                }
                Err(RateLimitError::TooLarge(too_large)) => {
                    let reason = format!("`{}`: {too_large}", self.id());
                    return Err(unusable(UnusableKind::TooLarge, Duration::MAX, reason));
                }
            },
        };
        self.acquire_breaker(reservation)
    }

    /// Takes the breaker permit for a call that already holds its rate-limit reservation (which
    /// is given back if the breaker refuses).
    fn acquire_breaker(&self, reservation: Option<Reservation>) -> Result<Settlement, Unusable> {
        let permit = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.try_acquire() {
                Ok(permit) => Some(permit),
                Err(open) => {
                    if let Some(reservation) = reservation {
                        reservation.refund();
                    }
                    return Err(Unusable {
                        kind: UnusableKind::BreakerOpen,
                        wait: open.retry_in,
                        reason: format!("`{}` has its circuit breaker open", self.id()),
                    });
                }
            },
        };
        Ok(Settlement {
            permit,
            reservations: reservation.into_iter().collect(),
            _in_flight: Some(self.load.start()),
        })
    }
}

/// What one attempt holds until its outcome is known: the breaker permit and rate-limit
/// reservations. Settling records the outcome with the breaker and gives back what the limits
/// over-reserved; dropping it unsettled counts for neither (the call never finished).
#[derive(Default)]
struct Settlement {
    permit: Option<BreakerPermit>,
    reservations: Vec<Reservation>,
    /// Counts the call as in flight for the balancer until the settlement is done with (dropped).
    _in_flight: Option<InFlight>,
}

impl Settlement {
    fn succeeded(self, usage: Option<&Usage>) {
        if let Some(permit) = self.permit {
            permit.record(Outcome::Success);
        }
        for reservation in self.reservations {
            match usage {
                Some(u) => reservation.reconcile(u.prompt_tokens, u.completion_tokens),
                // No usage reported: keep the estimate charged (it is an upper bound for output).
                None => drop(reservation),
            }
        }
    }

    /// Gives everything back unused: the call is not made after all.
    fn release(self) {
        for reservation in self.reservations {
            reservation.refund();
        }
        // The permit is dropped unrecorded: neither success nor failure.
    }

    fn failed(self, err: &Error) {
        if let Some(permit) = self.permit {
            permit.record(Outcome::from_error(err));
        }
        for reservation in self.reservations {
            if matches!(err, Error::Connect { .. }) {
                // The request never reached the upstream.
                reservation.refund();
            } else {
                // It did, and generated nothing: the request counts, the tokens go back.
                reservation.reconcile(0, 0);
            }
        }
    }

    fn stream_ended(self, end: &StreamEnd) {
        if let Some(permit) = self.permit {
            permit.record(match (end.completed, end.error) {
                (true, _) => Outcome::Success,
                (false, Some(_)) => Outcome::Failure,
                // The client went away: that says nothing about the upstream.
                (false, None) => Outcome::Ignored,
            });
        }
        for reservation in self.reservations {
            if let Some(u) = &end.usage {
                reservation.reconcile(u.prompt_tokens, u.completion_tokens);
            }
        }
    }
}

/// Why a deployment can't be used right now.
struct Unusable {
    kind: UnusableKind,
    /// When it may be usable again.
    wait: Duration,
    /// For the client's error message.
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnusableKind {
    /// Resting after a 429: worth waiting for, within limits.
    Cooldown,
    /// Its own rate limits are full: worth queueing for (in arrival order, up to `max_wait`).
    RateLimited,
    /// Breaker open: rejects at once; waiting would hold requests against a failing upstream.
    BreakerOpen,
    /// The request alone exceeds one of its limits.
    TooLarge,
}

/// The outcome of choosing a deployment.
enum Pick<'a> {
    /// Use this one (holding its breaker permit and reservation).
    Ready(&'a Arc<Deployment>, Settlement),
    /// Every usable one is at its rate limit: queue on this one's limiter.
    Queue(&'a Arc<Deployment>),
    /// None is usable now; the soonest worth waiting for is usable after this long (the second
    /// duration is the longest that deployment's retry policy lets a request wait).
    Wait(Duration, Duration, String),
    /// None is usable and none is worth waiting for.
    Unavailable(Duration, String),
    /// The request exceeds the limits of every deployment.
    TooLarge(String),
}

#[derive(Debug)]
struct Group {
    name: Arc<str>,
    wildcard: bool,
    deployments: Vec<Arc<Deployment>>,
    /// Orders the deployments for each request (strategy, weights, priority tiers).
    balancer: Balancer,
    /// Shared by the group's deployments, since retries move between them.
    retry_budget: RetryBudget,
    /// Indices (into the engine's groups) tried in order when this group is exhausted.
    fallbacks: Vec<usize>,
    /// Indices of larger-context groups for prompts this group's upstreams find too long.
    context_window_fallbacks: Vec<usize>,
}

impl Group {
    fn matches(&self, model: &str) -> bool {
        crate::config::model_matches(&self.name, model)
    }

    /// The first usable deployment in the balancer's order, preferring ones this request has not
    /// `tried` yet (a retry should not go back to the deployment that just failed while another,
    /// possibly in a later priority tier, can take it).
    fn pick(&self, demand: Demand, tried: &[Arc<Deployment>]) -> Result<Pick<'_>, Error> {
        if self.deployments.is_empty() {
            return Err(Error::Internal(format!(
                "model group `{}` has no deployments",
                self.name
            )));
        }
        let candidates: Vec<Candidate<'_>> = self
            .deployments
            .iter()
            .map(|d| Candidate {
                weight: d.config.weight,
                priority: d.config.priority,
                load: &d.load,
            })
            .collect();
        let mut unusable = Vec::new();
        let mut order = self.balancer.order(&candidates);
        if !tried.is_empty() {
            // Retries only: untried deployments first, keeping the balancer's order within each
            // part (a stable sort on "already tried").
            order.sort_by_key(|&i| {
                self.deployments
                    .get(i)
                    .is_some_and(|d| tried.iter().any(|t| Arc::ptr_eq(t, d)))
            });
        }
        for index in order {
            let Some(deployment) = self.deployments.get(index) else {
                continue;
            };
            match deployment.admit(demand) {
                Ok(settlement) => return Ok(Pick::Ready(deployment, settlement)),
                Err(why) => unusable.push((deployment, why)),
            }
        }
        let soonest = |kind: UnusableKind| {
            unusable
                .iter()
                .filter(|(_, u)| u.kind == kind)
                .min_by_key(|(_, u)| u.wait)
        };
        let reasons = || {
            unusable
                .iter()
                .map(|(_, u)| u.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        Ok(
            if let Some((deployment, _)) = soonest(UnusableKind::RateLimited) {
                Pick::Queue(deployment)
            } else if let Some((deployment, u)) = soonest(UnusableKind::Cooldown) {
                Pick::Wait(u.wait, deployment.config.retry.max_retry_after, reasons())
            } else if let Some((_, u)) = soonest(UnusableKind::BreakerOpen) {
                Pick::Unavailable(u.wait, reasons())
            } else {
                Pick::TooLarge(reasons())
            },
        )
    }

    /// A usable deployment if there is one, else the first (for calls that can't wait, like model
    /// listings).
    fn pick_any(&self) -> Result<&Arc<Deployment>, Error> {
        // A listing reserves nothing against rate limits.
        match self.pick(Demand::default(), &[])? {
            Pick::Ready(deployment, _) | Pick::Queue(deployment) => Ok(deployment),
            Pick::Wait(..) | Pick::Unavailable(..) | Pick::TooLarge(..) => self
                .deployments
                .first()
                .ok_or_else(|| Error::Internal(format!("model group `{}` has no deployments", self.name))),
        }
    }

    /// A deployment by id (for manual control and health reports).
    fn find(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.id() == id)
    }
}

/// The routing and calling core. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    /// Set once background health checks are running.
    health_checks_started: std::sync::atomic::AtomicBool,
    /// Per-client-key limits (`server.client_rate_limits`), keyed by client identity. An `Arc` so
    /// that a config reload that leaves them unchanged keeps what each client has used.
    client_limiter: Option<Arc<KeyedLimiter<Arc<str>>>>,
    groups: Vec<Group>,
    /// Model prices: the built-in table with the config's `pricing:` laid over it.
    prices: PriceTable,
    /// Requests, errors, tokens and cost so far (shared with streams, which record when they end).
    usage: Arc<UsageLedger>,
    /// The response cache (bypasses everything when disabled).
    cache: Arc<crate::cache::Cache>,
    /// Whether any input-token limit applies, so requests are worth tokenizing exactly.
    counts_input_tokens: bool,
}

/// Health of one deployment, from a `GET models` probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The deployment and its routing state (breaker, cooldown, load...), as routing sees it.
    #[serde(flatten)]
    pub state: DeploymentStatus,
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    /// Upstream HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Round-trip time of the probe.
    pub latency_ms: f64,
    /// Why it is unhealthy.
    pub error: Option<String>,
}

/// The background health check part of a [`ProbeReport`].
#[derive(Debug, Clone, Serialize)]
pub struct BackgroundCheck {
    /// Whether routing uses the deployment.
    pub healthy: bool,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Latency of the latest probe, if it succeeded.
    pub last_latency_ms: Option<f64>,
    /// Error of the latest probe, if it failed.
    pub last_error: Option<String>,
    /// Probes run so far.
    pub checks: u64,
}

const ERROR_BODY_LIMIT: usize = 64 * 1024;

impl Engine {
    /// Builds providers (and joins shared connection pools) for every deployment.
    ///
    /// `config` is expected to be validated ([`Config::load`], [`Config::from_yaml`],
    /// [`Config::from_env`], or the sections' `validate` methods for a config built by hand):
    /// limits, breakers, health checks, the cache and provider headers are built from it without
    /// being checked again. What can still fail is creating the HTTP clients.
    pub fn new(config: Config) -> Result<Engine, Error> {
        Engine::build(config, None)
    }

    /// [`Engine::new`], keeping the live state of `previous` where the config allows (see
    /// [`Engine::reload`]).
    fn build(config: Config, previous: Option<&Engine>) -> Result<Engine, Error> {
        let mut groups = Vec::with_capacity(config.models.len());
        for group in &config.models {
            let name: Arc<str> = Arc::from(group.name.as_str());
            let mut deployments = Vec::with_capacity(group.deployments.len());
            for dep in &group.deployments {
                if let Some(kept) = previous.and_then(|p| p.reusable_deployment(&name, dep)) {
                    deployments.push(kept);
                    continue;
                }
                let provider: Arc<dyn Provider> = match dep.provider {
                    ProviderKind::OpenAi | ProviderKind::Azure => Arc::new(OpenAiProvider::new(dep)?),
                    ProviderKind::Gemini => Arc::new(GeminiProvider::new(dep)?),
                    ProviderKind::Mock => Arc::new(MockProvider),
                    ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(dep)?),
                };
                deployments.push(Arc::new(Deployment {
                    cooldown_until: parking_lot::Mutex::new(None),
                    breaker: dep.circuit_breaker.map(|c| {
                        let breaker = CircuitBreaker::new(dep.id.clone(), c);
                        telemetry::watch_breaker(&breaker);
                        breaker
                    }),
                    load: Arc::new(LoadStats::new()),
                    health: Health::new(dep.id.clone()),
                    limiter: dep.rate_limits.clone().map(RateLimiter::new),
                    config: dep.clone(),
                    model_group: name.clone(),
                    provider,
                }));
            }
            let index_of = |names: &[String]| {
                names
                    .iter()
                    .filter_map(|n| config.models.iter().position(|g| &g.name == n))
                    .collect::<Vec<_>>()
            };
            groups.push(Group {
                fallbacks: index_of(&group.fallbacks),
                context_window_fallbacks: index_of(&group.context_window_fallbacks),
                retry_budget: RetryBudget::new(config.resilience.retry_budget),
                name,
                wildcard: group.is_wildcard(),
                deployments,
                balancer: Balancer::new(group.strategy),
            });
        }
        let client_limiter = match previous.and_then(|p| p.reusable_client_limiter(&config)) {
            Some(kept) => Some(kept),
            None => config
                .server
                .client_rate_limits
                .clone()
                .map(|c| Arc::new(KeyedLimiter::new(c))),
        };
        // Exact input counts only matter to input-token limits: without any, a request is not
        // tokenized at all (that costs tens of microseconds per KiB of prompt, on the request's task).
        let counts_input_tokens = config
            .server
            .client_rate_limits
            .iter()
            .chain(
                config
                    .models
                    .iter()
                    .flat_map(|g| g.deployments.iter())
                    .filter_map(|d| d.rate_limits.as_ref()),
            )
            .any(|limits| limits.input_tokens_per_minute.is_some());
        if counts_input_tokens {
            // Load the vocabularies before the first request needs them.
            crate::tokens::warm_up();
        }
        Ok(Engine {
            counts_input_tokens,
            prices: PriceTable::builtin().with_overrides(&config.pricing),
            // Usage so far is history, not config: a reload keeps counting into the same ledger.
            usage: previous.map_or_else(|| Arc::new(UsageLedger::new()), |p| p.usage.clone()),
            // A reload with the same cache settings keeps the cache (entries, counters, Redis link).
            cache: match previous.filter(|p| *p.cache.config() == config.cache) {
                Some(p) => p.cache.clone(),
                None => Arc::new(crate::cache::Cache::new(config.cache.clone())),
            },
            config,
            client_limiter,
            groups,
            health_checks_started: Default::default(),
        })
    }

    /// The configuration this engine runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Usage totals so far: requests, errors, tokens and cost by model, deployment and client key.
    pub fn usage(&self) -> UsageSnapshot {
        self.usage.snapshot()
    }

    /// The usage ledger itself (for recording usage of responses served elsewhere).
    pub fn usage_ledger(&self) -> &UsageLedger {
        &self.usage
    }

    /// The prices this engine computes costs with.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// A deployment by id.
    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.groups.iter().find_map(|g| g.find(id))
    }

    /// Every deployment, in config order.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.iter().flat_map(|g| g.deployments.iter())
    }

    fn group_for(&self, model: &str) -> Option<&Group> {
        // Groups are built in config order, so the config's choice indexes them.
        self.config.group_index(model).and_then(|i| self.groups.get(i))
    }

    /// The response cache's counters and size now.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.cache.stats()
    }

    /// The response cache.
    pub fn cache(&self) -> &crate::cache::Cache {
        &self.cache
    }

    /// Executes one request: from the response cache when it has the answer (see
    /// [`crate::cache`]), else routed upstream.
    pub async fn execute(&self, req: ProxyRequest) -> Result<ProxyResponse, Error> {
        self.cache.execute(self, req).await
    }

    /// Routes and executes one request, retrying retryable failures (see [`crate::policy::retry`]). Each
    /// retry picks a deployment again, so with several deployments it moves on to the next one.
    pub(crate) async fn execute_uncached(&self, req: ProxyRequest) -> Result<ProxyResponse, Error> {
        let parsed = self.parse(&req)?;
        let group = self
            .group_for(&parsed.model)
            .ok_or_else(|| self.config.model_not_found(&parsed.model))?;
        let resilience = &self.config.resilience;
        let time_allowed = req.deadline.map_or(resilience.request_deadline, |d| {
            d.min(resilience.request_deadline)
        });
        let deadline = Instant::now() + time_allowed;

        // The client's own limits are taken once per request, before any routing.
        let mut limit_headers = Vec::new();
        let client_reservation = match (&self.client_limiter, &req.client) {
            (Some(limiter), Some(client)) => {
                let reserved = tokio::time::timeout_at(deadline, limiter.reserve(client, parsed.demand))
                    .await
                    .map_err(|_| Error::Timeout {
                        phase: TimeoutPhase::Deadline,
                        after: time_allowed,
                    })
                    .and_then(|r| {
                        r.map_err(|e| throttled(ThrottleScope::Client, None, format!("client {client}"), e))
                    })
                    .inspect_err(|_| self.usage.record_request(&parsed.model, Some(client), false))?;
                limit_headers = reserved.headers();
                Some(reserved)
            }
            _ => None,
        };
        let client_reservation = parking_lot::Mutex::new(client_reservation);
        let window = Window {
            deadline,
            time_allowed,
        };
        RequestSummary::update_current(|s| {
            s.model = Some(parsed.model.clone());
            s.model_group = Some(group.name.clone());
            s.stream = parsed.stream;
        });
        let result = self
            .route_with_fallbacks(&req, &parsed, group, window, &client_reservation)
            .instrument(telemetry::trace::route_span(&parsed.model, &group.name))
            .await;
        self.usage
            .record_request(&parsed.model, req.client.as_deref(), result.is_ok());
        // Whatever the attempts did not hand on: a failed request counts, its tokens go back.
        if let Some(reservation) = client_reservation.lock().take() {
            match &result {
                Ok(_) => drop(reservation),
                Err(Error::RateLimited { .. } | Error::RequestTooLarge { .. }) => reservation.refund(),
                Err(_) => reservation.reconcile(0, 0),
            }
        }
        let mut resp = result?;
        for (name, value) in limit_headers {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                resp.headers.insert(name, value);
            }
        }
        Ok(resp)
    }

    /// Picks deployments and calls them until one answers, a failure is final, or the deadline,
    /// the retry policy or the retry budget says stop.
    /// The group, then (if it is exhausted by failures another group could fix) its fallbacks in
    /// order; a prompt too long for the group's upstreams goes to its context-window fallbacks.
    /// All share one attempt budget, so a request never fans out beyond `max_retries + 1` calls.
    async fn route_with_fallbacks(
        &self,
        req: &ProxyRequest,
        parsed: &Parsed,
        group: &Group,
        window: Window,
        client_reservation: &parking_lot::Mutex<Option<Reservation>>,
    ) -> Result<ProxyResponse, Error> {
        let mut attempts_left = group
            .deployments
            .iter()
            .map(|d| d.config.retry.max_retries)
            .max()
            .unwrap_or(0)
            + 1;
        let has_fallbacks = !group.fallbacks.is_empty();
        let mut result = self
            .route(
                req,
                parsed,
                group,
                window,
                client_reservation,
                &mut attempts_left,
                has_fallbacks,
                true,
            )
            .await;
        let next_groups = match &result {
            Err(err) if is_context_window_error(err) => &group.context_window_fallbacks,
            Err(err) if falls_back(err) => &group.fallbacks,
            _ => return result,
        };
        for (i, &index) in next_groups.iter().enumerate() {
            let Some(next) = self.groups.get(index) else {
                continue;
            };
            if attempts_left == 0 || Instant::now() >= window.deadline {
                break;
            }
            tracing::warn!(
                from = &*group.name,
                to = &*next.name,
                error = result.as_ref().err().map_or("-", |e| e.kind().as_str()),
                "falling back to another model group"
            );
            let more_after = i + 1 < next_groups.len();
            result = self
                .route(
                    req,
                    parsed,
                    next,
                    window,
                    client_reservation,
                    &mut attempts_left,
                    more_after,
                    false,
                )
                .await;
            match &result {
                Err(err) if falls_back(err) || is_context_window_error(err) => continue,
                _ => break,
            }
        }
        result
    }

    /// Picks deployments of `group` and calls them until one answers, a failure is final, or the
    /// deadline, the retry policy, the retry budget or the shared attempt budget says stop. With
    /// `yield_when_exhausted`, it stops as soon as every deployment was tried (or none is usable)
    /// so the caller can fall back to another group.
    #[allow(clippy::too_many_arguments)]
    async fn route(
        &self,
        req: &ProxyRequest,
        parsed: &Parsed,
        group: &Group,
        window: Window,
        client_reservation: &parking_lot::Mutex<Option<Reservation>>,
        attempts_left: &mut u32,
        yield_when_exhausted: bool,
        first_group: bool,
    ) -> Result<ProxyResponse, Error> {
        let Window {
            deadline,
            time_allowed,
        } = window;
        let past_deadline = || Error::Timeout {
            phase: TimeoutPhase::Deadline,
            after: time_allowed,
        };
        if first_group {
            group.retry_budget.deposit();
        }
        let mut tried: Vec<Arc<Deployment>> = Vec::with_capacity(group.deployments.len());
        let mut retry = 0;
        // Once an upstream has failed in this request, running out of usable deployments ends it
        // with that failure (e.g. the upstream's 429 and its Retry-After), not a generic 503.
        let mut last_err: Option<Error> = None;
        let nothing_usable = |last_err: Option<Error>, wait: Duration, reason: String| {
            last_err.unwrap_or_else(|| no_deployment(group, wait, reason))
        };
        loop {
            let (deployment, settlement) = match group.pick(parsed.demand, &tried)? {
                // A group that can fall back gives up on a deployment that already failed this
                // request rather than call it again: its fallbacks are the better bet.
                Pick::Ready(deployment, settlement)
                    if yield_when_exhausted && tried.iter().any(|t| Arc::ptr_eq(t, deployment)) =>
                {
                    settlement.release();
                    return Err(nothing_usable(last_err, Duration::ZERO, String::new()));
                }
                Pick::Ready(deployment, settlement) => (deployment.clone(), settlement),
                Pick::Queue(deployment) => {
                    // Only a deployment's own limiter sends a request here; without one, looping
                    // back would pick the same outcome forever.
                    let Some(limiter) = deployment.limiter() else {
                        return Err(Error::Internal(format!(
                            "`{}` queued without a rate limiter",
                            deployment.id()
                        )));
                    };
                    // Waits in arrival order (up to the limiter's max_wait, or not at all in
                    // fail_fast mode) for this deployment's limits to have room.
                    let reservation = tokio::time::timeout_at(deadline, limiter.reserve(parsed.demand))
                        .await
                        .map_err(|_| past_deadline())?
                        .map_err(|e| {
                            let scope = format!("deployment `{}`", deployment.id());
                            throttled(ThrottleScope::Deployment, Some(deployment.id()), scope, e)
                        })?;
                    match deployment.acquire_breaker(Some(reservation)) {
                        Ok(settlement) => (deployment.clone(), settlement),
                        Err(why) => return Err(no_deployment(group, why.wait, why.reason)),
                    }
                }
                Pick::Wait(wait, _, reason) if yield_when_exhausted => {
                    return Err(nothing_usable(last_err, wait, reason));
                }
                Pick::Wait(wait, max_wait, reason) => {
                    // Up to 10 % jitter, so requests parked on the same cooldown don't all hit
                    // the upstream in the same millisecond when it ends.
                    let jittered = wait.mul_f64(1.0 + 0.1 * fastrand::f64());
                    if wait > max_wait || Instant::now() + jittered >= deadline {
                        return Err(nothing_usable(last_err, wait, reason));
                    }
                    tokio::time::sleep(jittered).await;
                    continue;
                }
                Pick::Unavailable(wait, reason) => return Err(nothing_usable(last_err, wait, reason)),
                Pick::TooLarge(reason) => {
                    return Err(Error::RequestTooLarge {
                        scope: format!("model `{}`", group.name),
                        detail: reason,
                    });
                }
            };
            // Every attempt runs inside what is left of the request's deadline.
            let pending = parking_lot::Mutex::new(Some(settlement));
            *attempts_left = attempts_left.saturating_sub(1);
            if !tried.iter().any(|t| Arc::ptr_eq(t, &deployment)) {
                tried.push(deployment.clone());
            }
            let attempt = self.attempt(req, parsed, group, &deployment, &pending, client_reservation);
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(err)) => err,
                Err(_) => {
                    let err = past_deadline();
                    if let Some(settlement) = pending.lock().take() {
                        // An upstream that outlived the configured deadline is failing. One that
                        // outlived a deadline the client shortened says nothing: counting it would
                        // let any client open the breaker for everyone with a tiny timeout.
                        if time_allowed >= self.config.resilience.request_deadline {
                            settlement.failed(&err);
                        }
                    }
                    return Err(err);
                }
            };
            let policy = &deployment.config.retry;
            if let Error::Upstream {
                status, retry_after, ..
            } = &err
                && status.as_u16() == 429
            {
                deployment.start_cooldown(retry_after.unwrap_or(DEFAULT_COOLDOWN).min(MAX_COOLDOWN));
            }
            if *attempts_left == 0 || (yield_when_exhausted && tried.len() >= group.deployments.len()) {
                return Err(err);
            }
            let wait = if err.kind() == crate::ErrorKind::UpstreamRateLimited {
                // The cooldown keeps this deployment out of rotation for its Retry-After, however
                // long: the next pick takes another deployment at once, waits for a short cooldown,
                // or (nothing usable) ends the request with this 429.
                if retry >= policy.max_retries {
                    return Err(err);
                }
                Duration::ZERO
            } else {
                match policy.delay(retry, &err, fastrand::f64()) {
                    Some(wait) => wait,
                    None => return Err(err),
                }
            };
            if Instant::now() + wait >= deadline {
                tracing::warn!(
                    deployment = deployment.id(),
                    error = err.kind().as_str(),
                    "no time left for a retry before the deadline"
                );
                return Err(err);
            }
            if !group.retry_budget.try_withdraw() {
                tracing::warn!(
                    deployment = deployment.id(),
                    model_group = &*group.name,
                    error = err.kind().as_str(),
                    "retry budget exhausted: failing without retrying"
                );
                return Err(err);
            }
            retry += 1;
            telemetry::record_retry(&group.name, deployment.id(), err.kind());
            last_err = Some(err.clone());
            tracing::warn!(
                deployment = deployment.id(),
                retry,
                max_retries = policy.max_retries,
                wait_ms = wait.as_millis() as u64,
                error = err.kind().as_str(),
                "retrying upstream call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One upstream call, settling its breaker permit and reservations: no retries here.
    ///
    /// A stream settles when it ends (a stream cut mid-way is a failure, its usage reconciles the
    /// limits); anything else settles here. If this future is dropped (client gone), the
    /// settlement is dropped unsettled: the breaker counts it as neither success nor failure, and
    /// the reservations stay charged; past the request deadline, `route` settles it.
    async fn attempt(
        &self,
        req: &ProxyRequest,
        parsed: &Parsed,
        group: &Group,
        deployment: &Arc<Deployment>,
        pending: &parking_lot::Mutex<Option<Settlement>>,
        client_reservation: &parking_lot::Mutex<Option<Reservation>>,
    ) -> Result<ProxyResponse, Error> {
        let started = Instant::now();
        let span = telemetry::attempt_started(
            req,
            group.name.clone(),
            deployment,
            upstream_model(group, deployment, parsed),
        );
        let result = self
            .attempt_inner(req, parsed, group, deployment, pending, client_reservation)
            .instrument(span.clone())
            .await;
        telemetry::attempt_finished(&span, deployment, started.elapsed(), &result);
        if result.is_ok() {
            // Time to the answer (to the first event, for a stream): what lowest_latency ranks by.
            deployment.load.observe_latency(started.elapsed());
        }
        self.usage.record_attempt(deployment.id(), result.is_ok());
        let mut result = result;
        // A complete answer's usage: its cost (a header), the ledger, the limits' reconciliation.
        let usage = match &mut result {
            Ok(resp) => match &resp.body {
                ProxyBody::Full(bytes) => {
                    let usage = usage_in(bytes);
                    if let Some(usage) = &usage {
                        let model = upstream_model(group, deployment, parsed);
                        let cost = self.prices.get(model).map(|p| p.cost(usage));
                        if let Some(cost) = &cost {
                            crate::tokens::set_cost_header(&mut resp.headers, cost);
                            RequestSummary::update_current(|s| s.cost_usd = Some(cost.usd));
                        }
                        let client = req.client.as_deref();
                        self.usage
                            .record_usage(&parsed.model, deployment.id(), client, usage, cost.as_ref());
                    }
                    usage
                }
                ProxyBody::Stream(_) => None,
            },
            Err(_) => None,
        };
        if let Some(mut settlement) = pending.lock().take() {
            match &result {
                Ok(_) => {
                    // This attempt answers the request: the client's reservation settles with it.
                    settlement.reservations.extend(client_reservation.lock().take());
                    settlement.succeeded(usage.as_ref());
                }
                Err(err) => settlement.failed(err),
            }
        }
        result
    }

    async fn attempt_inner(
        &self,
        req: &ProxyRequest,
        parsed: &Parsed,
        group: &Group,
        deployment: &Arc<Deployment>,
        pending: &parking_lot::Mutex<Option<Settlement>>,
        client_reservation: &parking_lot::Mutex<Option<Reservation>>,
    ) -> Result<ProxyResponse, Error> {
        let target = upstream_model(group, deployment, parsed);
        let body = match &parsed.object {
            Some(obj) if target != parsed.model && parsed.model_in_body => {
                Some(obj.to_bytes_with_str("model", target)?)
            }
            _ if req.body.is_empty() => None,
            _ => Some(req.body.clone()),
        };
        let upstream_req = UpstreamRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            body,
            // The typed endpoints are JSON whatever the client labelled them (`curl -d` says
            // form-urlencoded); only pass-through keeps the client's type (multipart uploads).
            content_type: match req.endpoint {
                Endpoint::Passthrough => req.content_type.clone(),
                _ => None,
            },
            stream: parsed.stream,
            request_id: req.request_id.clone(),
            traceparent: telemetry::trace::upstream_traceparent(),
        };
        let started = Instant::now();
        let resp = deployment.provider.send(upstream_req).await;
        let resp = resp.inspect_err(|err| {
            tracing::debug!(deployment = deployment.id(), error = %err, "upstream call failed");
        })?;
        if !resp.status.is_success() {
            tracing::debug!(
                deployment = deployment.id(),
                status = resp.status.as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "upstream answered with an error"
            );
            let body = resp.body.collect(ERROR_BODY_LIMIT).await.unwrap_or_default();
            return Err(upstream_error(resp.status, &resp.headers, &body));
        }

        let headers = pass_on_headers(&resp.headers);
        let is_sse = resp.is_event_stream();
        let body = match resp.body {
            UpstreamBody::Full(bytes) => ProxyBody::Full(bytes),
            UpstreamBody::Stream(stream) if is_sse => {
                let expect_done =
                    matches!(req.endpoint, Endpoint::ChatCompletions) || req.path.as_str() == "completions";
                {
                    // Until its first event, a stream settles like any attempt (through `pending`: a
                    // failure there is recorded and refunded by `attempt`, or at the deadline by
                    // `route`). After it, the stream owns the settlement — with the client's
                    // reservation, since this attempt answers — and settles it when it ends.
                    let slot: Arc<parking_lot::Mutex<Option<Settlement>>> = Arc::default();
                    let on_end: OnStreamEnd = {
                        let slot = slot.clone();
                        // A stream's cost is known when it ends: it goes to the ledger (a header
                        // has long been sent by then).
                        let record = self.stream_usage_recorder(req, parsed, group, deployment);
                        let watch = telemetry::StreamWatch::current();
                        Box::new(move |end: StreamEnd| {
                            let cost = end.usage.as_ref().and_then(record);
                            watch.ended(&end, cost);
                            if let Some(settlement) = slot.lock().take() {
                                settlement.stream_ended(&end);
                            }
                        })
                    };
                    // A half-open breaker's probe proves the upstream alive with its first event:
                    // holding the (often only) probe slot for the whole stream would turn every
                    // other request away for minutes.
                    let half_open = pending
                        .lock()
                        .as_ref()
                        .and_then(|s| s.permit.as_ref())
                        .is_some_and(|p| {
                            matches!(
                                p.breaker().state(),
                                crate::policy::breaker::BreakerState::HalfOpen
                            )
                        });
                    let stream = first_event_or_error(stream, expect_done, Some(on_end)).await?;
                    telemetry::first_event(&group.name, deployment.id());
                    if let Some(mut settlement) = pending.lock().take() {
                        if half_open && let Some(probe) = settlement.permit.take() {
                            probe.record(Outcome::Success);
                        }
                        settlement.reservations.extend(client_reservation.lock().take());
                        *slot.lock() = Some(settlement);
                    }
                    ProxyBody::Stream(stream)
                }
            }
            // A stream was asked for but the upstream answered plainly (some servers ignore `stream`).
            UpstreamBody::Stream(stream) => ProxyBody::Full(
                UpstreamBody::Stream(stream)
                    .collect(crate::upstream::MAX_RESPONSE_BYTES)
                    .await?,
            ),
        };
        Ok(ProxyResponse {
            status: resp.status,
            headers,
            body,
            deployment: deployment.clone(),
            model_group: group.name.clone(),
        })
    }

    /// Records a stream's final usage (and its cost) in the ledger; `'static`, for the stream's
    /// end callback.
    fn stream_usage_recorder(
        &self,
        req: &ProxyRequest,
        parsed: &Parsed,
        group: &Group,
        deployment: &Arc<Deployment>,
    ) -> impl FnOnce(&Usage) -> Option<f64> + Send + 'static {
        let price = self
            .prices
            .get(upstream_model(group, deployment, parsed))
            .copied();
        let ledger = self.usage.clone();
        let (model, client, deployment) = (parsed.model.clone(), req.client.clone(), deployment.clone());
        move |usage: &Usage| {
            let cost = price.map(|p| p.cost(usage));
            ledger.record_usage(&model, deployment.id(), client.as_deref(), usage, cost.as_ref());
            // For the request's summary (log line, cost metric).
            cost.map(|c| c.usd)
        }
    }

    fn parse(&self, req: &ProxyRequest) -> Result<Parsed, Error> {
        let json_body = !req.body.is_empty()
            && req
                .content_type
                .as_ref()
                .is_none_or(|ct| ct.to_str().is_ok_and(|s| s.contains("json")));
        let object = match (req.endpoint, json_body) {
            (Endpoint::Passthrough, true) => RawObject::parse(&req.body).ok(),
            (Endpoint::Passthrough, false) => None,
            (_, _) if req.body.is_empty() => {
                return Err(Error::InvalidRequest {
                    message: "The request body is empty; a JSON object is required.".to_owned(),
                    param: None,
                    code: Some("invalid_json"),
                });
            }
            (_, _) => Some(RawObject::parse(&req.body)?),
        };
        let model = match &object {
            Some(obj) => obj.get_str("model")?,
            None => None,
        };
        let model_in_body = model.is_some();
        let stream = match &object {
            Some(obj) => obj.get_bool("stream")?.unwrap_or(false),
            None => false,
        };
        match (req.endpoint, &object) {
            (Endpoint::ChatCompletions, Some(obj)) => {
                if model.is_none() {
                    return Err(Error::missing_param("model"));
                }
                if obj.get("messages").is_none_or(|m| m.get() == "null") {
                    return Err(Error::missing_param("messages"));
                }
                if !obj.is_non_empty_array("messages") {
                    return Err(Error::invalid_param(
                        "messages",
                        "'messages' must be a non-empty array of messages",
                        Some("invalid_type"),
                    ));
                }
            }
            (Endpoint::Embeddings, Some(obj)) => {
                if model.is_none() {
                    return Err(Error::missing_param("model"));
                }
                if obj.get("input").is_none_or(|m| m.get() == "null") {
                    return Err(Error::missing_param("input"));
                }
            }
            (Endpoint::ImageGenerations, Some(obj)) if obj.get_str("prompt")?.is_none() => {
                return Err(Error::missing_param("prompt"));
            }
            _ => {}
        }
        // Requests that name no model (image generation may omit it; most pass-through calls do)
        // go to the default model group.
        let model = match model {
            Some(model) => model,
            None => self
                .config
                .default_model
                .clone()
                .ok_or_else(|| Error::missing_param("model"))?,
        };
        if model.trim().is_empty() {
            return Err(Error::invalid_param(
                "model",
                "'model' must not be empty",
                Some("invalid_value"),
            ));
        }
        let demand = self.estimate_demand(req, &model, object.as_ref())?;
        Ok(Parsed {
            object,
            model,
            model_in_body,
            stream,
            demand,
        })
    }

    /// What a request is counted as against token limits before its real usage is known.
    ///
    /// Input: for chat completions and embeddings, the input tokens as [`crate::tokens::estimate`]
    /// counts them for the upstream model (exact for OpenAI models, a scaled `o200k_base` count
    /// for others); for anything else (or a body those rules can't read), the body's size / 4.
    /// Output: the request's own cap (`max_completion_tokens`,
    /// `max_tokens`, times `n` choices) so a stream can't overshoot, else `resilience.default_output_tokens`; none for
    /// embeddings and images. Reconciled with the upstream's `usage` when the call ends.
    fn estimate_demand(
        &self,
        req: &ProxyRequest,
        model: &str,
        object: Option<&RawObject>,
    ) -> Result<Demand, Error> {
        // The upstream's name decides the tokenizer (a group `fast` may serve `gpt-4o-mini`).
        let counting_model = self
            .group_for(model)
            .and_then(|g| g.deployments.iter().find_map(|d| d.config.model.as_deref()))
            .unwrap_or(model);
        let input = object
            .filter(|_| self.counts_input_tokens)
            .and_then(|obj| crate::tokens::estimate_input(req.endpoint, counting_model, obj))
            .map_or_else(|| (req.body.len() as u64).div_ceil(4), |e| e.tokens);
        let output = match req.endpoint {
            Endpoint::Embeddings | Endpoint::ImageGenerations => 0,
            Endpoint::ChatCompletions | Endpoint::Passthrough => {
                let (cap, choices) = match object {
                    Some(obj) => {
                        let cap = match obj.get_u64("max_completion_tokens")? {
                            Some(n) => Some(n),
                            None => obj.get_u64("max_tokens")?,
                        };
                        (cap, obj.get_u64("n")?.unwrap_or(1).max(1))
                    }
                    None => (None, 1),
                };
                cap.unwrap_or(self.config.resilience.default_output_tokens)
                    .saturating_mul(choices)
            }
        };
        Ok(Demand::request(input, output))
    }

    /// The models clients can ask for: every named group, plus what wildcard groups' upstreams list.
    pub async fn list_models(&self) -> ModelList {
        let mut data: Vec<Model> = self
            .groups
            .iter()
            .filter(|g| !g.wildcard)
            .map(|g| Model {
                id: g.name.to_string(),
                object: "model".to_owned(),
                created: 0,
                owned_by: "weir".to_owned(),
            })
            .collect();
        for group in self.groups.iter().filter(|g| g.wildcard) {
            let Ok(deployment) = group.pick_any() else {
                continue;
            };
            match self.upstream_models(deployment).await {
                Ok(list) => {
                    for model in list.data {
                        if group.matches(&model.id) && !data.iter().any(|m| m.id == model.id) {
                            data.push(model);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(deployment = deployment.id(), error = %err, "could not list upstream models")
                }
            }
        }
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }

    /// One model by id: named groups answer themselves; wildcard groups ask their upstream.
    pub async fn retrieve_model(&self, id: &str, request_id: Option<String>) -> Result<Bytes, Error> {
        let group = self
            .group_for(id)
            .ok_or_else(|| self.config.model_not_found(id))?;
        if !group.wildcard {
            let model = Model {
                id: id.to_owned(),
                object: "model".to_owned(),
                created: 0,
                owned_by: "weir".to_owned(),
            };
            return serde_json::to_vec(&model)
                .map(Bytes::from)
                .map_err(|e| Error::Internal(e.to_string()));
        }
        let mut req = ProxyRequest::get(ApiPath::parse(&format!("models/{id}"))?);
        req.request_id = request_id;
        let deployment = group.pick_any()?.clone();
        let resp = self.send_simple(&deployment, req).await.map_err(|e| match e {
            Error::Upstream {
                status: StatusCode::NOT_FOUND,
                ..
            } => Error::ModelNotFound { model: id.to_owned() },
            other => other,
        })?;
        Ok(resp)
    }

    async fn upstream_models(&self, deployment: &Arc<Deployment>) -> Result<ModelList, Error> {
        let body = self
            .send_simple(deployment, ProxyRequest::get(ApiPath::known("models")))
            .await?;
        serde_json::from_slice(&body).map_err(|e| Error::BadUpstreamResponse {
            message: format!("model list: {e}"),
        })
    }

    /// A bodiless call to one deployment, bypassing routing; errors converted as usual.
    async fn send_simple(&self, deployment: &Arc<Deployment>, req: ProxyRequest) -> Result<Bytes, Error> {
        let resp = deployment
            .provider
            .send(UpstreamRequest {
                method: req.method,
                path: req.path,
                query: None,
                body: None,
                content_type: None,
                stream: false,
                request_id: req.request_id,
                traceparent: None,
            })
            .await?;
        let (status, headers) = (resp.status, resp.headers);
        let body = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(upstream_error(status, &headers, &body));
        }
        Ok(body)
    }

    /// Starts background health checks for the deployments that have them configured (`GET
    /// models` every `interval`). Needs a tokio runtime. Dropping the handles stops the checks.
    pub fn start_health_checks(self: &Arc<Self>) -> Vec<HealthCheckHandle> {
        let mut handles = Vec::new();
        // Twice would double the probing and the threshold counting.
        if self
            .health_checks_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!("health checks were already started for this engine");
            return handles;
        }
        for deployment in self.deployments() {
            let Some(config) = deployment.config.health_check.clone() else {
                continue;
            };
            let engine = Arc::downgrade(self);
            let target = deployment.clone();
            let probe = move || {
                let engine = engine.clone();
                let target = target.clone();
                async move {
                    let engine = engine
                        .upgrade()
                        .ok_or_else(|| "the engine is shutting down".to_owned())?;
                    let started = Instant::now();
                    let req = ProxyRequest::get(ApiPath::known("models"));
                    match engine.send_simple(&target, req).await {
                        // Rate-limited means alive and busy, not broken (the cooldown handles it).
                        Ok(_)
                        | Err(Error::Upstream {
                            status: StatusCode::TOO_MANY_REQUESTS,
                            ..
                        }) => Ok(started.elapsed()),
                        Err(err) => Err(err.to_string()),
                    }
                }
            };
            handles.push(spawn_checker(deployment.health.clone(), config, probe));
        }
        handles
    }

    /// Probes every deployment with `GET models` (concurrently, each bounded by `timeout`).
    pub async fn probe_all(&self, timeout: Duration) -> Vec<ProbeReport> {
        let probes = self.deployments().map(|deployment| async move {
            let started = Instant::now();
            let req = ProxyRequest::get(ApiPath::known("models"));
            let result = tokio::time::timeout(timeout, self.send_simple(deployment, req)).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            let (http_status, error) = match result {
                Ok(Ok(_)) => (Some(200), None),
                Ok(Err(Error::Upstream { status, message, .. })) => (Some(status.as_u16()), Some(message)),
                Ok(Err(err)) => (None, Some(err.to_string())),
                Err(_) => (
                    None,
                    Some(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout)
                    )),
                ),
            };
            ProbeReport {
                state: deployment.status(),
                status: if error.is_none() { "healthy" } else { "unhealthy" },
                http_status,
                latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                error,
            }
        });
        join_all(probes).await
    }
}

/// The upstream's name for the model: the deployment's own, else the group's (so a fallback group
/// gets its name, not the client's), else — for pattern groups — the client's.
fn upstream_model<'a>(group: &'a Group, deployment: &'a Deployment, parsed: &'a Parsed) -> &'a str {
    match &deployment.config.model {
        Some(model) => model.as_str(),
        None if group.wildcard => parsed.model.as_str(),
        None => &group.name,
    }
}

struct Parsed {
    object: Option<RawObject>,
    model: String,
    /// Whether `model` came from the body (only then is there something to rewrite).
    model_in_body: bool,
    stream: bool,
    /// Estimated cost against rate limits.
    demand: Demand,
}

/// The time a request has: its deadline and how long that was from the start.
#[derive(Debug, Clone, Copy)]
struct Window {
    deadline: Instant,
    time_allowed: Duration,
}

fn falls_back(err: &Error) -> bool {
    crate::policy::disposition::classify(err).fall_back == crate::policy::disposition::FallBack::Groups
}

fn is_context_window_error(err: &Error) -> bool {
    crate::policy::disposition::classify(err).fall_back == crate::policy::disposition::FallBack::ContextWindow
}

/// A non-success upstream answer as an error: its message, type, code and param, and how long
/// it asked us to wait. The one place every provider's error answers are interpreted.
fn upstream_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let (message, error_type, code, param) = parse_upstream_error(body);
    Error::Upstream {
        status,
        message,
        error_type,
        code,
        param,
        retry_after: retry_after(headers),
    }
}

/// A refusal by a rate limit, counted as a throttle when it is one (not when the request alone
/// is too large for the limit).
fn throttled(scope: ThrottleScope, deployment: Option<&str>, label: String, err: RateLimitError) -> Error {
    if matches!(err, RateLimitError::Limited(_)) {
        telemetry::record_throttle(scope, deployment);
    }
    rate_limit_error(label, err)
}

/// A refusal by one of the gateway's own limits, as the client sees it.
fn rate_limit_error(scope: String, err: RateLimitError) -> Error {
    match err {
        RateLimitError::Limited(limited) => Error::RateLimited {
            scope,
            detail: limited.to_string(),
            retry_after: limited.retry_after,
            headers: limited.headers(),
        },
        RateLimitError::TooLarge(too_large) => Error::RequestTooLarge {
            scope,
            detail: too_large.to_string(),
        },
    }
}

fn no_deployment(group: &Group, wait: Duration, reason: String) -> Error {
    Error::NoDeploymentAvailable {
        model_group: group.name.to_string(),
        reason: format!("{reason} (next usable in {:.1}s)", wait.as_secs_f64()),
        retry_after: Some(wait),
    }
}

/// Waits for the stream's first whole event. If the stream fails before sending anything, that is
/// an ordinary error (the client gets a proper HTTP status, and the call could be retried); after
/// the first event, failures can only be reported in-band.
async fn first_event_or_error(
    stream: ByteStream,
    expect_done: bool,
    on_end: Option<OnStreamEnd>,
) -> Result<futures::stream::BoxStream<'static, GuardItem>, Error> {
    let mut guarded = guard(stream, expect_done, on_end).boxed();
    match guarded.next().await {
        Some(GuardItem::Failed(err, _)) => Err(err),
        Some(first) => Ok(futures::stream::once(async move { first }).chain(guarded).boxed()),
        None => Err(Error::BadUpstreamResponse {
            message: "the upstream stream was empty".to_owned(),
        }),
    }
}

/// Headers from the upstream that are useful to clients and safe to pass on.
fn pass_on_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE.as_str(),
        "openai-processing-ms",
        "openai-version",
    ] {
        if let Some(v) = upstream.get(name) {
            out.insert(http::HeaderName::from_static(name), v.clone());
        }
    }
    if let Some(id) = upstream.get("x-request-id") {
        out.insert("x-upstream-request-id", id.clone());
    }
    out
}

/// `retry-after-ms` (OpenAI's, more precise) or `Retry-After` in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let parse = |name: &str| {
        let value = headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok()?;
        // `try_from`: a finite but huge value (1e30) must not panic the request.
        Duration::try_from_secs_f64(value).ok()
    };
    parse("retry-after-ms")
        .map(|ms| ms / 1000)
        .or_else(|| parse("retry-after"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_headers_parse_safely() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2"), ("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500)),
            "the precise header wins"
        );
        // Finite but absurd values must not panic; they are ignored.
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "1e30")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "1e20")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "NaN")])), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
    }
}
