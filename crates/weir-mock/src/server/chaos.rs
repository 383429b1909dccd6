//! Chaos mode: faults drawn per request from a seeded RNG at given rates, content derived from
//! the request (so a driver can check every answer), per-prompt call counts, and a latency that
//! rises with load.
//!
//! Directives script one request; a [`FaultMix`] makes a whole run adversarial without the
//! client's cooperation, which is what a gateway in front of the mock must survive: a 429 with
//! `Retry-After`, 5xx, a dropped connection, a clean but early end, a stall, a malformed event
//! or body, slow response headers.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// One kind of fault a [`FaultMix`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// An error status (400..=599) in the API's error shape; 429 and 503 carry `Retry-After`.
    Status(u16),
    /// Abort the connection: a stream after some events, a JSON body after half of it.
    Disconnect,
    /// End cleanly but early: a stream before its last event, a JSON body after half of it.
    Truncate,
    /// Stop sending and hold the connection open: a stream after some events, a JSON body after
    /// half of it. Ends only when the client goes away or the server shuts down.
    Stall,
    /// One stream event's JSON cut in half (the event itself stays well framed); a JSON body
    /// replaced by invalid JSON.
    Malformed,
    /// Wait [`ChaosConfig::slow_headers`] before the response headers, then answer correctly.
    SlowHeaders,
}

impl Fault {
    /// The name used in a mix spec and in reports: `429`, `disconnect`, `slow-headers`, ...
    pub fn name(self) -> String {
        match self {
            Fault::Status(status) => status.to_string(),
            Fault::Disconnect => "disconnect".to_owned(),
            Fault::Truncate => "truncate".to_owned(),
            Fault::Stall => "stall".to_owned(),
            Fault::Malformed => "malformed".to_owned(),
            Fault::SlowHeaders => "slow-headers".to_owned(),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name.trim() {
            "disconnect" => Fault::Disconnect,
            "truncate" => Fault::Truncate,
            "stall" => Fault::Stall,
            "malformed" => Fault::Malformed,
            "slow-headers" | "slow_headers" => Fault::SlowHeaders,
            other => match other.parse::<u16>() {
                Ok(status) if (400..=599).contains(&status) => Fault::Status(status),
                _ => {
                    return Err(format!(
                        "unknown fault {other:?}: expected an HTTP status 400..=599, disconnect, \
                         truncate, stall, malformed or slow-headers"
                    ));
                }
            },
        })
    }
}

/// Faults and the share of generation requests each one hits, e.g.
/// `429=0.05,500=0.05,disconnect=0.05,truncate=0.05,stall=0.02,malformed=0.05,slow-headers=0.02`.
/// The shares add up to at most 1; the rest of the requests are answered correctly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultMix {
    entries: Vec<(Fault, f64)>,
}

impl FaultMix {
    /// The faults and their rates, in the order given.
    pub fn entries(&self) -> &[(Fault, f64)] {
        &self.entries
    }

    /// The sum of the rates: the share of requests that get some fault.
    pub fn total(&self) -> f64 {
        self.entries.iter().map(|(_, rate)| rate).sum()
    }

    /// The fault for a uniform draw `u` in `[0, 1)`, if any (rates laid end to end).
    fn pick(&self, u: f64) -> Option<Fault> {
        let mut edge = 0.0;
        for (fault, rate) in &self.entries {
            edge += rate;
            if u < edge {
                return Some(*fault);
            }
        }
        None
    }
}

impl FromStr for FaultMix {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut entries: Vec<(Fault, f64)> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (name, rate) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected FAULT=RATE, e.g. 500=0.05"))?;
            let fault: Fault = name.parse()?;
            let rate: f64 = rate
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: the rate must be a number in 0..=1"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{item:?}: the rate must be in 0..=1"));
            }
            if entries.iter().any(|(seen, _)| *seen == fault) {
                return Err(format!("{item:?}: fault {} given twice", fault.name()));
            }
            entries.push((fault, rate));
        }
        let mix = FaultMix { entries };
        if mix.total() > 1.0 + 1e-9 {
            return Err(format!("the rates add up to {:.3}, more than 1", mix.total()));
        }
        Ok(mix)
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .entries
            .iter()
            .map(|(fault, rate)| format!("{}={rate}", fault.name()))
            .collect();
        f.write_str(&items.join(","))
    }
}

/// Latency before the response headers that grows with the requests in flight at the mock:
/// `base + per_in_flight × (in flight − 1)`, like an upstream whose queue builds under load.
/// Spec: `BASE_MS+PER_MS`, e.g. `20+5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLatency {
    /// The latency of a request alone.
    pub base: Duration,
    /// Added per other request in flight.
    pub per_in_flight: Duration,
}

impl LoadLatency {
    /// The delay for a request that finds `in_flight` requests at the mock (itself included).
    pub fn delay(&self, in_flight: u64) -> Duration {
        let others = u32::try_from(in_flight.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base
            .saturating_add(self.per_in_flight.saturating_mul(others))
    }
}

impl FromStr for LoadLatency {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{spec:?}: expected BASE_MS+PER_MS, e.g. 20+5");
        let (base, per) = spec.split_once('+').ok_or_else(bad)?;
        let base: u64 = base.trim().parse().map_err(|_| bad())?;
        let per: u64 = per.trim().parse().map_err(|_| bad())?;
        Ok(LoadLatency {
            base: Duration::from_millis(base),
            per_in_flight: Duration::from_millis(per),
        })
    }
}

/// What chaos mode does; `ChaosConfig::default()` injects nothing and derives nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosConfig {
    /// Faults and their rates, applied to generation requests only (chat completions, messages,
    /// Gemini `generateContent`/`streamGenerateContent`), never to model listings.
    pub mix: FaultMix,
    /// Seed of the RNG that picks each request's fault and where in the body it strikes.
    pub seed: u64,
    /// `Retry-After` of an injected 429 or 503, in seconds.
    pub retry_after: f64,
    /// The wait of a `slow-headers` fault.
    pub slow_headers: Duration,
    /// Answer every request without a `content` directive with
    /// [`derived_content`](crate::content::derived_content) of its last message, and count
    /// calls per prompt.
    pub derive_content: bool,
    /// A latency that rises with the requests in flight.
    pub load_latency: Option<LoadLatency>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            mix: FaultMix::default(),
            seed: 1,
            retry_after: 1.0,
            slow_headers: Duration::from_secs(2),
            derive_content: false,
            load_latency: None,
        }
    }
}

/// A drawn fault and where it strikes: `at` in `[0, 1)` picks the event (or byte) position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drawn {
    pub(crate) fault: Fault,
    pub(crate) at: f64,
}

/// Most prompts whose calls are counted; past it the map is cleared (long soak runs).
const MAX_COUNTED_PROMPTS: usize = 1_000_000;

/// The live chaos state of a server.
#[derive(Debug)]
pub(crate) struct Chaos {
    pub(crate) config: ChaosConfig,
    rng: Mutex<fastrand::Rng>,
    calls: Mutex<HashMap<u64, u32>>,
    injected: Mutex<HashMap<Fault, u64>>,
    answered: AtomicU64,
}

impl Chaos {
    pub(crate) fn new(config: ChaosConfig) -> Self {
        let rng = fastrand::Rng::with_seed(config.seed);
        Self {
            config,
            rng: Mutex::new(rng),
            calls: Mutex::default(),
            injected: Mutex::default(),
            answered: AtomicU64::new(0),
        }
    }

    /// This request's fault, if the mix picks one. Both draws happen for every request so the
    /// sequence of faults depends only on the seed and the arrival order.
    pub(crate) fn draw(&self) -> Option<Drawn> {
        let (u, at) = {
            let mut rng = self.rng.lock();
            (rng.f64(), rng.f64())
        };
        let Some(fault) = self.config.mix.pick(u) else {
            self.answered.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        *self.injected.lock().entry(fault).or_insert(0) += 1;
        Some(Drawn { fault, at })
    }

    pub(crate) fn count_call(&self, prompt_hash: u64) {
        let mut calls = self.calls.lock();
        if calls.len() >= MAX_COUNTED_PROMPTS && !calls.contains_key(&prompt_hash) {
            calls.clear();
        }
        *calls.entry(prompt_hash).or_insert(0) += 1;
    }

    pub(crate) fn calls_for(&self, prompt_hash: u64) -> u32 {
        self.calls.lock().get(&prompt_hash).copied().unwrap_or(0)
    }

    pub(crate) fn injected(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .injected
            .lock()
            .iter()
            .map(|(fault, n)| (fault.name(), *n))
            .collect();
        counts.push(("none".to_owned(), self.answered.load(Ordering::Relaxed)));
        counts.sort();
        counts
    }
}

/// The event a `malformed` fault sends instead of `event`: the same framing (an `event:` line
/// and the terminator are kept), the JSON after `data: ` cut in half. `None` when the event has
/// no JSON data (`[DONE]`, a ping without data).
pub(crate) fn malform(event: &[u8]) -> Option<Vec<u8>> {
    let data = find(event, b"data: {")? + b"data: ".len();
    let terminator: &[u8] = if event.ends_with(b"\r\n\r\n") {
        b"\r\n\r\n"
    } else {
        b"\n\n"
    };
    let end = event.len().checked_sub(terminator.len())?;
    let json_len = end.checked_sub(data)?;
    // At least one byte kept and one cut, so the JSON is always unterminated.
    let cut = data + (json_len / 2).max(1);
    let mut out = event.get(..cut)?.to_vec();
    out.extend_from_slice(terminator);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An index in `1..len` picked by `at` (at least one item sent, at least one withheld), or 0 for
/// a body of one item.
pub(crate) fn cut_point(len: usize, at: f64) -> usize {
    if len <= 1 {
        return 0;
    }
    let span = len - 1;
    1 + ((at * span as f64) as usize).min(span - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_spec_parses_and_rejects() {
        let mix: FaultMix = "429=0.05, 500=0.1,disconnect=0.05,slow-headers=0.02"
            .parse()
            .unwrap();
        assert_eq!(mix.entries().len(), 4);
        assert!((mix.total() - 0.22).abs() < 1e-9);
        assert_eq!(mix.pick(0.01), Some(Fault::Status(429)));
        assert_eq!(mix.pick(0.06), Some(Fault::Status(500)));
        assert_eq!(mix.pick(0.21), Some(Fault::SlowHeaders));
        assert_eq!(mix.pick(0.5), None);
        assert_eq!(
            mix.to_string(),
            "429=0.05,500=0.1,disconnect=0.05,slow-headers=0.02"
        );
        for bad in [
            "429",
            "200=0.1",
            "boom=0.1",
            "500=2",
            "500=x",
            "500=0.6,503=0.6",
            "500=0.1,500=0.1",
        ] {
            assert!(bad.parse::<FaultMix>().is_err(), "{bad} accepted");
        }
        assert!("".parse::<FaultMix>().unwrap().entries().is_empty());
    }

    #[test]
    fn load_latency_grows_with_in_flight() {
        let l: LoadLatency = "20+5".parse().unwrap();
        assert_eq!(l.delay(1), Duration::from_millis(20));
        assert_eq!(l.delay(0), Duration::from_millis(20));
        assert_eq!(l.delay(11), Duration::from_millis(70));
        assert!("20".parse::<LoadLatency>().is_err());
        assert!("a+1".parse::<LoadLatency>().is_err());
    }

    #[test]
    fn draws_follow_the_seed_and_the_rates() {
        let config = ChaosConfig {
            mix: "500=0.25,stall=0.25".parse().unwrap(),
            seed: 7,
            ..ChaosConfig::default()
        };
        let a = Chaos::new(config.clone());
        let b = Chaos::new(config);
        let faults = |c: &Chaos| (0..400).map(|_| c.draw().map(|d| d.fault)).collect::<Vec<_>>();
        let (fa, fb) = (faults(&a), faults(&b));
        assert_eq!(fa, fb);
        let hits = fa.iter().filter(|f| f.is_some()).count();
        assert!((120..280).contains(&hits), "{hits} faults in 400 draws at 50 %");
        let injected = a.injected();
        assert!(injected.iter().any(|(name, n)| name == "stall" && *n > 0));
    }

    #[test]
    fn malformed_events_keep_their_framing() {
        let chat = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let bad = malform(chat).unwrap();
        assert!(bad.ends_with(b"\n\n") && bad.starts_with(b"data: {"));
        let json = &bad[6..bad.len() - 2];
        assert!(serde_json::from_slice::<serde_json::Value>(json).is_err());
        let anthropic = b"event: content_block_delta\ndata: {\"type\":\"x\"}\n\n";
        assert!(
            malform(anthropic)
                .unwrap()
                .starts_with(b"event: content_block_delta\ndata: {")
        );
        let gemini = b"data: {\"a\":1}\r\n\r\n";
        assert!(malform(gemini).unwrap().ends_with(b"\r\n\r\n"));
        assert_eq!(malform(b"data: [DONE]\n\n"), None);
    }

    #[test]
    fn cut_points_send_some_and_withhold_some() {
        assert_eq!(cut_point(1, 0.5), 0);
        assert_eq!(cut_point(2, 0.99), 1);
        for at in [0.0, 0.3, 0.999] {
            let k = cut_point(8, at);
            assert!((1..8).contains(&k));
        }
    }
}
