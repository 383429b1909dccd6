//! One upstream call: the innermost stage of a deployment's stack.
//!
//! [`UpstreamService`] aims the request at its deployment (rewriting `model` when the upstream
//! names it differently, leaving every other byte alone), sends it through the provider, turns a
//! non-success answer into an [`Error`] (the one place every provider's error answers are
//! interpreted), waits for a stream's first event (so an early failure is still a proper HTTP
//! error, and retryable), and accounts for the call: its span and metrics, the balancer's latency
//! and in-flight counts, the usage ledger and the cost of a complete answer.
//!
//! [`DeadlineLayer`] bounds it by what is left of the request's deadline, inside the breaker and
//! rate-limit layers, so that a call cut off by the deadline is settled like any failure.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

use super::router::Routed;
use crate::{
    api::{Usage, parse_upstream_error},
    error::{Error, TimeoutPhase},
    policy::limit::Demand,
    request::Endpoint,
    response::{ProxyBody, ProxyResponse, ResponseStream, ServedBy},
    route::balance::LoadStats,
    sse::GuardItem,
    telemetry::{self, RequestSummary},
    tokens::{PriceTable, UsageLedger},
    upstream::{Provider, UpstreamBody, UpstreamRequest},
};

/// How much of an upstream's error answer is read to find its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How a deployment is asked to take an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Take it now if every check passes, else say why not at once (routing probes deployments
    /// in the balancer's order).
    Probe,
    /// Wait in line at the deployment's rate limiter (every usable deployment is at its limit).
    Queue,
    /// Run every check and reserve as for a call, then give everything back without calling:
    /// whether a deployment that already failed this request would take it again.
    Check,
}

/// One attempt at a request, handed to a deployment's stack.
#[derive(Clone)]
pub(crate) struct Attempt {
    /// The request and what routing decided for it.
    pub routed: Arc<Routed>,
    /// How the deployment is asked.
    pub mode: Mode,
    /// The model group routing it (a fallback group, after the first).
    pub group: Arc<str>,
    /// The upstream's name for the model.
    pub upstream_model: Arc<str>,
    /// Prices of the engine running the request (a reload may have changed them).
    pub prices: Arc<PriceTable>,
    /// The usage ledger of the engine running the request.
    pub ledger: Arc<UsageLedger>,
}

impl Attempt {
    /// What it counts against rate limits, and whether it may wait for room.
    pub(crate) fn ask(&self) -> crate::policy::limit::Ask {
        crate::policy::limit::Ask {
            demand: self.demand(),
            wait: self.mode == Mode::Queue,
        }
    }

    fn demand(&self) -> Demand {
        self.routed.demand
    }
}

/// Why an attempt produced no answer.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Every check passed but, as asked ([`Mode::Check`]), the upstream was not called.
    NotCalled,
    /// The call failed.
    Failed(Error),
    /// The deployment's adaptive concurrency limit refused the call; nothing was sent.
    Shed(crate::policy::concurrency::Shed),
}

/// The innermost service of a deployment: calls its upstream.
#[derive(Clone)]
pub(crate) struct UpstreamService {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) served_by: ServedBy,
    pub(crate) base_url: url::Url,
    pub(crate) load: Arc<LoadStats>,
}

impl Service<Attempt> for UpstreamService {
    type Response = ProxyResponse;
    type Error = AttemptError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, AttemptError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if attempt.mode == Mode::Check {
                return Err(AttemptError::NotCalled);
            }
            this.call_upstream(attempt).await.map_err(AttemptError::Failed)
        })
    }
}

impl UpstreamService {
    async fn call_upstream(&self, attempt: Attempt) -> Result<ProxyResponse, Error> {
        let id = &*self.served_by.deployment;
        let provider = self.served_by.provider;
        let req = &attempt.routed.req;
        let in_flight = self.load.start();
        let started = Instant::now();
        let span = telemetry::attempt_started(&telemetry::AttemptInfo {
            endpoint: req.endpoint,
            path: &req.path,
            model_group: attempt.group.clone(),
            deployment: id,
            provider,
            base_url: &self.base_url,
            model: &attempt.upstream_model,
        });
        let result = self.send(&attempt).instrument(span.clone()).await;
        let took = started.elapsed();
        telemetry::attempt_finished(&span, id, provider, took, &result);
        if result.is_err() {
            telemetry::attempt_failed_at(&self.base_url);
        }
        if result.is_ok() {
            // Time to the answer (to the first event, for a stream): what lowest_latency ranks by.
            self.load.observe_latency(took);
        }
        attempt.ledger.record_attempt(id, result.is_ok());
        let mut resp = result?;
        let record = usage_recorder(&attempt, &self.served_by.deployment);
        match &resp.body {
            ProxyBody::Full(_) => {
                // A complete answer's usage: its cost (a header) and the ledger.
                if let Some(usage) = resp.usage.clone()
                    && let Some(cost) = record(&usage)
                {
                    crate::tokens::set_cost_header(&mut resp.headers, &cost);
                    RequestSummary::update_current(|s| s.cost_usd = Some(cost.usd));
                }
                drop(in_flight);
            }
            // Counted as in flight for the balancer until it ends.
            ProxyBody::Stream(stream) => stream.on_end(move |_| drop(in_flight)),
        }
        Ok(resp)
    }

    async fn send(&self, attempt: &Attempt) -> Result<ProxyResponse, Error> {
        let routed = &attempt.routed;
        let req = &routed.req;
        let facts = &routed.facts;
        let target = &*attempt.upstream_model;
        let body = match facts.object() {
            Some(obj) if target != &*routed.model && facts.model().is_some() => {
                Some(obj.to_bytes_with_str("model", target)?)
            }
            _ if req.body().is_empty() => None,
            _ => Some(req.body().clone()),
        };
        let upstream_req = UpstreamRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            body,
            // A JSON body is sent as JSON whatever the client labelled it (`curl -d` says
            // form-urlencoded); only a pass-through body that is not JSON keeps the client's
            // type (multipart uploads).
            content_type: match req.endpoint {
                Endpoint::Passthrough if facts.object().is_none() => req.content_type.clone(),
                _ => None,
            },
            stream: facts.stream(),
            request_id: req.request_id.clone(),
            traceparent: telemetry::trace::upstream_traceparent(),
        };
        let id = &*self.served_by.deployment;
        let started = Instant::now();
        let resp = self.provider.send(upstream_req).await.inspect_err(|err| {
            tracing::debug!(deployment = id, error = %err, "upstream call failed");
        })?;
        if !resp.status.is_success() {
            tracing::debug!(
                deployment = id,
                status = resp.status.as_u16(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "upstream answered with an error"
            );
            let body = resp.body.collect(ERROR_BODY_LIMIT).await.unwrap_or_default();
            return Err(upstream_error(resp.status, &resp.headers, &body));
        }
        let headers = pass_on_headers(&resp.headers);
        let is_sse = resp.is_event_stream();
        let served_by = self.served_by.clone();
        match resp.body {
            UpstreamBody::Full(bytes) => {
                complete_json(req.endpoint, &bytes)?;
                Ok(ProxyResponse::full(resp.status, headers, bytes, served_by))
            }
            UpstreamBody::Stream(stream) if is_sse => {
                let expect_done =
                    matches!(req.endpoint, Endpoint::ChatCompletions) || req.path.as_str() == "completions";
                let stream = ResponseStream::guarded(stream, expect_done);
                // A stream's usage and cost are known when it ends: the ledger and the request's
                // summary learn them then (a header has long been sent).
                let record = usage_recorder(attempt, &self.served_by.deployment);
                let watch = telemetry::StreamWatch::current();
                stream.on_end(move |end| {
                    let cost = end.usage.as_ref().and_then(&record).map(|c| c.usd);
                    watch.ended(end, cost);
                });
                let stream = first_event_or_error(stream).await?;
                telemetry::first_event(&attempt.group, id);
                Ok(ProxyResponse::stream(resp.status, headers, stream, served_by))
            }
            // A stream was asked for but the upstream answered plainly (some servers ignore `stream`).
            UpstreamBody::Stream(stream) => {
                let bytes = UpstreamBody::Stream(stream)
                    .collect(crate::upstream::MAX_RESPONSE_BYTES)
                    .await?;
                Ok(ProxyResponse::full(resp.status, headers, bytes, served_by))
            }
        }
    }
}

/// A typed endpoint's 2xx answer must be one whole JSON value: a body cut short with a clean
/// end (or garbage) would otherwise reach the client as a 200 it cannot parse, and be logged
/// as served. Pass-through answers may be anything (files, audio) and are left alone.
fn complete_json(endpoint: Endpoint, body: &[u8]) -> Result<(), Error> {
    if endpoint == Endpoint::Passthrough || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Ok(());
    }
    Err(Error::BadUpstreamResponse {
        message: format!(
            "the upstream's answer is not valid JSON ({} bytes, truncated or malformed)",
            body.len()
        ),
    })
}

/// Records usage (and its cost) in the ledger; returns the cost when the model has a price.
fn usage_recorder(
    attempt: &Attempt,
    deployment: &Arc<str>,
) -> impl Fn(&Usage) -> Option<crate::tokens::Cost> + Send + 'static {
    let price = attempt.prices.get(&attempt.upstream_model).copied();
    let ledger = attempt.ledger.clone();
    let model = attempt.routed.model.clone();
    let client = attempt.routed.req.client.clone();
    let deployment = deployment.clone();
    move |usage: &Usage| {
        let cost = price.map(|p| p.cost(usage));
        ledger.record_usage(&model, &deployment, client.as_deref(), usage, cost.as_ref());
        cost
    }
}

/// Waits for the stream's first whole event. If the stream fails before sending anything, that is
/// an ordinary error (the client gets a proper HTTP status, and the call could be retried); after
/// the first event, failures can only be reported in-band.
async fn first_event_or_error(mut stream: ResponseStream) -> Result<ResponseStream, Error> {
    match stream.next().await {
        Some(GuardItem::Failed(err, _)) => Err(err),
        Some(first) => {
            Ok(stream.wrap(|rest| futures::stream::once(async move { first }).chain(rest).boxed()))
        }
        None => Err(Error::BadUpstreamResponse {
            message: "the upstream stream was empty".to_owned(),
        }),
    }
}

/// A non-success upstream answer as an error: its message, type, code and param, and how long
/// it asked us to wait. The one place every provider's error answers are interpreted.
pub(crate) fn upstream_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
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

/// Bounds each call by what is left of its request's deadline (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
}

impl<S> Service<Attempt> for Deadline<S>
where
    S: Service<Attempt, Response = ProxyResponse, Error = AttemptError>,
    S::Future: Send + 'static,
{
    type Response = ProxyResponse;
    type Error = AttemptError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, AttemptError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let window = attempt.routed.window;
        let call = self.inner.call(attempt);
        Box::pin(async move {
            match tokio::time::timeout_at(window.deadline, call).await {
                Ok(result) => result,
                // An upstream that outlived the configured deadline is failing; one that outlived
                // a deadline the client shortened says nothing (see the disposition table).
                Err(_) => Err(AttemptError::Failed(Error::Timeout {
                    phase: if window.shortened {
                        TimeoutPhase::ClientDeadline
                    } else {
                        TimeoutPhase::Deadline
                    },
                    after: window.time_allowed,
                })),
            }
        })
    }
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
