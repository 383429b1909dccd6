//! The engine's answer on its way out: a [`ProxyResponse`] becomes an axum [`Response`] here,
//! for every API face.
//!
//! A whole body is sent as is. A stream is sent as whole server-sent events, in the request's
//! span; a stream that breaks ends with the error event the engine (or the face's translation)
//! made, and one still running at the drain deadline ends with an error event in the face's
//! shape. A face that speaks another API than the engine's rewrites the body with [`translate`].

use std::convert::Infallible;

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, header};
use tokio_util::sync::CancellationToken;
use weir::{Error, ProxyBody, ProxyResponse, sse::GuardItem};

use crate::http::error::ErrorShape;

/// The error a stream cut off by the drain deadline ends with.
fn shutdown_error() -> Error {
    Error::Unavailable {
        message: "The gateway is shutting down; the stream was cut off.".to_owned(),
    }
}

/// A face's translation of stream events into its API (Anthropic's event stream, say).
pub(crate) trait TranslateEvents: Send + 'static {
    /// Whole upstream events in, whole events of the face's API out.
    fn events(&mut self, events: &[u8]) -> Bytes;
    /// The event that ends the stream when it broke with `err`.
    fn failed(&mut self, err: &Error) -> Bytes;
}

/// Rewrites the body of `resp` into a face's API: a whole body with `whole`, stream events
/// through `events`. The content type is set by what is sent, not what was asked: an upstream
/// that ignored `stream` answered whole.
pub(crate) fn translate(
    mut resp: ProxyResponse,
    whole: impl FnOnce(&[u8]) -> Result<Bytes, Error>,
    mut events: impl TranslateEvents,
) -> Result<ProxyResponse, Error> {
    let (body, content_type) = match resp.body {
        ProxyBody::Full(bytes) => (ProxyBody::Full(whole(&bytes)?), "application/json"),
        ProxyBody::Stream(stream) => {
            let translated = stream.map_items(move |item| match item {
                GuardItem::Events(bytes) => GuardItem::Events(events.events(&bytes)),
                GuardItem::Failed(err, _) => {
                    let event = events.failed(&err);
                    GuardItem::Failed(err, event)
                }
            });
            (ProxyBody::Stream(translated), "text/event-stream")
        }
    };
    resp.body = body;
    resp.headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// The HTTP response for `resp`. `cut_off` fires at the drain deadline; a stream still running
/// then ends with an error event in `shape`.
pub(crate) fn into_http(resp: ProxyResponse, cut_off: &CancellationToken, shape: ErrorShape) -> Response {
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
            let cut_event = move || Ok(shape.stream_event(&shutdown_error()));
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
