//! The chaos flags of `weir mock` (feature `cli`), parsed by clap and turned into a
//! [`ChaosConfig`].

use std::time::Duration;

use super::chaos::{ChaosConfig, FaultMix, LoadLatency};

/// Chaos mode: faults at given rates, drawn per request by the mock's own seeded RNG, on the
/// OpenAI chat, Anthropic messages and Gemini generate routes (model listings are never faulted).
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Faults and the share of generation requests each hits, e.g.
    /// `429=0.05,500=0.05,disconnect=0.05,truncate=0.05,stall=0.02,malformed=0.05,slow-headers=0.02`.
    /// A status (400..=599) answers in the API's error shape (429/503 with Retry-After);
    /// `disconnect` aborts a stream after some events (a JSON body after half); `truncate` ends
    /// it cleanly but early; `stall` stops sending and holds the connection; `malformed` cuts
    /// one event's JSON in half (a JSON body gets garbage); `slow-headers` delays the headers
    /// by --slow-headers-ms, then answers correctly. Rates add up to at most 1.
    #[arg(long, value_name = "SPEC", value_parser = parse_mix, help_heading = "Chaos")]
    pub fault_mix: Option<FaultMix>,
    /// Seed of the RNG that picks each request's fault and where in the body it strikes.
    #[arg(long, default_value_t = 1, help_heading = "Chaos")]
    pub seed: u64,
    /// Retry-After, in seconds, of an injected 429 or 503.
    #[arg(long, default_value_t = 1.0, value_name = "SECS", help_heading = "Chaos")]
    pub fault_retry_after: f64,
    /// How long a `slow-headers` fault waits before the response headers.
    #[arg(long, default_value_t = 2000, value_name = "MS", help_heading = "Chaos")]
    pub slow_headers_ms: u64,
    /// Answer each request (without a `content` directive) with a text derived from its last
    /// message: `Answer <hash> to a prompt of <n> bytes, ...`, so a client can check every answer
    /// it gets. On by default with --fault-mix.
    #[arg(long, help_heading = "Chaos")]
    pub derive_content: bool,
    /// Latency before the headers that grows with load: BASE_MS+PER_MS, i.e. BASE plus PER for
    /// every other request in flight at the mock (e.g. `20+5`).
    #[arg(long, value_name = "BASE_MS+PER_MS", value_parser = parse_load, help_heading = "Chaos")]
    pub load_latency: Option<LoadLatency>,
}

impl ChaosArgs {
    /// The chaos configuration these flags ask for, or `None` when none is on.
    pub fn into_config(self) -> Option<ChaosConfig> {
        if self.fault_mix.is_none() && !self.derive_content && self.load_latency.is_none() {
            return None;
        }
        Some(ChaosConfig {
            derive_content: self.derive_content || self.fault_mix.is_some(),
            mix: self.fault_mix.unwrap_or_default(),
            seed: self.seed,
            retry_after: self.fault_retry_after.max(0.0),
            slow_headers: Duration::from_millis(self.slow_headers_ms),
            load_latency: self.load_latency,
        })
    }
}

fn parse_mix(spec: &str) -> Result<FaultMix, String> {
    spec.parse()
}

fn parse_load(spec: &str) -> Result<LoadLatency, String> {
    spec.parse()
}
