//! The engine call: the one place an HTTP request becomes a [`ProxyRequest`] and goes to
//! [`Engine::execute`], for every API face.
//!
//! A face decides *what* is called ([`Call`]: the client's request as sent, or a JSON body the
//! face translated it into); the client's context (request id, deadline, identity, cache
//! directives and tenant) is carried from the HTTP request the same way for all of them.

use axum::body::Body;
use bytes::Bytes;
use http::{header, request::Parts};
use tokio_util::sync::CancellationToken;
use weir::{Endpoint, Engine, Error, ProxyRequest, ProxyResponse, path::ApiPath};

use crate::http::{
    auth::{CacheTenant, ClientIdentity},
    body::read_body,
    context::RequestId,
};

/// What a face asks the engine to do.
#[derive(Debug)]
pub(crate) enum Call {
    /// Forward the client's request as sent: its method, API path, query, body and content type.
    AsSent {
        /// Which API, for routing and accounting.
        endpoint: Endpoint,
        /// The path after `/v1/`, validated ([`api_path`]).
        path: ApiPath,
    },
    /// A JSON `POST` that the face wrote from the client's body (a translation from another
    /// API): nothing of the client's path, query or content type goes upstream.
    Json(Endpoint),
}

/// The path after `/v1/`, validated as it arrived on the wire. Axum's `Path` extractor would
/// percent-decode first (turning `chat%2Fcompletions` into another route's path, or rejecting bad
/// UTF-8 with a plain-text error); `ApiPath` refuses `%` outright instead.
pub(crate) fn api_path(uri: &http::Uri) -> Result<ApiPath, Error> {
    let rest = uri.path().strip_prefix("/v1/").unwrap_or_default();
    ApiPath::parse(rest)
}

/// Reads the client's body within `engine`'s limits. The face passes the engine it will call, so
/// a config reload between the two cannot apply one config's limit and another's routing.
pub(crate) async fn read(engine: &Engine, parts: &Parts, body: Body) -> Result<Bytes, Error> {
    read_body(engine.config().server.max_body_bytes, &parts.headers, body).await
}

/// Runs `call` with `body` on `engine`, on behalf of the client that sent `parts`. A call still
/// waiting for its answer when `cut_off` fires (the drain deadline) gives up with a 503, which
/// the face renders in its shape: dropped with its connection instead, it would get no HTTP
/// response at all.
pub(crate) async fn execute(
    engine: &Engine,
    parts: &Parts,
    call: Call,
    body: Bytes,
    cut_off: &CancellationToken,
) -> Result<ProxyResponse, Error> {
    tokio::select! {
        biased;
        result = engine.execute(proxy_request(parts, call, body)) => result,
        () = cut_off.cancelled() => Err(Error::Unavailable {
            message: "The gateway is shutting down; the request was not answered in time. Retry it."
                .to_owned(),
        }),
    }
}

/// The [`ProxyRequest`] for `call`, with the client's context from `parts`.
fn proxy_request(parts: &Parts, call: Call, body: Bytes) -> ProxyRequest {
    let mut req = match call {
        Call::AsSent { endpoint, path } => {
            let mut req = ProxyRequest::new(endpoint, parts.method.clone(), path, body);
            req.query = parts.uri.query().map(str::to_owned);
            req.content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            req
        }
        Call::Json(endpoint) => ProxyRequest::json(endpoint, body),
    };
    // The client's context, carried the same way whatever the face called.
    req.request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
    req.deadline = weir::request::client_deadline(&parts.headers);
    req.client = parts.extensions.get::<ClientIdentity>().map(|c| c.0.clone());
    req.cache = weir::request::CacheDirectives {
        tenant: parts.extensions.get::<CacheTenant>().map(|t| t.0.clone()),
        ..weir::request::CacheDirectives::from_headers(&parts.headers)
    };
    req
}
