//! The HTTP leg every network provider shares: a pooled client, fixed headers (auth), the timeout
//! rules for unary and streamed calls, and bounded body reads.
//!
//! Providers differ in *where* a request goes (a URL) and *what* it carries (their own body); how
//! the bytes travel is the same for all of them, so it lives here once. A provider builds the URL
//! and body and calls [`Transport::send`]; translating providers (Gemini) then rewrite the answer.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use url::Url;

use super::{UpstreamBody, UpstreamRequest, UpstreamResponse};
use crate::{
    config::{DeploymentConfig, Timeouts},
    error::{Error, TimeoutPhase},
    upstream::pool::{HttpPool, PoolSettings},
};

/// The largest non-streamed upstream body accepted (a few base64 images fit easily); a larger one
/// is refused rather than buffered.
pub(crate) const MAX_RESPONSE_BYTES: usize = 128 << 20;

/// Sends requests to one upstream host over a shared connection pool.
#[derive(Debug)]
pub(super) struct Transport {
    /// API root without a trailing slash, e.g. `https://api.openai.com/v1`.
    base_url: Url,
    /// Host (and port) key for the per-host connection cap.
    host_key: String,
    /// Headers sent on every request: auth, organisation, project. Auth values are marked
    /// sensitive so that `Debug` output of requests never shows the key.
    headers: HeaderMap,
    /// Connection pool shared with every deployment that has the same settings.
    pool: Arc<HttpPool>,
    /// Timeouts (also inside `pool.settings()`, kept here for brevity).
    timeouts: Timeouts,
    /// Set when the deployment's settings cannot work — a header value that is not a valid HTTP
    /// header value, an Azure deployment without a usable name (config loading rejects those;
    /// only a config built by hand and not validated gets here): every call fails with this
    /// message rather than going out wrong (e.g. without its key).
    misconfigured: Option<String>,
}

impl Transport {
    /// Joins (or creates) the shared pool for the deployment's settings. No headers yet: the
    /// provider adds its own auth with [`Transport::with_secret_header`].
    pub(super) fn new(config: &DeploymentConfig) -> Self {
        let pool = HttpPool::shared(PoolSettings {
            timeouts: config.timeouts,
            limits: config.pool,
        });
        let host_key = format!(
            "{}:{}",
            config.base_url.host_str().unwrap_or_default(),
            config.base_url.port_or_known_default().unwrap_or_default()
        );
        Transport {
            base_url: config.base_url.clone(),
            host_key,
            headers: HeaderMap::new(),
            pool,
            timeouts: config.timeouts,
            misconfigured: None,
        }
    }

    /// Makes every call fail with `message` (see the `misconfigured` field).
    pub(super) fn misconfigured(mut self, message: String) -> Self {
        self.misconfigured.get_or_insert(message);
        self
    }

    /// Adds a header sent on every request; `sensitive` keeps it out of `Debug` output (keys).
    ///
    /// Config loading checks that the values it passes here are valid header values. Should one
    /// not be (a config built by hand and not validated), the transport is still built, and every
    /// call fails with an error naming `field`: sending without the header would be worse.
    pub(super) fn with_header(
        mut self,
        config: &DeploymentConfig,
        name: &'static str,
        value: &str,
        field: &str,
        sensitive: bool,
    ) -> Self {
        match HeaderValue::try_from(value) {
            Ok(mut value) => {
                value.set_sensitive(sensitive);
                self.headers.insert(HeaderName::from_static(name), value);
            }
            Err(_) => {
                self.misconfigured.get_or_insert(format!(
                    "deployment `{}`: {field} has invalid characters",
                    config.id
                ));
            }
        }
        self
    }

    /// Adds prepared headers (sensitive ones already marked) to every request.
    pub(super) fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// [`Transport::with_header`] for the deployment's `api_key`, if it has one, formatted by
    /// `format` (e.g. `Bearer {key}`). Always sensitive.
    pub(super) fn with_secret_header(
        self,
        config: &DeploymentConfig,
        name: &'static str,
        format: impl Fn(&str) -> String,
    ) -> Self {
        match &config.api_key {
            Some(key) => self.with_header(config, name, &format(key.expose()), "api_key", true),
            None => self,
        }
    }

    /// The API root requests are sent under.
    pub(super) fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The pool this transport sends through.
    pub(super) fn pool(&self) -> &Arc<HttpPool> {
        &self.pool
    }

    /// Sends `req` (its method, body, content type, stream flag, request id) to `url`, which the
    /// caller built under [`Transport::base_url`]. Unary calls are bounded by the total timeout;
    /// streams by the read (idle) timeout per wait, and hold their pool permit until they end.
    pub(super) async fn send(&self, url: Url, req: UpstreamRequest) -> Result<UpstreamResponse, Error> {
        if let Some(message) = &self.misconfigured {
            return Err(Error::Config(message.clone()));
        }
        let permit = self.pool.acquire(&self.host_key).await?;
        let mut builder = self
            .pool
            .client()?
            .request(req.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(id) = req
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            builder = builder.header("x-request-id", id);
        }
        if let Some(traceparent) = req.traceparent {
            builder = builder.header("traceparent", traceparent);
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
        let map_err = move |e: reqwest::Error| from_reqwest(e, &timeouts);

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
    permit: crate::upstream::pool::PoolPermit,
) -> super::ByteStream {
    let stream = Box::pin(stream);
    Box::pin(futures::stream::unfold(
        Some((stream, permit)),
        move |state| async move {
            let (mut stream, permit) = state?;
            match tokio::time::timeout(read, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((stream, permit)))),
                Ok(Some(Err(e))) => Some((Err(from_reqwest(e, &timeouts)), None)),
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

/// Classifies a `reqwest` error without its URL (URLs may carry query-string keys on some providers).
pub(crate) fn from_reqwest(err: reqwest::Error, timeouts: &Timeouts) -> Error {
    let err = err.without_url();
    if err.is_timeout() {
        let (phase, after) = if err.is_connect() {
            (TimeoutPhase::Connect, timeouts.connect)
        } else {
            (TimeoutPhase::Read, timeouts.read)
        };
        return Error::Timeout { phase, after };
    }
    let message = error_chain(&err);
    if err.is_connect() {
        Error::Connect { message }
    } else if err.is_decode() {
        Error::BadUpstreamResponse { message }
    } else {
        Error::Transport { message }
    }
}

/// Joins an error and its sources into one line ("error sending request: connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
