//! The chaos suite's short round: a fixed workload (so it is the same on every machine) of
//! unary and streamed requests on both faces, to OpenAI-compatible, Anthropic and Gemini
//! deployments on a mock injecting every fault kind, through the real gateway.
//!
//! The verdict: no request hangs, none comes back silently wrong (a 200 or a cleanly ended
//! stream whose content is not what the mock sent), none causes more upstream calls than the
//! gateway's attempt limit.

use std::time::Duration;

use weir_chaos::{Outcome, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_round_has_no_hang_no_silent_wrong_and_bounded_calls() {
    let settings = Settings {
        requests: Some(6_000),
        duration: None,
        concurrency: 16,
        seed: 17,
        // Every request meets the faulty mock: an open breaker would answer most of them itself.
        deployment_extra: "        circuit_breaker: { enabled: false }".to_owned(),
        hang_bound: Duration::from_secs(30),
        ..Settings::default()
    };
    let report = weir_chaos::run(&settings).await.unwrap();
    let table = report.table();
    eprintln!("{table}");
    let total = report.total();
    assert_eq!(report.requests(), 6_000, "{table}");
    assert_eq!(total.count(Outcome::Hang), 0, "{table}");
    assert_eq!(total.count(Outcome::SilentlyWrong), 0, "{table}");
    assert_eq!(report.over_attempts, 0, "{table}");
    assert!(report.max_calls() <= weir_chaos::MAX_ATTEMPTS, "{table}");
    // The round must have met faults and still served most requests, or it proved nothing.
    let injected: u64 = report
        .injected
        .iter()
        .filter(|(name, _)| name != "none")
        .map(|(_, n)| n)
        .sum();
    assert!(injected > 600, "{table}");
    assert!(total.count(Outcome::Complete) > 3_000, "{table}");
    assert!(total.count(Outcome::ErrorEvent) > 0, "{table}");
}
