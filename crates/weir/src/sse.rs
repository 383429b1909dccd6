//! Server-sent events: framing a byte stream into whole events, and guarding a chat stream so that
//! it never ends silently.
//!
//! The gateway forwards upstream SSE bytes untouched, but only whole events: if the upstream dies
//! mid-event, half an event followed by a clean end would look like success to a client. The
//! [`guard`] forwards complete events as they arrive and, when the stream breaks (transport error,
//! idle timeout, or end without `data: [DONE]` where one is due), ends it with an error event in the
//! OpenAI shape (`data: {"error": {...}}`), which OpenAI's SDKs raise as an exception.
//!
//! On a chat-style stream (one that promises `[DONE]`) every event's data must also be valid
//! JSON: an event that is not (a corrupted or cut-off chunk) would make the client's SDK raise a
//! raw decode error, or — through a translating face — silently lose text. Such an event, and an
//! in-band `{"error": ...}` chunk, end the stream as a failure there and then: the events before
//! it are forwarded, the error event replaces it, nothing after it is sent (no `[DONE]`), and the
//! end is reported as failed, so the request is counted as an error and the cache never keeps it.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::{
    api::{ErrorResponse, Usage},
    error::Error,
};

/// A stream of body bytes.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// Splits bytes into whole SSE events (each returned with its terminating blank line).
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: BytesMut,
    /// How far `buf` is known to hold no event boundary, so each push scans only new bytes
    /// (a slow upstream sending a huge event byte by byte must not cost quadratic time).
    scanned: usize,
}

/// The largest single event the guard accepts; a longer one (an upstream that never sends the
/// blank line) fails the stream instead of growing memory.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

impl SseFramer {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Removes and returns all complete events buffered so far, as one contiguous slice.
    pub fn take_complete(&mut self) -> Option<Bytes> {
        let mut end = None;
        let mut offset = self.resume_from();
        while let Some(e) = first_event_end(&self.buf[offset..]) {
            offset += e;
            end = Some(offset);
        }
        self.split(end)
    }

    /// Removes and returns the next complete event.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let from = self.resume_from();
        let end = first_event_end(&self.buf[from..]).map(|e| from + e);
        self.split(end)
    }

    /// Where to resume scanning: a boundary (up to 3 bytes) may straddle the old end.
    fn resume_from(&self) -> usize {
        self.scanned.saturating_sub(2).min(self.buf.len())
    }

    fn split(&mut self, end: Option<usize>) -> Option<Bytes> {
        match end {
            Some(end) => {
                self.scanned = 0;
                Some(self.buf.split_to(end).freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Bytes of an event that has not been terminated yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// Index just past the first blank line (`\n\n` or `\n\r\n`), i.e. the end of the first event.
fn first_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data:` payload of one event (multiple data lines joined by `\n`), if it has one.
pub fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data: Option<String> = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    data
}

/// An SSE event carrying `error` in the OpenAI shape.
pub fn error_event(err: &Error) -> Bytes {
    let body = ErrorResponse::from_error(err).body_bytes();
    let mut out = BytesMut::with_capacity(body.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// What the guard reports per item: bytes to forward, and whether this item is a synthesized error.
#[derive(Debug, Clone)]
pub enum GuardItem {
    /// Whole upstream events, forwarded untouched.
    Events(Bytes),
    /// The stream failed: this is the error event to send, and the stream ends after it.
    Failed(Error, Bytes),
}

/// How a guarded stream ended, reported once through [`guard`]'s `on_end` callback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamEnd {
    /// The upstream finished normally (`[DONE]`, or a clean end where none is expected).
    pub completed: bool,
    /// The stream failed (transport error, idle timeout, cut short); `None` if it completed or the
    /// client went away first.
    pub error: Option<crate::error::ErrorKind>,
    /// The last `usage` object seen in the stream (the final chunk with `include_usage`).
    pub usage: Option<Usage>,
}

/// Called once when a guarded stream ends, however it ends.
pub type OnStreamEnd = Box<dyn FnOnce(StreamEnd) + Send>;

/// Fires the callback when dropped: at the natural end, or early if the client disconnects.
struct EndNotifier {
    on_end: Option<OnStreamEnd>,
    end: StreamEnd,
}

impl Drop for EndNotifier {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(std::mem::take(&mut self.end));
        }
    }
}

/// Guards an upstream SSE stream (see the module docs). With `expect_done` (chat and text
/// completions), a clean end of the upstream body before `data: [DONE]` counts as a failure, and
/// so does an event before it whose data is not valid JSON or is an in-band `error` object.
/// `on_end` learns how the stream ended and its usage, for limiter reconciliation and accounting.
pub fn guard(
    upstream: ByteStream,
    expect_done: bool,
    on_end: Option<OnStreamEnd>,
) -> impl Stream<Item = GuardItem> + Send {
    struct State {
        upstream: ByteStream,
        framer: SseFramer,
        done_seen: bool,
        finished: bool,
        /// A failure found behind events that were forwarded first; sent next, then the end.
        failure: Option<(Error, Bytes)>,
        notifier: EndNotifier,
    }
    let state = State {
        upstream,
        framer: SseFramer::default(),
        done_seen: false,
        finished: false,
        failure: None,
        notifier: EndNotifier {
            on_end,
            end: StreamEnd::default(),
        },
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some((err, event)) = st.failure.take() {
                return Some((GuardItem::Failed(err, event), st));
            }
            if st.finished {
                return None;
            }
            match st.upstream.next().await {
                Some(Ok(chunk)) => {
                    st.framer.push(&chunk);
                    if st.framer.pending().len() > MAX_EVENT_BYTES {
                        let err = Error::BadUpstreamResponse {
                            message: format!(
                                "an event of the upstream stream exceeded {MAX_EVENT_BYTES} bytes"
                            ),
                        };
                        st.finished = true;
                        st.notifier.end.error = Some(err.kind());
                        let event = error_event(&err);
                        return Some((GuardItem::Failed(err, event), st));
                    }
                    if let Some(mut events) = st.framer.take_complete() {
                        // One walk over the events finds both a bad one and `[DONE]`.
                        let checked = if expect_done {
                            check_chat_events(&events)
                        } else {
                            ChatEvents::default()
                        };
                        if let Some((good, err)) = checked.bad {
                            st.finished = true;
                            st.notifier.end.error = Some(err.kind());
                            let event = error_event(&err);
                            if good == 0 {
                                return Some((GuardItem::Failed(err, event), st));
                            }
                            st.failure = Some((err, event));
                            events = events.slice(..good);
                        }
                        if let Some(usage) = find_usage(&events) {
                            st.notifier.end.usage = Some(usage);
                        }
                        if checked.done {
                            st.done_seen = true;
                            st.notifier.end.completed = true;
                            // Nothing after [DONE] matters; stop reading so the connection is released.
                            st.finished = true;
                        }
                        return Some((GuardItem::Events(events), st));
                    }
                }
                Some(Err(err)) => {
                    st.finished = true;
                    st.notifier.end.error = Some(err.kind());
                    let event = error_event(&err);
                    return Some((GuardItem::Failed(err, event), st));
                }
                None => {
                    st.finished = true;
                    if expect_done && !st.done_seen {
                        let err = Error::Transport {
                            message: "the upstream stream ended before it was complete (no [DONE])"
                                .to_owned(),
                        };
                        st.notifier.end.error = Some(err.kind());
                        let event = error_event(&err);
                        return Some((GuardItem::Failed(err, event), st));
                    }
                    st.notifier.end.completed = true;
                    if !st.framer.pending().iter().all(u8::is_ascii_whitespace) {
                        // A clean end in the middle of an event: forward what we have, terminated, so
                        // streams that legitimately end without a blank line still deliver it.
                        let mut tail = BytesMut::from(st.framer.pending());
                        tail.extend_from_slice(b"\n\n");
                        return Some((GuardItem::Events(tail.freeze()), st));
                    }
                    return None;
                }
            }
        }
    })
}

/// What one walk over whole chat-stream events found.
#[derive(Default)]
struct ChatEvents {
    /// The first event that must end the stream: its offset (how many bytes before it are good)
    /// and the failure it stands for.
    bad: Option<(usize, Error)>,
    /// `[DONE]` came (before any bad event).
    done: bool,
}

/// Checks whole chat-stream `events` up to `[DONE]`: an event without data (a comment, a
/// keep-alive) is fine; `[DONE]` ends the check (nothing after it is read).
fn check_chat_events(events: &Bytes) -> ChatEvents {
    let bad = |offset: usize, err: Error| ChatEvents {
        bad: Some((offset, err)),
        done: false,
    };
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        error: Option<&'a serde_json::value::RawValue>,
    }
    let mut offset = 0;
    while let Some(end) = first_event_end(&events[offset..]) {
        let event = &events[offset..offset + end];
        let Some(data) = event_data(event) else {
            if std::str::from_utf8(event).is_err() {
                return bad(offset, malformed("is not valid UTF-8"));
            }
            offset += end;
            continue;
        };
        if data.trim() == "[DONE]" {
            return ChatEvents {
                bad: None,
                done: true,
            };
        }
        let raw = match serde_json::from_str::<&serde_json::value::RawValue>(&data) {
            Ok(raw) => raw.get(),
            Err(e) => return bad(offset, malformed(&format!("is not valid JSON ({e})"))),
        };
        // Only chunks that mention `"error"` are parsed again, to read it.
        if raw.starts_with('{')
            && raw.contains("\"error\"")
            && let Ok(Chunk { error: Some(error) }) = serde_json::from_str::<Chunk<'_>>(raw)
            && error.get() != "null"
        {
            return bad(offset, in_band_error(error.get()));
        }
        offset += end;
    }
    ChatEvents::default()
}

fn malformed(what: &str) -> Error {
    Error::BadUpstreamResponse {
        message: format!("an event of the upstream stream {what}; the stream was ended there"),
    }
}

/// An upstream's in-band `{"error": {...}}` chunk as the failure it reports (a server error: the
/// upstream gave up mid-answer).
fn in_band_error(error: &str) -> Error {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Detail {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    }
    let detail: Detail = serde_json::from_str(error).unwrap_or_default();
    Error::Upstream {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        message: detail
            .message
            .unwrap_or_else(|| "the upstream reported an error mid-stream".to_owned()),
        error_type: detail.kind,
        code: detail.code.map(|c| match c {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }),
        param: None,
        retry_after: None,
    }
}

/// The `usage` object of a JSON response or chunk, if it has a non-null one.
pub fn usage_in(json: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Carrier {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Carrier>(json).ok()?.usage
}

/// The `usage` object of the last event in `events` that has a non-null one. Only events that
/// mention `"usage":{` are parsed, so ordinary chunks cost a byte scan, not a JSON parse.
fn find_usage(events: &[u8]) -> Option<Usage> {
    const NEEDLE: &[u8] = b"\"usage\":{";
    if !events.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return None;
    }
    let mut found = None;
    let mut offset = 0;
    while let Some(end) = first_event_end(&events[offset..]) {
        let event = &events[offset..offset + end];
        offset += end;
        if let Some(usage) = event_data(event).and_then(|data| usage_in(data.as_bytes())) {
            found = Some(usage);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(parts: Vec<Result<&'static [u8], Error>>) -> ByteStream {
        Box::pin(futures::stream::iter(
            parts.into_iter().map(|p| p.map(Bytes::from_static)),
        ))
    }

    async fn collect(s: impl Stream<Item = GuardItem>) -> (String, Option<Error>) {
        let items: Vec<GuardItem> = s.collect().await;
        let mut out = String::new();
        let mut failure = None;
        for item in items {
            match item {
                GuardItem::Events(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
                GuardItem::Failed(e, b) => {
                    out.push_str(std::str::from_utf8(&b).unwrap());
                    failure = Some(e);
                }
            }
        }
        (out, failure)
    }

    #[test]
    fn framer_splits_across_chunks_and_crlf() {
        let mut f = SseFramer::default();
        f.push(b"data: a\n\ndata: b");
        assert_eq!(f.next_event().unwrap(), Bytes::from_static(b"data: a\n\n"));
        assert!(f.next_event().is_none());
        f.push(b"\r\n\r\ndata: c\n\n");
        assert_eq!(
            f.take_complete().unwrap(),
            Bytes::from_static(b"data: b\r\n\r\ndata: c\n\n")
        );
        assert_eq!(event_data(b"event: x\ndata: 1\ndata: 2\n\n").unwrap(), "1\n2");
    }

    #[test]
    fn framer_finds_boundaries_split_across_pushes() {
        let mut f = SseFramer::default();
        for b in b"data: x\r\n\r\ndata: y\n\n" {
            f.push(&[*b]);
            if let Some(e) = f.take_complete() {
                assert!(
                    e.as_ref() == b"data: x\r\n\r\n" || e.as_ref() == b"data: y\n\n",
                    "{e:?}"
                );
            }
        }
        assert!(f.pending().is_empty());
    }

    #[tokio::test]
    async fn an_endless_event_fails_the_stream() {
        let big: &'static [u8] = Box::leak(vec![b'x'; MAX_EVENT_BYTES / 4].into_boxed_slice());
        let s = stream_of(vec![Ok(b"data: "), Ok(big), Ok(big), Ok(big), Ok(big), Ok(big)]);
        let (out, failure) = collect(guard(s, true, None)).await;
        assert!(
            matches!(failure, Some(Error::BadUpstreamResponse { .. })),
            "{failure:?}"
        );
        assert!(out.len() < 1000, "the oversized event must not be forwarded");
    }

    #[tokio::test]
    async fn complete_stream_passes_untouched() {
        let s = stream_of(vec![Ok(b"data: {\"a\":1}\n\nda"), Ok(b"ta: [DONE]\n\n")]);
        let (out, failure) = collect(guard(s, true, None)).await;
        assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert!(failure.is_none());
    }

    #[tokio::test]
    async fn truncated_stream_ends_with_error_event() {
        let s = stream_of(vec![Ok(b"data: {\"a\":1}\n\ndata: {\"half")]);
        let (out, failure) = collect(guard(s, true, None)).await;
        assert!(out.starts_with("data: {\"a\":1}\n\ndata: {\"error\":"), "{out}");
        assert!(!out.contains("half"), "partial event leaked: {out}");
        assert!(failure.is_some());
    }

    #[tokio::test]
    async fn transport_error_becomes_error_event() {
        let s = stream_of(vec![
            Ok(b"data: 1\n\n"),
            Err(Error::Transport {
                message: "reset".into(),
            }),
        ]);
        let (out, failure) = collect(guard(s, true, None)).await;
        assert!(out.contains("\"error\"") && out.contains("reset"), "{out}");
        assert!(matches!(failure, Some(Error::Transport { .. })));
    }

    #[tokio::test]
    async fn on_end_reports_completion_usage_and_failure_once() {
        use std::sync::Arc;
        let seen: Arc<parking_lot::Mutex<Vec<StreamEnd>>> = Arc::default();
        let record = |seen: &Arc<parking_lot::Mutex<Vec<StreamEnd>>>| -> OnStreamEnd {
            let seen = seen.clone();
            Box::new(move |end| seen.lock().push(end))
        };
        let ok = stream_of(vec![
            Ok(b"data: {\"choices\":[],\"usage\":null}\n\n"),
            Ok(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n"),
        ]);
        collect(guard(ok, true, Some(record(&seen)))).await;
        let cut = stream_of(vec![Ok(b"data: 1\n\n")]);
        collect(guard(cut, true, Some(record(&seen)))).await;
        // A client that goes away after the first event: the callback still fires, on drop.
        let long = stream_of(vec![Ok(b"data: 1\n\n"), Ok(b"data: 2\n\n")]);
        let mut dropped = Box::pin(guard(long, true, Some(record(&seen))));
        dropped.next().await;
        drop(dropped);

        let seen = seen.lock();
        assert_eq!(seen.len(), 3);
        assert!(seen[0].completed && seen[0].error.is_none());
        assert_eq!(
            seen[0]
                .usage
                .as_ref()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((3, 5))
        );
        assert!(!seen[1].completed && seen[1].error == Some(crate::error::ErrorKind::Transport));
        assert!(!seen[2].completed && seen[2].error.is_none() && seen[2].usage.is_none());
    }

    #[tokio::test]
    async fn a_malformed_chat_event_ends_the_stream_as_a_failure() {
        use std::sync::Arc;
        let ends: Arc<parking_lot::Mutex<Vec<StreamEnd>>> = Arc::default();
        let seen = ends.clone();
        let s = stream_of(vec![
            Ok(b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\n\ndata: {\"b\":2}\n\n"),
            Ok(b"data: [DONE]\n\n"),
        ]);
        let on_end: OnStreamEnd = Box::new(move |end| seen.lock().push(end));
        let (out, failure) = collect(guard(s, true, Some(on_end))).await;
        assert!(
            out.starts_with("data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"error\":"),
            "{out}"
        );
        assert!(
            !out.contains("\"lo") && !out.contains("\"b\"") && !out.contains("[DONE]"),
            "{out}"
        );
        assert!(
            matches!(failure, Some(Error::BadUpstreamResponse { .. })),
            "{failure:?}"
        );
        let ends = ends.lock();
        assert_eq!(ends.len(), 1);
        assert!(!ends[0].completed);
        assert_eq!(ends[0].error, Some(crate::error::ErrorKind::BadUpstreamResponse));
    }

    #[tokio::test]
    async fn an_in_band_error_chunk_ends_the_stream_as_a_failure() {
        let s = stream_of(vec![
            Ok(b"data: {\"a\":1}\n\n"),
            Ok(b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n"),
        ]);
        let (out, failure) = collect(guard(s, true, None)).await;
        assert!(out.contains("overloaded") && !out.contains("[DONE]"), "{out}");
        assert!(matches!(failure, Some(Error::Upstream { .. })), "{failure:?}");
        // `"error": null` is no error, and nothing after [DONE] is judged.
        let s = stream_of(vec![Ok(
            b"data: {\"error\":null}\n\ndata: [DONE]\n\ndata: {bad\n\n",
        )]);
        let (_, failure) = collect(guard(s, true, None)).await;
        assert!(failure.is_none(), "{failure:?}");
    }

    #[tokio::test]
    async fn a_malformed_first_event_fails_before_anything_is_sent() {
        let s = stream_of(vec![Ok(b"data: not json\n\ndata: [DONE]\n\n")]);
        let items: Vec<GuardItem> = guard(s, true, None).collect().await;
        assert_eq!(items.len(), 1);
        assert!(matches!(
            items[0],
            GuardItem::Failed(Error::BadUpstreamResponse { .. }, _)
        ));
    }

    #[tokio::test]
    async fn streams_without_done_end_cleanly_when_not_expected() {
        let s = stream_of(vec![Ok(b"event: response.completed\ndata: {}\n\n")]);
        let (out, failure) = collect(guard(s, false, None)).await;
        assert_eq!(out, "event: response.completed\ndata: {}\n\n");
        assert!(failure.is_none());
    }
}
