//! Admission: what a request is (model, group, demand, deadline) and whether its client may send
//! it now.
//!
//! The stage between the cache and the router. It reads the request's facts (parsed once, shared
//! with the cache), resolves its model group (404 for an unknown model), estimates what it will
//! count against token limits, and fixes its deadline. Then the client's own limits
//! (`server.client_rate_limits`, per client key) admit it through the same [`RateLimitLayer`]
//! that guards each deployment, settled with the request's final usage — or refuse it with a 429
//! before any routing. Every request routed is counted in the usage ledger.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{
    Core,
    deployment::{reconcile, settle_failure},
    router::{Routed, Router, Window, throttled},
};
use crate::{
    error::{Error, TimeoutPhase},
    policy::limit::{Ask, Demand, RateLimitLayer, RateLimitServiceError, Reservation, Settle},
    request::{Endpoint, ProxyRequest, RequestFacts},
    response::{ProxyBody, ProxyResponse},
    telemetry::ThrottleScope,
};

/// The admission stage, in front of the [`Router`].
#[derive(Clone)]
pub(crate) struct Admission {
    pub(crate) core: Arc<Core>,
    pub(crate) router: Router,
}

impl Service<ProxyRequest> for Admission {
    type Response = ProxyResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProxyRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.admit(req).await })
    }
}

impl Admission {
    async fn admit(self, req: ProxyRequest) -> Result<ProxyResponse, Error> {
        let core = &self.core;
        let routed = core.resolve(req)?;
        let (model, client) = (routed.model.clone(), routed.req.client.clone());
        let result = match (&core.client_limiter, &client) {
            // The client's own limits are taken once per request, before any routing.
            (Some(limiter), Some(client)) => {
                let window = routed.window;
                let limited = RateLimitLayer::new(limiter.limiter(client), ask as fn(&Routed) -> Ask)
                    .settle_with(ClientSettle)
                    .layer(self.router.clone());
                match tokio::time::timeout_at(window.deadline, limited.oneshot(routed)).await {
                    Err(_) => Err(Error::Timeout {
                        phase: TimeoutPhase::Deadline,
                        after: window.time_allowed,
                    }),
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(RateLimitServiceError::Inner(err))) => Err(err),
                    Ok(Err(RateLimitServiceError::Limited(err))) => Err(throttled(
                        ThrottleScope::Client,
                        None,
                        format!("client {client}"),
                        err,
                    )),
                }
            }
            _ => self.router.clone().oneshot(routed).await,
        };
        core.usage
            .record_request(&model, client.as_deref(), result.is_ok());
        result
    }
}

fn ask(routed: &Routed) -> Ask {
    Ask::from(routed.demand)
}

/// How the engine settles a client's reservation: its `x-ratelimit-*` headers go on the answer,
/// which reconciles it with its usage when finished; a failed request gives back what the
/// failure's disposition says the client did not spend.
#[derive(Debug, Clone, Copy)]
struct ClientSettle;

impl Settle<ProxyResponse, Error> for ClientSettle {
    fn settle(&self, result: &mut Result<ProxyResponse, Error>, reservation: Reservation) {
        match result {
            Ok(resp) => {
                for (name, value) in reservation.headers() {
                    if let Ok(value) = http::HeaderValue::from_str(&value) {
                        resp.headers.insert(name, value);
                    }
                }
                match &resp.body {
                    ProxyBody::Full(_) => reconcile(reservation, resp.usage.as_ref()),
                    ProxyBody::Stream(stream) => {
                        stream.on_end(move |end| reconcile(reservation, end.usage.as_ref()))
                    }
                }
            }
            Err(err) => settle_failure(reservation, err, false),
        }
    }
}

impl Core {
    /// What routing needs to know about a request: its facts, model, group, demand and deadline.
    pub(crate) fn resolve(&self, req: ProxyRequest) -> Result<Routed, Error> {
        let facts = req.facts()?;
        // Requests that name no model (image generation may omit it; most pass-through calls do)
        // go to the default model group.
        let model: Arc<str> = match facts.model() {
            Some(model) => Arc::from(model),
            None => self
                .config
                .default_model
                .as_deref()
                .map(Arc::from)
                .ok_or_else(|| Error::missing_param("model"))?,
        };
        if model.trim().is_empty() {
            return Err(Error::invalid_param(
                "model",
                "'model' must not be empty",
                Some("invalid_value"),
            ));
        }
        let demand = self.estimate_demand(&req, &model, &facts)?;
        let group = self
            .config
            .group_index(&model)
            .ok_or_else(|| self.config.model_not_found(&model))?;
        let configured = self.config.resilience.request_deadline;
        let time_allowed = req.deadline.map_or(configured, |d| d.min(configured));
        Ok(Routed {
            req,
            facts,
            model,
            group,
            demand,
            window: Window {
                deadline: Instant::now() + time_allowed,
                time_allowed,
                shortened: time_allowed < configured,
            },
        })
    }

    /// What a request is counted as against token limits before its real usage is known.
    ///
    /// Input: for chat completions and embeddings, the input tokens as [`crate::tokens::estimate`]
    /// counts them for the upstream model (exact for OpenAI models, a scaled `o200k_base` count
    /// for others) when an input-token limit needs them; otherwise (or for a body those rules
    /// can't read) the body's size / 4. Output: the request's own cap (`max_completion_tokens`,
    /// `max_tokens`, times `n` choices) so a stream can't overshoot, else
    /// `resilience.default_output_tokens`; none for embeddings and images. Reconciled with the
    /// upstream's `usage` when the call ends.
    fn estimate_demand(
        &self,
        req: &ProxyRequest,
        model: &str,
        facts: &RequestFacts,
    ) -> Result<Demand, Error> {
        let object = facts.object();
        // The upstream's name decides the tokenizer (a group `fast` may serve `gpt-4o-mini`).
        let counting_model = self
            .config
            .group_for(model)
            .and_then(|g| g.deployments.iter().find_map(|d| d.model.as_deref()))
            .unwrap_or(model);
        let input = object
            .filter(|_| self.counts_input_tokens)
            .and_then(|obj| crate::tokens::estimate_fields(req.endpoint, counting_model, obj))
            .map_or_else(|| (req.body().len() as u64).div_ceil(4), |e| e.tokens);
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
}
