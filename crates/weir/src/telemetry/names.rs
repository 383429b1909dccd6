//! Metric names. Prometheus conventions: a `weir_` prefix, base units in the name (`_seconds`),
//! `_total` on counters. The table in `docs/observability.md` maps them to the seed's names.

/// Histogram: request arrival to the end of the response body. Labels: `model_group`, `status_class`.
pub const REQUEST_DURATION: &str = "weir_request_duration_seconds";
/// Histogram: one upstream call. Labels: `deployment`, `provider`, `outcome` (`success` or an error type).
pub const UPSTREAM_ATTEMPT_DURATION: &str = "weir_upstream_attempt_duration_seconds";
/// Histogram: request arrival to the first streamed event. Labels: `model_group`, `deployment`.
pub const TIME_TO_FIRST_TOKEN: &str = "weir_time_to_first_token_seconds";
/// Histogram: tokens per request. Labels: `model_group`, `direction`.
pub const REQUEST_TOKENS: &str = "weir_request_tokens";
/// Counter: requests. Labels: `model_group`, `deployment`, `provider`, `status_class`.
pub const REQUESTS: &str = "weir_requests_total";
/// Counter: failed requests. Labels: `error_type`.
pub const ERRORS: &str = "weir_errors_total";
/// Counter: retries. Labels: `model_group`, `deployment` (the one that failed), `error_type`.
pub const RETRIES: &str = "weir_retries_total";
/// Counter: breaker state changes. Labels: `deployment`, `from`, `to`.
pub const BREAKER_STATE_CHANGES: &str = "weir_circuit_breaker_state_changes_total";
/// Counter: requests refused by a gateway rate limit. Labels: `scope`, `deployment`.
pub const RATE_LIMIT_THROTTLED: &str = "weir_rate_limit_throttled_total";
/// Counter: tokens. Labels: `model_group`, `deployment`, `direction`.
pub const TOKENS: &str = "weir_tokens_total";
/// Counter: spend in millionths of a dollar. Labels: `model_group`, `deployment`.
pub const COST: &str = "weir_cost_microdollars_total";
/// Counter: requests by response cache verdict. Labels: `result` (`hit`, `miss`, `bypass`).
pub const CACHE_REQUESTS: &str = "weir_cache_requests_total";
/// Gauge: breaker state (0 closed, 1 half-open, 2 open, 3 forced open, 4 forced closed). Labels: `deployment`.
pub const BREAKER_STATE: &str = "weir_circuit_breaker_state";
/// Gauge: what is left of a deployment's per-minute limit. Labels: `deployment`, `limit`.
pub const RATE_LIMIT_REMAINING: &str = "weir_rate_limit_remaining";
/// Gauge: requests being served (the gateway's).
pub const REQUESTS_IN_FLIGHT: &str = "weir_requests_in_flight";
/// Gauge: upstream calls in flight per deployment. Labels: `deployment`.
pub const DEPLOYMENT_IN_FLIGHT: &str = "weir_deployment_in_flight";
/// Gauge: upstream requests holding a pooled connection slot. Labels: `upstream` (host:port).
pub const UPSTREAM_CONNECTIONS_ACTIVE: &str = "weir_upstream_connections_active";
/// Gauge: the connection cap per upstream host. Labels: `upstream` (host:port).
pub const UPSTREAM_CONNECTIONS_MAX: &str = "weir_upstream_connections_max";

pub use crate::policy::limit::shared::{
    FALLBACKS as SHARED_LIMIT_FALLBACKS, RECOVERIES as SHARED_LIMIT_RECOVERIES,
    REDIS_ERRORS as SHARED_LIMIT_REDIS_ERRORS, REDIS_UP as SHARED_LIMIT_REDIS_UP,
};

/// Every metric name, for docs and tests.
pub const ALL: &[&str] = &[
    REQUEST_DURATION,
    UPSTREAM_ATTEMPT_DURATION,
    TIME_TO_FIRST_TOKEN,
    REQUEST_TOKENS,
    REQUESTS,
    ERRORS,
    RETRIES,
    BREAKER_STATE_CHANGES,
    RATE_LIMIT_THROTTLED,
    TOKENS,
    COST,
    CACHE_REQUESTS,
    BREAKER_STATE,
    RATE_LIMIT_REMAINING,
    REQUESTS_IN_FLIGHT,
    DEPLOYMENT_IN_FLIGHT,
    UPSTREAM_CONNECTIONS_ACTIVE,
    UPSTREAM_CONNECTIONS_MAX,
    SHARED_LIMIT_REDIS_ERRORS,
    SHARED_LIMIT_FALLBACKS,
    SHARED_LIMIT_RECOVERIES,
    SHARED_LIMIT_REDIS_UP,
];
