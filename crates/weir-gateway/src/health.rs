//! The endpoints operators and load balancers call: liveness (`/health`), readiness (`/ready`,
//! 503 while draining or with no model to serve), the Prometheus scrape (`/metrics`), and the upstream probe
//! (`/health/upstreams`, which the router puts behind the gateway key check).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::{state::Shared, telemetry};

/// How long `/health/upstreams` waits for each upstream.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The open endpoints: `/health`, `/ready`, `/metrics`.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// `/health/upstreams`. It calls every upstream and shows their errors: mount it behind the key
/// check.
pub(crate) fn upstream_routes() -> Router<Shared> {
    Router::new().route("/health/upstreams", get(upstreams))
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready when there is something to serve: 503 with a reason while draining, or with no model
/// configured (every request would be a 404: an embedder's empty config, say).
async fn ready(State(state): State<Shared>) -> Response {
    let not_ready = |status: &str, reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status, "reason": reason})),
        )
            .into_response()
    };
    if state.is_draining() {
        return not_ready("draining", "the gateway is shutting down");
    }
    let models = state.engine().config().models.len();
    if models == 0 {
        return not_ready(
            "not_ready",
            "no models are configured: every request would be answered 404",
        );
    }
    Json(json!({"status": "ready", "models": models})).into_response()
}

async fn upstreams(State(state): State<Shared>) -> Response {
    let reports = state.engine().probe_all(PROBE_TIMEOUT).await;
    let healthy = reports.iter().filter(|r| r.status == "healthy").count();
    let status = if healthy == reports.len() {
        "healthy"
    } else if healthy == 0 {
        "unhealthy"
    } else {
        "degraded"
    };
    let code = if healthy == reports.len() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"status": status, "deployments": reports}))).into_response()
}

/// `GET /metrics`: the Prometheus text format, gauges read at scrape time.
async fn metrics(State(state): State<Shared>) -> Response {
    let Some(handle) = telemetry::prometheus() else {
        return (StatusCode::NOT_FOUND, "metrics are disabled\n").into_response();
    };
    state.engine().refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response()
}
