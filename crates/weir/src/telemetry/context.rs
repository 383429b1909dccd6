//! The per-request summary: what the engine learned about a request (where it went, how many
//! attempts, tokens...), for the one log line and the metrics recorded when the request ends.
//!
//! It travels as a tokio task-local rather than through every signature: the gateway opens a
//! scope around its handler ([`RequestSummary::scope`]) and the engine fills it where it knows
//! things, without the calling conventions of `execute` changing. Stream callbacks run after the
//! handler returned (hyper polls bodies outside it), so the engine captures the handle, not the
//! task-local, for them. Without a scope (a plain library user), every update is a no-op.

use std::{future::Future, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{config::ProviderKind, error::ErrorKind};

tokio::task_local! {
    static CURRENT: RequestSummary;
}

/// A shared, fill-as-you-go record of one request. Cloning gives another handle to the same one.
#[derive(Debug, Clone)]
pub struct RequestSummary {
    inner: Arc<Mutex<SummaryData>>,
    /// When the request arrived (for time to first token).
    started: Instant,
}

/// What is known about a request so far. Every field is optional: a request refused before
/// routing has no deployment, a request without usage has no tokens.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SummaryData {
    /// The model the client asked for (logs and traces only: it is client input, never a label).
    pub model: Option<String>,
    /// The model group that served it (last one tried, with fallbacks).
    pub model_group: Option<Arc<str>>,
    /// The deployment of the last attempt.
    pub deployment: Option<Arc<str>>,
    /// That deployment's upstream as `host:port` (never a path, query or credentials), so an
    /// error can say which upstream failed.
    pub upstream: Option<Arc<str>>,
    /// Which client sent it: `key-N` (the position of its gateway key, never the key),
    /// `anonymous` without gateway keys; set by whoever authenticated it.
    pub client: Option<Arc<str>>,
    /// The provider of that deployment.
    pub provider: Option<ProviderKind>,
    /// Upstream calls made (1 without retries; 0 if refused before calling anyone).
    pub attempts: u32,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Prompt tokens, as the upstream reported them.
    pub input_tokens: Option<u64>,
    /// Completion tokens, as the upstream reported them.
    pub output_tokens: Option<u64>,
    /// Cost in US dollars, when the pricing table knows the upstream model.
    pub cost_usd: Option<f64>,
    /// The response cache's verdict: `hit`, `miss` or `bypass` (not looked up).
    pub cache: Option<&'static str>,
    /// Request arrival to the first streamed event.
    pub time_to_first_token: Option<Duration>,
    /// Why the request failed, if it did (also a stream that broke after its first event).
    pub error: Option<ErrorKind>,
    /// The client's W3C `traceparent`, forwarded upstream when Weir exports no traces itself.
    pub traceparent: Option<String>,
}

impl Default for RequestSummary {
    fn default() -> Self {
        RequestSummary::new()
    }
}

impl RequestSummary {
    /// An empty summary for a request arriving now.
    pub fn new() -> RequestSummary {
        RequestSummary {
            inner: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Runs `fut` with this summary as the current one: what the engine learns while running it
    /// lands here.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.clone(), fut).await
    }

    /// The summary of the request being served on this task, if there is one.
    pub fn current() -> Option<RequestSummary> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Changes the summary.
    pub fn update(&self, f: impl FnOnce(&mut SummaryData)) {
        f(&mut self.inner.lock());
    }

    /// A copy of what is known now.
    pub fn snapshot(&self) -> SummaryData {
        self.inner.lock().clone()
    }

    /// How long since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Changes the current summary, if there is one.
    pub(crate) fn update_current(f: impl FnOnce(&mut SummaryData)) {
        let _ = CURRENT.try_with(|s| s.update(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn updates_land_in_the_scoped_summary_only() {
        // Outside a scope: nothing to update, and no panic.
        RequestSummary::update_current(|s| s.attempts += 1);
        assert!(RequestSummary::current().is_none());
        let summary = RequestSummary::new();
        summary
            .scope(async {
                RequestSummary::update_current(|s| s.attempts += 1);
                RequestSummary::update_current(|s| s.attempts += 1);
            })
            .await;
        assert_eq!(summary.snapshot().attempts, 2);
    }
}
