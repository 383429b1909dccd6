//! The engine: one request in, one upstream answer (or error) out, through a pipeline of tower
//! layers.
//!
//! ```text
//! Engine::execute(ProxyRequest)
//!  └ your layers (EngineBuilder::layer), outermost first
//!     └ CacheLayer               answers from the cache, or records the answer (crate::cache)
//!        └ Admission             facts → model group, demand, deadline; the client's limits
//!           └ Router             route, retry, fall back (router.rs)
//!              └ per deployment: Gate → RateLimitLayer → CircuitBreakerLayer → Deadline → Upstream
//! ```
//!
//! Both faces of Weir call [`Engine::execute`]: the gateway with the client's raw bytes, the
//! library's [`crate::Client`] with serialised typed requests. Every stage is a
//! `tower::Service<ProxyRequest>` (or, past admission, of the routed request), and each policy is
//! applied in exactly one of them; see `docs/architecture.md` for where each one lives.

mod admission;
mod attempt;
mod builder;
mod deployment;
mod drain;
mod group;
mod models;
mod reload;
mod router;
mod status;

use std::sync::{Arc, atomic::AtomicBool};

use tower::{ServiceExt, util::BoxCloneSyncService};

pub use self::attempt::retry_after;
pub use self::builder::EngineBuilder;
pub use self::deployment::Deployment;
pub use self::models::{BackgroundCheck, ProbeReport};
pub use self::status::{
    BreakerDetail, DeploymentStats, DeploymentStatus, LatencySummary, LimitUsage, PoolUsage, RateLimitUsage,
};
use self::{admission::Admission, group::Group, router::Router};
pub use crate::route::health::HealthCheckHandle;
use crate::{
    cache::{Cache, CacheLayer},
    config::{Config, ProviderKind},
    error::Error,
    policy::{
        breaker::CircuitBreaker,
        limit::{KeyedLimiter, RateLimiter},
        retry::RetryBudget,
    },
    request::ProxyRequest,
    response::{ProxyBody, ProxyResponse},
    route::balance::Balancer,
    sse::GuardItem,
    telemetry,
    tokens::{PriceTable, UsageLedger, UsageSnapshot},
    upstream::{AnthropicProvider, GeminiProvider, MockProvider, OpenAiProvider, Provider},
};

/// The engine as one tower service: what [`Engine::execute`] calls, and what layers added with
/// [`EngineBuilder::layer`] wrap.
pub type EngineService = BoxCloneSyncService<ProxyRequest, ProxyResponse, Error>;

/// Wraps the engine's own pipeline in the layers a user added (kept so a reload can re-apply them).
pub(crate) type Wrap = Arc<dyn Fn(EngineService) -> EngineService + Send + Sync>;

/// The routing and calling core. Cheap to share behind an `Arc`.
pub struct Engine {
    core: Arc<Core>,
    /// The whole pipeline, user layers included.
    service: EngineService,
    /// The user's layers, to wrap the pipeline of a reloaded engine the same way.
    wrap: Option<Wrap>,
    /// Set once background health checks are running.
    health_checks_started: AtomicBool,
    /// Requests in flight, for a graceful [`Engine::shutdown`].
    drain: Arc<drain::Drain>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("source", &self.core.config.source)
            .field("groups", &self.core.groups.len())
            .field("layers", &self.wrap.is_some())
            .finish_non_exhaustive()
    }
}

/// What every stage of one engine shares.
#[derive(Debug)]
pub(crate) struct Core {
    config: Arc<Config>,
    groups: Vec<Group>,
    /// Per-client-key limits (`server.client_rate_limits`), keyed by client identity. An `Arc` so
    /// that a config reload that leaves them unchanged keeps what each client has used.
    client_limiter: Option<Arc<KeyedLimiter<Arc<str>>>>,
    /// Model prices: the built-in table with the config's `pricing:` laid over it.
    prices: Arc<PriceTable>,
    /// Requests, errors, tokens and cost so far (shared with streams, which record when they end).
    usage: Arc<UsageLedger>,
    /// The response cache (bypasses everything when disabled).
    cache: Arc<Cache>,
    /// Whether any input-token limit applies, so requests are worth tokenizing exactly.
    counts_input_tokens: bool,
    /// The config's secrets, removed from every error text the engine hands out.
    redactor: crate::error::Redactor,
}

impl Core {
    fn group(&self, index: usize) -> Result<&Group, Error> {
        self.groups
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no model group #{index}")))
    }
}

impl Engine {
    /// Builds providers (and joins shared connection pools) for every deployment.
    ///
    /// `config` is expected to be validated ([`Config::load`], [`Config::from_yaml`],
    /// [`Config::from_env`], or the sections' `validate` methods for a config built by hand):
    /// limits, breakers, health checks, the cache and provider headers are built from it without
    /// being checked again, so building cannot fail. (A config built by hand and left unchecked
    /// still builds: what is wrong in it fails each call that meets it, with a message naming
    /// the field.)
    pub fn new(config: Config) -> Engine {
        Engine::build(config, None, None)
    }

    /// An engine to configure in code: layers of your own around the pipeline (see
    /// [`EngineBuilder`]).
    pub fn builder(config: Config) -> EngineBuilder {
        EngineBuilder::new(config)
    }

    /// [`Engine::new`], keeping the live state of `previous` where the config allows (see
    /// [`Engine::reload`]) and wrapping the pipeline in `wrap`.
    fn build(config: Config, previous: Option<&Engine>, wrap: Option<Wrap>) -> Engine {
        let config = Arc::new(config);
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
                    ProviderKind::OpenAi | ProviderKind::Azure => Arc::new(OpenAiProvider::new(dep)),
                    ProviderKind::Gemini => Arc::new(GeminiProvider::new(dep)),
                    ProviderKind::Mock => Arc::new(MockProvider),
                    ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(dep)),
                };
                let breaker = dep.circuit_breaker.map(|c| {
                    let breaker = CircuitBreaker::new(dep.id.clone(), c);
                    telemetry::watch_breaker(&breaker);
                    breaker
                });
                let limiter = dep.rate_limits.clone().map(RateLimiter::new);
                deployments.push(Arc::new(Deployment::new(
                    dep.clone(),
                    name.clone(),
                    provider,
                    breaker,
                    limiter,
                )));
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
        // A reload with the same cache settings keeps the cache (entries, counters, Redis link).
        let cache = match previous.filter(|p| *p.core.cache.config() == config.cache) {
            Some(p) => p.core.cache.clone(),
            None => Arc::new(Cache::new(config.cache.clone())),
        };
        let core = Arc::new(Core {
            counts_input_tokens,
            redactor: config.redactor(),
            prices: Arc::new(PriceTable::builtin().with_overrides(&config.pricing)),
            // Usage so far is history, not config: a reload keeps counting into the same ledger.
            usage: previous.map_or_else(|| Arc::new(UsageLedger::new()), |p| p.core.usage.clone()),
            cache: cache.clone(),
            config: config.clone(),
            client_limiter,
            groups,
        });
        let router = Router { core: core.clone() };
        let admission = Admission {
            core: core.clone(),
            router,
        };
        let pipeline = EngineService::new(tower::Layer::layer(&CacheLayer::new(cache, config), admission));
        let service = match &wrap {
            Some(wrap) => wrap(pipeline),
            None => pipeline,
        };
        Engine {
            core,
            service,
            wrap,
            health_checks_started: Default::default(),
            drain: Arc::default(),
        }
    }

    /// The configuration this engine runs.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Usage totals so far: requests, errors, tokens and cost by model, deployment and client key.
    pub fn usage(&self) -> UsageSnapshot {
        self.core.usage.snapshot()
    }

    /// The usage ledger itself (for recording usage of responses served elsewhere).
    pub fn usage_ledger(&self) -> &UsageLedger {
        &self.core.usage
    }

    /// The prices this engine computes costs with.
    pub fn prices(&self) -> &PriceTable {
        &self.core.prices
    }

    /// A deployment by id.
    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.core.groups.iter().find_map(|g| g.find(id))
    }

    /// Every deployment, in config order.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.core.groups.iter().flat_map(|g| g.deployments.iter())
    }

    /// The response cache's counters and size now.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.core.cache.stats()
    }

    /// The response cache.
    pub fn cache(&self) -> &Cache {
        &self.core.cache
    }

    /// The whole pipeline as a tower service (cheap to clone), for composing with other tower
    /// middleware.
    pub fn service(&self) -> EngineService {
        self.service.clone()
    }

    /// Executes one request through the pipeline (see the [module docs](self)).
    pub async fn execute(&self, req: ProxyRequest) -> Result<ProxyResponse, Error> {
        let ticket = self.drain.enter()?;
        let redactor = &self.core.redactor;
        let mut resp = self
            .service
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| redactor.error(e))?;
        // In flight until the answer is finished: a stream until it ends.
        if let ProxyBody::Stream(stream) = &resp.body {
            stream.on_end(move |_| drop(ticket));
        }
        // A stream's error event quotes its error: redacted like any other error text.
        if let ProxyBody::Stream(stream) = resp.body {
            if redactor.is_empty() {
                resp.body = ProxyBody::Stream(stream);
                return Ok(resp);
            }
            let redactor = redactor.clone();
            resp.body = ProxyBody::Stream(stream.map_items(move |item| match item {
                GuardItem::Failed(err, _) => {
                    let err = redactor.error(err);
                    let event = crate::sse::error_event(&err);
                    GuardItem::Failed(err, event)
                }
                events => events,
            }));
        }
        Ok(resp)
    }

    /// `text` with the config's secrets redacted, for text from an upstream that is shown to
    /// clients outside an [`Error`] (probe reports).
    pub(crate) fn redact(&self, text: &str) -> String {
        self.core.redactor.text(text)
    }

    /// Requests in flight through [`Engine::execute`] right now (streams until they end).
    pub fn in_flight(&self) -> usize {
        self.drain.in_flight()
    }

    /// Shuts down gracefully: new requests are refused (`503`) from now on, and this waits up to
    /// `grace` for the running ones (streams included) to finish. Returns how many were still
    /// running when the grace ran out (0 when all finished). The gateway drains its connections
    /// itself; this is for in-process users (see [`crate::Client::shutdown`]).
    pub async fn shutdown(&self, grace: std::time::Duration) -> usize {
        self.drain.close(grace).await
    }

    /// Sets the gauges that are read rather than counted: breaker states, what is left of each
    /// deployment's limits, calls in flight per deployment, and upstream connection slots in use.
    /// The gateway calls this right before rendering `/metrics`, so values are current at scrape
    /// time and cost nothing between scrapes.
    pub fn refresh_gauges(&self) {
        for deployment in self.deployments() {
            let snapshot = deployment.limiter().map(RateLimiter::snapshot);
            telemetry::set_deployment_gauges(&telemetry::DeploymentGauges {
                deployment: deployment.id(),
                breaker: deployment.breaker().map(|b| b.state().kind()),
                limits: snapshot.as_ref(),
                in_flight: deployment.load().in_flight(),
            });
        }
        telemetry::set_pool_gauges(&crate::upstream::pool::host_stats());
    }
}
