//! Spans with OpenTelemetry GenAI semantic conventions, and W3C trace context for upstreams.
//!
//! The library only creates `tracing` spans; exporting them (OTLP) is the gateway's business. The
//! spans made here use the [`TARGET`] target, which the gateway keeps out of its log output (a
//! log line inside an upstream call should carry the request's span, with its request id), and
//! lets through to the OpenTelemetry layer. Field names are the GenAI and HTTP conventions'
//! (`gen_ai.request.model`, `server.address`, ...); `otel.name`, `otel.kind` and
//! `otel.status_code` are read by `tracing-opentelemetry` as the span's name, kind and status.
//!
//! Which `traceparent` an upstream receives: with a tracer installed (see
//! [`set_context_injector`]) the one of the attempt span, so the upstream's spans hang under
//! that attempt; otherwise the client's own, passed on unchanged, so a trace the client started
//! still reaches the upstream through a gateway that exports nothing.

use std::sync::OnceLock;

use http::HeaderValue;
use tracing::{Span, field::Empty};

use super::RequestSummary;
use crate::{config::ProviderKind, error::Error, path::ApiPath, request::Endpoint};

/// The target of the spans made here (routing, upstream attempts, cache lookups).
pub const TARGET: &str = "weir_otel";

/// Produces the `traceparent` of the current span, when a tracer records spans.
pub type ContextInjector = fn() -> Option<String>;

static INJECTOR: OnceLock<ContextInjector> = OnceLock::new();

/// Installs the function that turns the current span into a `traceparent` header (the gateway
/// does, when it exports traces). Only the first call takes effect; returns whether it did.
pub fn set_context_injector(injector: ContextInjector) -> bool {
    INJECTOR.set(injector).is_ok()
}

/// The `traceparent` to send on the upstream call being made now (inside its attempt span).
pub(crate) fn upstream_traceparent() -> Option<HeaderValue> {
    let value = match INJECTOR.get().and_then(|inject| inject()) {
        Some(value) => Some(value),
        None => RequestSummary::current().and_then(|s| s.snapshot().traceparent),
    }?;
    // Validated again: it becomes a header of a request we send.
    parse_traceparent(&value)?;
    HeaderValue::from_str(&value).ok()
}

/// The parts of a W3C `traceparent` (version 00): `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: &'a str,
    /// 16 lowercase hex digits, not all zero.
    pub parent_id: &'a str,
    /// Whether the caller sampled the trace.
    pub sampled: bool,
}

/// Parses a `traceparent` header strictly (what is forwarded upstream must be well-formed).
pub fn parse_traceparent(value: &str) -> Option<TraceParent<'_>> {
    let value = value.trim();
    let mut parts = value.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
    // Version 00 has exactly four parts; a later version may add some, but never change these.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32)
        || all_zero(trace_id)
        || !hex(parent_id, 16)
        || all_zero(parent_id)
        || !hex(flags, 2)
    {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// The GenAI `gen_ai.operation.name` of an endpoint.
pub fn operation_name(endpoint: Endpoint, path: &ApiPath) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Embeddings => "embeddings",
        Endpoint::ImageGenerations => "generate_content",
        Endpoint::Passthrough if path.as_str() == "completions" => "text_completion",
        Endpoint::Passthrough => "other",
    }
}

/// The GenAI `gen_ai.provider.name` of a provider kind (the convention's well-known values).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Mock => "weir.mock",
    }
}

/// The span around routing one request (its attempts, retries and fallbacks are children).
pub(crate) fn route_span(model: &str, model_group: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "route",
        otel.name = "route",
        gen_ai.request.model = model,
        weir.model_group = model_group,
    )
}

/// Where an upstream call goes, for its span.
pub(crate) struct AttemptTarget<'a> {
    pub endpoint: Endpoint,
    pub path: &'a ApiPath,
    pub provider: ProviderKind,
    pub base_url: &'a url::Url,
    pub deployment: &'a str,
    pub model: &'a str,
    pub attempt: u32,
}

/// The span of one upstream call (a client span: the upstream continues the trace under it).
pub(crate) fn attempt_span(t: &AttemptTarget<'_>) -> Span {
    let operation = operation_name(t.endpoint, t.path);
    let provider = provider_name(t.provider);
    let (address, port) = match t.provider {
        ProviderKind::Mock => (None, None),
        _ => (t.base_url.host_str(), t.base_url.port_or_known_default()),
    };
    tracing::info_span!(
        target: TARGET,
        "upstream",
        otel.name = %format_args!("{operation} {}", t.model),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = provider,
        gen_ai.system = provider,
        gen_ai.request.model = t.model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = address,
        server.port = port.map(i64::from),
        http.response.status_code = Empty,
        error.type = Empty,
        weir.deployment = t.deployment,
        weir.attempt = i64::from(t.attempt),
    )
}

/// The span of a response cache lookup. Seam for the cache (issue 6): instrument the lookup with
/// it and record `weir.cache.result` (`hit` / `miss`).
pub fn cache_span() -> Span {
    tracing::info_span!(target: TARGET, "cache", otel.name = "cache lookup", weir.cache.result = Empty)
}

// Numbers are recorded as `i64`: tracing-opentelemetry turns unsigned fields recorded after a
// span's creation into strings.

/// Marks a span as failed with an error's type (and the upstream's status, if it answered).
pub fn record_error(span: &Span, err: &Error) {
    if let Error::Upstream { status, .. } = err {
        span.record("http.response.status_code", i64::from(status.as_u16()));
    }
    span.record("error.type", err.kind().as_str());
    span.record("otel.status_code", "ERROR");
}

/// Records token usage on a span.
pub fn record_usage(span: &Span, input: Option<u64>, output: Option<u64>) {
    if let Some(n) = input {
        span.record("gen_ai.usage.input_tokens", i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Some(n) = output {
        span.record("gen_ai.usage.output_tokens", i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_strictly() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = parse_traceparent(ok).unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id, "00f067aa0ba902b7");
        assert!(tp.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }
}
