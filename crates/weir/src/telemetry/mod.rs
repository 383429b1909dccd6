//! Telemetry: metric names, their labels and buckets, the per-request summary, and span helpers.
//!
//! The library records through the [`metrics`] facade: with no recorder installed (a plain
//! in-process user of [`crate::Client`]) every call is a no-op; the gateway installs a Prometheus
//! recorder and serves `GET /metrics`. Names follow Prometheus conventions (`weir_` prefix, base
//! units, `_total` on counters); `docs/observability.md` lists them with the seed's names.
//!
//! # Why labels are enums
//!
//! Every label value comes from configuration (model group, deployment, provider) or from a small
//! fixed set ([`StatusClass`], [`crate::error::ErrorKind`], [`Direction`]...), never from the request: an
//! unknown model, a request id or an error message would create a new series per request and
//! exhaust the Prometheus server. Requests that were never routed are labelled [`NONE`].

mod context;
mod names;
pub mod trace;

use std::time::Duration;

pub use context::{RequestSummary, SummaryData};
pub use names::*;

use crate::{
    config::ProviderKind,
    error::ErrorKind,
    path::ApiPath,
    policy::{
        breaker::{CircuitBreaker, StateKind},
        limit::RateLimitSnapshot,
    },
    request::Endpoint,
    response::{ProxyBody, ProxyResponse},
    upstream::pool::PoolStats,
};

/// The label value for "not known": a request refused before routing has no model group.
pub const NONE: &str = "none";

/// Buckets for durations (seconds): from 5 ms (cached answers, gateway refusals) to 5 minutes
/// (long generations). Explicit and identical on every replica, so histograms aggregate.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets for time to first token (seconds): finer at the low end, where it matters for chat.
pub const TTFT_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// Buckets for tokens per request: powers of four from 16 to a million.
pub const TOKEN_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Every histogram and its buckets, for the exporter's `set_buckets_for_metric`.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (REQUEST_DURATION, DURATION_BUCKETS),
    (UPSTREAM_ATTEMPT_DURATION, DURATION_BUCKETS),
    (TIME_TO_FIRST_TOKEN, TTFT_BUCKETS),
    (REQUEST_TOKENS, TOKEN_BUCKETS),
];

/// An HTTP status reduced to its class: `2xx`, `4xx`, `5xx` (and `1xx`/`3xx`, which Weir does
/// not normally answer with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx (and anything out of range).
    ServerError,
}

impl StatusClass {
    /// The class of a status code.
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

/// Which way tokens went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Prompt (input) tokens.
    Input,
    /// Completion (output) tokens.
    Output,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// Whose rate limit refused (or queued) a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleScope {
    /// A gateway key's own limits (`server.client_rate_limits`).
    Client,
    /// A deployment's limits (its upstream key's quota).
    Deployment,
}

impl ThrottleScope {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleScope::Client => "client",
            ThrottleScope::Deployment => "deployment",
        }
    }
}

/// The value of the breaker-state gauge: `0` closed, `1` half-open, `2` open, `3` forced open,
/// `4` forced closed. Anything above 1 rejects calls, except 4.
pub fn breaker_state_value(state: StateKind) -> f64 {
    match state {
        StateKind::Closed => 0.0,
        StateKind::HalfOpen => 1.0,
        StateKind::Open => 2.0,
        StateKind::ForcedOpen => 3.0,
        StateKind::ForcedClosed => 4.0,
    }
}

/// The label value of a provider (`openai`, `anthropic`, ...).
pub fn provider_label(kind: ProviderKind) -> &'static str {
    kind.as_str()
}

/// Registers the help text of every metric (shown as `# HELP` by the Prometheus exporter).
/// Call once, after installing a recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request arrival to the end of the response body (streams included)."
    );
    describe_histogram!(
        UPSTREAM_ATTEMPT_DURATION,
        Unit::Seconds,
        "Time of one upstream call until its answer (the first event, for a stream)."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from request arrival to the first streamed event sent to the client."
    );
    describe_histogram!(
        REQUEST_TOKENS,
        "Tokens per request as the upstream reported them, by direction."
    );
    describe_counter!(
        REQUESTS,
        "Requests answered, by model group, deployment, provider and status class."
    );
    describe_counter!(ERRORS, "Requests that ended in an error, by error type.");
    describe_counter!(
        RETRIES,
        "Upstream calls retried (on the same or another deployment), by the error that caused them."
    );
    describe_counter!(
        BREAKER_STATE_CHANGES,
        "Circuit breaker state changes, by deployment and from/to state."
    );
    describe_counter!(
        RATE_LIMIT_THROTTLED,
        "Requests refused by a rate limit of the gateway (client or deployment scope)."
    );
    describe_counter!(TOKENS, "Tokens processed, by direction.");
    describe_counter!(
        COST,
        "Spend in millionths of a US dollar (divide by 1e6), from the pricing table."
    );
    describe_counter!(
        CACHE_REQUESTS,
        "Requests by response cache verdict: hit, miss, bypass (not looked up)."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 forced closed."
    );
    describe_gauge!(
        RATE_LIMIT_REMAINING,
        "What is left of a deployment's per-minute limit right now."
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "Requests being served by the gateway (streams until they end)."
    );
    describe_gauge!(
        DEPLOYMENT_IN_FLIGHT,
        "Upstream calls in flight per deployment (what least-busy balancing sees)."
    );
    describe_gauge!(
        UPSTREAM_CONNECTIONS_ACTIVE,
        "Upstream requests holding a pooled connection slot, per upstream host."
    );
    describe_gauge!(
        UPSTREAM_CONNECTIONS_MAX,
        "The cap on simultaneous upstream connections, per upstream host."
    );
    describe_counter!(
        SHARED_LIMIT_REDIS_ERRORS,
        "Shared rate limit calls to Redis that failed or timed out."
    );
    describe_counter!(
        SHARED_LIMIT_FALLBACKS,
        "Rate limit decisions made without Redis (it was failing), by redis.on_error."
    );
    describe_counter!(
        SHARED_LIMIT_RECOVERIES,
        "Times Redis answered again after failing: shared rate limits resumed."
    );
    describe_gauge!(
        SHARED_LIMIT_REDIS_UP,
        "1 while shared rate limits reach Redis, 0 while they fall back to redis.on_error."
    );
}

// === impl recording ===

/// One upstream call finished: its duration and outcome (`success` or an [`ErrorKind`] label).
pub(crate) fn record_attempt(
    deployment: &str,
    provider: ProviderKind,
    took: Duration,
    error: Option<ErrorKind>,
) {
    metrics::histogram!(
        UPSTREAM_ATTEMPT_DURATION,
        "deployment" => deployment.to_owned(),
        "provider" => provider_label(provider),
        "outcome" => error.map_or("success", ErrorKind::as_str),
    )
    .record(took.as_secs_f64());
}

/// A retry is about to happen after `error` on `deployment`.
pub(crate) fn record_retry(model_group: &str, deployment: &str, error: ErrorKind) {
    metrics::counter!(
        RETRIES,
        "model_group" => model_group.to_owned(),
        "deployment" => deployment.to_owned(),
        "error_type" => error.as_str(),
    )
    .increment(1);
}

/// A rate limit of the gateway refused a request.
pub(crate) fn record_throttle(scope: ThrottleScope, deployment: Option<&str>) {
    metrics::counter!(
        RATE_LIMIT_THROTTLED,
        "scope" => scope.as_str(),
        "deployment" => deployment.unwrap_or(NONE).to_owned(),
    )
    .increment(1);
}

/// Counts a breaker's state changes and keeps its state gauge current as they happen (the gauge
/// is also refreshed at scrape time, since open → half-open happens lazily).
pub(crate) fn watch_breaker(breaker: &CircuitBreaker) {
    breaker.on_state_change(|change| {
        let deployment = change.name.to_string();
        metrics::counter!(
            BREAKER_STATE_CHANGES,
            "deployment" => deployment.clone(),
            "from" => change.from.as_str(),
            "to" => change.to.as_str(),
        )
        .increment(1);
        metrics::gauge!(BREAKER_STATE, "deployment" => deployment).set(breaker_state_value(change.to));
    });
}

/// Records the request-level metrics of a finished request: count, duration, errors, tokens and
/// cost. `status` is the HTTP status sent; `took` runs to the end of the body.
pub fn record_request(summary: &SummaryData, status: u16, took: Duration) {
    let group = summary.model_group.as_deref().unwrap_or(NONE).to_owned();
    let deployment = summary.deployment.as_deref().unwrap_or(NONE).to_owned();
    let provider = summary.provider.map_or(NONE, provider_label);
    let class = StatusClass::of(status).as_str();
    metrics::counter!(
        REQUESTS,
        "model_group" => group.clone(),
        "deployment" => deployment.clone(),
        "provider" => provider,
        "status_class" => class,
    )
    .increment(1);
    metrics::histogram!(
        REQUEST_DURATION,
        "model_group" => group.clone(),
        "status_class" => class,
    )
    .record(took.as_secs_f64());
    if let Some(kind) = summary.error {
        metrics::counter!(ERRORS, "error_type" => kind.as_str()).increment(1);
    }
    for (direction, count) in [
        (Direction::Input, summary.input_tokens),
        (Direction::Output, summary.output_tokens),
    ] {
        let Some(count) = count else { continue };
        metrics::counter!(
            TOKENS,
            "model_group" => group.clone(),
            "deployment" => deployment.clone(),
            "direction" => direction.as_str(),
        )
        .increment(count);
        metrics::histogram!(
            REQUEST_TOKENS,
            "model_group" => group.clone(),
            "direction" => direction.as_str(),
        )
        .record(count as f64);
    }
    // Priced by the engine from the pricing table (none for models it does not know).
    if let Some(cost) = summary.cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
        metrics::counter!(
            COST,
            "model_group" => group.clone(),
            "deployment" => deployment.clone(),
        )
        .increment((cost * COST_UNITS_PER_USD).round() as u64);
    }
    // From the cache's verdict on the answer (the gateway reads its `x-weir-cache` header).
    if let Some(result) = summary.cache {
        metrics::counter!(CACHE_REQUESTS, "result" => result).increment(1);
    }
}

/// [`COST`] counts millionths of a US dollar: the `metrics` facade's counters are integers, and a
/// cent would be too coarse for one small request. Divide by this in queries to get dollars.
pub const COST_UNITS_PER_USD: f64 = 1_000_000.0;

/// The first event of a stream reached the engine `ttft` after the request arrived.
pub(crate) fn record_ttft(model_group: &str, deployment: &str, ttft: Duration) {
    metrics::histogram!(
        TIME_TO_FIRST_TOKEN,
        "model_group" => model_group.to_owned(),
        "deployment" => deployment.to_owned(),
    )
    .record(ttft.as_secs_f64());
}

/// What one deployment's read-at-scrape-time gauges show.
pub struct DeploymentGauges<'a> {
    /// The deployment's id.
    pub deployment: &'a str,
    /// Its breaker's state (`None` when it has no breaker).
    pub breaker: Option<StateKind>,
    /// What is left of its per-minute limits (`None` without limits).
    pub limits: Option<&'a RateLimitSnapshot>,
    /// Its upstream calls in flight.
    pub in_flight: u64,
}

/// Sets one deployment's gauges that are read rather than counted: breaker state, what is left of
/// its limits, calls in flight (see `Engine::refresh_gauges`, which calls this at scrape time).
pub fn set_deployment_gauges(g: &DeploymentGauges<'_>) {
    let id = g.deployment.to_owned();
    if let Some(state) = g.breaker {
        metrics::gauge!(BREAKER_STATE, "deployment" => id.clone()).set(breaker_state_value(state));
    }
    if let Some(snapshot) = g.limits {
        for (limit, status) in [
            ("requests", snapshot.requests),
            ("input_tokens", snapshot.input_tokens),
            ("output_tokens", snapshot.output_tokens),
        ] {
            if let Some(status) = status {
                metrics::gauge!(RATE_LIMIT_REMAINING, "deployment" => id.clone(), "limit" => limit)
                    .set(status.remaining as f64);
            }
        }
    }
    metrics::gauge!(DEPLOYMENT_IN_FLIGHT, "deployment" => id).set(g.in_flight as f64);
}

/// Sets the upstream connection gauges, per upstream host.
pub fn set_pool_gauges(hosts: &[(String, PoolStats)]) {
    for (upstream, stats) in hosts {
        metrics::gauge!(UPSTREAM_CONNECTIONS_ACTIVE, "upstream" => upstream.clone())
            .set(stats.in_flight as f64);
        metrics::gauge!(UPSTREAM_CONNECTIONS_MAX, "upstream" => upstream.clone())
            .set(stats.max_connections as f64);
    }
}

// === impl engine hooks ===

/// The upstream call an attempt is about to make.
pub(crate) struct AttemptInfo<'a> {
    pub endpoint: Endpoint,
    pub path: &'a ApiPath,
    pub model_group: std::sync::Arc<str>,
    pub deployment: &'a str,
    pub provider: ProviderKind,
    pub base_url: &'a url::Url,
    pub model: &'a str,
}

/// An upstream call failed: the request's summary notes where (`host:port` of the deployment's
/// URL, no path, query or credentials), so the error the client gets can name it. Only on
/// failure: a served request never needs it.
pub(crate) fn attempt_failed_at(url: &url::Url) {
    let Some(host) = url.host_str() else { return };
    let label: std::sync::Arc<str> = match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}").into(),
        None => host.into(),
    };
    RequestSummary::update_current(|s| s.upstream = Some(label));
}

/// An upstream call is starting: counts it in the request's summary and opens its span.
pub(crate) fn attempt_started(info: &AttemptInfo<'_>) -> tracing::Span {
    let mut attempt = 0;
    RequestSummary::update_current(|s| {
        s.attempts += 1;
        attempt = s.attempts;
        s.model_group = Some(info.model_group.clone());
        s.deployment = Some(std::sync::Arc::from(info.deployment));
        s.provider = Some(info.provider);
    });
    trace::attempt_span(&trace::AttemptTarget {
        endpoint: info.endpoint,
        path: info.path,
        provider: info.provider,
        base_url: info.base_url,
        deployment: info.deployment,
        model: info.model,
        attempt,
    })
}

/// An upstream call answered (or failed): its duration metric, and on its span the status, the
/// answering model and token usage (for whole bodies; a stream reports usage when it ends).
pub(crate) fn attempt_finished(
    span: &tracing::Span,
    deployment: &str,
    provider: ProviderKind,
    took: Duration,
    result: &Result<ProxyResponse, crate::error::Error>,
) {
    let error = result.as_ref().err().map(crate::error::Error::kind);
    record_attempt(deployment, provider, took, error);
    match result {
        Ok(resp) => {
            span.record("http.response.status_code", i64::from(resp.status.as_u16()));
            if let ProxyBody::Full(_) = &resp.body {
                if let Some(model) = &resp.model {
                    span.record("gen_ai.response.model", model.as_str());
                }
                if let Some(usage) = &resp.usage {
                    trace::record_usage(span, Some(usage.prompt_tokens), Some(usage.completion_tokens));
                    RequestSummary::update_current(|s| {
                        s.input_tokens = Some(usage.prompt_tokens);
                        s.output_tokens = Some(usage.completion_tokens);
                    });
                }
            }
        }
        Err(err) => trace::record_error(span, err),
    }
}

/// The first event of a stream arrived: time to first token, from the request's arrival.
pub(crate) fn first_event(model_group: &str, deployment: &str) {
    if let Some(summary) = RequestSummary::current() {
        let ttft = summary.elapsed();
        summary.update(|s| s.time_to_first_token = Some(ttft));
        record_ttft(model_group, deployment, ttft);
    }
}

/// What a stream reports when it ends: usage into the summary and the attempt's span, and a
/// failure after the first event (which the client saw as an error event under a 200).
pub(crate) struct StreamWatch {
    summary: Option<RequestSummary>,
    span: tracing::Span,
}

impl StreamWatch {
    /// Captures the current request's summary and span: the stream ends outside the handler.
    pub(crate) fn current() -> StreamWatch {
        StreamWatch {
            summary: RequestSummary::current(),
            span: tracing::Span::current(),
        }
    }

    /// Records how the stream ended, and what it cost (priced by the caller from its usage).
    pub(crate) fn ended(&self, end: &crate::sse::StreamEnd, cost_usd: Option<f64>) {
        let (input, output) = match &end.usage {
            Some(u) => (Some(u.prompt_tokens), Some(u.completion_tokens)),
            None => (None, None),
        };
        trace::record_usage(&self.span, input, output);
        if let Some(kind) = end.error {
            self.span.record("error.type", kind.as_str());
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some(summary) = &self.summary {
            summary.update(|s| {
                if input.is_some() {
                    s.input_tokens = input;
                    s.output_tokens = output;
                }
                if end.error.is_some() {
                    s.error = end.error;
                }
                if cost_usd.is_some() {
                    s.cost_usd = cost_usd;
                }
            });
        }
    }
}
