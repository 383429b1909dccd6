//! Tests of the rate limiters. Every test runs on tokio's paused clock: waits resolve by
//! advancing virtual time, so nothing sleeps for real and every duration is exact.

mod bucket;
mod combined;
mod headers;
mod keyed;
mod layer;
mod props;
mod shared;
mod window;

use std::time::Duration;

use super::{Demand, LimitMode, RateLimitConfig};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// One request, no tokens.
fn one() -> Demand {
    Demand::request(0, 0)
}

fn bucket_config(rate: f64, burst: u32, mode: LimitMode) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_second: Some(rate),
        burst: Some(burst),
        mode,
        ..RateLimitConfig::default()
    }
}

fn wait(max_wait: Duration) -> LimitMode {
    LimitMode::Wait { max_wait }
}
