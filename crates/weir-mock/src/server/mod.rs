//! The mock upstream as an HTTP server: [`content`] plus faults, pacing, request counters and
//! recording.
//!
//! Use [`MockServer`] in tests, or [`serve`] / [`router`] to embed the mock elsewhere (the
//! gateway's `weir mock` command, benchmarks). See the [crate docs](crate) for the directives.

mod body;
mod chaos;
#[cfg(feature = "cli")]
mod cli;
mod state;
mod test_server;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::content::{self, DirectiveError, Directives, HEADER_PREFIX, Reply, ReplyBody};
use body::End;
pub use chaos::{ChaosConfig, Fault, FaultMix, LoadLatency};
#[cfg(feature = "cli")]
pub use cli::ChaosArgs;
pub use state::{MockConfig, MockState, RECORD_LIMIT, RecordedRequest};
pub use test_server::MockServer;

/// Largest request body read; generous because gateway body-limit tests push large bodies.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The API root every modelled route lives under.
const API_PREFIX: &str = "/v1";

/// Seconds sent in `Retry-After` for 429/503 faults without a `retry_after` directive.
const DEFAULT_RETRY_AFTER_SECS: f64 = 1.0;

/// Tells handlers that [`serve`] is shutting down, so hung requests and paced streams end
/// instead of holding graceful shutdown open forever.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown starts; a dropped sender (the serve future itself was dropped)
    /// counts as shutdown too.
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// [`wait`](Self::wait), or never when there is no signal (a bare [`router`]).
    async fn wait_opt(signal: Option<Shutdown>) {
        match signal {
            Some(signal) => signal.wait().await,
            None => std::future::pending().await,
        }
    }
}

/// The mock's routes: everything under `/v1/...` (other paths get an OpenAI-shaped 404).
///
/// Without [`serve`], a `hang` only ends when the client goes away.
pub fn router(state: Arc<MockState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Serves the mock on `listener` until `shutdown` resolves, then stops accepting, ends hung
/// requests (503) and paced streams (aborted), and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = router(state).layer(axum::Extension(Shutdown(stop_rx)));
    // SSE events are small writes: without TCP_NODELAY, Nagle would hold them back and blur
    // both pacing and latency measurements.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!("weir-mock: could not set TCP_NODELAY: {err}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
}

/// The one handler: count, record, authenticate, gather directives, apply faults, answer.
async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let in_flight = state.arrive(request.uri().path());
    let shutdown = request.extensions().get::<Shutdown>().cloned();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let message = format!("Request body unreadable or larger than {MAX_BODY_BYTES} bytes.");
            return reply_response(content::error_reply(413, &message, None, None));
        }
    };
    state.record(&parts, &body);
    let protocol = Protocol::of(parts.uri.path());

    if let Some(key) = state.config().required_api_key.as_deref()
        && !authorized(&parts.headers, key)
    {
        // Never include the received key (it would end up in logs and snapshots) unless a test
        // asks for that careless upstream.
        let message = match echoed_auth(&state, &parts.headers) {
            Some(auth) => format!("Incorrect API key provided: {auth}."),
            None => "Incorrect API key provided.".to_owned(),
        };
        let reply = protocol.error(401, &message, None, Some("invalid_api_key"));
        let path = parts.uri.path().strip_prefix("/v1/").unwrap_or_default();
        return reply_response(content::anthropic::restyle(path, reply));
    }
    let Some(path) = api_path(&parts.uri) else {
        let message = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
        return reply_response(content::error_reply(404, &message, None, None));
    };
    let mut directives = match gather_directives(&parts.headers, &body, protocol.path_model(&path)) {
        Ok(directives) => directives,
        Err(err) => {
            let message = err.to_string();
            let reply = protocol.error(400, &message, Some("x_mock"), Some("invalid_mock_directive"));
            return reply_response(content::anthropic::restyle(&path, reply));
        }
    };

    // Decided on arrival so `fail_times` follows request order, not completion order.
    let fault = scripted_status(&state, &directives);
    let chaos = match state.chaos() {
        Some(chaos) if is_generation(parts.method.as_str(), &path) => {
            if chaos.config.derive_content
                && directives.content.is_none()
                && let Some(prompt) = content::prompt_text(&body)
            {
                chaos.count_call(content::prompt_hash(&prompt));
                directives.content = Some(content::derived_content(&prompt));
            }
            if let Some(load) = chaos.config.load_latency {
                let delay = load.delay(state.in_flight());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = Shutdown::wait_opt(shutdown.clone()) => return shutting_down(),
                }
            }
            chaos
                .draw()
                .map(|drawn| (drawn, chaos.config.retry_after, chaos.config.slow_headers))
        }
        _ => None,
    };
    if let Some(ms) = directives.latency_ms.filter(|ms| *ms > 0) {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = Shutdown::wait_opt(shutdown.clone()) => return shutting_down(),
        }
    }
    if directives.hang == Some(true) {
        tracing::debug!(path = %parts.uri.path(), "weir-mock: hanging request");
        Shutdown::wait_opt(shutdown).await;
        return shutting_down();
    }
    let mut body_fault = None;
    if let Some((drawn, retry_after, slow_headers)) = chaos {
        match drawn.fault {
            chaos::Fault::Status(status) => {
                let retry_after = matches!(status, 429 | 503).then_some(retry_after);
                return fault_response(protocol, &path, status, retry_after, None);
            }
            chaos::Fault::SlowHeaders => {
                tokio::select! {
                    () = tokio::time::sleep(slow_headers) => {}
                    () = Shutdown::wait_opt(shutdown.clone()) => return shutting_down(),
                }
            }
            _ => body_fault = Some(drawn),
        }
    }
    if let Some(status) = fault {
        tracing::debug!(status, path = %parts.uri.path(), "weir-mock: scripted status");
        let mut response = fault_response(
            protocol,
            &path,
            status,
            directives.retry_after,
            directives.error_code.as_deref(),
        );
        if let Some(auth) = echoed_auth(&state, &parts.headers) {
            let message =
                format!("Mock upstream fault: HTTP {status}; the request had Authorization: {auth}");
            let reply = protocol.error(status, &message, None, directives.error_code.as_deref());
            let kept = response.headers().clone();
            response = reply_response(content::anthropic::restyle(&path, reply));
            for name in ["retry-after", "retry-after-ms"] {
                if let Some(value) = kept.get(name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
        }
        return response;
    }

    // Anthropic clients (which send `anthropic-version`) get Anthropic's model list shape.
    let anthropic_models = parts
        .headers
        .contains_key("anthropic-version")
        .then(|| content::anthropic::models(parts.method.as_str(), &path));
    let reply = match protocol {
        Protocol::Gemini => content::gemini::respond(parts.method.as_str(), &path, &body, &directives),
        Protocol::OpenAi => anthropic_models
            .flatten()
            .unwrap_or_else(|| content::respond_with(parts.method.as_str(), &path, &body, &directives)),
    };
    match body_fault {
        Some(drawn) if reply.status == 200 => faulty_response(reply, drawn, shutdown, in_flight),
        _ => shape_response(reply, &directives, shutdown, in_flight),
    }
}

/// The routes a fault mix applies to: the ones that generate an answer.
fn is_generation(method: &str, path: &str) -> bool {
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    method.eq_ignore_ascii_case("POST")
        && (route == "chat/completions"
            || route == content::anthropic::MESSAGES_PATH
            || route.ends_with(":generateContent")
            || route.ends_with(":streamGenerateContent"))
}

/// A correct reply broken by a drawn body fault (see [`chaos::Fault`]).
fn faulty_response(
    reply: Reply,
    drawn: chaos::Drawn,
    shutdown: Option<Shutdown>,
    in_flight: state::InFlight,
) -> Response {
    use chaos::Fault;
    tracing::debug!(fault = %drawn.fault.name(), "weir-mock: injected fault");
    let content_type = reply.content_type();
    let status = reply.status;
    let body = match reply.body {
        ReplyBody::Json(bytes) => {
            let half = bytes.slice(..bytes.len() / 2);
            match drawn.fault {
                Fault::Disconnect => body::paced(vec![half], None, None, End::Abort, shutdown, in_flight),
                Fault::Stall => body::paced(vec![half], None, None, End::Stall, shutdown, in_flight),
                Fault::Malformed => {
                    let garbage = Bytes::from_static(b"<<upstream garbage>>");
                    body::paced(vec![half, garbage], None, None, End::Clean, shutdown, in_flight)
                }
                _ => Body::from(half),
            }
        }
        ReplyBody::Events(mut events) => {
            let cut = chaos::cut_point(events.len(), drawn.at);
            let (limit, end) = match drawn.fault {
                Fault::Disconnect => (Some(cut), End::Abort),
                Fault::Stall => (Some(cut), End::Stall),
                Fault::Malformed => {
                    let candidates: Vec<usize> = (0..events.len())
                        .filter(|k| chaos::malform(&events[*k]).is_some())
                        .collect();
                    let pick = (drawn.at * candidates.len() as f64) as usize;
                    if let Some(&k) = candidates.get(pick.min(candidates.len().saturating_sub(1)))
                        && let Some(bad) = chaos::malform(&events[k])
                    {
                        events[k] = Bytes::from(bad);
                    }
                    (None, End::Clean)
                }
                _ => (Some(cut), End::Clean),
            };
            body::paced(events, None, limit, end, shutdown, in_flight)
        }
    };
    let mut response = with_head(body, status, content_type);
    if content_type == "text/event-stream" {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// Which API a request speaks, by its path: errors and answers follow that API's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `/v1/...`, and Azure OpenAI's `/openai/...`.
    OpenAi,
    /// Google Gemini's `/v1beta/...`.
    Gemini,
}

impl Protocol {
    fn of(path: &str) -> Protocol {
        if path.starts_with(GEMINI_PREFIX) {
            Protocol::Gemini
        } else {
            Protocol::OpenAi
        }
    }

    fn error(self, status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
        match self {
            Protocol::OpenAi => content::error_reply(status, message, param, code),
            Protocol::Gemini => content::gemini::error_reply(status, message, None),
        }
    }

    /// A model named in the path (Gemini's `models/{model}:method`), whose directives count
    /// like a body's `model`.
    fn path_model(self, path: &str) -> Option<&str> {
        match self {
            Protocol::OpenAi => None,
            Protocol::Gemini => content::gemini::split_model_method(path).map(|(model, _)| model),
        }
    }
}

/// The API root of Gemini's routes.
const GEMINI_PREFIX: &str = "/v1beta/";

/// Azure OpenAI's roots: `/openai/deployments/{deployment}/...` and `/openai/...`; both map onto
/// the OpenAI routes (the deployment name stands in for the model, which Azure ignores).
const AZURE_PREFIX: &str = "/openai/";

/// The path relative to `/v1/` (or `/v1beta/`, or Azure's roots; with its query), or `None`
/// outside the API roots.
fn api_path(uri: &Uri) -> Option<Cow<'_, str>> {
    let full = uri.path();
    let rest = if let Some(rest) = full.strip_prefix(GEMINI_PREFIX) {
        rest
    } else if let Some(rest) = full.strip_prefix(AZURE_PREFIX) {
        match rest.strip_prefix("deployments/") {
            Some(deployment) => deployment.split_once('/')?.1,
            None => rest,
        }
    } else {
        match full.strip_prefix(API_PREFIX)? {
            "" => "",
            rest => rest.strip_prefix('/')?,
        }
    };
    Some(match uri.query() {
        Some(query) => Cow::Owned(format!("{rest}?{query}")),
        None => Cow::Borrowed(rest),
    })
}

/// `Authorization: Bearer` (OpenAI), `api-key` (Azure) or `x-goog-api-key` (Gemini).
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    // Anthropic clients send `x-api-key`, Azure's `api-key`, Gemini's `x-goog-api-key`.
    let plain = ["x-api-key", "api-key", "x-goog-api-key"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok());
    if plain.into_iter().any(|given| given.trim() == key) {
        return true;
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .is_some_and(|given| given.trim() == key)
}

/// The `Authorization` header to quote in an error, when [`MockState::set_echo_auth`] asks for it.
fn echoed_auth(state: &MockState, headers: &HeaderMap) -> Option<String> {
    state
        .echo_auth()
        .then(|| headers.get(AUTHORIZATION)?.to_str().ok().map(str::to_owned))
        .flatten()
}

/// Model name (the path's, then the body's) < `x_mock` < `x-mock-*` headers.
fn gather_directives(
    headers: &HeaderMap,
    body: &[u8],
    path_model: Option<&str>,
) -> Result<Directives, DirectiveError> {
    let mut directives = match path_model {
        Some(model) => Directives::from_model(model)?,
        None => Directives::default(),
    };
    directives.overlay(&Directives::from_body(body)?);
    let mut from_headers = Directives::default();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| DirectiveError {
            key: name.as_str().to_owned(),
            message: "header value is not visible ASCII".to_owned(),
        })?;
        from_headers.set_text(key, value)?;
    }
    directives.overlay(&from_headers);
    Ok(directives)
}

/// The error status this request must get, if any: `status` (>= 400), limited to the first
/// `fail_times` requests of its `fail_key` when `fail_times` is given (default status 500).
fn scripted_status(state: &MockState, directives: &Directives) -> Option<u16> {
    match directives.fail_times {
        Some(times) => {
            let seen = state.bump_fail_count(directives.fail_key.as_deref().unwrap_or(""));
            (seen <= u64::from(times)).then(|| directives.status.unwrap_or(500))
        }
        None => directives.status.filter(|status| *status >= 400),
    }
}

fn fault_response(
    protocol: Protocol,
    path: &str,
    status: u16,
    retry_after: Option<f64>,
    error_code: Option<&str>,
) -> Response {
    let reply = match error_code {
        _ if protocol == Protocol::Gemini => {
            let message = format!("Mock upstream fault: HTTP {status} requested by a directive.");
            let delay = retry_after.or((status == 429).then_some(DEFAULT_RETRY_AFTER_SECS));
            content::gemini::error_reply(status, &message, delay)
        }
        Some(code) => content::error_reply(
            status,
            &format!("Mock upstream fault: HTTP {status} ({code}) requested by a directive."),
            None,
            Some(code),
        ),
        None => content::fault_reply(status),
    };
    let reply = content::anthropic::restyle(path, reply);
    let mut response = reply_response(reply);
    let retry_after = match (status, retry_after) {
        (_, Some(secs)) => Some(secs),
        (429 | 503, None) => Some(DEFAULT_RETRY_AFTER_SECS),
        _ => None,
    };
    if let Some(secs) = retry_after {
        // Retry-After only carries whole seconds; round up so clients never retry too early.
        let whole = secs.ceil() as u64;
        let millis = (secs * 1000.0).round() as u64;
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from(whole));
        headers.insert("retry-after-ms", HeaderValue::from(millis));
    }
    response
}

/// 503 for requests interrupted by shutdown; `Connection: close` so the client does not reuse
/// a connection to a server that is going away.
fn shutting_down() -> Response {
    let mut response = reply_response(content::error_reply(
        503,
        "The mock server is shutting down.",
        None,
        None,
    ));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A plain response for a reply, without body faults.
fn reply_response(reply: Reply) -> Response {
    let content_type = reply.content_type();
    let status = reply.status;
    let body = match reply.body {
        ReplyBody::Json(bytes) => Body::from(bytes),
        ReplyBody::Events(events) => Body::from(Bytes::from(events.concat())),
    };
    with_head(body, status, content_type)
}

/// What `malformed_after_chunks` sends: an event whose JSON stops mid-object, as a buggy or
/// corrupted upstream would.
const MALFORMED_EVENT: &[u8] =
    b"data: {\"id\":\"chatcmpl-mock\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\n\n";

/// The response for a generated reply, applying the body-level directives.
fn shape_response(
    reply: Reply,
    directives: &Directives,
    shutdown: Option<Shutdown>,
    in_flight: state::InFlight,
) -> Response {
    let content_type = reply.content_type();
    let status = reply.status;
    let body = match reply.body {
        ReplyBody::Json(bytes) if directives.drop_mid_body == Some(true) => {
            let half = bytes.slice(..bytes.len() / 2);
            body::paced(vec![half], None, None, End::Abort, shutdown, in_flight)
        }
        ReplyBody::Json(bytes) => Body::from(bytes),
        ReplyBody::Events(mut events) => {
            if let Some(n) = directives.malformed_after_chunks {
                events.insert(n.min(events.len()), Bytes::from_static(MALFORMED_EVENT));
            }
            let delay = directives.chunk_delay_ms.map(Duration::from_millis);
            // `drop_after_chunks` wins over `stop_after_chunks`: an abort is the harsher test.
            let (limit, end) = match (directives.drop_after_chunks, directives.stop_after_chunks) {
                (Some(n), _) => (Some(n), End::Abort),
                (None, Some(n)) => (Some(n), End::Clean),
                (None, None) => (None, End::Clean),
            };
            body::paced(events, delay, limit, end, shutdown, in_flight)
        }
    };
    let mut response = with_head(body, status, content_type);
    if content_type == "text/event-stream" {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

fn with_head(body: Body, status: u16, content_type: &'static str) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        let uri: Uri = "/v1/chat/completions?a=1".parse().unwrap();
        assert_eq!(api_path(&uri).unwrap(), "chat/completions?a=1");
        let uri: Uri = "/v1".parse().unwrap();
        assert_eq!(api_path(&uri).unwrap(), "");
        assert!(api_path(&"/v10/models".parse().unwrap()).is_none());
        assert!(api_path(&"/health".parse().unwrap()).is_none());
        let uri: Uri = "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
            .parse()
            .unwrap();
        assert_eq!(api_path(&uri).unwrap(), "chat/completions?api-version=2024-10-21");
        let uri: Uri = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
            .parse()
            .unwrap();
        assert_eq!(
            api_path(&uri).unwrap(),
            "models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(Protocol::of(uri.path()), Protocol::Gemini);
    }

    #[test]
    fn header_directives_override_body() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-latency-ms", HeaderValue::from_static("7"));
        headers.insert("x-mock-status", HeaderValue::from_static("429"));
        let body = br#"{"model":"mock:status=500,chunks=2","x_mock":{"status":503,"latency_ms":1}}"#;
        let d = gather_directives(&headers, body, None).unwrap();
        assert_eq!(d.status, Some(429));
        assert_eq!(d.latency_ms, Some(7));
        assert_eq!(d.chunks, Some(2));
        headers.insert("x-mock-bogus", HeaderValue::from_static("1"));
        assert!(gather_directives(&headers, body, None).is_err());
    }

    #[test]
    fn bearer_auth() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "k"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        assert!(authorized(&headers, "k"));
        assert!(!authorized(&headers, "other"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic k"));
        assert!(!authorized(&headers, "k"));
        headers.insert("x-goog-api-key", HeaderValue::from_static("k"));
        assert!(authorized(&headers, "k"));
    }
}
