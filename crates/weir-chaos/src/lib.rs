//! Weir's chaos driver: a faulty mock (`weir_mock` in chaos mode) behind a real gateway
//! (`weir_gateway::serve` on 127.0.0.1:0), a mix of unary and streamed requests on both faces
//! (`/v1/chat/completions`, `/v1/messages`) to three providers (OpenAI-compatible, Anthropic,
//! Gemini: both translation directions), and every outcome classified ([`Outcome`]).
//!
//! The mock derives each answer from the request's prompt
//! ([`weir_mock::content::derived_content`]), and every prompt is unique, so the driver knows the
//! exact text a correct answer carries and can tell it from a silently wrong one; the mock also
//! counts the calls each prompt caused, which must stay within the gateway's attempt limit.
//!
//! The verdict to hold ([`Report::verdict_holds`]): 0 hangs, 0 silently wrong, calls per request
//! ≤ attempts. `tests/chaos.rs` runs a short fixed-size round in `cargo test`; `scripts/chaos.sh`
//! runs a long one and prints the table; [`soak`] drives an external gateway at a steady rate for
//! `scripts/soak.sh`.

mod classify;
mod report;
pub mod soak;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;
use weir_mock::server::{ChaosConfig, FaultMix, MockConfig, MockServer};

pub use classify::{Face, Outcome, Verdict};
pub use report::{Cell, Report};
pub use traffic::{Shot, gateway_yaml, send};

/// The fault mix of the issue: every kind, about a third of all calls.
pub const DEFAULT_MIX: &str =
    "429=0.05,500=0.05,503=0.02,disconnect=0.05,truncate=0.05,stall=0.02,malformed=0.05,slow-headers=0.02";

/// Attempts the chaos gateway allows per request (`retry.max_retries: 2`).
pub const MAX_ATTEMPTS: u32 = 3;

/// One chaos run's knobs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Stop after this many requests (a fixed workload, for tests).
    pub requests: Option<u64>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seeds the mock's fault RNG and the driver's choice of face, model and streaming.
    pub seed: u64,
    /// The mock's faults.
    pub mix: FaultMix,
    /// A request with no complete answer after this long is a hang.
    pub hang_bound: Duration,
    /// The gateway's `timeouts.read` (what bounds a stall).
    pub read_timeout: Duration,
    /// The mock's `slow-headers` wait.
    pub slow_headers: Duration,
    /// Extra YAML appended under each deployment (indented by 8 spaces), e.g. a breaker setting.
    pub deployment_extra: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            requests: None,
            duration: Some(Duration::from_secs(30)),
            concurrency: 8,
            seed: 1,
            mix: DEFAULT_MIX.parse().unwrap_or_default(),
            hang_bound: Duration::from_secs(30),
            read_timeout: Duration::from_secs(1),
            slow_headers: Duration::from_millis(300),
            deployment_extra: String::new(),
        }
    }
}

/// Runs one chaos round: starts the mock and the gateway, sends the traffic, and reports.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let chaos = ChaosConfig {
        mix: settings.mix.clone(),
        seed: settings.seed,
        retry_after: 0.05,
        slow_headers: settings.slow_headers,
        derive_content: true,
        load_latency: None,
    };
    let mock_config = MockConfig {
        record_bodies: false,
        ..MockConfig::default()
    };
    let mock = MockServer::start_chaos(mock_config, chaos).await?;
    let yaml = gateway_yaml(mock.addr(), settings.read_timeout, &settings.deployment_extra);
    let config = weir::Config::from_yaml(&yaml, Some("chaos.yaml")).context("chaos gateway config")?;
    let gateway = start_gateway(config).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(settings.hang_bound)
        .build()?;

    let report = Arc::new(Mutex::new(Report::new(settings.mix.to_string())));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = settings.duration.map(|d| started + d);
    let mut workers = Vec::new();
    for _ in 0..settings.concurrency.max(1) {
        let (client, report, next, mock_state) = (
            client.clone(),
            Arc::clone(&report),
            Arc::clone(&next),
            Arc::clone(mock.state()),
        );
        let (base, seed, limit) = (
            format!("http://{}", gateway.addr),
            settings.seed,
            settings.requests,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|n| i >= n) || stop_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                let shot = Shot::pick(seed, i);
                let verdict = send(&client, &base, &shot).await;
                let calls = mock_state.calls_for_prompt(&shot.prompt);
                report.lock().add(&shot, &verdict, calls);
            }
        }));
    }
    for worker in workers {
        worker.await.context("a chaos worker panicked")?;
    }
    let elapsed = started.elapsed();
    gateway.stop().await;
    let injected = mock.state().injected_faults();
    drop(mock);
    let mut report = Arc::try_unwrap(report)
        .map(Mutex::into_inner)
        .unwrap_or_else(|shared| shared.lock().clone());
    report.elapsed = elapsed;
    report.injected = injected;
    Ok(report)
}

/// A gateway serving `config` on 127.0.0.1:0 in this process.
struct Gateway {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_gateway(config: weir::Config) -> anyhow::Result<Gateway> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = weir_gateway::AppState::new(config);
    let task = tokio::spawn(weir_gateway::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Ok(Gateway { addr, stop, task })
}

impl Gateway {
    async fn stop(self) {
        let _ = self.stop.send(());
        // A drain that does not finish in time is abandoned: the report is what matters here.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}
