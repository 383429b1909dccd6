//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, Groq...): bearer key, JSON passthrough.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use http::{HeaderMap, HeaderValue, header};
use url::Url;

use super::{Provider, UpstreamBody, UpstreamRequest, UpstreamResponse};
use crate::{
    config::{DeploymentConfig, ProviderKind, Timeouts},
    error::{Error, TimeoutPhase},
    pool::{HttpPool, PoolSettings},
};

/// Talks to an OpenAI-compatible API root over a shared connection pool.
#[derive(Debug)]
pub struct OpenAiProvider {
    /// API root without a trailing slash, e.g. `https://api.openai.com/v1`.
    base_url: Url,
    /// Host (and port) key for the per-host connection cap.
    host_key: String,
    /// Headers sent on every request: auth, organisation, project. Marked sensitive so that
    /// `Debug` output of requests never shows the key.
    headers: HeaderMap,
    /// Connection pool shared with every deployment that has the same settings.
    pool: Arc<HttpPool>,
    /// Timeouts (also inside `pool.settings()`, kept here for brevity).
    timeouts: Timeouts,
}

impl OpenAiProvider {
    /// Builds the provider for a deployment, joining (or creating) the shared pool for its settings.
    pub fn new(config: &DeploymentConfig) -> Result<Self, Error> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                Error::Config(format!(
                    "deployment `{}`: api_key has invalid characters",
                    config.id
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        for (name, value) in [
            ("openai-organization", &config.organization),
            ("openai-project", &config.project),
        ] {
            if let Some(value) = value {
                let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                    Error::Config(format!(
                        "deployment `{}`: {name} has invalid characters",
                        config.id
                    ))
                })?;
                headers.insert(name, value);
            }
        }
        Self::with_headers(config, headers)
    }

    /// The transport alone: the deployment's API root, pool and timeouts with these headers on
    /// every request. Translating providers (Anthropic) send through it with their own auth.
    pub(crate) fn with_headers(config: &DeploymentConfig, headers: HeaderMap) -> Result<Self, Error> {
        let pool = HttpPool::shared(PoolSettings {
            timeouts: config.timeouts,
            limits: config.pool,
        })?;
        let host_key = format!(
            "{}:{}",
            config.base_url.host_str().unwrap_or_default(),
            config.base_url.port_or_known_default().unwrap_or_default()
        );
        Ok(OpenAiProvider {
            base_url: config.base_url.clone(),
            host_key,
            headers,
            pool,
            timeouts: config.timeouts,
        })
    }

    /// The pool this provider sends through.
    pub fn pool(&self) -> &Arc<HttpPool> {
        &self.pool
    }

    pub(crate) async fn send_inner(&self, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        let url = req.path.join_onto(&self.base_url, req.query.as_deref())?;
        let permit = self.pool.acquire(&self.host_key).await?;
        let mut builder = self
            .pool
            .client()
            .request(req.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(id) = req
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            builder = builder.header("x-request-id", id);
        }
        if req.stream {
            builder = builder.header(header::ACCEPT, "text/event-stream");
        }
        if let Some(body) = req.body {
            let content_type = req
                .content_type
                .unwrap_or_else(|| HeaderValue::from_static("application/json"));
            builder = builder.header(header::CONTENT_TYPE, content_type).body(body);
        }
        let timeouts = self.timeouts;
        let map_err = move |e: reqwest::Error| Error::from_reqwest(e, &timeouts);

        if !req.stream {
            // Unary: one total deadline over connecting, waiting and reading the body.
            let call = async {
                let resp = builder.send().await.map_err(map_err)?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = read_limited(resp, MAX_RESPONSE_BYTES)
                    .await
                    .map_err(|e| match e {
                        ReadError::Http(e) => map_err(e),
                        ReadError::TooLarge => too_large(),
                    })?;
                Ok(UpstreamResponse {
                    status,
                    headers,
                    body: UpstreamBody::Full(body),
                })
            };
            let total = timeouts.total;
            let result = tokio::time::timeout(total, call)
                .await
                .map_err(|_| Error::Timeout {
                    phase: TimeoutPhase::Total,
                    after: total,
                })?;
            drop(permit);
            return result;
        }

        // Streaming: no total deadline (it would cut long generations); instead every wait for
        // bytes, the response head included, is bounded by the read (idle) timeout.
        let read = timeouts.read;
        let idle = || Error::Timeout {
            phase: TimeoutPhase::Read,
            after: read,
        };
        let resp = tokio::time::timeout(read + timeouts.connect, builder.send())
            .await
            .map_err(|_| idle())?
            .map_err(map_err)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if !status.is_success() {
            // Error bodies are small; read them whole so the engine can parse the message.
            let body = tokio::time::timeout(read, read_limited(resp, MAX_RESPONSE_BYTES))
                .await
                .map_err(|_| idle())?
                .map_err(|e| match e {
                    ReadError::Http(e) => map_err(e),
                    ReadError::TooLarge => too_large(),
                })?;
            return Ok(UpstreamResponse {
                status,
                headers,
                body: UpstreamBody::Full(body),
            });
        }
        let body = idle_guarded(resp.bytes_stream(), read, timeouts, permit);
        Ok(UpstreamResponse {
            status,
            headers,
            body: UpstreamBody::Stream(body),
        })
    }
}

/// Wraps a body stream so that each chunk must arrive within `read`, and so that the pool permit
/// is held until the stream is finished or dropped.
fn idle_guarded(
    stream: impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    read: Duration,
    timeouts: Timeouts,
    permit: crate::pool::PoolPermit,
) -> super::ByteStream {
    let stream = Box::pin(stream);
    Box::pin(futures::stream::unfold(
        Some((stream, permit)),
        move |state| async move {
            let (mut stream, permit) = state?;
            match tokio::time::timeout(read, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((stream, permit)))),
                Ok(Some(Err(e))) => Some((Err(Error::from_reqwest(e, &timeouts)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(Error::Timeout {
                        phase: TimeoutPhase::Read,
                        after: read,
                    }),
                    None,
                )),
            }
        },
    ))
}

/// The largest non-streamed upstream body accepted (a few base64 images fit easily); a larger one
/// is refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 128 << 20;

fn too_large() -> Error {
    Error::BadUpstreamResponse {
        message: format!("the upstream response exceeded {MAX_RESPONSE_BYTES} bytes"),
    }
}

enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

/// Reads a response body, refusing to buffer more than `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::OpenAi
    }

    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>> {
        Box::pin(self.send_inner(request))
    }

    fn pool_stats(&self) -> Option<crate::pool::PoolStats> {
        Some(self.pool.stats())
    }
}
