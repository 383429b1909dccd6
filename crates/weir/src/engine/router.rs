//! Route, retry, fall back: the stage that turns one request into attempts on deployments.
//!
//! The [`Router`] offers each attempt to the deployments of the request's model group in the
//! balancer's order (untried ones first) until one takes it; waits for a short cooldown or queues
//! at a rate limiter when none can take it now; retries what the failure's
//! [disposition](crate::policy::disposition) says another attempt could fix, within the retry
//! policy, the retry budget and the request's deadline; and hands a group that is exhausted to
//! its fallback groups, all sharing one attempt budget so a request never fans out beyond
//! `max_retries + 1` upstream calls.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::Service;
use tracing::Instrument;

use super::{
    Core,
    attempt::{Attempt, Mode},
    deployment::{Deployment, Tried, Unusable, UnusableKind},
    group::Group,
};
use crate::{
    error::{Error, TimeoutPhase},
    policy::{
        disposition::{FallBack, classify},
        limit::{Demand, RateLimitError},
    },
    request::{ProxyRequest, RequestFacts},
    response::ProxyResponse,
    telemetry::{self, RequestSummary, ThrottleScope},
};

/// A request on its way through routing: what admission resolved for it.
pub(crate) struct Routed {
    /// The request.
    pub req: ProxyRequest,
    /// Its body's facts (parsed once).
    pub facts: Arc<RequestFacts>,
    /// The model the client asked for (or the default model group's name).
    pub model: Arc<str>,
    /// The index of its model group.
    pub group: usize,
    /// What it counts against rate limits before its real usage is known.
    pub demand: Demand,
    /// The time it has.
    pub window: Window,
}

/// The time a request has: its deadline and how long that was from the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub deadline: Instant,
    pub time_allowed: Duration,
    /// The client asked for less than the configured deadline.
    pub shortened: bool,
}

impl Window {
    fn elapsed_error(&self) -> Error {
        Error::Timeout {
            phase: TimeoutPhase::Deadline,
            after: self.time_allowed,
        }
    }
}

/// The routing stage, as a tower service (see the module docs).
#[derive(Clone)]
pub(crate) struct Router {
    pub(crate) core: Arc<Core>,
}

impl Service<Routed> for Router {
    type Response = ProxyResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let core = self.core.clone();
        Box::pin(async move {
            let routed = Arc::new(routed);
            let group = core.group(routed.group)?;
            RequestSummary::update_current(|s| {
                s.model = Some(routed.model.to_string());
                s.model_group = Some(group.name.clone());
                s.stream = routed.facts.stream();
            });
            let span = telemetry::trace::route_span(&routed.model, &group.name);
            core.route_with_fallbacks(&routed, group).instrument(span).await
        })
    }
}

/// The outcome of offering an attempt to a group's deployments.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per attempt and matched at once; boxing the answer would cost an allocation"
)]
enum Pick<'a> {
    /// This deployment took it, and this came of it.
    Called(&'a Arc<Deployment>, Result<ProxyResponse, Error>),
    /// A deployment this request already tried would take it again (the group should yield).
    TriedAgain,
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

impl Core {
    /// The group, then (if it is exhausted by failures another group could fix) its fallbacks in
    /// order; a prompt too long for the group's upstreams goes to its context-window fallbacks.
    async fn route_with_fallbacks(
        &self,
        routed: &Arc<Routed>,
        group: &Group,
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
            .route(routed, group, &mut attempts_left, has_fallbacks, true)
            .await;
        let next_groups = match &result {
            Err(err) => match classify(err).fall_back {
                FallBack::ContextWindow => &group.context_window_fallbacks,
                FallBack::Groups => &group.fallbacks,
                FallBack::No => return result,
            },
            Ok(_) => return result,
        };
        for (i, &index) in next_groups.iter().enumerate() {
            let Ok(next) = self.group(index) else {
                continue;
            };
            if attempts_left == 0 || Instant::now() >= routed.window.deadline {
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
                .route(routed, next, &mut attempts_left, more_after, false)
                .await;
            match &result {
                Err(err) if classify(err).fall_back != FallBack::No => continue,
                _ => break,
            }
        }
        result
    }

    /// Offers attempts to the deployments of `group` until one answers, a failure is final, or the
    /// deadline, the retry policy, the retry budget or the shared attempt budget says stop. With
    /// `yield_when_exhausted`, it stops as soon as every deployment was tried (or none is usable)
    /// so the caller can fall back to another group.
    async fn route(
        &self,
        routed: &Arc<Routed>,
        group: &Group,
        attempts_left: &mut u32,
        yield_when_exhausted: bool,
        first_group: bool,
    ) -> Result<ProxyResponse, Error> {
        let window = routed.window;
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
            let (deployment, result) = match self.pick(routed, group, &tried, yield_when_exhausted).await? {
                Pick::Called(deployment, result) => (deployment.clone(), result),
                // A group that can fall back gives up on a deployment that already failed this
                // request rather than call it again: its fallbacks are the better bet.
                Pick::TriedAgain => return Err(nothing_usable(last_err, Duration::ZERO, String::new())),
                Pick::Queue(deployment) => {
                    // Waits in arrival order (up to the limiter's max_wait, or not at all in
                    // fail_fast mode) for this deployment's limits to have room.
                    let offer = deployment.offer(self.attempt(routed, group, deployment, Mode::Queue));
                    match tokio::time::timeout_at(window.deadline, offer).await {
                        Err(_) => return Err(window.elapsed_error()),
                        Ok(Tried::Answered(resp)) => (deployment.clone(), Ok(resp)),
                        Ok(Tried::Failed(err)) => (deployment.clone(), Err(err)),
                        Ok(Tried::Limited(err)) => {
                            let scope = format!("deployment `{}`", deployment.id());
                            return Err(throttled(
                                ThrottleScope::Deployment,
                                Some(deployment.id()),
                                scope,
                                err,
                            ));
                        }
                        Ok(Tried::Unusable(why)) => return Err(no_deployment(group, why.wait, why.reason)),
                        Ok(Tried::Admitted) => {
                            return Err(Error::Internal("a queued attempt was only checked".to_owned()));
                        }
                    }
                }
                Pick::Wait(wait, _, reason) if yield_when_exhausted => {
                    return Err(nothing_usable(last_err, wait, reason));
                }
                Pick::Wait(wait, max_wait, reason) => {
                    // Up to 10 % jitter, so requests parked on the same cooldown don't all hit
                    // the upstream in the same millisecond when it ends.
                    let jittered = wait.mul_f64(1.0 + 0.1 * fastrand::f64());
                    if wait > max_wait || Instant::now() + jittered >= window.deadline {
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
            *attempts_left = attempts_left.saturating_sub(1);
            if !tried.iter().any(|t| Arc::ptr_eq(t, &deployment)) {
                tried.push(deployment.clone());
            }
            let err = match result {
                Ok(resp) => return Ok(resp),
                // The deadline cut the call off: it was settled as a failure (or not, if the
                // client shortened the deadline); there is no time left for anything else.
                Err(Error::Timeout {
                    phase: TimeoutPhase::Deadline | TimeoutPhase::ClientDeadline,
                    ..
                }) => return Err(window.elapsed_error()),
                Err(err) => err,
            };
            if *attempts_left == 0 || (yield_when_exhausted && tried.len() >= group.deployments.len()) {
                return Err(err);
            }
            let disposition = classify(&err);
            let policy = &deployment.config.retry;
            let wait = if disposition.cooldown.is_some() {
                // The cooldown keeps this deployment out of rotation for its Retry-After, however
                // long: the next pick takes another deployment at once, waits for a short cooldown,
                // or (nothing usable) ends the request with this 429.
                if retry >= policy.max_retries {
                    return Err(err);
                }
                Duration::ZERO
            } else {
                match policy.delay_for(retry, &disposition, fastrand::f64()) {
                    Some(wait) => wait,
                    None => return Err(err),
                }
            };
            if Instant::now() + wait >= window.deadline {
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
            tracing::warn!(
                deployment = deployment.id(),
                retry,
                max_retries = policy.max_retries,
                wait_ms = wait.as_millis() as u64,
                error = err.kind().as_str(),
                "retrying upstream call"
            );
            last_err = Some(err);
            tokio::time::sleep(wait).await;
        }
    }

    /// Offers the attempt to the group's deployments in the balancer's order, preferring ones
    /// this request has not `tried` yet (a retry should not go back to the deployment that just
    /// failed while another, possibly in a later priority tier, can take it), until one takes it.
    async fn pick<'g>(
        &self,
        routed: &Arc<Routed>,
        group: &'g Group,
        tried: &[Arc<Deployment>],
        yield_when_exhausted: bool,
    ) -> Result<Pick<'g>, Error> {
        if group.deployments.is_empty() {
            return Err(Error::Internal(format!(
                "model group `{}` has no deployments",
                group.name
            )));
        }
        let mut unusable: Vec<(&Arc<Deployment>, Unusable)> = Vec::new();
        for deployment in group.order(tried) {
            let again = tried.iter().any(|t| Arc::ptr_eq(t, deployment));
            let mode = if again && yield_when_exhausted {
                Mode::Check
            } else {
                Mode::Probe
            };
            // No timer here: a probe never waits at a check, and the call itself is bounded by
            // the deployment's `Deadline` layer.
            match deployment
                .offer(self.attempt(routed, group, deployment, mode))
                .await
            {
                Tried::Answered(resp) => return Ok(Pick::Called(deployment, Ok(resp))),
                Tried::Failed(err) => return Ok(Pick::Called(deployment, Err(err))),
                Tried::Admitted => return Ok(Pick::TriedAgain),
                Tried::Unusable(why) => unusable.push((deployment, why)),
                Tried::Limited(err) => {
                    return Err(Error::Internal(format!("a probe waited at a limiter: {err}")));
                }
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

    fn attempt(&self, routed: &Arc<Routed>, group: &Group, deployment: &Deployment, mode: Mode) -> Attempt {
        Attempt {
            routed: routed.clone(),
            mode,
            group: group.name.clone(),
            upstream_model: group.upstream_model(deployment, &routed.model),
            prices: self.prices.clone(),
            ledger: self.usage.clone(),
        }
    }
}

/// A refusal by a rate limit, counted as a throttle when it is one (not when the request alone
/// is too large for the limit).
pub(crate) fn throttled(
    scope: ThrottleScope,
    deployment: Option<&str>,
    label: String,
    err: RateLimitError,
) -> Error {
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
    // `Duration::MAX`: nothing will end the rest by itself (a breaker forced open by an admin).
    if wait == Duration::MAX {
        return Error::NoDeploymentAvailable {
            model_group: group.name.to_string(),
            reason,
            retry_after: None,
        };
    }
    Error::NoDeploymentAvailable {
        model_group: group.name.to_string(),
        reason: format!("{reason} (next usable in {:.1}s)", wait.as_secs_f64()),
        retry_after: Some(wait),
    }
}
