//! `--scenario shared-limiter`: the latency of one shared rate limit decision (one Lua script call
//! on Redis, `RateLimiter::reserve_now` through Weir's own `RedisLimits`), no gateway involved.
//!
//! The limiter has generous per-minute request, input-token and output-token limits (every check
//! is admitted and reconciled, the path a gateway request takes). For each concurrency, that many
//! tokio tasks each run `checks / concurrency` decisions back to back; every decision's latency
//! (from the call to the reservation in hand) goes into one histogram. Reconciles run in the
//! background, as in the gateway, so their cost shows as load on Redis rather than in the figure.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;
use weir::config::{RedisConfig, RedisOnError};
use weir::policy::limit::{Demand, RateLimitConfig, RateLimiter, RedisLimits};

/// The JSON file, next to `--json`.
pub const JSON_FILE: &str = "shared-limiter.json";

/// What to run.
pub struct SharedLimiterSettings {
    pub redis_url: String,
    pub checks: u64,
    pub concurrency: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct Row {
    concurrency: u32,
    checks: u64,
    decisions_per_second: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

/// Runs every concurrency, prints the table and writes the JSON.
pub fn run(settings: &SharedLimiterSettings, json: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let rows = runtime.block_on(measure_all(settings))?;
    println!("Shared rate limit decision latency (Redis at loopback, one script call per decision)");
    println!("| concurrency | decisions | decisions/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.concurrency,
            r.checks,
            r.decisions_per_second,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us
        );
    }
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(json, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

async fn measure_all(settings: &SharedLimiterSettings) -> Result<Vec<Row>> {
    let prefix = format!(
        "weir-bench-shared:{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let redis = RedisLimits::new(RedisConfig {
        key_prefix: prefix,
        timeout: Duration::from_secs(1),
        on_error: RedisOnError::FailClosed,
        ..RedisConfig::new(settings.redis_url.as_str())
    });
    let config = RateLimitConfig {
        requests_per_minute: Some(1_000_000_000),
        input_tokens_per_minute: Some(1_000_000_000_000),
        output_tokens_per_minute: Some(1_000_000_000_000),
        ..RateLimitConfig::default()
    };
    let mut rows = Vec::new();
    for (i, &concurrency) in settings.concurrency.iter().enumerate() {
        // A fresh limiter (its own keys) per row, so windows do not grow across rows.
        let limiter = RateLimiter::shared(config.clone(), &redis, &format!("dep:bench-{i}"));
        // Warm up: connect, load the script.
        for _ in 0..200 {
            if limiter.reserve_now(Demand::request(800, 512)).await.is_err() {
                bail!("the warmup decision was refused: is Redis reachable at the given --redis-url?");
            }
        }
        let per_task = (settings.checks / u64::from(concurrency)).max(1);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
                    for _ in 0..per_task {
                        let start = Instant::now();
                        let reservation = limiter.reserve_now(Demand::request(800, 512)).await;
                        let took = start.elapsed();
                        match reservation {
                            Ok(reservation) => reservation.reconcile(750, 300),
                            Err(e) => anyhow::bail!("a decision was refused or failed: {e}"),
                        }
                        histogram.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1))?;
                    }
                    Ok::<_, anyhow::Error>(histogram)
                })
            })
            .collect();
        let mut total = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
        for task in tasks {
            total.add(task.await??)?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let us = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
        rows.push(Row {
            concurrency,
            checks: total.len(),
            decisions_per_second: total.len() as f64 / elapsed,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: total.max() as f64 / 1000.0,
        });
    }
    Ok(rows)
}
