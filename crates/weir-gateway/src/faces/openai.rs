//! The OpenAI-compatible API under `/v1`: chat completions, embeddings, image generation, the
//! model list, and every other `/v1/...` path passed through to the upstream as is.

use axum::{
    Json, Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use http::{HeaderValue, header};
use weir::Endpoint;

use crate::{
    http::{
        context::RequestId,
        error::{ApiError, ErrorShape},
        proxy::{self, Call},
        response::into_http,
    },
    state::Shared,
};

/// The face's routes.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|s, shape, req| forward(s, shape, req, Endpoint::ChatCompletions)),
        )
        .route(
            "/v1/embeddings",
            post(|s, shape, req| forward(s, shape, req, Endpoint::Embeddings)),
        )
        .route(
            "/v1/images/generations",
            post(|s, shape, req| forward(s, shape, req, Endpoint::ImageGenerations)),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(retrieve_model).delete(passthrough))
        .route("/v1/{*path}", any(passthrough))
}

async fn passthrough(state: State<Shared>, shape: ErrorShape, req: Request) -> Response {
    forward(state, shape, req, Endpoint::Passthrough).await
}

/// Every proxied endpoint: the client's request goes upstream as sent, the API path its own
/// after `/v1/`.
async fn forward(
    State(state): State<Shared>,
    shape: ErrorShape,
    req: Request,
    endpoint: Endpoint,
) -> Response {
    // The path is checked before the body is read: a bad URL is refused without waiting for it.
    let path = proxy::api_path(req.uri());
    let result = async {
        let path = path?;
        let (parts, body) = req.into_parts();
        let engine = state.engine();
        let body = proxy::read(&engine, &parts, body).await?;
        proxy::execute(
            &engine,
            &parts,
            Call::AsSent { endpoint, path },
            body,
            &state.cut_off,
        )
        .await
    };
    match result.await {
        Ok(resp) => into_http(resp, &state.cut_off, shape),
        Err(err) => shape.error(err).into_response(),
    }
}

/// `GET /v1/models`: the configured model groups.
async fn list_models(State(state): State<Shared>) -> Response {
    Json(state.engine().list_models().await).into_response()
}

/// `GET /v1/models/{id}`: one model, as the upstream that serves it describes it.
async fn retrieve_model(
    State(state): State<Shared>,
    shape: ErrorShape,
    request_id: Option<axum::Extension<RequestId>>,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    let path = proxy::api_path(&uri).map_err(|err| shape.error(err))?;
    let id = path.as_str().strip_prefix("models/").unwrap_or_default();
    let request_id = request_id.map(|axum::Extension(RequestId(request_id))| request_id);
    let bytes = state
        .engine()
        .retrieve_model(id, request_id)
        .await
        .map_err(|err| shape.error(err))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response())
}
