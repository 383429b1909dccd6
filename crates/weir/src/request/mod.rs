//! What the engine is asked: [`ProxyRequest`], and the facts read from its body once.
//!
//! Both faces of Weir build a [`ProxyRequest`]: the gateway from the client's raw bytes, the
//! library's [`crate::Client`] from serialised typed requests. The body stays bytes, forwarded as
//! received (only `model` may be rewritten); what the engine needs from it — model, `stream`, the
//! top-level fields — is parsed once, on first use, into [`RequestFacts`] and shared by every
//! stage (cache key, limits, routing, token estimates). A layer that rewrites the body with
//! [`ProxyRequest::set_body`] makes the next stage parse the new body.

mod directives;
mod facts;

use std::{sync::Arc, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method};

pub use self::directives::{CacheDirectives, client_deadline};
pub use self::facts::RequestFacts;
use crate::{error::Error, path::ApiPath};

/// Which API a request is for; decides validation and stream handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// Any other `/v1/*` path, forwarded as it is.
    Passthrough,
}

impl Endpoint {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::ImageGenerations => "image_generations",
            Endpoint::Passthrough => "passthrough",
        }
    }

    /// The API path of a typed endpoint (pass-through requests carry their own).
    fn default_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::ImageGenerations => "images/generations",
            Endpoint::Passthrough => "models",
        }
    }
}

/// A request for the engine.
///
/// Layers around the engine (see [`crate::EngineBuilder::layer`]) read and change it: the body
/// through [`body`](Self::body) / [`set_body`](Self::set_body), what it asks for through
/// [`facts`](Self::facts), and anything they want to pass along through
/// [`extensions`](Self::extensions).
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// Which API.
    pub endpoint: Endpoint,
    /// HTTP method (POST for the typed endpoints).
    pub method: Method,
    /// Path relative to `/v1`, e.g. `chat/completions`.
    pub path: ApiPath,
    /// Query string without `?`.
    pub query: Option<String>,
    /// The body's content type, when not JSON (multipart uploads on pass-through paths).
    pub content_type: Option<HeaderValue>,
    /// Correlation id, forwarded upstream.
    pub request_id: Option<String>,
    /// The client's own deadline for this request, if shorter than the configured one.
    pub deadline: Option<Duration>,
    /// Which client sent it (an identity such as `key-0`, never a key), for per-client limits.
    pub client: Option<Arc<str>>,
    /// The client's cache controls (`Cache-Control`) and cache tenant.
    pub cache: CacheDirectives,
    /// Values layers attach for later layers (or the gateway) to read.
    pub extensions: http::Extensions,
    /// The body as received.
    body: Bytes,
    /// The body's facts, parsed on first use.
    facts: OnceLock<Arc<RequestFacts>>,
}

impl ProxyRequest {
    /// A request with an empty body and no metadata.
    pub fn new(endpoint: Endpoint, method: Method, path: ApiPath, body: Bytes) -> ProxyRequest {
        ProxyRequest {
            endpoint,
            method,
            path,
            query: None,
            content_type: None,
            request_id: None,
            deadline: None,
            client: None,
            cache: CacheDirectives::default(),
            extensions: http::Extensions::new(),
            body,
            facts: OnceLock::new(),
        }
    }

    /// A bodiless `GET` of an API path (model listings, probes).
    pub fn get(path: ApiPath) -> ProxyRequest {
        ProxyRequest::new(Endpoint::Passthrough, Method::GET, path, Bytes::new())
    }

    /// A JSON POST to one of the typed endpoints.
    pub fn json(endpoint: Endpoint, body: Bytes) -> ProxyRequest {
        ProxyRequest::new(
            endpoint,
            Method::POST,
            ApiPath::known(endpoint.default_path()),
            body,
        )
    }

    /// The body as received (or as a layer last set it).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replaces the body; its facts are parsed again when next asked for.
    pub fn set_body(&mut self, body: Bytes) {
        self.body = body;
        self.facts = OnceLock::new();
    }

    /// What the body asks for, parsed (and validated: a 400 naming the field) on first use and
    /// shared by every later stage.
    pub fn facts(&self) -> Result<Arc<RequestFacts>, Error> {
        if let Some(facts) = self.facts.get() {
            return Ok(facts.clone());
        }
        let facts = Arc::new(RequestFacts::parse(
            self.endpoint,
            self.content_type.as_ref(),
            &self.body,
        )?);
        // Another clone of this request may have raced us; either result is the same parse.
        Ok(self.facts.get_or_init(|| facts).clone())
    }
}
