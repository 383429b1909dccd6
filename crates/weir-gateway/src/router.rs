//! [`router`]: the whole HTTP surface, assembled from the API faces, the admin API and the
//! operational endpoints.
//!
//! This is where each API face gets its error shape and its key check ([`face`]): the shape a
//! request's errors take follows the router that serves it, never its path.

use axum::{
    Extension, Router, middleware,
    response::{IntoResponse, Response},
};
use http::Method;
use weir::Error;

use crate::{
    admin, faces, health,
    http::{
        auth::authenticate,
        context::request_context,
        error::{ApiError, ErrorShape},
    },
    state::{AppState, Shared},
};

/// The whole HTTP surface, with `state` applied: a plain [`Router`] that can be served, or merged
/// into (or nested in) an application's own router. See the crate docs for embedding.
pub fn router(state: AppState) -> Router {
    let state = Shared::new(state);
    Router::new()
        .merge(face(faces::openai::routes(), &state, ErrorShape::OpenAi))
        .merge(face(faces::anthropic::routes(), &state, ErrorShape::Anthropic))
        // It calls every upstream and shows their errors: not for anonymous callers.
        .merge(face(health::upstream_routes(), &state, ErrorShape::OpenAi))
        .merge(admin::routes(state.clone()))
        .merge(health::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// Mounts an API face: its routes behind the gateway key check, every error (the key check's
/// included) in `shape`.
fn face(routes: Router<Shared>, state: &Shared, shape: ErrorShape) -> Router<Shared> {
    routes
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Added last, so it runs first: the key check already renders in the face's shape.
        .route_layer(Extension(shape))
}

async fn not_found(method: Method, uri: http::Uri) -> Response {
    ApiError::from(Error::NotFound {
        message: format!("Unknown request URL: {method} {}.", uri.path()),
    })
    .into_response()
}

async fn method_not_allowed(method: Method, uri: http::Uri) -> Response {
    ApiError::from(Error::MethodNotAllowed {
        message: format!("Method {method} is not allowed for {}.", uri.path()),
    })
    .into_response()
}
