//! The admin API: live stats, manual circuit-breaker control and config reload, under `/admin`.
//!
//! It is protected by its own key (`server.admin_key`, or `WEIR_ADMIN_KEY`), sent as
//! `Authorization: Bearer <admin key>`; gateway client keys never open it. Without an admin key
//! the API is disabled and its paths answer 404 like any unknown URL, so an unconfigured gateway
//! does not even reveal that it has one. A missing or wrong key is a 401 in the OpenAI error
//! shape; the key is compared in constant time and never logged or echoed.
//!
//! | Route | Does |
//! |-------|------|
//! | `GET /admin/stats` | per deployment: breaker, cooldown, rate-limit usage, in flight, latency p50/p99, pool; cache and usage (when the engine has them) |
//! | `POST /admin/deployments/{id}/open` | forces the breaker open: the deployment takes no traffic until `close` or `reset` |
//! | `POST /admin/deployments/{id}/close` | forces it closed: traffic flows and failures are not counted, until `reset` |
//! | `POST /admin/deployments/{id}/reset` | back to normal: closed, counts cleared |
//! | `POST /admin/reload` | re-reads the config file and swaps it in (see [`crate::reload`]) |

use axum::{
    Json, Router,
    extract::{Path, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::Method;
use serde_json::json;
use weir::Error;

use crate::{
    http::{
        auth::{bearer_token, constant_time_eq},
        error::ApiError,
    },
    state::Shared,
};

/// The admin routes, behind the admin key check.
pub(crate) fn routes(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/deployments/{id}/{action}", post(breaker_action))
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state, require_admin_key))
}

/// Lets the request through only with the admin key; 404 when no admin key is configured.
async fn require_admin_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let engine = state.engine();
    let Some(admin_key) = engine.config().server.admin_key.clone() else {
        // Disabled: indistinguishable from a path the gateway does not serve.
        return ApiError::from(Error::NotFound {
            message: format!("Unknown request URL: {} {}.", req.method(), req.uri().path()),
        })
        .into_response();
    };
    drop(engine);
    let presented = bearer_token(req.headers()).map(str::trim);
    let message = match presented {
        None => "The admin API needs the admin key: send 'Authorization: Bearer ADMIN_KEY'.",
        Some(key) if constant_time_eq(admin_key.expose().as_bytes(), key.as_bytes()) => {
            return next.run(req).await;
        }
        // Never echo the presented key back, not even a prefix.
        Some(_) => "Incorrect admin key provided.",
    };
    ApiError::from(Error::Unauthenticated {
        message: message.to_owned(),
    })
    .into_response()
}

/// `GET /admin/stats`.
async fn stats(State(state): State<Shared>) -> Response {
    let engine = state.engine();
    let config = engine.config();
    Json(json!({
        "config": {
            "generation": state.live.generation(),
            "source": config.source.to_string(),
            "models": config.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        },
        "deployments": engine.deployment_stats(),
        // Requests, tokens and cost by model, deployment and client key, since startup (a
        // reload keeps counting).
        "usage": engine.usage(),
        "cache": engine.cache_stats(),
    }))
    .into_response()
}

/// `POST /admin/deployments/{id}/{open|close|reset}`.
async fn breaker_action(
    State(state): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    method: Method,
    uri: http::Uri,
) -> Response {
    let engine = state.engine();
    let Some(deployment) = engine.deployment(&id) else {
        return ApiError::from(Error::NotFound {
            message: format!("No deployment has the id `{id}`."),
        })
        .into_response();
    };
    let apply: fn(&weir::policy::breaker::CircuitBreaker) = match action.as_str() {
        "open" => |b| b.force_open(),
        "close" => |b| b.force_closed(),
        "reset" => |b| b.reset(),
        _ => {
            return ApiError::from(Error::NotFound {
                message: format!(
                    "Unknown request URL: {method} {}. Breaker actions are open, close and reset.",
                    uri.path()
                ),
            })
            .into_response();
        }
    };
    let Some(breaker) = deployment.breaker() else {
        return ApiError::from(Error::InvalidRequest {
            message: format!(
                "Deployment `{id}` has no circuit breaker (circuit_breaker is disabled in its config), \
                 so it cannot be opened, closed or reset."
            ),
            param: None,
            code: Some("circuit_breaker_disabled"),
        })
        .into_response();
    };
    apply(breaker);
    let state_now = breaker.state().kind().as_str();
    tracing::warn!(deployment = %id, action = %action, breaker = state_now, "admin: circuit breaker changed by hand");
    Json(json!({
        "deployment": id,
        "action": action,
        "breaker": state_now,
    }))
    .into_response()
}

/// `POST /admin/reload`.
async fn reload(State(state): State<Shared>) -> Response {
    match state.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "config reload failed; the running config stays in force");
            ApiError::from(weir::Error::from(err)).into_response()
        }
    }
}
