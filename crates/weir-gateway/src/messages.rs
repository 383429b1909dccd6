//! `POST /v1/messages`: the Anthropic-compatible endpoint, served by any provider.
//!
//! The Anthropic request is translated to an OpenAI chat completion ([`weir::messages`]), routed
//! by the engine like any chat request (retries, fallbacks, limits, breakers), and the answer is
//! translated back: a message, or Anthropic's event stream. Errors use Anthropic's shape
//! (`{"type":"error","error":{"type","message"}}`, status from the one mapping), which is what
//! Anthropic SDKs parse.

use std::sync::Arc;

use axum::{
    Extension,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, header};
use weir::{Endpoint, Error, ProxyBody, ProxyRequest, body::RawObject, messages, sse::GuardItem};

use crate::{
    AppState,
    error::ApiError,
    middleware::{ClientIdentity, RequestId},
    routes::{into_http_ending, read_body, shutdown_error},
};

/// The handler.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    req: Request,
) -> Response {
    match create_inner(&state, request_id, req).await {
        Ok(resp) => resp,
        Err(err) => error_response(err),
    }
}

async fn create_inner(state: &Arc<AppState>, request_id: String, req: Request) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let engine = state.engine();
    let body = read_body(engine.config().server.max_body_bytes, &parts.headers, body).await?;
    let inbound = messages::to_openai(&body)?;
    let mut proxy_req = ProxyRequest::json(Endpoint::ChatCompletions, inbound.body);
    proxy_req.request_id = Some(request_id);
    proxy_req.deadline = weir::request::client_deadline(&parts.headers);
    proxy_req.client = parts.extensions.get::<ClientIdentity>().map(|c| c.0.clone());
    proxy_req.cache = weir::cache::CacheDirectives {
        tenant: parts
            .extensions
            .get::<crate::middleware::CacheTenant>()
            .map(|t| t.0.clone()),
        ..weir::cache::CacheDirectives::from_headers(&parts.headers)
    };
    let mut resp = engine.execute(proxy_req).await?;
    resp.body = match resp.body {
        ProxyBody::Full(bytes) => ProxyBody::Full(messages::to_message(&bytes)?),
        ProxyBody::Stream(stream) => {
            let mut translator = messages::EventTranslator::new();
            ProxyBody::Stream(stream.map_items(move |item| match item {
                GuardItem::Events(bytes) => GuardItem::Events(translator.on_events(&bytes)),
                GuardItem::Failed(err, _) => {
                    let event = translator.on_error(&err);
                    GuardItem::Failed(err, event)
                }
            }))
        }
    };
    // By what is sent, not what was asked: an upstream that ignored `stream` answered whole.
    let content_type = match resp.body {
        ProxyBody::Stream(_) => "text/event-stream",
        ProxyBody::Full(_) => "application/json",
    };
    resp.headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(into_http_ending(resp, &state.cut_off, shutdown_event))
}

/// Anthropic's `error` event for a stream cut off by the drain deadline.
fn shutdown_event() -> Result<Bytes, std::convert::Infallible> {
    Ok(messages::EventTranslator::new().on_error(&shutdown_error()))
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages request, without calling an
/// upstream. Counted by the gateway's own counter on the translated request: exact for models with
/// a public tokenizer, a documented over-estimate for others (Claude included); see
/// [`weir::tokens::estimate_input`].
pub async fn count_tokens(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let count = async {
        let (parts, body) = req.into_parts();
        let engine = state.engine();
        let body = read_body(engine.config().server.max_body_bytes, &parts.headers, body).await?;
        // count_tokens takes no `max_tokens`; the translation wants one.
        let mut value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
                message: format!("The request body is not valid JSON: {e}"),
                param: None,
                code: Some("invalid_json"),
            })?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("max_tokens").or_insert(serde_json::json!(1));
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
        let inbound = messages::to_openai(&bytes)?;
        let object = RawObject::parse(&inbound.body)?;
        let model = object.get_str("model")?.unwrap_or_default();
        weir::tokens::estimate_input(Endpoint::ChatCompletions, &model, &object)
            .map(|estimate| estimate.tokens)
            .ok_or_else(|| Error::invalid_param("messages", "These messages cannot be counted.", None))
    };
    match count.await {
        Ok(tokens) => axum::Json(serde_json::json!({ "input_tokens": tokens })).into_response(),
        Err(err) => error_response(err),
    }
}

/// An error in Anthropic's shape (status, `Retry-After` and log kind as for every other route).
pub fn error_response(err: Error) -> Response {
    let (_, body) = messages::error_body(&err);
    let mut resp = ApiError(err).into_response();
    *resp.body_mut() = Body::from(body);
    resp
}
