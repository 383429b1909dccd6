//! Calls that bypass routing: model listings, upstream probes and background health checks.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::join_all;
use http::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use super::{Deployment, DeploymentStatus, Engine, attempt::upstream_error, group::Group};
use crate::{
    api::{Model, ModelList},
    error::Error,
    path::ApiPath,
    request::ProxyRequest,
    route::health::{HealthCheckHandle, spawn_checker},
    upstream::UpstreamRequest,
};

/// Health of one deployment, from a `GET models` probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The deployment and its routing state (breaker, cooldown, load...), as routing sees it.
    #[serde(flatten)]
    pub state: DeploymentStatus,
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    /// Upstream HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Round-trip time of the probe.
    pub latency_ms: f64,
    /// Why it is unhealthy.
    pub error: Option<String>,
}

/// The background health check part of a [`ProbeReport`].
#[derive(Debug, Clone, Serialize)]
pub struct BackgroundCheck {
    /// Whether routing uses the deployment.
    pub healthy: bool,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Latency of the latest probe, if it succeeded.
    pub last_latency_ms: Option<f64>,
    /// Error of the latest probe, if it failed.
    pub last_error: Option<String>,
    /// Probes run so far.
    pub checks: u64,
}

impl Engine {
    /// The models clients can ask for: every named group, plus what wildcard groups' upstreams list.
    pub async fn list_models(&self) -> ModelList {
        let mut data: Vec<Model> = self
            .core
            .groups
            .iter()
            .filter(|g| !g.wildcard)
            .map(|g| Model {
                id: g.name.to_string(),
                object: "model".to_owned(),
                created: 0,
                owned_by: "weir".to_owned(),
            })
            .collect();
        for group in self.core.groups.iter().filter(|g| g.wildcard) {
            let Ok(deployment) = pick_any(group) else {
                continue;
            };
            match self.upstream_models(deployment).await {
                Ok(list) => {
                    for model in list.data {
                        if group.matches(&model.id) && !data.iter().any(|m| m.id == model.id) {
                            data.push(model);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(deployment = deployment.id(), error = %err, "could not list upstream models")
                }
            }
        }
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }

    /// One model by id: named groups answer themselves; wildcard groups ask their upstream.
    pub async fn retrieve_model(&self, id: &str, request_id: Option<String>) -> Result<Bytes, Error> {
        let group = self
            .config()
            .group_index(id)
            .and_then(|i| self.core.groups.get(i))
            .ok_or_else(|| self.config().model_not_found(id))?;
        if !group.wildcard {
            let model = Model {
                id: id.to_owned(),
                object: "model".to_owned(),
                created: 0,
                owned_by: "weir".to_owned(),
            };
            return serde_json::to_vec(&model)
                .map(Bytes::from)
                .map_err(|e| Error::Internal(e.to_string()));
        }
        let mut req = ProxyRequest::get(ApiPath::parse(&format!("models/{id}"))?);
        req.request_id = request_id;
        let deployment = pick_any(group)?.clone();
        let resp = self.send_simple(&deployment, req).await.map_err(|e| match e {
            Error::Upstream {
                status: StatusCode::NOT_FOUND,
                ..
            } => Error::ModelNotFound { model: id.to_owned() },
            other => other,
        })?;
        Ok(resp)
    }

    async fn upstream_models(&self, deployment: &Arc<Deployment>) -> Result<ModelList, Error> {
        let body = self
            .send_simple(deployment, ProxyRequest::get(ApiPath::known("models")))
            .await?;
        serde_json::from_slice(&body).map_err(|e| Error::BadUpstreamResponse {
            message: format!("model list: {e}"),
        })
    }

    /// A bodiless call to one deployment, bypassing routing; errors converted as usual.
    async fn send_simple(&self, deployment: &Arc<Deployment>, req: ProxyRequest) -> Result<Bytes, Error> {
        // Its errors reach clients (a model lookup, a probe report): the config's secrets go first.
        self.send_simple_unredacted(deployment, req)
            .await
            .map_err(|e| self.core.redactor.error(e))
    }

    async fn send_simple_unredacted(
        &self,
        deployment: &Arc<Deployment>,
        req: ProxyRequest,
    ) -> Result<Bytes, Error> {
        let resp = deployment
            .provider()
            .send(UpstreamRequest {
                method: req.method.clone(),
                path: req.path.clone(),
                query: None,
                body: None,
                content_type: None,
                stream: false,
                request_id: req.request_id.clone(),
                traceparent: None,
            })
            .await?;
        let (status, headers) = (resp.status, resp.headers);
        let body = resp.body.collect(crate::upstream::MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(upstream_error(status, &headers, &body));
        }
        Ok(body)
    }

    /// Starts background health checks for the deployments that have them configured (`GET
    /// models` every `interval`). Needs a tokio runtime. Dropping the handles stops the checks.
    pub fn start_health_checks(self: &Arc<Self>) -> Vec<HealthCheckHandle> {
        let mut handles = Vec::new();
        // Twice would double the probing and the threshold counting.
        if self
            .health_checks_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!("health checks were already started for this engine");
            return handles;
        }
        for deployment in self.deployments() {
            let Some(config) = deployment.config.health_check.clone() else {
                continue;
            };
            let engine = Arc::downgrade(self);
            let target = deployment.clone();
            let probe = move || {
                let engine = engine.clone();
                let target = target.clone();
                async move {
                    let engine = engine
                        .upgrade()
                        .ok_or_else(|| "the engine is shutting down".to_owned())?;
                    let started = Instant::now();
                    let req = ProxyRequest::get(ApiPath::known("models"));
                    match engine.send_simple(&target, req).await {
                        // Rate-limited means alive and busy, not broken (the cooldown handles it).
                        Ok(_)
                        | Err(Error::Upstream {
                            status: StatusCode::TOO_MANY_REQUESTS,
                            ..
                        }) => Ok(started.elapsed()),
                        Err(err) => Err(err.to_string()),
                    }
                }
            };
            handles.push(spawn_checker(deployment.health().clone(), config, probe));
        }
        handles
    }

    /// Probes every deployment with `GET models` (concurrently, each bounded by `timeout`).
    pub async fn probe_all(&self, timeout: Duration) -> Vec<ProbeReport> {
        let probes = self.deployments().map(|deployment| async move {
            let started = Instant::now();
            let req = ProxyRequest::get(ApiPath::known("models"));
            let result = tokio::time::timeout(timeout, self.send_simple(deployment, req)).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            let (http_status, error) = match result {
                Ok(Ok(_)) => (Some(200), None),
                // An upstream's text may quote the key it was sent: shown redacted.
                Ok(Err(Error::Upstream { status, message, .. })) => {
                    (Some(status.as_u16()), Some(self.redact(&message)))
                }
                Ok(Err(err)) => (None, Some(self.redact(&err.to_string()))),
                Err(_) => (
                    None,
                    Some(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout)
                    )),
                ),
            };
            ProbeReport {
                state: deployment.status(),
                status: if error.is_none() { "healthy" } else { "unhealthy" },
                http_status,
                latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                error,
            }
        });
        join_all(probes).await
    }
}

/// A usable deployment of `group` if there is one, else its first (for calls that can't wait,
/// like model listings, and reserve nothing against rate limits).
fn pick_any(group: &Group) -> Result<&Arc<Deployment>, Error> {
    group
        .order(&[])
        .into_iter()
        .find(|d| {
            d.cooldown_remaining().is_none()
                && d.health().is_healthy()
                && d.breaker().is_none_or(|b| b.is_call_permitted())
        })
        .or_else(|| group.deployments.first())
        .ok_or_else(|| Error::Internal(format!("model group `{}` has no deployments", group.name)))
}
