//! The gateway's own sections: `server:` ([`ServerConfig`]), `logging:` ([`LoggingConfig`]) and
//! `tracing:` ([`TracingConfig`]).

use std::time::Duration;

use super::{RateLimitConfig, Secret};

/// The gateway's HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests and streams may run after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Keys clients must present as `Authorization: Bearer <key>`. Empty: no authentication.
    pub api_keys: Vec<Secret>,
    /// Limits applied to each gateway key separately (all unauthenticated traffic shares one).
    pub client_rate_limits: Option<RateLimitConfig>,
    /// The key of the admin API (`/admin/*`); `None` disables it (it answers 404). Gateway keys
    /// never grant admin access. `WEIR_ADMIN_KEY` overrides it when the gateway loads its config.
    pub admin_key: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            max_body_bytes: 16 << 20,
            shutdown_timeout: Duration::from_secs(30),
            api_keys: Vec::new(),
            client_rate_limits: None,
            admin_key: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `warn`, `weir=debug,info`...
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf). Off unless `otlp_endpoint` is set here
/// or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables are.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's root URL (`/v1/traces` is appended), e.g. `http://localhost:4318`.
    pub otlp_endpoint: Option<url::Url>,
    /// Headers sent with every export (authentication for hosted collectors); values are secret.
    pub otlp_headers: Vec<(String, Secret)>,
    /// `service.name` of the spans; default `OTEL_SERVICE_NAME`, else `weir`.
    pub service_name: Option<String>,
    /// Fraction of traces sampled (when the client did not decide): 0 to 1, default 1.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            otlp_headers: Vec::new(),
            service_name: None,
            sample_ratio: 1.0,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For terminals.
    Human,
    /// For log pipelines.
    Json,
}
