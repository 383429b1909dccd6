//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Compare an OpenAI-compatible upstream (`weir mock`) called directly with the same upstream
/// called through the Weir gateway (`weir serve`).
///
/// weir-bench starts both as child processes on 127.0.0.1 (random ports), then for each selected
/// scenario drives identical load first against the mock directly and then through the gateway,
/// prints a comparison table and writes the full results as JSON.
///
/// The load generator, the mock and the gateway share this machine's cores, so absolute numbers
/// depend on the host; compare the gateway to direct (added latency, throughput ratio).
///
/// `--scenario limiter` instead (or as well) runs an in-process micro-benchmark of the rate
/// limiters (Weir's and the governor crate's), which needs no `weir` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "weir-bench", version, after_help = SCENARIO_HELP)]
pub struct Args {
    /// Scenario(s) to run; repeat or separate with commas. See "Scenarios" below.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<ScenarioArg>,

    /// Closed loop: number of concurrent workers, each sending its next request as soon as the
    /// previous one completes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Open loop: offered rate in requests per second, sent on a fixed schedule.
    #[arg(long, default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Open loop: maximum requests in flight; requests due while the cap is reached are dropped
    /// and counted as `dropped`.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_outstanding: u32,

    /// Measured time per scenario and target (e.g. `10s`, `1m`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Warmup before each measurement; its samples are discarded (`0s` for none).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Delay the mock waits before sending response headers, in ms (sent as `x_mock.latency_ms`
    /// in the request body, so it reaches the mock through the gateway too).
    #[arg(long, default_value_t = 0)]
    pub upstream_latency_ms: u64,

    /// Delay between the mock's stream events, in ms (sent as `x_mock.chunk_delay_ms`).
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,

    /// Per-request timeout (whole request including the body); a timed-out request counts as a
    /// `transport_timeout` error.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,

    /// Path of the `weir` binary. Default: `weir` next to this executable (build it with
    /// `cargo build --release -p weir-gateway`). It runs the mock, and the gateway unless
    /// `--gateway-bin` is given.
    #[arg(long, value_name = "PATH")]
    pub weir_bin: Option<PathBuf>,

    /// A `weir` binary to run as the gateway (`weir serve`), instead of `--weir-bin`. Give it twice
    /// for an A/B run: the first is gateway A (e.g. a saved build of main), the second gateway B
    /// (e.g. the current build); every scenario then runs direct, A, B back to back, and the report
    /// adds B/A ratios (CPU µs/req above all). The mock still comes from `--weir-bin`.
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Vec<PathBuf>,

    /// Measure every scenario this many times, the gateways' order alternating (round 1: direct, A,
    /// B; round 2: direct, B, A; ...), each round with its own warmup; the processes keep running.
    /// Above 1 the report adds the median across rounds of each target's req/s, p50, p99 and CPU
    /// µs/req, and of the per-round B/A ratios with their min–max range; the other figures pool
    /// every round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,

    /// Where to write the JSON results (parent directories are created). The children's stderr
    /// logs go to the same directory.
    #[arg(long, value_name = "PATH", default_value = "bench-results/latest.json")]
    pub json: PathBuf,

    /// Worker threads of the load generator's runtime (default: number of cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Put the gateway's response cache in front of the mock: `memory`, or `redis` (Redis only,
    /// no near cache, so every hit is a Redis round trip). The bench repeats one request, so every
    /// gateway request after the first is a cache hit: the gateway columns measure hits.
    #[arg(long, value_enum, default_value = "off")]
    pub cache: CacheMode,

    /// The Redis of `--cache redis`, `--limits shared` and `--scenario shared-limiter` (each run
    /// uses its own key prefix).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Rate limits on the gateway's deployment (generous: every request is admitted, so this
    /// measures their cost): `off`, `local` (in process) or `shared` (through Redis at
    /// `--redis-url`).
    #[arg(long, value_enum, default_value = "off")]
    pub limits: LimitsMode,

    /// Shared limiter bench: decisions per concurrency level.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub shared_limiter_checks: u64,

    /// Shared limiter bench: concurrency levels (tokio tasks), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shared_limiter_concurrency: Vec<u32>,

    /// How long to wait for each child to print its `listening on` line.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub startup_timeout: Duration,

    /// Limiter bench: checks per thread in each repetition.
    #[arg(
        long,
        default_value_t = 2_000_000,
        help_heading = LIMITER_HEADING,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000_000)
    )]
    pub limiter_iterations: u64,

    /// Limiter bench: timed repetitions per case and thread count (the median is reported).
    #[arg(
        long,
        default_value_t = 5,
        help_heading = LIMITER_HEADING,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub limiter_repetitions: u32,

    /// Limiter bench: thread counts to run every case with, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2",
        help_heading = LIMITER_HEADING,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub limiter_threads: Vec<u32>,

    /// Limiter bench: keys of the keyed limiters (a random one per check).
    #[arg(
        long,
        default_value_t = 1000,
        help_heading = LIMITER_HEADING,
        value_parser = clap::value_parser!(u32).range(1..=10_000_000)
    )]
    pub limiter_keys: u32,

    /// Tokens bench: size of the generated corpus, in MB.
    #[arg(
        long,
        default_value_t = 4,
        help_heading = TOKENS_HEADING,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub tokens_corpus_mb: u32,

    /// Tokens bench: timed passes per counter and encoding (the median is reported).
    #[arg(
        long,
        default_value_t = 5,
        help_heading = TOKENS_HEADING,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub tokens_repetitions: u32,
}

const TOKENS_HEADING: &str = "Token counting benchmark (--scenario tokens)";

const LIMITER_HEADING: &str = "Limiter micro-benchmark (--scenario limiter)";

const SCENARIO_HELP: &str = "\
Scenarios (each is run against the mock directly, then through the gateway, or through gateway A
then gateway B with --gateway-bin A --gateway-bin B):
  closed-unary   closed loop, non-streaming chat completions
  closed-stream  closed loop, streaming (SSE read to the end; also records time to first byte)
  open-unary     open loop at --rate, non-streaming
  open-stream    open loop at --rate, streaming
  all            all four (default)
Not part of `all`:
  limiter        in-process micro-benchmark of the rate limiters, ns per check: Weir's TokenBucket,
                 RateLimiter (try_reserve, and reserve + reconcile with per-minute token limits),
                 KeyedLimiter (random key per check) against governor's direct and keyed GCRA, on
                 1 and 2 OS threads hammering one limiter, plus cases where most checks are
                 refused. Runs first, before any gateway scenario, and needs no weir binary.
                 Table on stdout, JSON in limiter.json next to --json (default
                 bench-results/limiter.json). About 30 s with the defaults:
                   weir-bench --scenario limiter
  tokens         in-process token counting: tokens/s of Weir's counter (bpe-openai) beside
                 tiktoken-rs on a generated mixed corpus (prose, code, CJK, emoji), o200k_base and
                 cl100k_base, plus the per-request cost of the engine's input estimate. Needs no
                 weir binary; JSON in tokens.json next to --json:
                   weir-bench --scenario tokens

  shared-limiter latency of one shared rate limit decision (one Lua script call on the Redis at
                 --redis-url, a 127.0.0.1 one by default) at each --shared-limiter-concurrency;
                 JSON in shared-limiter.json next to --json:
                   weir-bench --scenario shared-limiter
Gateway scenarios with --limits local|shared put generous rate limits on the deployment (in
process, or shared through --redis-url) to measure what they cost.

Closed loop measures latency from each request's actual start; it shows peak throughput at a
fixed concurrency. Open loop sends on a fixed schedule whatever the responses do and measures
latency from the *scheduled* send time, so stalls show up as latency instead of silently
lowering the send rate (coordinated omission).

CPU per request: for each target, the CPU time (utime + stime from /proc/<pid>/stat) the gateway
and the mock used in the measured phase, divided by the requests completed in it. Times come in
10 ms clock ticks, so a figure built from fewer than 50 ticks is marked `*`: use a longer --duration.

A/B run of two gateway binaries (e.g. main before a refactor against the current build):
  weir-bench --gateway-bin /path/to/weir-main --gateway-bin target/release/weir \\
    --scenario closed-unary,closed-stream --duration 10s

A/B runs are noisy on a shared machine; --rounds N repeats each scenario N times, alternating
which gateway goes first, and adds medians across rounds and the per-round B/A ratios' median and
min-max range (N x the time):
  weir-bench --gateway-bin /path/to/weir-main --gateway-bin target/release/weir \\
    --scenario closed-unary --duration 5s --rounds 5

Default run: 4 scenarios x 2 targets x (2s warmup + 10s) = about 100 s (3 targets in an A/B run;
times --rounds).
Results: a table on stdout and JSON at --json (default bench-results/latest.json).";

/// The gateway's response cache during the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheMode {
    /// No cache (the default): the gateway calls the mock every time.
    Off,
    /// The in-process cache.
    Memory,
    /// Redis only (`--redis-url`).
    Redis,
}

/// A scenario selection on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// Closed loop, non-streaming.
    ClosedUnary,
    /// Closed loop, streaming.
    ClosedStream,
    /// Open loop, non-streaming.
    OpenUnary,
    /// Open loop, streaming.
    OpenStream,
    /// All four.
    All,
    /// The in-process rate limiter micro-benchmark (not part of `all`).
    Limiter,
    /// The in-process token counting benchmark (not part of `all`).
    Tokens,
    /// The latency of one shared (Redis) rate limit decision (not part of `all`).
    SharedLimiter,
}

/// The gateway deployment's rate limits during the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LimitsMode {
    /// None (the default).
    Off,
    /// Generous limits enforced in process.
    Local,
    /// The same limits shared through Redis (`redis:` at `--redis-url`).
    Shared,
}

/// One concrete scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Open loop (fixed rate) rather than closed loop (fixed concurrency).
    pub open: bool,
    /// Streaming requests.
    pub stream: bool,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Self; 4] = [
        Self {
            open: false,
            stream: false,
        },
        Self {
            open: false,
            stream: true,
        },
        Self {
            open: true,
            stream: false,
        },
        Self {
            open: true,
            stream: true,
        },
    ];

    /// Name used in the table and JSON.
    pub fn name(self) -> &'static str {
        match (self.open, self.stream) {
            (false, false) => "closed-unary",
            (false, true) => "closed-stream",
            (true, false) => "open-unary",
            (true, true) => "open-stream",
        }
    }

    /// `closed` or `open`.
    pub fn mode(self) -> &'static str {
        if self.open { "open" } else { "closed" }
    }
}

/// Whether the token counting benchmark was selected.
pub fn tokens_selected(args: &[ScenarioArg]) -> bool {
    args.contains(&ScenarioArg::Tokens)
}

/// Whether the shared (Redis) limiter benchmark was selected.
pub fn shared_limiter_selected(args: &[ScenarioArg]) -> bool {
    args.contains(&ScenarioArg::SharedLimiter)
}

/// Whether the rate limiter micro-benchmark was selected.
pub fn limiter_selected(args: &[ScenarioArg]) -> bool {
    args.contains(&ScenarioArg::Limiter)
}

/// Expands the flags into distinct gateway scenarios in canonical order (the limiter bench is
/// not one: see [`limiter_selected`]).
pub fn select_scenarios(args: &[ScenarioArg]) -> Vec<Scenario> {
    Scenario::ALL
        .into_iter()
        .filter(|s| {
            args.iter().any(|a| match a {
                ScenarioArg::All => true,
                ScenarioArg::ClosedUnary => !s.open && !s.stream,
                ScenarioArg::ClosedStream => !s.open && s.stream,
                ScenarioArg::OpenUnary => s.open && !s.stream,
                ScenarioArg::OpenStream => s.open && s.stream,
                ScenarioArg::Limiter | ScenarioArg::Tokens | ScenarioArg::SharedLimiter => false,
            })
        })
        .collect()
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 1_000_000.0 {
        Ok(v)
    } else {
        Err("rate must be > 0 and <= 1000000".to_owned())
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn clap_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["weir-bench"]).unwrap();
        assert_eq!(a.concurrency, 32);
        assert!((a.rate - 1000.0).abs() < f64::EPSILON);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.max_outstanding, 4096);
        assert_eq!(a.json, PathBuf::from("bench-results/latest.json"));
        assert_eq!(select_scenarios(&a.scenario), Scenario::ALL.to_vec());
        assert!(a.gateway_bin.is_empty());
        assert_eq!(a.rounds, 1);
    }

    #[test]
    fn rounds_flag() {
        let a = Args::try_parse_from(["weir-bench", "--rounds", "5"]).unwrap();
        assert_eq!(a.rounds, 5);
        assert!(Args::try_parse_from(["weir-bench", "--rounds", "0"]).is_err());
    }

    #[test]
    fn gateway_bins_in_order() {
        let a = Args::try_parse_from([
            "weir-bench",
            "--gateway-bin",
            "/a/weir",
            "--gateway-bin",
            "b/weir",
        ])
        .unwrap();
        assert_eq!(a.gateway_bin, [PathBuf::from("/a/weir"), PathBuf::from("b/weir")]);
        assert_eq!(a.weir_bin, None);
    }

    #[test]
    fn scenario_selection() {
        let a = Args::try_parse_from([
            "weir-bench",
            "--scenario",
            "open-stream,closed-unary",
            "--duration",
            "3s",
        ])
        .unwrap();
        let names: Vec<_> = select_scenarios(&a.scenario)
            .into_iter()
            .map(Scenario::name)
            .collect();
        assert_eq!(names, ["closed-unary", "open-stream"]);
        assert_eq!(a.duration, Duration::from_secs(3));
        let a = Args::try_parse_from([
            "weir-bench",
            "--scenario",
            "closed-stream",
            "--scenario",
            "closed-stream",
        ])
        .unwrap();
        assert_eq!(select_scenarios(&a.scenario).len(), 1);
        assert!(Args::try_parse_from(["weir-bench", "--scenario", "bogus"]).is_err());
        assert!(Args::try_parse_from(["weir-bench", "--rate", "0"]).is_err());
        assert!(Args::try_parse_from(["weir-bench", "--duration", "0s"]).is_err());
        assert!(Args::try_parse_from(["weir-bench", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn limiter_scenario() {
        let a = Args::try_parse_from(["weir-bench"]).unwrap();
        assert!(!limiter_selected(&a.scenario));
        assert_eq!(a.limiter_iterations, 2_000_000);
        assert_eq!(a.limiter_repetitions, 5);
        assert_eq!(a.limiter_threads, [1, 2]);
        assert_eq!(a.limiter_keys, 1000);

        let a = Args::try_parse_from(["weir-bench", "--scenario", "limiter"]).unwrap();
        assert!(limiter_selected(&a.scenario));
        assert!(select_scenarios(&a.scenario).is_empty());

        let a = Args::try_parse_from([
            "weir-bench",
            "--scenario",
            "all,limiter",
            "--limiter-threads",
            "1,2,4",
            "--limiter-iterations",
            "1000",
        ])
        .unwrap();
        assert!(limiter_selected(&a.scenario));
        assert_eq!(select_scenarios(&a.scenario), Scenario::ALL.to_vec());
        assert_eq!(a.limiter_threads, [1, 2, 4]);
        assert_eq!(a.limiter_iterations, 1000);
        assert!(Args::try_parse_from(["weir-bench", "--limiter-threads", "0"]).is_err());
        assert!(Args::try_parse_from(["weir-bench", "--limiter-iterations", "0"]).is_err());
    }
}
