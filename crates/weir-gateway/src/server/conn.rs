//! One accepted connection: served by hyper with the gateway's router, closed when it idles or
//! trickles its headers, and with hyper's own rejections answered in the OpenAI error shape.
//!
//! Why not hyper's `header_read_timeout`: its timer starts only once hyper reads a request head,
//! which the HTTP/1-or-2 detection of a new connection comes before (a client that connects and
//! says nothing is never timed out), and it runs from the end of the previous response (so it
//! is also the keep-alive idle timeout, one value for both). The watchdog here keeps the two
//! apart: `idle_timeout` while no byte of a request has arrived, `header_read_timeout` from the
//! first byte until the router has the request. A request in flight (its body being read, its
//! answer or stream being sent) is never timed out here: the body read, the upstream call and the
//! drain have their own bounds.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, watch},
    time::Instant,
};
use tower::ServiceExt;

/// The time limits of one connection (`server.header_read_timeout`, `server.idle_timeout`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}

/// What the watchdog knows of a connection. Times are nanoseconds since `start`.
struct Activity {
    start: Instant,
    /// Requests handed to the router whose response is not finished.
    in_flight: AtomicUsize,
    /// When the connection last became idle: accepted, or its last response finished.
    idle_since: AtomicU64,
    /// When the first byte since then arrived, plus one (0: none yet).
    first_byte: AtomicU64,
    /// Wakes the watchdog when its deadline may have moved.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.first_byte.load(Ordering::Acquire) == 0 {
            self.first_byte
                .store(self.now().saturating_add(1), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in flight.
    fn deadline(&self, limits: Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let (from, allowed) = match self.first_byte.load(Ordering::Acquire) {
            0 => (self.idle_since.load(Ordering::Acquire), limits.idle),
            first => (first - 1, limits.header_read),
        };
        Some(self.start + Duration::from_nanos(from) + allowed)
    }
}

/// A request being served; dropped with its response body, which makes the connection idle.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Release);
        a.first_byte.store(0, Ordering::Release);
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.changed.notify_one();
        }
    }
}

/// Serves `tcp` until it closes, the drain asks it to (`stop`), or a time limit runs out. Holds
/// `_slot` (the connection limit) and `_open` (what the drain waits for) until then.
pub(super) async fn serve(
    tcp: TcpStream,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: tcp,
        activity: activity.clone(),
        rewrite: None,
    });
    let service = RouterService {
        app,
        activity: activity.clone(),
    };
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(deadline) => {
                if activity.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    // Nothing is in flight, so nothing is lost: the connection is dropped (a
                    // graceful close would wait for a request head that may never end).
                    tracing::debug!("closing a connection that idled or sent its headers too slowly");
                    return;
                }
            }
            () = activity.changed.notified() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The router as hyper's service, counting each request in flight until its body is finished.
#[derive(Clone)]
struct RouterService {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for RouterService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let app = self.app.clone();
        Box::pin(async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            Ok(resp.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is finished or dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling the watchdog when request bytes arrive, and replacing hyper's own empty
/// rejections with shaped ones ([`shaped_rejection`]).
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A replacement being written: its bytes and how many are out.
    rewrite: Option<(Bytes, usize)>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Only hyper writes while no request is in flight: its automatic answer to a request it
        // could not parse (or the tail of a finished response, which `shaped_rejection` ignores).
        if this.rewrite.is_none()
            && this.activity.in_flight.load(Ordering::Acquire) == 0
            && let Some(replacement) = shaped_rejection(buf)
        {
            this.rewrite = Some((replacement, 0));
        }
        let Some((bytes, written)) = &mut this.rewrite else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.rewrite = None;
        // Hyper's bytes count as written: the replacement stood in for them.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        let maybe_rejection = this.activity.in_flight.load(Ordering::Acquire) == 0
            && (first.starts_with(b"HTTP/1.1 4") || first.starts_with(b"HTTP/1.0 4"));
        if this.rewrite.is_none() && !maybe_rejection {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        // Rare (an error head with nothing in flight): one contiguous buffer, seen whole.
        let flat: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        Pin::new(this).poll_write(cx, &flat)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Hyper's automatic answer to an HTTP/1 request it could not parse — a bare `400`, `414` or
/// `431` head with no body — as the same status with an OpenAI-shaped JSON body.
///
/// What cannot be shaped this way: HTTP/2 protocol errors (answered with `RST_STREAM`/`GOAWAY`
/// frames, which carry no body), and connections closed for a timeout or an I/O error (there is
/// no complete request to answer). Everything hyper hands to the router — a bad header value
/// hyper accepted, an unknown path, a too-large body — is shaped by the router itself.
fn shaped_rejection(buf: &[u8]) -> Option<Bytes> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    // A head and nothing after it: hyper's rejections have no body.
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let (message, code) = match status {
        400 => (
            "The request is not valid HTTP/1.1 (a malformed request line or header, a header with \
             a forbidden byte such as NUL, or conflicting Content-Length headers).",
            "invalid_http_request",
        ),
        414 => ("The request URL is too long.", "uri_too_long"),
        431 => (
            "The request's headers are too large.",
            "request_header_fields_too_large",
        ),
        _ => return None,
    };
    // The one error mapping writes the body; the status comes from hyper's own head line.
    let body = weir::api::ErrorResponse::from_error(&weir::Error::InvalidRequest {
        message: message.to_owned(),
        param: None,
        code: Some(code),
    })
    .body_bytes();
    let body = String::from_utf8_lossy(&body);
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    Some(Bytes::from(format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_rejection_heads_are_shaped() {
        let shaped =
            shaped_rejection(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        let text = std::str::from_utf8(&shaped).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "request_header_fields_too_large");
        // A response with a body, another status, or the tail of a stream is left alone.
        assert!(shaped_rejection(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(shaped_rejection(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(shaped_rejection(b"0\r\n\r\n").is_none());
    }
}
