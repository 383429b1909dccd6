//! Providers: the adapters that turn an upstream request into a call to one kind of API.
//!
//! A provider receives a request already aimed at it (relative API path, body with the upstream
//! model) and returns the raw upstream response. It does not retry, route or interpret errors:
//! the engine turns non-2xx answers into [`crate::Error`] in one place for every provider.
//! Translating providers (Anthropic, Gemini) and path-rewriting ones (Azure) fit the same trait:
//! they rewrite `path`/`body` on the way in and the response on the way out. All of them send
//! through one [`Transport`] (pool, auth header, timeouts).

pub(crate) mod anthropic;
pub(crate) mod gemini;
mod mock;
mod openai;
pub(crate) mod pool;
mod transport;

use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};

pub(crate) use anthropic::AnthropicProvider;
pub(crate) use gemini::GeminiProvider;
pub(crate) use mock::MockProvider;
pub(crate) use openai::OpenAiProvider;
pub(crate) use transport::MAX_RESPONSE_BYTES;

use crate::{config::ProviderKind, error::Error};

pub(crate) use crate::sse::ByteStream;

/// A request aimed at one upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRequest {
    /// HTTP method.
    pub method: Method,
    /// Path relative to the provider's API root, validated (see [`crate::path::ApiPath`]).
    pub path: crate::path::ApiPath,
    /// Query string, without `?`.
    pub query: Option<String>,
    /// Body bytes, forwarded as they are.
    pub body: Option<Bytes>,
    /// The body's content type (JSON unless the client sent something else, e.g. multipart).
    pub content_type: Option<http::HeaderValue>,
    /// Whether the answer is expected as a stream (bounded by the idle timeout, not a total).
    pub stream: bool,
    /// Forwarded as `x-request-id`, so upstream logs can be joined with ours.
    pub request_id: Option<String>,
    /// W3C trace context, sent as the `traceparent` header so the upstream's spans (if it traces)
    /// join the request's trace. Every provider should send it when set.
    pub traceparent: Option<http::HeaderValue>,
}

/// An upstream's answer.
pub(crate) struct UpstreamResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body: complete, or a stream for streaming requests.
    pub body: UpstreamBody,
}

impl fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponse {
    /// Whether the answer is a server-sent event stream (by its content type).
    pub(crate) fn is_event_stream(&self) -> bool {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"))
    }
}

/// A response body.
pub(crate) enum UpstreamBody {
    /// Fully read.
    Full(Bytes),
    /// Arriving in pieces.
    Stream(ByteStream),
}

impl UpstreamBody {
    /// Reads the whole body; an error if it is longer than `limit` bytes.
    pub(crate) async fn collect(self, limit: usize) -> Result<Bytes, Error> {
        use futures::StreamExt;
        match self {
            UpstreamBody::Full(bytes) => Ok(bytes),
            UpstreamBody::Stream(mut stream) => {
                let mut out = bytes::BytesMut::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    // Refuse rather than truncate: a cut-off body must never pass for a whole one.
                    if out.len() + chunk.len() > limit {
                        return Err(Error::BadUpstreamResponse {
                            message: format!("the upstream response exceeded {limit} bytes"),
                        });
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(out.freeze())
            }
        }
    }
}

/// One kind of upstream API.
pub(crate) trait Provider: Send + Sync + fmt::Debug {
    /// Which kind.
    fn kind(&self) -> ProviderKind;
    /// Sends the request and returns the upstream's answer, whatever its status.
    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, Error>>;
    /// Use of the connection pool it sends through, for the admin API; `None` when it has none
    /// (the in-process mock).
    fn pool_stats(&self) -> Option<crate::upstream::pool::PoolStats> {
        None
    }
}
