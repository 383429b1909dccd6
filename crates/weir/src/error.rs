//! The engine's error type, and the small label enum used for metrics and logs.
//!
//! Every failure a request can meet is one variant of [`Error`]. Turning an error into an HTTP status
//! and an OpenAI-shaped body happens in exactly one place, [`crate::api::ErrorResponse::from_error`],
//! so the library's `Client` and the gateway agree on what each failure means.

use std::time::Duration;

use http::StatusCode;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Establishing the TCP/TLS connection took longer than the connect timeout.
    Connect,
    /// No bytes arrived from the upstream within the read (idle) timeout.
    Read,
    /// The whole non-streaming call took longer than the total timeout.
    Total,
    /// The request's overall deadline (retries included) passed.
    Deadline,
    /// The request's deadline, shortened by the client (`x-weir-timeout`), passed. Reported to
    /// the client like [`TimeoutPhase::Deadline`], but says nothing about the upstream's health.
    ClientDeadline,
}

impl TimeoutPhase {
    fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Read => "read",
            TimeoutPhase::Total => "total",
            TimeoutPhase::Deadline | TimeoutPhase::ClientDeadline => "request deadline",
        }
    }
}

/// Everything that can go wrong on the way to an upstream and back.
///
/// Messages never contain API keys or prompt text: upstream URLs are stripped from transport errors
/// and upstream error bodies are reduced to their `message` field.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client's request is malformed (bad JSON, a missing or mistyped field).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, for a human.
        message: String,
        /// The offending field, when there is one.
        param: Option<String>,
        /// A machine-readable code such as `missing_required_parameter`.
        code: Option<&'static str>,
    },
    /// No model group serves this model name.
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    ModelNotFound {
        /// The model name the client asked for.
        model: String,
    },
    /// The client took too long to send its request body.
    #[error("The request body did not arrive within {}s.", .after.as_secs())]
    ClientTimeout {
        /// How long we waited.
        after: Duration,
    },
    /// The request body exceeds the configured limit.
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client's gateway key is missing or wrong.
    #[error("{message}")]
    Unauthenticated {
        /// What is wrong with the credentials (never the credentials themselves).
        message: String,
    },
    /// The path or method is not something the gateway serves.
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
    /// The path exists but not with this HTTP method.
    #[error("{message}")]
    MethodNotAllowed {
        /// Which method and path.
        message: String,
    },
    /// The upstream answered with a non-success status.
    #[error("upstream returned {status}: {message}")]
    Upstream {
        /// The upstream's HTTP status.
        status: StatusCode,
        /// The upstream's error message (its `error.message`, or a short summary of the body).
        message: String,
        /// The upstream's error `type`, when it gave one.
        error_type: Option<String>,
        /// The upstream's error `code`, when it gave one.
        code: Option<String>,
        /// The upstream's error `param`, when it gave one.
        param: Option<String>,
        /// How long the upstream asked us to wait (`Retry-After` / `retry-after-ms`).
        retry_after: Option<Duration>,
    },
    /// A timeout fired.
    #[error("upstream {} timeout after {}", .phase.as_str(), humantime::format_duration(*.after))]
    Timeout {
        /// Which timeout.
        phase: TimeoutPhase,
        /// Its configured length.
        after: Duration,
    },
    /// The upstream could not be reached (connection refused, DNS, TLS handshake).
    #[error("could not connect to the upstream: {message}")]
    Connect {
        /// The transport's description, without the URL.
        message: String,
    },
    /// No upstream connection slot became free in time: the gateway's own pool is saturated
    /// (`pool.max_connections` / `max_connections_per_host`), which says nothing about the upstream.
    #[error("upstream pool wait timeout after {}", humantime::format_duration(*.waited))]
    PoolExhausted {
        /// How long the request waited for a slot (the connect timeout).
        waited: Duration,
    },
    /// The connection failed after it was established (reset, truncated body, protocol error).
    #[error("upstream connection failed: {message}")]
    Transport {
        /// The transport's description, without the URL.
        message: String,
    },
    /// The upstream sent something that is not what its API promises.
    #[error("upstream sent an invalid response: {message}")]
    BadUpstreamResponse {
        /// What was wrong with it.
        message: String,
    },
    /// A rate limit configured in the gateway (per client key or per deployment) refused the request.
    #[error("Rate limit reached for {scope}: {detail}.")]
    RateLimited {
        /// Whose limit: `client key-0`, `deployment openai-a`...
        scope: String,
        /// Which limit and until when.
        detail: String,
        /// When the request would fit.
        retry_after: Duration,
        /// OpenAI-style `x-ratelimit-*` headers describing the limit.
        headers: Vec<(&'static str, String)>,
    },
    /// The request alone needs more than a configured limit allows: it can never be admitted.
    #[error("Request too large for {scope}: {detail}. Lower max_tokens or shorten the prompt.")]
    RequestTooLarge {
        /// Whose limit.
        scope: String,
        /// Which limit, what it allows and what was asked.
        detail: String,
    },
    /// Every deployment of the model group is resting (429 cooldown, open breaker) for longer than
    /// the request can wait.
    #[error("No deployment of `{model_group}` can take requests right now: {reason}.")]
    NoDeploymentAvailable {
        /// The model group.
        model_group: String,
        /// Why, for a human: which deployments rest and until when.
        reason: String,
        /// When the first one becomes usable again.
        retry_after: Option<Duration>,
    },
    /// The gateway is shutting down or otherwise cannot take the request.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A bug or an impossible state; the message is safe to show.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Low-cardinality error labels for metrics and log fields: never a raw message or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client's request was malformed.
    InvalidRequest,
    /// Unknown model.
    ModelNotFound,
    /// Body too large.
    PayloadTooLarge,
    /// Bad or missing gateway key.
    Unauthenticated,
    /// Unknown route.
    NotFound,
    /// A rate limit of the gateway's own refused the request.
    RateLimited,
    /// The upstream rejected the request as invalid (4xx other than auth and rate limits).
    UpstreamClientError,
    /// The upstream rejected our credentials (401/403).
    UpstreamAuth,
    /// The upstream rate-limited us (429).
    UpstreamRateLimited,
    /// The upstream failed (5xx).
    UpstreamServerError,
    /// A timeout.
    Timeout,
    /// Could not connect.
    Connect,
    /// Connection broke mid-flight.
    Transport,
    /// The upstream's answer was unreadable.
    BadUpstreamResponse,
    /// Gateway unavailable (draining, no deployment usable).
    Unavailable,
    /// The gateway's upstream connection pool had no free slot in time.
    PoolExhausted,
    /// Configuration or internal failure.
    Internal,
}

impl ErrorKind {
    /// The label value, in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::NotFound => "not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamClientError => "upstream_client_error",
            ErrorKind::UpstreamAuth => "upstream_auth",
            ErrorKind::UpstreamRateLimited => "upstream_rate_limited",
            ErrorKind::UpstreamServerError => "upstream_server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Transport => "transport",
            ErrorKind::BadUpstreamResponse => "bad_upstream_response",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Error {
    /// The metric/log label of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. } | Error::RequestTooLarge { .. } => ErrorKind::InvalidRequest,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::ModelNotFound { .. } => ErrorKind::ModelNotFound,
            Error::PayloadTooLarge { .. } | Error::ClientTimeout { .. } => ErrorKind::PayloadTooLarge,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::NotFound { .. } | Error::MethodNotAllowed { .. } => ErrorKind::NotFound,
            Error::Upstream { status, .. } => match status.as_u16() {
                401 | 403 => ErrorKind::UpstreamAuth,
                429 => ErrorKind::UpstreamRateLimited,
                500..=599 => ErrorKind::UpstreamServerError,
                _ => ErrorKind::UpstreamClientError,
            },
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            Error::Transport { .. } => ErrorKind::Transport,
            Error::BadUpstreamResponse { .. } => ErrorKind::BadUpstreamResponse,
            Error::Unavailable { .. } | Error::NoDeploymentAvailable { .. } => ErrorKind::Unavailable,
            Error::Config(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A 400 naming the offending field.
    pub fn invalid_param(param: &str, message: impl Into<String>, code: Option<&'static str>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
            code,
        }
    }

    /// A 400 for a required field that is absent.
    pub fn missing_param(param: &str) -> Self {
        Error::invalid_param(
            param,
            format!("you must provide a '{param}' parameter"),
            Some("missing_required_parameter"),
        )
    }
}

/// Removes the configured secrets (upstream API keys, gateway keys) from text relayed to clients.
///
/// Upstream error messages reach clients (a 400's explanation, a probe's failure), and an
/// upstream may quote what it received — `Invalid API key: sk-...` or the whole `Authorization`
/// header. Every such text passes through this before it leaves the engine.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole. Shared: every stream's
    /// end hook holds a clone.
    secrets: std::sync::Arc<[String]>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Secrets shorter than this are not searched for: replacing every `ab` in a message would
    /// destroy it, and such a value is no secret worth the name.
    pub const MIN_SECRET_LEN: usize = 6;

    /// What a secret is replaced with.
    pub const MARK: &'static str = "[redacted]";

    /// A redactor for these secret values.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= Self::MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor {
            secrets: secrets.into(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by [`Redactor::MARK`].
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), Self::MARK);
            }
        }
        out
    }

    fn field(&self, field: &mut String) {
        if self.secrets.iter().any(|s| field.contains(s.as_str())) {
            *field = self.text(field);
        }
    }

    /// `err` with every text that may come from an upstream redacted.
    pub fn error(&self, mut err: Error) -> Error {
        if self.secrets.is_empty() {
            return err;
        }
        match &mut err {
            Error::Upstream {
                message,
                error_type,
                code,
                param,
                ..
            } => {
                self.field(message);
                for field in [error_type, code, param].into_iter().flatten() {
                    self.field(field);
                }
            }
            Error::InvalidRequest { message, .. }
            | Error::Unauthenticated { message }
            | Error::NotFound { message }
            | Error::MethodNotAllowed { message }
            | Error::Connect { message }
            | Error::Transport { message }
            | Error::BadUpstreamResponse { message }
            | Error::Unavailable { message } => self.field(message),
            Error::Internal(message) | Error::Config(message) => self.field(message),
            Error::NoDeploymentAvailable { reason, .. } => self.field(reason),
            _ => {}
        }
        err
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod redactor_tests {
    use super::*;

    #[test]
    fn every_secret_is_replaced_in_every_relayed_field() {
        let r = Redactor::new([
            "sk-upstream-123".to_owned(),
            "sk-upstream-123456".to_owned(),
            "short".to_owned(),
        ]);
        let err = r.error(Error::Upstream {
            status: StatusCode::BAD_REQUEST,
            message: "bad key sk-upstream-123456 (also sk-upstream-123); short stays".into(),
            error_type: Some("sk-upstream-123".into()),
            code: None,
            param: Some("x".into()),
            retry_after: None,
        });
        let Error::Upstream {
            message,
            error_type,
            param,
            ..
        } = err
        else {
            panic!("not an upstream error");
        };
        // The longer secret is replaced whole, not left with a tail.
        assert_eq!(message, "bad key [redacted] (also [redacted]); short stays");
        assert_eq!(error_type.as_deref(), Some("[redacted]"));
        assert_eq!(param.as_deref(), Some("x"));
        let transport = r.error(Error::Transport {
            message: "sent sk-upstream-123".into(),
        });
        assert!(!transport.to_string().contains("sk-upstream"), "{transport}");
        assert!(Redactor::new(Vec::new()).is_empty());
    }
}
