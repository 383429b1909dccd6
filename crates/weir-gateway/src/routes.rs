//! Routes: the OpenAI-compatible API under `/v1`, and health endpoints.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension, Json, Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    middleware,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;
use weir::{Endpoint, Error, ProxyBody, ProxyRequest, ProxyResponse, path::ApiPath, sse::GuardItem};

use crate::{
    AppState,
    error::ApiError,
    middleware::{CacheTenant, ClientIdentity, RequestId, authenticate, request_context},
};

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `/health/upstreams` waits for each upstream.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    // One Arc per request clone instead of one per field (a cancellation token clone takes a lock).
    let state = std::sync::Arc::new(state);
    let api = Router::new()
        .route(
            "/v1/chat/completions",
            post(|s, id, req| proxy(s, id, req, Endpoint::ChatCompletions)),
        )
        .route(
            "/v1/embeddings",
            post(|s, id, req| proxy(s, id, req, Endpoint::Embeddings)),
        )
        .route(
            "/v1/images/generations",
            post(|s, id, req| proxy(s, id, req, Endpoint::ImageGenerations)),
        )
        .route("/v1/messages", post(crate::messages::create))
        .route("/v1/messages/count_tokens", post(crate::messages::count_tokens))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(retrieve_model).delete(passthrough))
        .route("/v1/{*path}", any(passthrough))
        // It calls every upstream and shows their errors: not for anonymous callers.
        .route("/health/upstreams", get(upstreams))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .merge(crate::admin::routes(state.clone()))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(crate::telemetry::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// The path after `/v1/`, validated as it arrived on the wire. Axum's `Path` extractor would
/// percent-decode first (turning `chat%2Fcompletions` into another route's path, or rejecting bad
/// UTF-8 with a plain-text error); `ApiPath` refuses `%` outright instead.
fn api_path(uri: &http::Uri) -> Result<ApiPath, Error> {
    let rest = uri.path().strip_prefix("/v1/").unwrap_or_default();
    ApiPath::parse(rest)
}

async fn passthrough(
    state: State<std::sync::Arc<AppState>>,
    id: Extension<RequestId>,
    req: Request,
) -> Response {
    proxy(state, id, req, Endpoint::Passthrough).await
}

/// Every proxied endpoint: the API path is the request's own, after `/v1/`.
async fn proxy(
    State(state): State<std::sync::Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    req: Request,
    endpoint: Endpoint,
) -> Response {
    let path = api_path(req.uri());
    match proxy_inner(&state, request_id, req, endpoint, path).await {
        Ok(resp) => into_http(resp, &state.cut_off),
        Err(err) => ApiError(err).into_response(),
    }
}

async fn proxy_inner(
    state: &std::sync::Arc<AppState>,
    request_id: String,
    req: Request,
    endpoint: Endpoint,
    path: Result<ApiPath, Error>,
) -> Result<ProxyResponse, Error> {
    let path = path?;
    let (parts, body) = req.into_parts();
    let engine = state.engine();
    let body = read_body(engine.config().server.max_body_bytes, &parts.headers, body).await?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let mut proxy_req = ProxyRequest::new(endpoint, parts.method, path, body);
    proxy_req.query = parts.uri.query().map(str::to_owned);
    proxy_req.content_type = content_type;
    proxy_req.request_id = Some(request_id);
    proxy_req.deadline = weir::request::client_deadline(&parts.headers);
    proxy_req.client = parts.extensions.get::<ClientIdentity>().map(|c| c.0.clone());
    proxy_req.cache = weir::request::CacheDirectives {
        tenant: parts.extensions.get::<CacheTenant>().map(|t| t.0.clone()),
        ..weir::request::CacheDirectives::from_headers(&parts.headers)
    };
    engine.execute(proxy_req).await
}

/// Reads a request body up to `limit` bytes (413 past it) within the body read timeout.
pub(crate) async fn read_body(limit: usize, headers: &http::HeaderMap, body: Body) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    // `to_bytes` stops reading at the limit, so a body without Content-Length can't exhaust memory.
    // A client trickling its body must not hold a task (and the drain) forever.
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, to_bytes(body, limit))
        .await
        .map_err(|_| Error::ClientTimeout {
            after: BODY_READ_TIMEOUT,
        })?;
    let body = body.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            Error::PayloadTooLarge { limit }
        } else {
            Error::InvalidRequest {
                message: format!("could not read the request body: {e}"),
                param: None,
                code: None,
            }
        }
    })?;
    Ok(body)
}

pub(crate) fn into_http(resp: ProxyResponse, cut_off: &tokio_util::sync::CancellationToken) -> Response {
    into_http_ending(resp, cut_off, shutdown_event)
}

/// [`into_http`], with the event that ends a stream cut off by the drain deadline (its shape
/// follows the endpoint's API).
pub(crate) fn into_http_ending(
    resp: ProxyResponse,
    cut_off: &tokio_util::sync::CancellationToken,
    cut_event: fn() -> Result<Bytes, Infallible>,
) -> Response {
    let deployment = HeaderValue::from_str(&resp.served_by.deployment).ok();
    let mut out = match resp.body {
        ProxyBody::Full(bytes) => Response::new(Body::from(bytes)),
        ProxyBody::Stream(stream) => {
            let deployment_id = resp.served_by.deployment.clone();
            let body = stream.map(move |item| {
                Ok::<Bytes, Infallible>(match item {
                    GuardItem::Events(bytes) => bytes,
                    GuardItem::Failed(err, event) => {
                        // The client already has a 200 and some chunks; the error event is how it learns.
                        tracing::warn!(deployment = %deployment_id, error = %err, kind = err.kind().as_str(), "stream failed after it started");
                        event
                    }
                })
            });
            // At the drain deadline a stream ends, visibly, with an error event.
            let cut = cut_off.clone();
            let body = body
                .take_until(cut_off.clone().cancelled_owned())
                .chain(futures::stream::iter(
                    std::iter::once(()).filter_map(move |()| cut.is_cancelled().then(cut_event)),
                ));
            let mut r = Response::new(Body::from_stream(InSpan::new(
                body.boxed(),
                tracing::Span::current(),
            )));
            let headers = r.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // Tell nginx-style proxies in front of us not to buffer the stream.
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            r
        }
    };
    *out.status_mut() = resp.status;
    out.headers_mut().extend(resp.headers);
    if let Some(dep) = deployment {
        out.headers_mut().insert("x-weir-deployment", dep);
    }
    out
}

async fn list_models(State(state): State<std::sync::Arc<AppState>>) -> Response {
    Json(state.engine().list_models().await).into_response()
}

async fn retrieve_model(
    State(state): State<std::sync::Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: http::Uri,
) -> Response {
    let id = match api_path(&uri) {
        Ok(path) => path
            .as_str()
            .strip_prefix("models/")
            .unwrap_or_default()
            .to_owned(),
        Err(err) => return ApiError(err).into_response(),
    };
    match state.engine().retrieve_model(&id, Some(request_id)).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(err) => ApiError(err).into_response(),
    }
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<std::sync::Arc<AppState>>) -> Response {
    if state.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready", "models": state.engine().config().models.len()})).into_response()
    }
}

async fn upstreams(State(state): State<std::sync::Arc<AppState>>) -> Response {
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

async fn not_found(method: Method, uri: http::Uri) -> Response {
    ApiError(Error::NotFound {
        message: format!("Unknown request URL: {method} {}.", uri.path()),
    })
    .into_response()
}

async fn method_not_allowed(method: Method, uri: http::Uri) -> Response {
    ApiError(Error::MethodNotAllowed {
        message: format!("Method {method} is not allowed for {}.", uri.path()),
    })
    .into_response()
}

/// The error a stream cut off by the drain deadline ends with.
pub(crate) fn shutdown_error() -> Error {
    Error::Unavailable {
        message: "The gateway is shutting down; the stream was cut off.".to_owned(),
    }
}

/// The event that ends a stream cut off by the drain deadline.
fn shutdown_event() -> Result<Bytes, Infallible> {
    Ok(weir::sse::error_event(&shutdown_error()))
}

/// A response body stream that runs inside the request's span. Hyper polls bodies outside the
/// handler, so without this, what is logged while streaming (a stream failing mid-way, the breaker
/// settling at stream end) would lose the request id.
struct InSpan<S> {
    /// `None` once dropped, so the drop itself can run inside the span.
    inner: Option<S>,
    span: tracing::Span,
}

impl<S> InSpan<S> {
    fn new(inner: S, span: tracing::Span) -> Self {
        InSpan {
            inner: Some(inner),
            span,
        }
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        match this.inner.as_mut() {
            Some(inner) => inner.poll_next_unpin(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl<S> Drop for InSpan<S> {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        self.inner.take();
    }
}
