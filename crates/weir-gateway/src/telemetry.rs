//! The gateway's telemetry exporters: the Prometheus recorder (scraped at `GET /metrics`, see
//! `health`), log and OTLP trace subscribers, and trace context from clients.
//!
//! Metric names, labels and the per-request summary live in the library (`weir::telemetry`);
//! this module only installs the exporters. When a request is over (its log line and metrics) is
//! decided by the request context (`http::context`).

use std::{sync::OnceLock, time::Duration};

use http::HeaderMap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use weir::telemetry::{self as wt, trace::parse_traceparent};

// === Prometheus ===

/// The process's Prometheus recorder, installed by the first gateway built in this process.
/// `None` inside when another recorder was installed first (an embedder's own): then `/metrics`
/// answers 404 rather than lying with an empty page.
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets between scrapes, so an unscraped
/// gateway's memory stays flat.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder once per process (tests run several gateways in one process;
/// they share it) and returns its handle.
pub fn install_metrics() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in wt::HISTOGRAM_BUCKETS {
                // Explicit buckets: without them the exporter renders summaries, whose quantiles
                // cannot be aggregated across replicas.
                builder = match builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, metric = name, "cannot set histogram buckets");
                        return None;
                    }
                };
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "another metrics recorder is installed: /metrics is disabled");
                return None;
            }
            wt::describe();
            let upkeep = handle.clone();
            // A plain thread, not a task: the recorder outlives any one runtime (tests).
            let spawned = std::thread::Builder::new()
                .name("weir-metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::park_timeout(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        })
        .as_ref()
}

/// The process's Prometheus handle, if this process's recorder is the gateway's.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS.get().and_then(Option::as_ref)
}

// === traces ===

static TRACING: OnceLock<bool> = OnceLock::new();

/// Whether spans are exported (an OTLP exporter is installed in this process).
pub fn tracing_enabled() -> bool {
    TRACING.get().copied().unwrap_or(false)
}

/// The client's `traceparent`, if well-formed (anything else is ignored, never forwarded).
pub fn client_traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    parse_traceparent(value)?;
    Some(value.trim().to_owned())
}

/// Makes the client's trace the parent of the request span, when traces are exported.
pub fn adopt_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if !tracing_enabled() {
        return;
    }
    let Some(traceparent) = traceparent else { return };
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct One<'a>(&'a str);
    impl opentelemetry::propagation::Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&One(traceparent));
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "cannot adopt the client's trace");
    }
}

/// The `traceparent` of the current span (an upstream attempt), for the upstream request.
fn inject_current() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Flushes and stops trace export at shutdown.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans still buffered (bounded by the exporter's timeout) and stops.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // `shutdown` blocks until the export finished: keep it off the runtime's workers.
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match result {
            Ok(Ok(())) => tracing::info!("trace export flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing trace export failed"),
            Err(e) => tracing::warn!(error = %e, "flushing trace export failed"),
        }
    }
}

/// Where OTLP traces go, once config and environment are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The traces endpoint (full URL, `/v1/traces` included).
    pub endpoint: String,
    /// Extra headers (from config; `OTEL_EXPORTER_OTLP_HEADERS` is read by the exporter itself).
    pub headers: Vec<(String, weir::config::Secret)>,
    /// `service.name`.
    pub service_name: String,
    /// Sampling ratio for traces the client did not decide.
    pub sample_ratio: f64,
}

/// Combines the `tracing:` config with the standard environment variables: config first, then
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), then `OTEL_EXPORTER_OTLP_ENDPOINT` (plus
/// `/v1/traces`). `None` (export off) without any, or with `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`.
pub fn otlp_settings(
    config: &weir::config::TracingConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Option<OtlpSettings> {
    let set = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    let with_path = |base: &str| format!("{}/v1/traces", base.trim_end_matches('/'));
    let endpoint = match &config.otlp_endpoint {
        Some(url) => with_path(url.as_str()),
        None => match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => with_path(&set("OTEL_EXPORTER_OTLP_ENDPOINT")?),
        },
    };
    Some(OtlpSettings {
        endpoint,
        headers: config.otlp_headers.clone(),
        service_name: config
            .service_name
            .clone()
            .or_else(|| set("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "weir".to_owned()),
        sample_ratio: config.sample_ratio,
    })
}

// === the end-of-request line ===

/// `logging.requests` and `logging.request_sample_ratio` of the running gateway, fixed when
/// logging is set up (like the log level and format). Unset (a gateway embedded without
/// [`init`]): every request is logged.
static REQUEST_LOG: OnceLock<(weir::config::RequestLog, f64)> = OnceLock::new();

/// Whether the end-of-request line of a request is written: `failed` ones (refused, failed,
/// broken streams) unless the request log is off, served ones by the sample ratio.
pub(crate) fn request_line_wanted(failed: bool) -> bool {
    use weir::config::RequestLog;
    let (which, ratio) = REQUEST_LOG.get().copied().unwrap_or((RequestLog::All, 1.0));
    match which {
        RequestLog::Off => false,
        _ if failed => true,
        RequestLog::Errors => false,
        RequestLog::All => ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio),
    }
}

/// How span fields are written on log lines: only the plain ones (`request_id`, `method`,
/// `path`). Dotted names (`otel.name`, `http.response.status_code`, `gen_ai.*`, `weir.*`,
/// `error.type`) are trace attributes that follow the OpenTelemetry conventions; the
/// end-of-request line already carries their values under short names, so repeating them on
/// every line would only double its size.
struct LogFields {
    json: bool,
}

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for LogFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        if self.json {
            let mut visitor = JsonFields(serde_json::Map::new());
            fields.record(&mut visitor);
            write!(writer, "{}", serde_json::Value::Object(visitor.0))
        } else {
            let mut visitor = HumanFields { out: String::new() };
            fields.record(&mut visitor);
            writer.write_str(&visitor.out)
        }
    }

    fn add_fields(
        &self,
        current: &mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        if self.json {
            // Most records on the request span are trace-only fields the visitor drops: only
            // when something is left are the stored fields parsed and merged (not per record).
            let mut added = JsonFields(serde_json::Map::new());
            fields.record(&mut added);
            if added.0.is_empty() {
                return Ok(());
            }
            let mut merged: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&current.fields).unwrap_or_default();
            merged.extend(added.0);
            current.fields = serde_json::Value::Object(merged).to_string();
        } else {
            let mut visitor = HumanFields { out: String::new() };
            fields.record(&mut visitor);
            if !visitor.out.is_empty() {
                if !current.fields.is_empty() {
                    current.fields.push(' ');
                }
                current.fields.push_str(&visitor.out);
            }
        }
        Ok(())
    }
}

/// Whether a field belongs on log lines (see [`LogFields`]).
fn logged(field: &tracing::field::Field) -> bool {
    !field.name().contains('.')
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if logged(field) {
            self.0
                .insert(field.name().to_owned(), format!("{value:?}").into());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if logged(field) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if logged(field) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if logged(field) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if logged(field) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if logged(field) {
            self.0.insert(field.name().to_owned(), value.into());
        }
    }
}

/// `name=value` pairs like the default formatter's; the message bare.
struct HumanFields {
    out: String,
}

impl tracing::field::Visit for HumanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if !logged(field) {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{}={value:?}", field.name())
        };
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Sets up logging only (no trace export, whatever the environment says).
pub fn init_logging(logging: &weir::config::LoggingConfig) -> anyhow::Result<()> {
    install(logging, None).map(|_| ())
}

/// Sets up logging (human or JSON lines on stderr, filtered by `logging.level` or `RUST_LOG`)
/// and, when configured, OTLP trace export. Call once, inside the runtime.
pub fn init(
    logging: &weir::config::LoggingConfig,
    tracing_config: &weir::config::TracingConfig,
) -> anyhow::Result<TelemetryGuard> {
    let settings = otlp_settings(tracing_config, |name| std::env::var(name).ok());
    install(logging, settings)
}

fn install(
    logging: &weir::config::LoggingConfig,
    settings: Option<OtlpSettings>,
) -> anyhow::Result<TelemetryGuard> {
    use anyhow::Context as _;
    use tracing_subscriber::{Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => env,
        _ => logging.level.clone(),
    };
    // The library's trace-only spans (routing, attempts) stay out of log lines: a line logged
    // inside an upstream call shows the request's span, with its request id.
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{}=off", wt::trace::TARGET))
        .with_context(|| format!("invalid log filter `{filter}` (logging.level or RUST_LOG)"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = REQUEST_LOG.set((logging.requests, logging.request_sample_ratio));
    let fmt = match logging.format {
        weir::config::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(LogFields { json: true })
            .with_filter(filter)
            .boxed(),
        weir::config::LogFormat::Human => fmt
            .fmt_fields(LogFields { json: false })
            .with_filter(filter)
            .boxed(),
    };
    let (otel, provider) = match &settings {
        None => (None, None),
        Some(settings) => {
            let provider = tracer_provider(settings)?;
            use opentelemetry::trace::TracerProvider as _;
            let tracer = provider.tracer("weir");
            let targets = Targets::new()
                .with_target("weir", tracing::Level::INFO)
                .with_target("weir_gateway", tracing::Level::INFO)
                .with_target(wt::trace::TARGET, tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(targets);
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    if let Some(settings) = &settings {
        let _ = TRACING.set(true);
        weir::telemetry::trace::set_context_injector(inject_current);
        // The endpoint may carry a token in its query string on some hosted collectors.
        let shown = settings.endpoint.split('?').next().unwrap_or_default();
        tracing::info!(endpoint = shown, service = %settings.service_name, "exporting traces over OTLP/HTTP");
    }
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(settings: &OtlpSettings) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use anyhow::Context as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::{Sampler, span_processor_with_async_runtime::BatchSpanProcessor};
    let headers = settings
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.clone())
        .with_headers(headers)
        .with_timeout(Duration::from_secs(10))
        .build()
        .context("cannot set up the OTLP exporter")?;
    // The batch processor on the tokio runtime: the exporter's HTTP client is async reqwest,
    // which the default (thread-based) processor cannot drive.
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_is_off_by_default_and_env_vars_turn_it_on() {
        let config = weir::config::TracingConfig::default();
        assert_eq!(otlp_settings(&config, |_| None), None);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let s = otlp_settings(&config, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.service_name, "weir");
        let s = otlp_settings(
            &config,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
                ("OTEL_SERVICE_NAME", "edge"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.endpoint, "http://t:4318/custom",
            "the signal's own variable is used as is"
        );
        assert_eq!(s.service_name, "edge");
        assert_eq!(
            otlp_settings(
                &config,
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "true"),
                ]),
            ),
            None
        );
        let yaml = weir::config::TracingConfig {
            otlp_endpoint: Some("http://y:4318".parse().unwrap()),
            service_name: Some("from-yaml".to_owned()),
            ..Default::default()
        };
        let s = otlp_settings(&yaml, env(&[("OTEL_SERVICE_NAME", "edge")])).unwrap();
        assert_eq!(s.endpoint, "http://y:4318/v1/traces");
        assert_eq!(s.service_name, "from-yaml");
    }
}
