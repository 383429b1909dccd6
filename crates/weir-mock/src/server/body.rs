//! Response bodies that misbehave on purpose: paced SSE, early clean ends, aborted connections.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use super::Shutdown;
use super::state::InFlight;

/// How a body ends once its allowed frames are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// End of stream: the HTTP response completes normally.
    Clean,
    /// Yield an error: hyper aborts the connection (HTTP/1) or resets the stream (HTTP/2), so
    /// the client sees an incomplete body.
    Abort,
    /// Send nothing more and keep the body open until the server shuts down (or the client
    /// goes away and the body is dropped).
    Stall,
}

/// A body sending `frames` one per body frame, waiting `delay` between them, stopping after
/// `limit` frames, then ending as `end` says. It holds `in_flight` until it is finished or
/// dropped, and aborts early if the server shuts down.
pub(super) fn paced(
    frames: Vec<Bytes>,
    delay: Option<Duration>,
    limit: Option<usize>,
    end: End,
    shutdown: Option<Shutdown>,
    in_flight: InFlight,
) -> Body {
    struct State {
        frames: std::vec::IntoIter<Bytes>,
        remaining: usize,
        delay: Option<Duration>,
        end: End,
        sent_any: bool,
        finished: bool,
        shutdown: Option<Shutdown>,
        _in_flight: InFlight,
    }
    let state = State {
        remaining: limit.unwrap_or(usize::MAX),
        frames: frames.into_iter(),
        delay: delay.filter(|d| !d.is_zero()),
        end,
        sent_any: false,
        finished: false,
        shutdown,
        _in_flight: in_flight,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.finished {
            return None;
        }
        let next = if s.remaining == 0 { None } else { s.frames.next() };
        let Some(frame) = next else {
            s.finished = true;
            return match s.end {
                End::Clean => None,
                End::Stall => {
                    Shutdown::wait_opt(s.shutdown.clone()).await;
                    Some((Err(io::Error::other("weir-mock: server shutting down")), s))
                }
                End::Abort => {
                    // Returning Pending once lets hyper flush what was sent before the abort,
                    // so the client really receives the frames that precede it.
                    tokio::task::yield_now().await;
                    Some((
                        Err(io::Error::other("weir-mock: connection dropped by directive")),
                        s,
                    ))
                }
            };
        };
        if let (true, Some(delay)) = (s.sent_any, s.delay) {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = Shutdown::wait_opt(s.shutdown.clone()) => {
                    s.finished = true;
                    return Some((Err(io::Error::other("weir-mock: server shutting down")), s));
                }
            }
        }
        s.remaining -= 1;
        s.sent_any = true;
        Some((Ok::<_, io::Error>(frame), s))
    });
    Body::from_stream(stream)
}
