//! The Anthropic-compatible API: `POST /v1/messages` and `POST /v1/messages/count_tokens`,
//! served by any provider.
//!
//! The Anthropic request is translated to an OpenAI chat completion ([`weir::messages`]), routed
//! by the engine like any chat request (retries, fallbacks, limits, breakers), and the answer is
//! translated back: a message, or Anthropic's event stream. Errors are in Anthropic's shape
//! (`{"type":"error","error":{"type","message"}}`, status from the one mapping), which is what
//! Anthropic SDKs parse: the router mounts this face with [`ErrorShape::Anthropic`], so its key
//! check answers in that shape too.

use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use weir::{Endpoint, Error, RequestFacts, messages};

use crate::{
    http::{
        error::ErrorShape,
        proxy::{self, Call},
        response::{TranslateEvents, into_http, translate},
    },
    state::Shared,
};

/// The face's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/messages", post(create))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// `POST /v1/messages`.
async fn create(State(state): State<Shared>, shape: ErrorShape, req: Request) -> Response {
    let result = async {
        let (parts, body) = req.into_parts();
        let engine = state.engine();
        let body = proxy::read(&engine, &parts, body).await?;
        let inbound = messages::to_openai(&body)?;
        let resp = proxy::execute(
            &engine,
            &parts,
            Call::Json(Endpoint::ChatCompletions),
            inbound.body,
            &state.cut_off,
        )
        .await?;
        translate(resp, messages::to_message, messages::EventTranslator::new())
    };
    match result.await {
        Ok(resp) => into_http(resp, &state.cut_off, shape),
        Err(err) => shape.error(err).into_response(),
    }
}

/// Chat completion chunks in, Anthropic's events out; a broken stream ends with Anthropic's
/// `error` event.
impl TranslateEvents for messages::EventTranslator {
    fn events(&mut self, events: &[u8]) -> Bytes {
        self.on_events(events)
    }

    fn failed(&mut self, err: &Error) -> Bytes {
        self.on_error(err)
    }
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages request, without calling an
/// upstream. Counted by the gateway's own counter on the translated request: exact for models with
/// a public tokenizer, a documented over-estimate for others (Claude included); see
/// [`weir::tokens::estimate_input`].
async fn count_tokens(State(state): State<Shared>, shape: ErrorShape, req: Request) -> Response {
    let count = async {
        let (parts, body) = req.into_parts();
        let engine = state.engine();
        let body = proxy::read(&engine, &parts, body).await?;
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
        let facts = RequestFacts::parse(Endpoint::ChatCompletions, None, &inbound.body)?;
        let model = facts.model().unwrap_or_default();
        weir::tokens::estimate_input(Endpoint::ChatCompletions, model, &facts)
            .map(|estimate| estimate.tokens)
            .ok_or_else(|| Error::invalid_param("messages", "These messages cannot be counted.", None))
    };
    match count.await {
        Ok(tokens) => axum::Json(serde_json::json!({ "input_tokens": tokens })).into_response(),
        Err(err) => shape.error(err).into_response(),
    }
}
