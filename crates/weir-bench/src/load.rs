//! The load generator: one request, a closed loop of workers, and an open loop on a fixed
//! schedule.
//!
//! In the open loop every request has a *scheduled* send time `start + i / rate`, and its latency
//! is measured from that scheduled time, not from when it actually left. If the system under test
//! stalls, requests that should have been sent during the stall are sent late, and measuring from
//! the actual send would hide the time they spent waiting ("coordinated omission"). The delay
//! between schedule and actual send is recorded separately as `schedule_lag`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::stats::{ErrorKind, Recorder, Sample};

/// API key the bench uses for both the mock and the gateway.
pub const API_KEY: &str = "bench-key";
/// Model name configured in the gateway and accepted by the mock.
pub const MODEL: &str = "mock-model";
/// Prompt sent in every request.
const PROMPT: &str = "Say hello in one short sentence.";
/// `max_tokens` of every request.
const MAX_TOKENS: u64 = 32;
/// Bytes of a stream's tail kept to check for the `[DONE]` terminator.
const TAIL_KEEP: usize = 64;

/// Builds the HTTP client used for one target. Both targets get identical settings: HTTP/1.1
/// only, no proxy, Nagle off, a keep-alive pool big enough for every in-flight request.
pub fn build_client(pool_size: usize, request_timeout: Duration) -> Result<Client> {
    Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .build()
        .context("building HTTP client")
}

/// Body of a chat-completion request. The mock's pacing directives travel in the body as `x_mock`
/// (the gateway forwards unknown fields but not client headers), and only when non-zero.
pub fn request_body(stream: bool, upstream_latency_ms: u64, chunk_delay_ms: u64) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if upstream_latency_ms > 0 || chunk_delay_ms > 0 {
        body["x_mock"] = json!({"latency_ms": upstream_latency_ms, "chunk_delay_ms": chunk_delay_ms});
    }
    body
}

/// One load target: a name, the chat-completions URL and its dedicated client.
#[derive(Debug, Clone)]
pub struct Target {
    /// `direct` or `gateway`.
    pub name: &'static str,
    /// `{base_url}/v1/chat/completions`.
    pub url: String,
    /// Shared client for every request to this target.
    pub client: Client,
}

impl Target {
    /// A target with its own client.
    pub fn new(name: &'static str, base_url: &str, client: Client) -> Self {
        let url = format!("{}/v1/chat/completions", base_url.trim_end_matches('/'));
        Self { name, url, client }
    }
}

/// A serialized request, shared by every send.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// JSON body bytes.
    pub body: Bytes,
    /// Whether it asks for an SSE stream.
    pub stream: bool,
}

impl RequestTemplate {
    /// Serializes the body once.
    pub fn new(stream: bool, upstream_latency_ms: u64, chunk_delay_ms: u64) -> Result<Self> {
        let body = serde_json::to_vec(&request_body(stream, upstream_latency_ms, chunk_delay_ms))
            .context("serializing request body")?;
        Ok(Self {
            body: Bytes::from(body),
            stream,
        })
    }
}

/// Sends one request and reads the response body to the end. Times are measured from `origin`.
pub async fn send_one(target: &Target, req: &RequestTemplate, origin: Instant) -> Sample {
    let result = target
        .client
        .post(&target.url)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer bench-key"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(req.body.clone())
        .send()
        .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => return Sample::Err(ErrorKind::from_reqwest(&e)),
    };
    let status = resp.status();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if ttfb.is_none() {
                    ttfb = Some(origin.elapsed());
                }
                if req.stream {
                    tail.extend_from_slice(&chunk);
                    if tail.len() > TAIL_KEEP {
                        tail.drain(..tail.len() - TAIL_KEEP);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                if !status.is_success() {
                    return Sample::Err(ErrorKind::Status(status.as_u16()));
                }
                return Sample::Err(ErrorKind::from_reqwest(&e));
            }
        }
    }
    let total = origin.elapsed();
    if !status.is_success() {
        return Sample::Err(ErrorKind::Status(status.as_u16()));
    }
    if req.stream {
        if !contains(&tail, b"[DONE]") {
            return Sample::Err(ErrorKind::StreamIncomplete);
        }
        Sample::Ok { total, ttfb }
    } else {
        Sample::Ok { total, ttfb: None }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one request and fails unless it succeeds; used to check a target works before loading it.
pub async fn preflight(target: &Target, req: &RequestTemplate) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let resp = target
            .client
            .post(&target.url)
            .header(AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(CONTENT_TYPE, "application/json")
            .body(req.body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.context("reading preflight body")?;
                if req.stream && !contains(&body, b"[DONE]") {
                    last = format!("stream without data: [DONE]: {}", snippet(&body));
                    continue;
                }
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                last = format!("HTTP {status}: {}", snippet(&body));
            }
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(anyhow!(
        "preflight request to {} ({}) failed: {last}",
        target.name,
        target.url
    ))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(500).collect()
}

/// Phases of one run.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Samples from requests started (or scheduled) during warmup are discarded.
    pub warmup: Duration,
    /// The measured window that follows the warmup.
    pub duration: Duration,
}

/// Runs `mark` on the runtime when the measured window opens, so that readings taken around the
/// measured phase (the children's CPU time) exclude the warmup. The timer's ~1 ms granularity is
/// far below the 10 ms resolution of what it reads.
fn mark_at<T, F>(at: Instant, mark: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        mark()
    })
}

/// Closed loop: `concurrency` workers each send the next request as soon as the previous one
/// finished. A request is counted when it *started* inside the measured window. `at_measure_start`
/// runs once when the measured window opens (after the warmup); its result is returned.
pub async fn run_closed<T, F>(
    target: &Target,
    req: &RequestTemplate,
    concurrency: usize,
    phases: Phases,
    at_measure_start: F,
) -> Result<(Recorder, T)>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let measure_start = start + phases.warmup;
    let mark = mark_at(measure_start, at_measure_start);
    let end = measure_start + phases.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let req = req.clone();
        workers.spawn(async move {
            let mut rec = Recorder::new()?;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let sample = send_one(&target, &req, t0).await;
                if t0 >= measure_start {
                    rec.record(&sample);
                }
            }
            anyhow::Ok(rec)
        });
    }
    let mut total = Recorder::new()?;
    while let Some(joined) = workers.join_next().await {
        let rec = joined.context("closed-loop worker panicked")??;
        total.merge(&rec)?;
    }
    // Fired long ago: the workers ran until the end of the window, which is after its start.
    let marked = mark.await.context("measure-start mark panicked")?;
    Ok((total, marked))
}

/// Number of requests an open loop at `rate` req/s schedules over `span`.
pub fn schedule_len(rate: f64, span: Duration) -> u64 {
    let n = (rate * span.as_secs_f64()).floor();
    // Saturating float-to-int cast is the intent; rate and span are validated positive.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = n as u64;
    n
}

/// Offset from the loop's start at which request `i` is scheduled. Computed from `i` directly
/// rather than by accumulating intervals, so rounding never drifts.
pub fn scheduled_offset(i: u64, rate: f64) -> Duration {
    #[allow(clippy::cast_precision_loss)]
    let i = i as f64;
    Duration::from_secs_f64(i / rate)
}

/// Result of an open-loop run.
#[derive(Debug)]
pub struct OpenOutcome {
    /// Samples of requests scheduled inside the measured window.
    pub recorder: Recorder,
    /// Requests scheduled inside the measured window.
    pub scheduled: u64,
    /// Requests still outstanding when the drain timeout expired (not in `recorder`).
    pub unfinished: u64,
}

/// Open loop: requests are scheduled at fixed intervals (`1 / rate`) regardless of how fast
/// responses come back; latency counts from the scheduled time. At most `max_outstanding` requests
/// are in flight; a request that would exceed the cap is dropped and counted. `at_measure_start`
/// runs once when the measured window opens (after the warmup); its result is returned.
pub async fn run_open<T, F>(
    target: &Target,
    req: &RequestTemplate,
    rate: f64,
    max_outstanding: usize,
    phases: Phases,
    drain_timeout: Duration,
    at_measure_start: F,
) -> Result<(OpenOutcome, T)>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let permits = u32::try_from(max_outstanding).context("max outstanding too large")?;
    let semaphore = Arc::new(Semaphore::new(max_outstanding));
    let shared = Arc::new(Mutex::new(Recorder::new()?));
    let total = schedule_len(rate, phases.warmup + phases.duration);
    let handle = tokio::runtime::Handle::current();
    // Taken here rather than on the dispatcher thread so the mark below shares the schedule's
    // origin; the thread starts within microseconds, inside the warmup.
    let start = Instant::now();
    let mark = mark_at(start + phases.warmup, at_measure_start);
    let dispatcher = {
        let semaphore = Arc::clone(&semaphore);
        let shared = Arc::clone(&shared);
        let target = target.clone();
        let req = req.clone();
        // The dispatcher runs on its own (blocking-pool) thread and sleeps with the OS timer,
        // which wakes within tens of microseconds; tokio's timer wheel has 1 ms granularity and
        // would add up to ~2 ms of send lag to every open-loop latency.
        tokio::task::spawn_blocking(move || {
            let measure_start = start + phases.warmup;
            let mut scheduled = 0u64;
            let mut dropped = 0u64;
            for i in 0..total {
                let at = start + scheduled_offset(i, rate);
                let now = Instant::now();
                if at > now {
                    // A dedicated thread, not a runtime worker: blocking here is the point.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(at - now);
                }
                let measured = at >= measure_start;
                if measured {
                    scheduled += 1;
                }
                let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() else {
                    if measured {
                        dropped += 1;
                    }
                    continue;
                };
                let target = target.clone();
                let req = req.clone();
                let shared = Arc::clone(&shared);
                handle.spawn(async move {
                    let lag = at.elapsed();
                    let sample = send_one(&target, &req, at).await;
                    if measured {
                        let mut rec = shared.lock();
                        rec.record(&sample);
                        rec.record_lag(lag);
                    }
                    drop(permit);
                });
            }
            (scheduled, dropped)
        })
    };
    let (scheduled, dropped) = dispatcher.await.context("open-loop dispatcher panicked")?;
    // Wait for the stragglers: all permits back means nothing is in flight.
    let unfinished = match tokio::time::timeout(drain_timeout, semaphore.acquire_many(permits)).await {
        Ok(Ok(_all)) => 0,
        _ => u64::try_from(max_outstanding - semaphore.available_permits()).unwrap_or(u64::MAX),
    };
    let mut recorder = std::mem::replace(&mut *shared.lock(), Recorder::new()?);
    recorder.dropped = dropped;
    let marked = mark.await.context("measure-start mark panicked")?;
    Ok((
        OpenOutcome {
            recorder,
            scheduled,
            unfinished,
        },
        marked,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    #[test]
    fn schedule_is_evenly_spaced_and_does_not_drift() {
        assert_eq!(schedule_len(1000.0, Duration::from_secs(3)), 3000);
        assert_eq!(schedule_len(3.0, Duration::from_millis(1500)), 4);
        assert_eq!(schedule_len(0.5, Duration::from_secs(1)), 0);
        assert_eq!(scheduled_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(scheduled_offset(250, 100.0), Duration::from_millis(2500));
        // 1/3 s intervals: the 3,000,000th request is at exactly 1,000,000 s, no accumulated error.
        let off = scheduled_offset(3_000_000, 3.0);
        assert!((off.as_secs_f64() - 1_000_000.0).abs() < 1e-6, "{off:?}");
        // Strictly increasing.
        let offs: Vec<_> = (0..100).map(|i| scheduled_offset(i, 7.0)).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn body_shape() {
        let unary = request_body(false, 0, 0);
        assert_eq!(unary["model"], "mock-model");
        assert_eq!(unary["max_tokens"], 32);
        assert_eq!(unary["messages"][0]["role"], "user");
        assert_eq!(
            unary["messages"][0]["content"],
            "Say hello in one short sentence."
        );
        assert!(unary.get("stream").is_none());
        assert!(unary.get("x_mock").is_none());

        let stream = request_body(true, 5, 2);
        assert_eq!(stream["stream"], true);
        assert_eq!(stream["stream_options"]["include_usage"], true);
        assert_eq!(stream["x_mock"]["latency_ms"], 5);
        assert_eq!(stream["x_mock"]["chunk_delay_ms"], 2);
    }

    /// A minimal keep-alive HTTP/1.1 server standing in for the mock: answers every POST with a
    /// JSON completion, or an SSE stream when the body asks for one; `/fail` answers 500.
    async fn fake_upstream() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            let mut tmp = [0u8; 4096];
                            let n = sock.read(&mut tmp).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&tmp[..n]);
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < head_end + len {
                            let mut tmp = [0u8; 4096];
                            let n = sock.read(&mut tmp).await.unwrap();
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                        buf.drain(..head_end + len);
                        assert!(head.contains("authorization: bearer bench-key"));
                        let (status, ctype, payload) = if head.starts_with("post /fail") {
                            ("500 Internal Server Error", "application/json", "{}".to_owned())
                        } else if body.contains("\"stream\":true") {
                            (
                                "200 OK",
                                "text/event-stream",
                                "data: {\"choices\":[]}\n\ndata: [DONE]\n\n".to_owned(),
                            )
                        } else {
                            ("200 OK", "application/json", "{\"choices\":[]}".to_owned())
                        };
                        let resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{payload}",
                            payload.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://127.0.0.1:{}", addr.port())
    }

    fn target(base: &str) -> Target {
        Target::new("direct", base, build_client(64, Duration::from_secs(5)).unwrap())
    }

    const SHORT: Phases = Phases {
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn send_one_unary_and_stream() {
        let base = fake_upstream().await;
        let t = target(&base);
        let unary = RequestTemplate::new(false, 0, 0).unwrap();
        let stream = RequestTemplate::new(true, 0, 0).unwrap();
        preflight(&t, &unary).await.unwrap();
        preflight(&t, &stream).await.unwrap();
        match send_one(&t, &unary, Instant::now()).await {
            Sample::Ok { ttfb: None, .. } => {}
            other => panic!("{other:?}"),
        }
        match send_one(&t, &stream, Instant::now()).await {
            Sample::Ok {
                ttfb: Some(ttfb),
                total,
            } => assert!(ttfb <= total),
            other => panic!("{other:?}"),
        }
        let failing = Target::new("direct", &format!("{base}/fail"), t.client.clone());
        // URL becomes {base}/fail/v1/chat/completions, which the fake answers with 500.
        assert_eq!(
            send_one(&failing, &unary, Instant::now()).await,
            Sample::Err(ErrorKind::Status(500))
        );
        assert!(preflight(&failing, &unary).await.is_err());
    }

    #[tokio::test]
    async fn connect_errors_are_transport_errors() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = target(&format!("http://127.0.0.1:{port}"));
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        match send_one(&t, &req, Instant::now()).await {
            Sample::Err(ErrorKind::Connect | ErrorKind::Transport) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_against_fake() {
        let base = fake_upstream().await;
        let t = target(&base);
        let req = RequestTemplate::new(true, 0, 0).unwrap();
        let before = Instant::now();
        let (rec, marked) = run_closed(&t, &req, 4, SHORT, Instant::now).await.unwrap();
        let after = Instant::now();
        // The mark fires when the measured window opens: after the warmup, before the end.
        assert!(marked >= before + SHORT.warmup, "{:?}", marked - before);
        assert!(marked + SHORT.duration / 2 <= after, "{:?}", after - marked);
        assert!(rec.ok > 10, "ok {}", rec.ok);
        assert_eq!(rec.error_total(), 0, "{:?}", rec.errors);
        assert_eq!(rec.latency.len(), rec.ok);
        assert_eq!(rec.ttfb.len(), rec.ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_against_fake() {
        let base = fake_upstream().await;
        let t = target(&base);
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        let before = Instant::now();
        let (out, marked) = run_open(&t, &req, 200.0, 64, SHORT, Duration::from_secs(5), Instant::now)
            .await
            .unwrap();
        let after = Instant::now();
        assert!(marked >= before + SHORT.warmup, "{:?}", marked - before);
        assert!(marked + SHORT.duration / 2 <= after, "{:?}", after - marked);
        // 200 req/s over 300 ms measured.
        assert!((55..=65).contains(&out.scheduled), "scheduled {}", out.scheduled);
        assert_eq!(out.unfinished, 0);
        assert_eq!(
            out.recorder.ok + out.recorder.error_total() + out.recorder.dropped,
            out.scheduled
        );
        assert_eq!(out.recorder.error_total(), 0, "{:?}", out.recorder.errors);
        assert_eq!(out.recorder.lag.len(), out.recorder.ok);
    }

    #[tokio::test]
    async fn open_loop_drops_over_cap() {
        // Nobody answers: connections hang until the request timeout, so the cap fills up.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let t = Target::new(
            "direct",
            &base,
            build_client(8, Duration::from_millis(400)).unwrap(),
        );
        let req = RequestTemplate::new(false, 0, 0).unwrap();
        let phases = Phases {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
        };
        let (out, ()) = run_open(&t, &req, 100.0, 3, phases, Duration::from_secs(5), || ())
            .await
            .unwrap();
        assert_eq!(out.scheduled, 20);
        assert_eq!(out.recorder.dropped, 17);
        assert_eq!(
            out.recorder.errors.get("transport_timeout"),
            Some(&3),
            "{:?}",
            out.recorder.errors
        );
    }
}
