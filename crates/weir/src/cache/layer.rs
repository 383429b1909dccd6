//! The cache as a stage of the engine's pipeline: [`CacheLayer`].
//!
//! It wraps whatever answers requests below it (the engine's admission and routing) and knows
//! nothing of it: it looks a request up (memory, then Redis), else joins an identical request
//! already on its way (coalescing), else passes it on and stores the answer — a stream only once it
//! has completed normally. Which model group a request belongs to (part of its key) and which
//! deployment a cached answer names come from the config.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use tower::{Layer, Service, ServiceExt};

use super::{
    Cache, CacheStatus, LeaderGuard, Role, Tier,
    entry::{self, Entry, Payload},
    key::{CacheKey, request_key},
    strategy::{self, Kind},
    wait_for_leader,
};
use crate::{
    config::Config,
    error::Error,
    request::ProxyRequest,
    response::{ProxyBody, ProxyResponse, ResponseStream, ServedBy},
    sse::GuardItem,
};

/// What the cache will do for one request.
pub(super) struct Plan {
    pub(super) key: CacheKey,
    kind: Kind,
    stream: bool,
    include_usage: bool,
    read: bool,
    write: bool,
    pub(super) max_age: Option<Duration>,
    model_group: String,
}

/// Puts a [`Cache`] in front of a service (see the module docs).
#[derive(Clone)]
pub struct CacheLayer {
    cache: Arc<Cache>,
    config: Arc<Config>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A layer answering from `cache`, resolving model groups and deployments by `config`.
    pub fn new(cache: Arc<Cache>, config: Arc<Config>) -> CacheLayer {
        CacheLayer { cache, config }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            cache: self.cache.clone(),
            config: self.config.clone(),
        }
    }
}

/// The service of [`CacheLayer`].
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Arc<Cache>,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<S> Service<ProxyRequest> for CacheService<S>
where
    S: Service<ProxyRequest, Response = ProxyResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ProxyResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyResponse, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ProxyRequest) -> Self::Future {
        // The instance `poll_ready` readied goes with this call; a clone stays for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (cache, config) = (self.cache.clone(), self.config.clone());
        Box::pin(async move { cache.execute(&config, inner, req).await })
    }
}

impl Cache {
    /// Executes `req` through the cache: `inner` on a miss.
    async fn execute<S>(
        self: &Arc<Self>,
        config: &Config,
        inner: S,
        req: ProxyRequest,
    ) -> Result<ProxyResponse, Error>
    where
        S: Service<ProxyRequest, Response = ProxyResponse, Error = Error>,
    {
        let Some(plan) = self.plan(config, &req) else {
            self.bypasses.fetch_add(1, Ordering::Relaxed);
            return inner
                .oneshot(req)
                .await
                .map(|r| mark(r, CacheStatus::Bypass, None));
        };
        let mut leader = None;
        if plan.read {
            if let Some((stored, tier)) = self.lookup(&plan).await
                && let Some(resp) = self.respond(config, &plan, &stored.entry, stored.age(), tier)
            {
                return Ok(resp);
            }
            match self.join_or_lead(&plan) {
                Role::Leader(guard) => {
                    // Another leader may have stored the answer between our lookup and now.
                    if let Some(memory) = &self.memory
                        && let Some(stored) = memory.get(&plan.key).await
                        && super::within_max_age(&plan, stored.age())
                        && let Some(resp) =
                            self.respond(config, &plan, &stored.entry, stored.age(), Tier::Memory)
                    {
                        return Ok(resp);
                    }
                    leader = Some(guard);
                }
                Role::Follower(rx) => {
                    let wait = req.deadline.map_or(self.config.coalesce_timeout, |d| {
                        d.min(self.config.coalesce_timeout)
                    });
                    if let Some(entry) = wait_for_leader(rx, wait).await
                        && let Some(resp) =
                            self.respond(config, &plan, &entry, Duration::ZERO, Tier::Coalesced)
                    {
                        return Ok(resp);
                    }
                    // The leader failed or is too slow: this request calls the upstream itself.
                }
                Role::Alone => {}
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let status = if plan.read {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        let mut resp = inner.oneshot(req).await?;
        let storable = resp.status == StatusCode::OK;
        let deployment = resp.served_by.deployment.to_string();
        resp.body = match resp.body {
            ProxyBody::Full(bytes) => {
                if storable {
                    let content_type = resp
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let entry =
                        Arc::new(self.new_entry(&deployment, content_type, Payload::Full(bytes.clone())));
                    if plan.write && self.fits(&entry) {
                        self.store(plan.key, entry.clone()).await;
                    }
                    // Waiting requests get the answer even when it is too large to keep.
                    if let Some(leader) = leader.take() {
                        leader.publish(entry);
                    }
                }
                ProxyBody::Full(bytes)
            }
            ProxyBody::Stream(stream) => {
                let recorder = Recorder {
                    cache: self.clone(),
                    key: plan.key,
                    kind: plan.kind,
                    write: plan.write && storable,
                    deployment,
                    leader: leader.take(),
                    events: Vec::new(),
                    size: 0,
                    spoiled: !storable,
                };
                ProxyBody::Stream(stream.wrap(|inner| recorder.wrap(inner)))
            }
        };
        Ok(mark(resp, status, None))
    }

    /// Decides whether and how the cache handles `req`; `None` to bypass it.
    fn plan(&self, config: &Config, req: &ProxyRequest) -> Option<Plan> {
        if !self.config.enabled() {
            return None;
        }
        let kind = strategy::kind_of(req.endpoint, &req.method, req.path.as_str())?;
        let directives = &req.cache;
        let no_cache = directives.no_cache || directives.max_age == Some(Duration::ZERO);
        if no_cache && directives.no_store {
            return None;
        }
        // Bad JSON is the engine's to reject with a proper 400. The facts are parsed once, here
        // or further in, and shared.
        let facts = req.facts().ok()?;
        let body = facts.json()?;
        if let Err(why) = strategy::decide(&self.config, kind, body) {
            tracing::debug!(reason = why, "not cacheable");
            return None;
        }
        let model = match facts.model() {
            Some(m) => m.to_owned(),
            None => config.default_model.clone()?,
        };
        let model_group = config.group_for(&model)?.name.clone();
        let tenant: &str = directives
            .tenant
            .as_deref()
            .or(req.client.as_deref())
            .unwrap_or("anonymous");
        let key = request_key(tenant, &model_group, req.path.as_str(), body);
        Some(Plan {
            key,
            kind,
            stream: facts.stream(),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            read: !no_cache,
            write: !directives.no_store,
            max_age: directives.max_age,
            model_group,
        })
    }

    /// The answer to `plan`'s request from `entry`, converted between streamed and whole when
    /// needed; `None` if it can't be (the request then goes upstream).
    fn respond(
        &self,
        config: &Config,
        plan: &Plan,
        entry: &Entry,
        age: Duration,
        tier: Tier,
    ) -> Option<ProxyResponse> {
        let chat = plan.kind == Kind::Chat;
        let body = match (&entry.payload, plan.stream) {
            (Payload::Full(bytes), false) => ProxyBody::Full(bytes.clone()),
            (Payload::Events(events), true) => {
                if plan.include_usage && chat && !entry::events_have_usage(events) {
                    return None;
                }
                let events: Vec<Bytes> = events
                    .iter()
                    .filter(|e| plan.include_usage || !chat || !entry::is_usage_only_chunk(e))
                    .cloned()
                    .collect();
                ProxyBody::Stream(ResponseStream::replay(events))
            }
            (Payload::Full(bytes), true) if chat => ProxyBody::Stream(ResponseStream::replay(
                entry::completion_to_events(bytes, plan.include_usage)?,
            )),
            (Payload::Events(events), false) if chat => ProxyBody::Full(entry::events_to_completion(events)?),
            _ => return None,
        };
        // The deployment that answered first, if it still serves the group; else the group's first.
        let group = config.models.iter().find(|g| g.name == plan.model_group)?;
        let deployment = group
            .deployments
            .iter()
            .find(|d| d.id == entry.deployment)
            .or_else(|| group.deployments.first())?;
        let mut headers = HeaderMap::new();
        let content_type = match (&body, &entry.content_type) {
            (ProxyBody::Stream(_), _) => "text/event-stream",
            (ProxyBody::Full(_), Some(ct)) if !ct.starts_with("text/event-stream") => ct.as_str(),
            (ProxyBody::Full(_), _) => "application/json",
        };
        if let Ok(v) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        match tier {
            Tier::Memory => &self.memory_hits,
            Tier::Redis => &self.redis_hits,
            Tier::Coalesced => &self.coalesced,
        }
        .fetch_add(1, Ordering::Relaxed);
        let resp = ProxyResponse {
            status: StatusCode::OK,
            headers,
            body,
            served_by: ServedBy {
                deployment: Arc::from(deployment.id.as_str()),
                model_group: Arc::from(group.name.as_str()),
                provider: deployment.provider,
            },
            // Nothing was spent upstream for this answer.
            usage: None,
            model: None,
        };
        Some(mark(resp, CacheStatus::Hit, Some(age)))
    }
}

/// Records a stream as it passes to the client and stores it when it ends normally. A stream
/// that fails, is cut off, grows past `max_entry_size`, or is dropped by a departing client is
/// never stored (the recorder is simply dropped with it); nor is one whose recorded events do not
/// make a whole, well-formed answer ([`replayable`]), whatever the stage below made of it.
struct Recorder {
    cache: Arc<Cache>,
    key: CacheKey,
    kind: Kind,
    write: bool,
    deployment: String,
    leader: Option<LeaderGuard>,
    events: Vec<Bytes>,
    size: usize,
    /// Not storable any more (failed, too large, or not a 200).
    spoiled: bool,
}

impl Recorder {
    fn wrap(self, inner: BoxStream<'static, GuardItem>) -> BoxStream<'static, GuardItem> {
        futures::stream::unfold((inner, Some(self)), |(mut inner, mut rec)| async move {
            match inner.next().await {
                Some(GuardItem::Events(bytes)) => {
                    if let Some(r) = rec.as_mut() {
                        r.record(&bytes);
                    }
                    Some((GuardItem::Events(bytes), (inner, rec)))
                }
                Some(failed @ GuardItem::Failed(..)) => {
                    // Dropping the recorder releases any followers to call upstream themselves.
                    Some((failed, (inner, None)))
                }
                None => {
                    if let Some(r) = rec.take() {
                        r.finish().await;
                    }
                    None
                }
            }
        })
        .boxed()
    }

    fn record(&mut self, bytes: &Bytes) {
        if self.spoiled {
            return;
        }
        self.size += bytes.len();
        if self.size > self.cache.config.max_entry_bytes {
            self.spoiled = true;
            self.events = Vec::new();
            self.cache.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        entry::split_events(bytes, &mut self.events);
    }

    async fn finish(mut self) {
        if self.spoiled || self.events.is_empty() {
            return;
        }
        if !replayable(self.kind, &self.events) {
            tracing::debug!("stream not cached: it did not end as a whole, well-formed answer");
            return;
        }
        let events = std::mem::take(&mut self.events);
        // (`record` already stopped at the size limit.)
        let entry = Arc::new(self.cache.new_entry(
            &self.deployment,
            Some("text/event-stream".to_owned()),
            Payload::Events(events),
        ));
        if self.write {
            self.cache.store(self.key, entry.clone()).await;
        }
        if let Some(leader) = self.leader.take() {
            leader.publish(entry);
        }
    }
}

/// Whether recorded events are an answer worth replaying for the TTL. A cached stream is served to
/// every identical request, so it is checked on its own rather than trusted to the stream guard:
/// a chat or text completion stream must end with `data: [DONE]`, and every event before it must
/// be valid JSON and not an in-band `error` object; no stream may carry an `event: error`.
fn replayable(kind: Kind, events: &[Bytes]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        error: Option<&'a serde_json::value::RawValue>,
    }
    let is_error_event = |event: &[u8]| {
        event
            .split(|b| *b == b'\n')
            .any(|line| line.trim_ascii() == b"event: error" || line.trim_ascii() == b"event:error")
    };
    if events.iter().any(|e| is_error_event(e)) {
        return false;
    }
    if !matches!(kind, Kind::Chat | Kind::Completion) {
        return true;
    }
    let mut data = events.iter().filter_map(|e| crate::sse::event_data(e));
    let mut done = false;
    for d in data.by_ref() {
        if d.trim() == "[DONE]" {
            done = true;
            break;
        }
        let Ok(raw) = serde_json::from_str::<&serde_json::value::RawValue>(&d) else {
            return false;
        };
        let raw = raw.get();
        if raw.starts_with('{')
            && let Ok(Chunk { error: Some(e) }) = serde_json::from_str::<Chunk<'_>>(raw)
            && e.get() != "null"
        {
            return false;
        }
    }
    done
}

/// Adds `x-weir-cache` (and `age` on a hit, in whole seconds as HTTP says).
fn mark(mut resp: ProxyResponse, status: CacheStatus, age: Option<Duration>) -> ProxyResponse {
    resp.headers
        .insert(super::CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    if let Some(age) = age {
        resp.headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(parts: &[&'static str]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()
    }

    #[test]
    fn only_whole_well_formed_streams_are_replayable() {
        let ok = events(&["data: {\"a\":1}\n\n", ": ping\n\n", "data: [DONE]\n\n"]);
        assert!(replayable(Kind::Chat, &ok));
        let no_done = events(&["data: {\"a\":1}\n\n"]);
        assert!(!replayable(Kind::Chat, &no_done));
        let malformed = events(&["data: {\"a\":\n\n", "data: [DONE]\n\n"]);
        assert!(!replayable(Kind::Chat, &malformed));
        let in_band = events(&["data: {\"error\":{\"message\":\"x\"}}\n\n", "data: [DONE]\n\n"]);
        assert!(!replayable(Kind::Completion, &in_band));
        let anthropic_error = events(&["event: error\ndata: {}\n\n"]);
        assert!(!replayable(Kind::Embedding, &anthropic_error));
    }
}
