//! The request's context: its correlation id, its span, and its end (one log line, the request
//! metrics and the span's closing attributes, once the response body has been sent).
//!
//! [`request_context`] wraps every route the gateway serves, so each request gets these whatever
//! face serves it. What the engine learns along the way (model, deployment, tokens, cost) arrives
//! through the request's [`RequestSummary`], a task-local the engine fills.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tracing::{Instrument, field::Empty};
use weir::telemetry::{self as wt, RequestSummary, trace::parse_traceparent};

use crate::telemetry;

/// The request's correlation id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Takes `x-request-id` from the client when it is sane (short, printable, no spaces: it ends up
/// in logs and upstream headers) or makes a UUID; puts it on the request, on every log line of the
/// request (through the span), and on the response. Logs one line when the response body has been
/// sent (see [`RequestEnd`]), with what the engine put in the request's summary.
pub(crate) async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Fields named after the OpenTelemetry HTTP and GenAI conventions, filled as they are known.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        %path,
        otel.name = %format_args!("{method} {path}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.response.status_code = Empty,
        gen_ai.request.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        weir.deployment = Empty,
        weir.attempts = Empty,
        error.type = Empty,
    );
    let traceparent = telemetry::client_traceparent(req.headers());
    telemetry::adopt_remote_parent(&span, traceparent.as_deref());
    let summary = RequestSummary::new();
    summary.update(|s| s.traceparent = traceparent);
    let end = RequestEnd::start(span.clone(), summary.clone(), path.starts_with("/v1/"));
    let mut resp = summary.scope(next.run(req)).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    end.attach(resp)
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

// === end of request ===

/// What the end-of-request line and metrics need, carried by the response body until it ends.
pub(crate) struct RequestEnd {
    span: tracing::Span,
    summary: RequestSummary,
    started: Instant,
    status: StatusCode,
    /// The error the handler answered with (the response carries its label).
    error: Option<weir::ErrorKind>,
    /// Why, in words safe to log (the response carries it too).
    reason: Option<std::sync::Arc<str>>,
    /// Whether this is an API request (counted in the request metrics); health checks and
    /// scrapes are logged but not counted.
    counted: bool,
}

impl RequestEnd {
    /// Starts tracking a request; counts it in flight if it is an API request.
    pub(crate) fn start(span: tracing::Span, summary: RequestSummary, counted: bool) -> RequestEnd {
        if counted {
            metrics::gauge!(wt::REQUESTS_IN_FLIGHT).increment(1.0);
        }
        RequestEnd {
            span,
            summary,
            started: Instant::now(),
            status: StatusCode::OK,
            error: None,
            reason: None,
            counted,
        }
    }

    /// Attaches to the response: the line is written when its body has been sent (or dropped).
    pub(crate) fn attach(mut self, resp: Response) -> Response {
        self.status = resp.status();
        self.error = resp.extensions().get::<weir::ErrorKind>().copied();
        self.reason = resp
            .extensions()
            .get::<crate::http::error::RefusalReason>()
            .map(|r| r.0.clone());
        // The response cache labels every answer it saw (`x-weir-cache`); a fixed set of values.
        let cache = match resp
            .headers()
            .get(weir::cache::CACHE_HEADER)
            .map(HeaderValue::as_bytes)
        {
            Some(b"hit") => Some("hit"),
            Some(b"miss") => Some("miss"),
            Some(b"bypass") => Some("bypass"),
            _ => None,
        };
        if cache.is_some() {
            self.summary.update(|s| s.cache = cache);
        }
        let (parts, body) = resp.into_parts();
        let body = Body::new(EndOfBody {
            inner: body,
            end: Some(self),
        });
        Response::from_parts(parts, body)
    }

    /// `body_error`: the body broke while being sent. `complete`: it was sent whole (else the
    /// client went away first).
    fn finish(self, complete: bool) {
        let took = self.started.elapsed();
        let mut data = self.summary.snapshot();
        if data.error.is_none() {
            data.error = self.error;
        }
        let status = self.status.as_u16();
        if self.counted {
            metrics::gauge!(wt::REQUESTS_IN_FLIGHT).decrement(1.0);
            wt::record_request(&data, status, took);
        }
        let span = &self.span;
        span.record("http.response.status_code", i64::from(status));
        if let Some(model) = &data.model {
            span.record("gen_ai.request.model", model.as_str());
        }
        if let Some(deployment) = &data.deployment {
            span.record("weir.deployment", &**deployment);
        }
        span.record("weir.attempts", i64::from(data.attempts));
        weir::telemetry::trace::record_usage(span, data.input_tokens, data.output_tokens);
        if let Some(kind) = data.error {
            span.record("error.type", kind.as_str());
            if !(400..500).contains(&status) {
                span.record("otel.status_code", "ERROR");
            }
        }
        // A stream cut after its first event is a failure under a 200.
        let failed = data.error.is_some();
        if !telemetry::request_line_wanted(failed) {
            return;
        }
        let _entered = span.enter();
        let trace_id = trace_id(span, &data);
        let latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        let ttft_ms = data
            .time_to_first_token
            .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        let model = data.model.as_deref().unwrap_or("-");
        let model_group = data.model_group.as_deref().unwrap_or("-");
        let deployment = data.deployment.as_deref().unwrap_or("-");
        let error = data.error.map(weir::ErrorKind::as_str);
        let client = data.client.as_deref();
        let reason = self.reason.as_deref();
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    trace_id = trace_id.as_deref(),
                    model,
                    model_group,
                    deployment,
                    status,
                    attempts = data.attempts,
                    latency_ms,
                    ttft_ms,
                    input_tokens = data.input_tokens,
                    output_tokens = data.output_tokens,
                    cost_usd = data.cost_usd,
                    cache = data.cache,
                    client,
                    error,
                    reason,
                    complete,
                    $message
                )
            };
        }
        match data.error {
            Some(_) if !(400..500).contains(&status) => line!(warn, "request failed"),
            Some(_) => line!(info, "request rejected"),
            None => line!(info, "request served"),
        }
    }
}

/// The trace id for the log line: the exported trace's, else the client's `traceparent`'s.
fn trace_id(span: &tracing::Span, data: &wt::SummaryData) -> Option<String> {
    if telemetry::tracing_enabled() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(sc.trace_id().to_string());
        }
    }
    data.traceparent
        .as_deref()
        .and_then(parse_traceparent)
        .map(|tp| tp.trace_id.to_owned())
}

/// A response body that reports the request's end when its last frame has been taken, it fails,
/// or it is dropped (the client went away, or hyper stopped after `is_end_stream`).
struct EndOfBody {
    inner: Body,
    end: Option<RequestEnd>,
}

impl EndOfBody {
    fn finish(&mut self, complete: bool) {
        if let Some(end) = self.end.take() {
            end.finish(complete);
        }
    }
}

impl http_body::Body for EndOfBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for EndOfBody {
    fn drop(&mut self) {
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        assert!(is_sane_request_id("req_123-abc"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("line\nbreak"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
    }
}
