//! Anthropic's Messages API behind OpenAI's chat API.
//!
//! The engine hands every provider an OpenAI-shaped request; this one translates
//! `chat/completions` to `POST {base_url}/v1/messages` ([`request`]), and the answer back
//! ([`response`], [`stream`]), including error bodies (so the engine's single error mapping reads
//! them like OpenAI's). `GET models` (health probes, `/v1/models` of wildcard groups) lists
//! Anthropic's models in OpenAI's shape. Other OpenAI endpoints (embeddings, images, files...)
//! have no Anthropic counterpart and are refused with a 400 that says so.
//!
//! HTTP goes through the same transport as the OpenAI provider (shared pool, timeouts, stream
//! idle guard), with Anthropic's headers: `x-api-key` (marked sensitive) and `anthropic-version`.
//! Anthropic's 529 `overloaded_error` keeps its status: as a 5xx it is retried (and counted by
//! the circuit breaker) like any upstream server error.

pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;

#[cfg(test)]
mod golden_tests;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, header};

use super::{OpenAiProvider, Provider, UpstreamBody, UpstreamRequest, UpstreamResponse};
use crate::{
    api::anthropic::ANTHROPIC_VERSION,
    config::{DeploymentConfig, ProviderKind},
    error::Error,
    path::ApiPath,
};

/// Talks to the Anthropic Messages API.
#[derive(Debug)]
pub(crate) struct AnthropicProvider {
    /// The transport (pool, timeouts), carrying Anthropic's auth headers.
    http: OpenAiProvider,
    /// Deployment id, for error messages.
    id: String,
}

impl AnthropicProvider {
    /// Builds the provider for a deployment (`base_url` is the API host, e.g.
    /// `https://api.anthropic.com`, under which `/v1/messages` lives).
    pub(crate) fn new(config: &DeploymentConfig) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
        AnthropicProvider {
            http: OpenAiProvider::with_headers(config, "x-api-key", headers),
            id: config.id.clone(),
        }
    }

    async fn send_inner(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        match (&req.method, req.path.as_str()) {
            (&Method::POST, "chat/completions") => self.chat(req).await,
            (&Method::GET, "models") => {
                // One page of up to 1000 (the API's maximum) covers every Anthropic model.
                let path = ApiPath::known("v1/models");
                self.get(req, path, Some("limit=1000"), response::model_list)
                    .await
            }
            (&Method::GET, path) if path.starts_with("models/") => {
                let path = ApiPath::parse(&format!("v1/{path}"))?;
                self.get(req, path, None, response::model).await
            }
            (method, path) => Err(Error::InvalidRequest {
                message: format!(
                    "The Anthropic provider (deployment `{}`) does not support {method} /v1/{path}; \
                     it serves chat completions and model listings.",
                    self.id
                ),
                param: None,
                code: Some("unsupported_endpoint"),
            }),
        }
    }

    async fn chat(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let translated = request::to_anthropic(req.body.as_deref().unwrap_or_default())?;
        let body = serde_json::to_vec(&translated.request).map_err(|e| Error::Internal(e.to_string()))?;
        let upstream = UpstreamRequest {
            method: Method::POST,
            path: ApiPath::known("v1/messages"),
            query: None,
            body: Some(Bytes::from(body)),
            content_type: None,
            stream: translated.stream,
            request_id: req.request_id,
            traceparent: req.traceparent,
        };
        let resp = self.http.send_inner(upstream).await?;
        let mut headers = answer_headers(&resp.headers, "application/json");
        if !resp.status.is_success() {
            let body = resp.body.collect(super::MAX_RESPONSE_BYTES).await?;
            return Ok(UpstreamResponse {
                status: resp.status,
                headers,
                body: UpstreamBody::Full(response::error_body(&body)),
            });
        }
        let is_sse = resp.is_event_stream();
        let body = match resp.body {
            UpstreamBody::Stream(stream) if is_sse => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                let translator = stream::Translator::new(translated.include_usage);
                UpstreamBody::Stream(stream::translate(stream, translator))
            }
            other => {
                let body = other.collect(super::MAX_RESPONSE_BYTES).await?;
                UpstreamBody::Full(response::chat_completion(&body)?)
            }
        };
        Ok(UpstreamResponse {
            status: resp.status,
            headers,
            body,
        })
    }

    async fn get(
        &self,
        req: UpstreamRequest,
        path: ApiPath,
        query: Option<&str>,
        translate: fn(&[u8]) -> Result<Bytes, Error>,
    ) -> Result<UpstreamResponse, Error> {
        let upstream = UpstreamRequest {
            method: Method::GET,
            path,
            query: query.map(str::to_owned),
            body: None,
            content_type: None,
            stream: false,
            request_id: req.request_id,
            traceparent: req.traceparent,
        };
        let resp = self.http.send_inner(upstream).await?;
        let body = resp.body.collect(super::MAX_RESPONSE_BYTES).await?;
        let body = if resp.status.is_success() {
            translate(&body)?
        } else {
            response::error_body(&body)
        };
        Ok(UpstreamResponse {
            status: resp.status,
            headers: answer_headers(&resp.headers, "application/json"),
            body: UpstreamBody::Full(body),
        })
    }
}

/// The headers of a translated answer: its new content type, the upstream's `Retry-After`, and
/// Anthropic's `request-id` under the name the engine passes on.
fn answer_headers(upstream: &HeaderMap, content_type: &'static str) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for name in ["retry-after", "retry-after-ms"] {
        if let Some(v) = upstream.get(name) {
            out.insert(name, v.clone());
        }
    }
    if let Some(id) = upstream
        .get("request-id")
        .or_else(|| upstream.get("x-request-id"))
    {
        out.insert("x-request-id", id.clone());
    }
    out
}

impl Provider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>> {
        Box::pin(self.send_inner(request))
    }

    fn pool_stats(&self) -> Option<crate::upstream::pool::PoolStats> {
        self.http.pool_stats()
    }
}
