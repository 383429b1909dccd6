//! A deployment: one upstream, its live state, and the stack of layers every attempt on it runs
//! through.
//!
//! ```text
//! Gate (cooldown, health, breaker peek; starts a cooldown on a 429)
//!  └ RateLimitLayer (the deployment's limits: reserve, then reconcile with the usage)
//!     └ CircuitBreakerLayer (permit; outcome recorded when the answer is finished)
//!        └ AdaptiveConcurrencyLayer (optional: calls in flight within a latency-driven limit)
//!           └ DeadlineLayer (what is left of the request's deadline)
//!              └ UpstreamService (the provider call, accounting)
//! ```
//!
//! The rate-limit and breaker layers are the generic ones of [`crate::policy`], given the
//! engine's [`Settle`] and [`Classify`] rules, which read the failure's
//! [`Disposition`](crate::policy::disposition::Disposition). A refusal by any check comes back
//! as an [`Unusable`] at once, without touching the network, so routing can try the next
//! deployment.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, util::Either};

use super::attempt::{Attempt, AttemptError, DeadlineLayer, Mode, UpstreamService};
use crate::{
    config::DeploymentConfig,
    error::Error,
    policy::{
        breaker::{
            BreakerError, BreakerPermit, BreakerState, CircuitBreaker, CircuitBreakerService, Classify,
            Outcome,
        },
        concurrency::{self, AdaptiveConcurrencyService, AdaptiveLimit, Permit, Sample, Shed},
        disposition::{classify, stream_outcome},
        limit::{
            Ask, RateLimitError, RateLimitService, RateLimitServiceError, RateLimiter, RedisLimits,
            Reservation, Settle,
        },
    },
    response::{ProxyBody, ProxyResponse, ServedBy},
    route::{balance::LoadStats, health::Health},
    upstream::Provider,
};

/// One upstream, ready to call.
#[derive(Debug)]
pub struct Deployment {
    /// From config.
    pub config: DeploymentConfig,
    /// Model group it belongs to.
    pub model_group: Arc<str>,
    provider: Arc<dyn Provider>,
    /// Until when it rests after the upstream answered 429 (it is skipped by routing meanwhile).
    cooldown: Cooldown,
    /// Stops calls to a failing upstream for a while; `None` when disabled in config.
    breaker: Option<CircuitBreaker>,
    /// This deployment's (this upstream key's) rate limits; `None` when unlimited.
    limiter: Option<RateLimiter>,
    /// The adaptive limit on calls in flight; `None` when off (the default).
    concurrency: Option<AdaptiveLimit>,
    /// Requests in flight and a decaying latency average, for the balancer.
    load: Arc<LoadStats>,
    /// What background probes say (always healthy when health checks are off).
    health: Health,
    /// The layers an attempt runs through (see the module docs).
    stack: Stack,
    /// `config.model`, shared (it names every attempt's upstream model).
    upstream_name: Option<Arc<str>>,
}

/// Why a deployment can't take an attempt right now.
#[derive(Debug, Clone)]
pub(crate) struct Unusable {
    pub kind: UnusableKind,
    /// When it may be usable again.
    pub wait: Duration,
    /// For the client's error message.
    pub reason: String,
}

/// The kinds of [`Unusable`], in the order routing prefers to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnusableKind {
    /// Resting after a 429: worth waiting for, within limits.
    Cooldown,
    /// Its own rate limits are full: worth queueing for (in arrival order, up to `max_wait`).
    RateLimited,
    /// Breaker open (or health checks failing, or the adaptive concurrency limit reached):
    /// rejects at once; waiting would hold requests against a failing or saturated upstream.
    BreakerOpen,
    /// The request alone exceeds one of its limits.
    TooLarge,
}

/// What came of offering an attempt to a deployment.
pub(crate) enum Tried {
    /// The upstream answered.
    Answered(ProxyResponse),
    /// The upstream was called and the call failed.
    Failed(Error),
    /// A check refused it; nothing was called or reserved.
    Unusable(Unusable),
    /// Queued at the rate limiter, which refused (the wait would be too long, the queue is full).
    Limited(RateLimitError),
    /// [`Mode::Check`]: it would have been taken.
    Admitted,
}

impl Deployment {
    pub(crate) fn new(
        config: DeploymentConfig,
        model_group: Arc<str>,
        provider: Arc<dyn Provider>,
        breaker: Option<CircuitBreaker>,
        limiter: Option<RateLimiter>,
        redis: Option<RedisLimits>,
    ) -> Deployment {
        let load = Arc::new(LoadStats::new());
        let health = Health::new(config.id.clone());
        // Without `share_cooldowns` the gate never asks Redis: no extra hop per attempt.
        let cooldown = Cooldown {
            shared: redis.filter(|r| r.config().share_cooldowns),
            ..Cooldown::default()
        };
        let upstream = UpstreamService {
            provider: provider.clone(),
            served_by: ServedBy {
                deployment: Arc::from(config.id.as_str()),
                model_group: model_group.clone(),
                provider: provider.kind(),
            },
            base_url: config.base_url.clone(),
            load: load.clone(),
        };
        let guarded = DeadlineLayer.layer(upstream);
        let concurrency = config.adaptive_concurrency.map(AdaptiveLimit::new);
        let limited_in_flight: Concurrent = match &concurrency {
            Some(limit) => Either::Left(AdaptiveConcurrencyService::new(guarded, limit.clone(), InFlight)),
            None => Either::Right(guarded),
        };
        let broken: Breakered = match &breaker {
            Some(breaker) => Either::Left(CircuitBreakerService::new(
                limited_in_flight,
                breaker.clone(),
                Judge,
            )),
            None => Either::Right(Passthrough(limited_in_flight)),
        };
        let limited: Limited = match &limiter {
            Some(limiter) => Either::Left(
                RateLimitService::new(broken, limiter.clone(), Attempt::ask as fn(&Attempt) -> Ask)
                    .settle_with(DeploymentSettle),
            ),
            None => Either::Right(Passthrough(broken)),
        };
        let stack = Gate {
            id: Arc::from(config.id.as_str()),
            cooldown: cooldown.clone(),
            health: health.clone(),
            breaker: breaker.clone(),
            inner: limited,
        };
        Deployment {
            upstream_name: config.model.as_deref().map(Arc::from),
            config,
            model_group,
            provider,
            cooldown,
            breaker,
            limiter,
            concurrency,
            load,
            health,
            stack,
        }
    }

    /// The deployment's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// How long it still rests after a 429, if it does.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        self.cooldown.remaining()
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

    /// The adaptive concurrency limit, when configured, for inspection (`limit()`).
    pub fn adaptive_limit(&self) -> Option<&AdaptiveLimit> {
        self.concurrency.as_ref()
    }

    /// This deployment's rate limiter, for inspection (`snapshot()`).
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }

    /// The upstream's own name for the model, when the config renames it.
    pub(crate) fn upstream_name(&self) -> Option<&Arc<str>> {
        self.upstream_name.as_ref()
    }

    /// The provider adapter that calls its upstream.
    pub(crate) fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// Offers an attempt to this deployment: through its whole stack (see the module docs).
    pub(crate) async fn offer(&self, attempt: Attempt) -> Tried {
        let mode = attempt.mode;
        match self.stack.clone().oneshot(attempt).await {
            Ok(resp) => Tried::Answered(resp),
            Err(Refused::Unusable(unusable)) => Tried::Unusable(unusable),
            Err(Refused::Limit(err)) if mode == Mode::Queue => Tried::Limited(err),
            Err(Refused::Limit(err)) => Tried::Unusable(self.unusable_by_limit(err)),
            Err(Refused::Breaker(wait)) => Tried::Unusable(Unusable {
                kind: UnusableKind::BreakerOpen,
                wait,
                reason: format!("`{}` has its circuit breaker open", self.id()),
            }),
            Err(Refused::Attempt(AttemptError::NotCalled)) => Tried::Admitted,
            // Shedding says "busy, try elsewhere": like an open breaker it never waits here.
            Err(Refused::Attempt(AttemptError::Shed(shed))) => Tried::Unusable(Unusable {
                kind: UnusableKind::BreakerOpen,
                wait: shed.retry_in,
                reason: format!("`{}` is {shed}", self.id()),
            }),
            Err(Refused::Attempt(AttemptError::Failed(err))) => Tried::Failed(err),
        }
    }

    fn unusable_by_limit(&self, err: RateLimitError) -> Unusable {
        match err {
            RateLimitError::Limited(limited) => Unusable {
                kind: UnusableKind::RateLimited,
                wait: limited.retry_after,
                reason: format!("`{}` is at its rate limit ({limited})", self.id()),
            },
            RateLimitError::TooLarge(too_large) => Unusable {
                kind: UnusableKind::TooLarge,
                wait: Duration::MAX,
                reason: format!("`{}`: {too_large}", self.id()),
            },
        }
    }
}

/// Until when a deployment rests after a 429. Shared by the deployment and its gate; with
/// `redis:`, also with every other instance (one instance's 429 rests the deployment on all).
#[derive(Debug, Clone, Default)]
struct Cooldown {
    until: Arc<parking_lot::Mutex<Option<Instant>>>,
    shared: Option<RedisLimits>,
}

impl Cooldown {
    fn remaining(&self) -> Option<Duration> {
        let until = (*self.until.lock())?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Takes the deployment out of rotation for `rest`. A 429 means "not now", not "broken": it
    /// does not count against the circuit breaker.
    fn start(&self, id: &str, rest: Duration) {
        self.rest(rest);
        if let Some(redis) = &self.shared {
            redis.start_cooldown(id, rest);
        }
        tracing::warn!(
            deployment = id,
            rest_ms = rest.as_millis() as u64,
            "upstream rate-limited us: cooling down"
        );
    }

    /// Rests for `rest` here (unless already resting longer).
    fn rest(&self, rest: Duration) {
        let until = Instant::now() + rest;
        let mut current = self.until.lock();
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }
}

fn cooling_down(id: &str, rest: Duration) -> Unusable {
    Unusable {
        kind: UnusableKind::Cooldown,
        wait: rest,
        reason: format!("`{id}` is cooling down after a 429"),
    }
}

// === the stack ===

type Guarded = super::attempt::Deadline<UpstreamService>;
type Concurrent = Either<AdaptiveConcurrencyService<Guarded, InFlight>, Guarded>;
type Breakered = Either<CircuitBreakerService<Concurrent, Judge>, Passthrough<Concurrent>>;
type Limited =
    Either<RateLimitService<Breakered, fn(&Attempt) -> Ask, DeploymentSettle>, Passthrough<Breakered>>;

/// Every way the stack can turn an attempt down, flattened from the layers' nested errors.
enum Refused {
    Unusable(Unusable),
    Limit(RateLimitError),
    Breaker(Duration),
    Attempt(AttemptError),
}

/// The nested error of the breaker and limit layers (or of their absence).
type StackError = RateLimitServiceError<BreakerError<AttemptError>>;

impl From<StackError> for Refused {
    fn from(err: StackError) -> Refused {
        match err {
            RateLimitServiceError::Limited(err) => Refused::Limit(err),
            RateLimitServiceError::Inner(BreakerError::Open(open)) => Refused::Breaker(open.retry_in),
            RateLimitServiceError::Inner(BreakerError::Inner(err)) => Refused::Attempt(err),
        }
    }
}

/// A stage that is switched off: passes calls through, wrapping errors the way the stage would.
#[derive(Debug, Clone)]
struct Passthrough<S>(S);

impl<S> Service<Attempt> for Passthrough<S>
where
    S: Service<Attempt, Response = ProxyResponse>,
    S::Future: Send + 'static,
    S::Error: Wrapped,
{
    type Response = ProxyResponse;
    type Error = <S::Error as Wrapped>::Outer;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Wrapped::wrap)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let call = self.0.call(attempt);
        Box::pin(async move { call.await.map_err(Wrapped::wrap) })
    }
}

/// The error a switched-off stage would have produced around its inner error.
trait Wrapped {
    type Outer;
    fn wrap(self) -> Self::Outer;
}

impl Wrapped for AttemptError {
    type Outer = BreakerError<AttemptError>;
    fn wrap(self) -> Self::Outer {
        BreakerError::Inner(self)
    }
}

impl Wrapped for BreakerError<AttemptError> {
    type Outer = StackError;
    fn wrap(self) -> Self::Outer {
        RateLimitServiceError::Inner(self)
    }
}

/// The outermost stage: cooldown and health, a look at the breaker before the limits reserve
/// anything, and a cooldown when the upstream answers 429.
#[derive(Clone)]
struct Gate {
    id: Arc<str>,
    cooldown: Cooldown,
    health: Health,
    breaker: Option<CircuitBreaker>,
    inner: Limited,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

type Stack = Gate;

impl Gate {
    /// Whether the deployment may be tried at all now; `Err` says why not.
    fn check(&self) -> Result<(), Unusable> {
        if let Some(rest) = self.cooldown.remaining() {
            return Err(cooling_down(&self.id, rest));
        }
        if !self.health.is_healthy() {
            // Not worth waiting for: probes run every interval and need several successes.
            return Err(Unusable {
                kind: UnusableKind::BreakerOpen,
                wait: Duration::from_secs(1),
                reason: format!("`{}` is failing its health checks", self.id),
            });
        }
        if let Some(breaker) = &self.breaker
            && !breaker.is_call_permitted()
        {
            let (wait, reason) = match breaker.state() {
                BreakerState::Open { remaining } => (remaining, "has its circuit breaker open"),
                // All probe slots busy: one frees as soon as a probe answers.
                BreakerState::HalfOpen => (Duration::from_secs(1), "has its circuit breaker open"),
                // No timer ends it: `Duration::MAX` tells the router not to promise a time.
                BreakerState::ForcedOpen => (
                    Duration::MAX,
                    "has its circuit breaker forced open by an admin; it stays open until reset \
                     (POST /admin/deployments/{id}/reset or /close)",
                ),
                _ => (breaker.config().open_timeout, "has its circuit breaker open"),
            };
            return Err(Unusable {
                kind: UnusableKind::BreakerOpen,
                wait,
                reason: format!("`{}` {}", self.id, reason.replace("{id}", &self.id)),
            });
        }
        Ok(())
    }
}

impl Service<Attempt> for Gate {
    type Response = ProxyResponse;
    type Error = Refused;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Refused>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        self.inner.poll_ready(cx).map_err(Refused::from)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        // A queued attempt was found rate-limited a moment ago, i.e. past these checks already.
        if attempt.mode != Mode::Queue
            && let Err(unusable) = self.check()
        {
            return Box::pin(std::future::ready(Err(Refused::Unusable(unusable))));
        }
        let (id, cooldown) = (self.id.clone(), self.cooldown.clone());
        let Some(redis) = self
            .cooldown
            .shared
            .clone()
            .filter(|_| attempt.mode != Mode::Queue)
        else {
            let call = self.inner.call(attempt);
            return Box::pin(async move { settle_cooldown(call.await, &id, &cooldown) });
        };
        // Another instance may have seen a 429 here: ask Redis first. The call then goes to the
        // instance `poll_ready` readied (taken out here); the gate keeps a clone.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if let Some(rest) = redis.cooldown_remaining(&id).await {
                cooldown.rest(rest);
                return Err(Refused::Unusable(cooling_down(&id, rest)));
            }
            settle_cooldown(ready.call(attempt).await, &id, &cooldown)
        })
    }
}

/// Maps the stack's error, and starts a cooldown when the upstream answered 429.
fn settle_cooldown(
    result: Result<ProxyResponse, StackError>,
    id: &str,
    cooldown: &Cooldown,
) -> Result<ProxyResponse, Refused> {
    let result = result.map_err(Refused::from);
    if let Err(Refused::Attempt(AttemptError::Failed(err))) = &result
        && let Some(rest) = classify(err).cooldown
    {
        cooldown.start(id, rest);
    }
    result
}

/// How the engine records an attempt on its breaker permit: a complete answer succeeds; a stream
/// succeeds or fails when it ends — except a half-open breaker's probe, which proves the upstream
/// alive with its first event (holding the only probe slot for a whole stream would turn every
/// other request away for minutes); a failure counts as its disposition says.
#[derive(Debug, Clone, Copy)]
struct Judge;

impl Classify<ProxyResponse, AttemptError> for Judge {
    fn settle(&self, result: &Result<ProxyResponse, AttemptError>, permit: BreakerPermit) {
        match result {
            Ok(resp) => match &resp.body {
                ProxyBody::Full(_) => permit.record(Outcome::Success),
                ProxyBody::Stream(_) if matches!(permit.breaker().state(), BreakerState::HalfOpen) => {
                    permit.record(Outcome::Success)
                }
                ProxyBody::Stream(stream) => stream.on_end(move |end| permit.record(stream_outcome(end))),
            },
            // Not called: neither success nor failure.
            Err(AttemptError::NotCalled | AttemptError::Shed(_)) => drop(permit),
            Err(AttemptError::Failed(err)) => permit.record(classify(err).breaker),
        }
    }
}

/// How the engine settles an adaptive concurrency permit: the latency of a complete answer, or
/// of a stream's first event (what rises first when an upstream queues), is the sample; a stream
/// holds its slot until it ends; a read or total timeout is a sign of overload; other failures
/// (fast 4xx/5xx, refused connections) say nothing about latency.
#[derive(Debug, Clone, Copy)]
struct InFlight;

impl concurrency::Settle<ProxyResponse, AttemptError> for InFlight {
    fn shed(&self, shed: Shed) -> AttemptError {
        AttemptError::Shed(shed)
    }

    fn settle(&self, result: &Result<ProxyResponse, AttemptError>, mut permit: Permit) {
        match result {
            Ok(resp) => {
                permit.answered();
                if let ProxyBody::Stream(stream) = &resp.body {
                    stream.on_end(move |_| drop(permit));
                }
            }
            Err(AttemptError::Failed(Error::Timeout {
                phase: crate::error::TimeoutPhase::Read | crate::error::TimeoutPhase::Total,
                ..
            })) => permit.sample(Sample::Timeout),
            Err(_) => permit.sample(Sample::Ignore),
        }
    }
}

/// How the engine settles a deployment's reservation: reconciled with the answer's usage when it
/// is finished (kept as estimated when it reports none), and on failure as the disposition's
/// `spent` says for the upstream's quota.
#[derive(Debug, Clone, Copy)]
struct DeploymentSettle;

impl Settle<ProxyResponse, BreakerError<AttemptError>> for DeploymentSettle {
    fn settle(
        &self,
        result: &mut Result<ProxyResponse, BreakerError<AttemptError>>,
        reservation: Reservation,
    ) {
        match result {
            Ok(resp) => match &resp.body {
                ProxyBody::Full(_) => reconcile(reservation, resp.usage.as_ref()),
                ProxyBody::Stream(stream) => {
                    stream.on_end(move |end| reconcile(reservation, end.usage.as_ref()))
                }
            },
            // The call is not made after all: give everything back.
            Err(
                BreakerError::Open(_) | BreakerError::Inner(AttemptError::NotCalled | AttemptError::Shed(_)),
            ) => reservation.refund(),
            Err(BreakerError::Inner(AttemptError::Failed(err))) => settle_failure(reservation, err, true),
        }
    }
}

/// Reconciles a reservation with the real usage; without usage, the estimate stays charged (it is
/// an upper bound for output).
pub(crate) fn reconcile(reservation: Reservation, usage: Option<&crate::api::Usage>) {
    match usage {
        Some(u) => reservation.reconcile(u.prompt_tokens, u.completion_tokens),
        None => drop(reservation),
    }
}

/// Settles a reservation of a failed call: refunded when the failure consumed nothing of what the
/// limit stands for, the request counted (tokens back) when it did, kept when unknown.
pub(crate) fn settle_failure(reservation: Reservation, err: &Error, deployment_scope: bool) {
    let spent = classify(err).spent;
    let refund = if deployment_scope {
        spent.refunds_deployment()
    } else {
        spent.refunds_client()
    };
    if refund {
        reservation.refund();
    } else if spent == crate::policy::disposition::Spent::Unknown && deployment_scope {
        drop(reservation);
    } else {
        reservation.reconcile(0, 0);
    }
}
