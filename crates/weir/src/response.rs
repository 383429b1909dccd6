//! What the engine answers: [`ProxyResponse`], which names what served it, and the streamed body
//! whose end every stage can wait for.
//!
//! A complete answer's usage is read once, when it arrives ([`ProxyResponse::usage`]); a stream's
//! when it ends. Stages that settle something by the outcome — a breaker permit, a rate-limit
//! reservation, the usage ledger — register [`ProxyResponse::on_finish`] and are called once the
//! answer is known to be complete, broken or abandoned, whatever shape the body has.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;

use crate::{
    api::Usage,
    config::ProviderKind,
    sse::{ByteStream, GuardItem, StreamEnd, guard},
};

/// The response header carrying a complete answer's cost in USD (from the pricing table).
pub const COST_HEADER: &str = "x-weir-cost-usd";

/// Which deployment answered, by name: enough for headers, logs and metrics, without holding
/// the deployment (and its connections) alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy {
    /// The deployment's id.
    pub deployment: Arc<str>,
    /// The model group the request was routed in.
    pub model_group: Arc<str>,
    /// The deployment's provider.
    pub provider: ProviderKind,
}

/// The engine's answer.
#[derive(Debug)]
pub struct ProxyResponse {
    /// Status from the upstream (always a success: failures are [`crate::Error`]s).
    pub status: StatusCode,
    /// Headers worth passing to the client (content type, processing time, cache verdict...).
    pub headers: HeaderMap,
    /// The body.
    pub body: ProxyBody,
    /// Which deployment served it (for a cached answer, the one that first did).
    pub served_by: ServedBy,
    /// The `usage` of a complete answer, read once when it arrived (`None` for streams, whose
    /// usage arrives with their end, and for answers that report none).
    pub usage: Option<Usage>,
    /// The `model` a complete answer says answered it, when it says.
    pub model: Option<String>,
}

impl ProxyResponse {
    /// A complete answer; its usage and model are read from the body.
    pub fn full(status: StatusCode, headers: HeaderMap, body: Bytes, served_by: ServedBy) -> ProxyResponse {
        let (usage, model) = usage_and_model(&body);
        ProxyResponse {
            status,
            headers,
            body: ProxyBody::Full(body),
            served_by,
            usage,
            model,
        }
    }

    /// A streamed answer.
    pub fn stream(
        status: StatusCode,
        headers: HeaderMap,
        body: ResponseStream,
        served_by: ServedBy,
    ) -> ProxyResponse {
        ProxyResponse {
            status,
            headers,
            body: ProxyBody::Stream(body),
            served_by,
            usage: None,
            model: None,
        }
    }

    /// The response's cost in USD (the [`COST_HEADER`] header): set on complete
    /// responses whose usage was reported and whose model has a price. A stream's cost is only
    /// known when it ends; it lands in the usage ledger ([`crate::Engine::usage`]).
    pub fn cost_usd(&self) -> Option<f64> {
        self.headers.get(COST_HEADER)?.to_str().ok()?.parse().ok()
    }

    /// Runs `hook` once the answer is finished: now for a complete body (which completed, with
    /// its usage), at the end of a stream (completed, broken, or dropped by a departing client).
    pub fn on_finish(&self, hook: impl FnOnce(&StreamEnd) + Send + 'static) {
        match &self.body {
            ProxyBody::Full(_) => hook(&StreamEnd {
                completed: true,
                error: None,
                usage: self.usage.clone(),
            }),
            ProxyBody::Stream(stream) => stream.on_end(hook),
        }
    }
}

/// A successful answer's body.
#[derive(Debug)]
pub enum ProxyBody {
    /// Complete.
    Full(Bytes),
    /// An SSE stream of whole events, guarded: if it breaks, its last item is an error event.
    Stream(ResponseStream),
}

/// A callback run when a stream ends.
type Hook = Box<dyn FnOnce(&StreamEnd) + Send>;

/// Who waits for a stream's end; once ended, how it ended (so a late hook still gets it).
#[derive(Default)]
enum EndState {
    #[default]
    Running,
    Waiting(Vec<Hook>),
    Ended(StreamEnd),
}

#[derive(Default)]
struct EndHooks {
    state: Mutex<EndState>,
}

impl EndHooks {
    fn add(&self, hook: Hook) {
        let mut state = self.state.lock();
        match &mut *state {
            EndState::Ended(end) => {
                let end = end.clone();
                drop(state);
                hook(&end);
            }
            EndState::Waiting(hooks) => hooks.push(hook),
            EndState::Running => {
                // A stream usually gets four hooks (accounting, in-flight count, breaker, drain).
                let mut hooks = Vec::with_capacity(4);
                hooks.push(hook);
                *state = EndState::Waiting(hooks);
            }
        }
    }

    fn fire(&self, end: StreamEnd) {
        let previous = std::mem::replace(&mut *self.state.lock(), EndState::Ended(end.clone()));
        if let EndState::Waiting(hooks) = previous {
            // Outside the lock: a hook may look at the stream again.
            for hook in hooks {
                hook(&end);
            }
        }
    }
}

/// A streamed body: whole SSE events, with the stream's end reported to whoever registered for it
/// ([`ResponseStream::on_end`]), exactly once, however it ends.
pub struct ResponseStream {
    inner: BoxStream<'static, GuardItem>,
    end: Arc<EndHooks>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream").finish_non_exhaustive()
    }
}

impl ResponseStream {
    /// Guards an upstream's SSE bytes (see [`crate::sse::guard`]). With `expect_done`, an end
    /// without `data: [DONE]` is a failure.
    pub fn guarded(upstream: ByteStream, expect_done: bool) -> ResponseStream {
        let end = Arc::new(EndHooks::default());
        let notify = end.clone();
        let inner = guard(upstream, expect_done, Some(Box::new(move |e| notify.fire(e)))).boxed();
        ResponseStream { inner, end }
    }

    /// Whole events already at hand (a cached answer), as a stream that completes.
    pub fn replay(events: Vec<Bytes>) -> ResponseStream {
        let upstream = futures::stream::iter(events.into_iter().map(Ok)).boxed();
        ResponseStream::guarded(upstream, false)
    }

    /// Registers `hook` for the stream's end; runs it at once if the stream has already ended.
    pub fn on_end(&self, hook: impl FnOnce(&StreamEnd) + Send + 'static) {
        self.end.add(Box::new(hook));
    }

    /// The same stream with its items transformed (e.g. translated to another API's events); the
    /// end is still reported to the same hooks.
    pub fn map_items(self, f: impl FnMut(GuardItem) -> GuardItem + Send + 'static) -> ResponseStream {
        ResponseStream {
            inner: self.inner.map(f).boxed(),
            end: self.end,
        }
    }

    /// The same stream with its items passed through `wrap` (e.g. a recorder); the end is still
    /// reported to the same hooks.
    pub fn wrap(
        self,
        wrap: impl FnOnce(BoxStream<'static, GuardItem>) -> BoxStream<'static, GuardItem>,
    ) -> ResponseStream {
        ResponseStream {
            inner: wrap(self.inner),
            end: self.end,
        }
    }
}

impl Stream for ResponseStream {
    type Item = GuardItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<GuardItem>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The `usage` and `model` of a JSON answer, when it has them. Bodies that don't mention
/// `"usage"` (images, most pass-through answers) cost a byte scan, not a parse.
fn usage_and_model(body: &[u8]) -> (Option<Usage>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Carrier {
        usage: Option<Usage>,
        model: Option<String>,
    }
    const NEEDLE: &[u8] = b"\"usage\"";
    if !body.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return (None, None);
    }
    match serde_json::from_slice::<Carrier>(body) {
        Ok(c) => (c.usage, c.model),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> ServedBy {
        ServedBy {
            deployment: "d".into(),
            model_group: "g".into(),
            provider: ProviderKind::Mock,
        }
    }

    #[tokio::test]
    async fn hooks_run_once_whenever_they_are_registered() {
        let seen: Arc<Mutex<Vec<(u8, bool)>>> = Arc::default();
        let record = |tag: u8| {
            let seen = seen.clone();
            move |end: &StreamEnd| seen.lock().push((tag, end.completed))
        };
        let stream = ResponseStream::replay(vec![Bytes::from_static(b"data: 1\n\n")]);
        stream.on_end(record(1));
        let resp = ProxyResponse::stream(StatusCode::OK, HeaderMap::new(), stream, served());
        resp.on_finish(record(2));
        let ProxyBody::Stream(stream) = resp.body else {
            panic!("a stream")
        };
        let stream = stream.map_items(|item| item);
        let items: Vec<GuardItem> = stream.collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(*seen.lock(), vec![(1, true), (2, true)]);

        let full = ProxyResponse::full(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(br#"{"model":"m","usage":{"prompt_tokens":2,"completion_tokens":3}}"#),
            served(),
        );
        assert_eq!(full.model.as_deref(), Some("m"));
        full.on_finish(record(3));
        assert_eq!(seen.lock().last(), Some(&(3, true)));
    }

    #[tokio::test]
    async fn a_hook_added_after_the_end_still_runs() {
        let stream = ResponseStream::replay(vec![Bytes::from_static(b"data: 1\n\n")]);
        let end = stream.end.clone();
        let _: Vec<GuardItem> = stream.collect().await;
        let ran = Arc::new(Mutex::new(false));
        let flag = ran.clone();
        end.add(Box::new(move |_| *flag.lock() = true));
        assert!(*ran.lock());
    }
}
