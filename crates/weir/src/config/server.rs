//! The gateway's own sections: `server:` ([`ServerConfig`]), `logging:` ([`LoggingConfig`]) and
//! `tracing:` ([`TracingConfig`]).

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    ByteSize, ConfigDuration, EnvString, FieldError, RateLimitConfig, Secret, limits::RawRateLimits,
    overlay::Switch,
};

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
    /// How long a client may take, from the first byte of a request, to send all of its headers:
    /// a client trickling them is closed after it.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight may stay open without sending a byte
    /// (a keep-alive connection between requests, or a new one that never speaks).
    pub idle_timeout: Duration,
    /// Connections served at once; past it, new ones wait in the listen backlog until one
    /// closes. Keep it below the process's file-descriptor limit (`ulimit -n`).
    pub max_connections: usize,
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
            header_read_timeout: Duration::from_secs(30),
            // Longer than the idle timeout of common client pools (reqwest 90 s; httpx, under
            // OpenAI's Python SDK, 5 s): the client should close an idle connection first, or it
            // may send a request on one the server is closing.
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
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

/// `server:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    host: Option<String>,
    port: Option<u16>,
    max_body_size: Option<ByteSize>,
    shutdown_timeout: Option<ConfigDuration>,
    #[serde(default)]
    api_keys: Vec<Spanned<Secret>>,
    #[serde(default)]
    client_rate_limits: RawRateLimits,
    admin_key: Option<Spanned<Secret>>,
    header_read_timeout: Option<ConfigDuration>,
    idle_timeout: Option<ConfigDuration>,
    max_connections: Option<usize>,
}

impl TryFrom<RawServer> for ServerConfig {
    type Error = FieldError;

    fn try_from(raw: RawServer) -> Result<Self, FieldError> {
        let defaults = ServerConfig::default();
        let mut api_keys = Vec::with_capacity(raw.api_keys.len());
        for (i, key) in raw.api_keys.into_iter().enumerate() {
            if key.value.expose().trim().is_empty() {
                return Err(
                    FieldError::new(format!("api_keys[{i}]"), "a gateway key cannot be empty")
                        .at_line(key.referenced.line()),
                );
            }
            api_keys.push(key.value);
        }
        let admin_key = match raw.admin_key {
            Some(key) if key.value.expose().trim().is_empty() => {
                return Err(FieldError::new(
                    "admin_key",
                    "the admin key cannot be empty (omit it to disable the admin API)",
                )
                .at_line(key.referenced.line()));
            }
            // A client key that also opened the admin API would make every client an admin.
            Some(key) if api_keys.contains(&key.value) => {
                return Err(
                    FieldError::new("admin_key", "must differ from every server.api_keys entry")
                        .at_line(key.referenced.line()),
                );
            }
            Some(key) => Some(key.value),
            None => None,
        };
        let server = ServerConfig {
            host: raw.host.unwrap_or(defaults.host),
            port: raw.port.unwrap_or(defaults.port),
            max_body_bytes: raw.max_body_size.map_or(defaults.max_body_bytes, |b| b.0),
            shutdown_timeout: raw.shutdown_timeout.map_or(defaults.shutdown_timeout, |d| d.0),
            api_keys,
            admin_key,
            header_read_timeout: raw
                .header_read_timeout
                .map_or(defaults.header_read_timeout, |d| d.0),
            idle_timeout: raw.idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
            max_connections: raw.max_connections.unwrap_or(defaults.max_connections),
            client_rate_limits: raw
                .client_rate_limits
                .build()
                .map_err(|e| e.within("client_rate_limits"))?,
        };
        if server.max_body_bytes == 0 {
            return Err(FieldError::new("max_body_size", "must be greater than zero"));
        }
        for (field, value) in [
            ("header_read_timeout", server.header_read_timeout),
            ("idle_timeout", server.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(FieldError::new(field, "must be longer than zero"));
            }
        }
        if server.max_connections == 0 {
            return Err(FieldError::new("max_connections", "must be at least 1"));
        }
        Ok(server)
    }
}

/// `logging:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    format: Option<LogFormat>,
    level: Option<String>,
}

impl From<RawLogging> for LoggingConfig {
    fn from(raw: RawLogging) -> Self {
        let d = LoggingConfig::default();
        LoggingConfig {
            format: raw.format.unwrap_or(d.format),
            level: raw.level.unwrap_or(d.level),
        }
    }
}

/// `tracing:` as written: an OTLP/HTTP endpoint (the collector's root, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`), headers for it, the service name and a sampling ratio.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    otlp_endpoint: Option<Spanned<EnvString>>,
    #[serde(default)]
    otlp_headers: BTreeMap<String, Secret>,
    service_name: Option<EnvString>,
    sample_ratio: Option<Spanned<f64>>,
}

impl TryFrom<RawTracing> for TracingConfig {
    type Error = FieldError;

    fn try_from(raw: RawTracing) -> Result<Self, FieldError> {
        let otlp_endpoint = match raw.otlp_endpoint {
            None => None,
            Some(url) => {
                let text = url.value.0.trim();
                let parsed = url::Url::parse(text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| {
                        FieldError::new(
                            "otlp_endpoint",
                            format!("`{text}` is not an http(s) URL such as http://localhost:4318"),
                        )
                        .at_line(url.referenced.line())
                    })?;
                Some(parsed)
            }
        };
        for name in raw.otlp_headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(FieldError::new(
                    format!("otlp_headers.{name}"),
                    "not a valid HTTP header name",
                ));
            }
        }
        let sample_ratio = match raw.sample_ratio {
            None => 1.0,
            Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
            Some(r) => {
                return Err(
                    FieldError::new("sample_ratio", "must be between 0 and 1").at_line(r.referenced.line())
                );
            }
        };
        Ok(TracingConfig {
            otlp_endpoint,
            otlp_headers: raw.otlp_headers.into_iter().collect(),
            service_name: raw.service_name.map(|s| s.0).filter(|s| !s.trim().is_empty()),
            sample_ratio,
        })
    }
}
