//! `weir`: the gateway (`serve`), the mock upstream (`mock`) and the config checker (`check`).

// This is the command-line front end: printing the bound address and `check`'s report to stdout is its job.
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use weir::{
    Config,
    config::{ConfigSource, LogFormat, LoggingConfig, ProviderKind},
};
use weir_gateway::{AppState, serve, shutdown_signal};

/// The gateway allocates a little per request (bodies, headers, JSON); mimalloc makes that cheaper
/// than the system allocator under concurrency (see docs/benchmarks.md for the measured gain).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Weir: a fast, resilient, OpenAI-compatible LLM gateway.
///
/// Point any OpenAI client's base URL at `http://HOST:PORT/v1`. Without --config, `weir serve`
/// proxies to OpenAI when OPENAI_API_KEY is set, and otherwise answers from a built-in offline mock.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Settings come from, in increasing precedence: built-in defaults, the config file, WEIR_*
    /// environment variables, and these flags. Stops on SIGTERM/SIGINT after finishing in-flight
    /// requests (up to server.shutdown_timeout).
    Serve {
        /// YAML config file. Without one: OpenAI if OPENAI_API_KEY is set, else the offline mock.
        #[arg(short, long, env = "WEIR_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to bind [default: server.host, or 127.0.0.1].
        #[arg(long, env = "WEIR_HOST")]
        host: Option<String>,
        /// Port to bind; 0 picks a free one [default: server.port, or 8080].
        #[arg(short, long, env = "WEIR_PORT")]
        port: Option<u16>,
        /// Log format [default: logging.format, or human].
        #[arg(long, env = "WEIR_LOG_FORMAT", value_parser = ["human", "json"])]
        log_format: Option<String>,
        /// Log filter such as `info` or `weir=debug,info` [default: logging.level, or info]. RUST_LOG wins if set.
        #[arg(long, env = "WEIR_LOG_LEVEL")]
        log_level: Option<String>,
    },
    /// Run the mock OpenAI-compatible upstream (for demos, tests and benchmarks).
    ///
    /// Faults and pacing are chosen per request with `x-mock-*` headers, an `x_mock` object in the
    /// JSON body, or a model named `mock:key=value,...`: status, retry_after, fail_times/fail_key,
    /// latency_ms, chunk_delay_ms, chunks, stop_after_chunks, drop_after_chunks, drop_mid_body, hang.
    /// The chaos flags make every request a candidate for a fault, at given rates (docs/testing.md).
    Mock {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to bind; 0 picks a free one.
        #[arg(short, long, default_value_t = 9090)]
        port: u16,
        /// Require `Authorization: Bearer <KEY>` on every request.
        #[arg(long, value_name = "KEY")]
        require_api_key: Option<String>,
        /// Keep the last requests' bodies and headers in memory (off: fastest, for benchmarks).
        #[arg(long)]
        record: bool,
        #[command(flatten)]
        chaos: weir_mock::server::ChaosArgs,
    },
    /// Validate a config file and print what it would serve. Exits 1 with `file:line: field: problem` if invalid.
    Check {
        /// YAML config file.
        #[arg(short, long, env = "WEIR_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        command => run_async(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve {
                config,
                host,
                port,
                log_format,
                log_level,
            } => run_serve(config, host, port, log_format, log_level).await,
            Command::Mock {
                host,
                port,
                require_api_key,
                record,
                chaos,
            } => run_mock(&host, port, require_api_key, record, chaos).await,
            Command::Check { .. } => Ok(()),
        }
    })
}

async fn run_serve(
    config_path: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    log_format: Option<String>,
    log_level: Option<String>,
) -> anyhow::Result<()> {
    // Kept to load the config again, the same way, on reload (SIGHUP or POST /admin/reload).
    let loader = weir_gateway::reload::ConfigLoader {
        path: config_path,
        host,
        port,
        log_format: log_format.map(|f| {
            if f == "json" {
                LogFormat::Json
            } else {
                LogFormat::Human
            }
        }),
        log_level,
    };
    let config = loader.load()?;
    let telemetry = weir_gateway::telemetry::init(&config.logging, &config.tracing)?;
    // The first log line says what is being served, so nobody mistakes the mock for OpenAI.
    match config.source {
        ConfigSource::BuiltinMock => tracing::warn!("{}", config.source),
        _ => tracing::info!("{}", config.source),
    }
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    tracing::info!(
        address = %local,
        models = ?models,
        auth = if config.server.api_keys.is_empty() { "off" } else { "on" },
        admin_api = if config.server.admin_key.is_some() { "on" } else { "off" },
        "weir gateway listening"
    );
    if config.server.api_keys.is_empty() && !is_loopback(&local) {
        tracing::warn!(
            "no server.api_keys configured and listening beyond loopback: anyone who can reach this port can spend your upstream quota"
        );
    }
    // Registered before the address is announced, so a SIGHUP sent as soon as we are up reloads
    // instead of terminating the process (SIGHUP's default action).
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    announce(local);
    let state = AppState::with_loader(config, loader);
    #[cfg(unix)]
    let reloads = tokio::spawn(weir_gateway::reload::reload_on_sighup(
        state.live.clone(),
        hangups,
    ));
    let served = serve(listener, state, shutdown_signal()).await;
    #[cfg(unix)]
    reloads.abort();
    // Spans of the last requests are still buffered: export them before exiting.
    telemetry.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_mock(
    host: &str,
    port: u16,
    require_api_key: Option<String>,
    record: bool,
    chaos: weir_mock::server::ChaosArgs,
) -> anyhow::Result<()> {
    // The mock exports no traces: tracing stays off whatever the environment says.
    weir_gateway::telemetry::init_logging(&LoggingConfig {
        level: "warn".to_owned(),
        ..LoggingConfig::default()
    })?;
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let config = weir_mock::server::MockConfig {
        required_api_key: require_api_key,
        record_bodies: record,
    };
    let state = Arc::new(match chaos.into_config() {
        Some(chaos) => weir_mock::server::MockState::with_chaos(config, chaos),
        None => weir_mock::server::MockState::new(config),
    });
    tracing::warn!(address = %local, "weir mock upstream listening (OpenAI-compatible under /v1)");
    announce(local);
    weir_mock::server::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// One machine-readable line on stdout once bound, so scripts (and the benchmark) can use port 0.
fn announce(addr: SocketAddr) {
    println!("listening on http://{addr}");
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn describe_limits(l: &weir::policy::limit::RateLimitConfig) -> String {
    let mut parts = Vec::new();
    if let Some(rps) = l.requests_per_second {
        parts.push(format!("{rps}/s (burst {})", l.burst_or_default()));
    }
    for (value, unit) in [
        (l.requests_per_minute, "requests/min"),
        (l.input_tokens_per_minute, "input tokens/min"),
        (l.output_tokens_per_minute, "output tokens/min"),
    ] {
        if let Some(v) = value {
            parts.push(format!("{v} {unit}"));
        }
    }
    let mode = match l.mode {
        weir::policy::limit::LimitMode::FailFast => "fail fast".to_owned(),
        weir::policy::limit::LimitMode::Wait { max_wait } => format!("wait up to {max_wait:?}"),
    };
    format!("{} ({mode})", parts.join(", "))
}

fn check(path: &PathBuf) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(anyhow::Error::msg)?;
    let s = &config.server;
    println!("{}: OK", path.display());
    println!(
        "server: http://{}:{}  max body {} bytes  shutdown timeout {:?}",
        s.host, s.port, s.max_body_bytes, s.shutdown_timeout
    );
    println!(
        "auth: {}",
        if s.api_keys.is_empty() {
            "off (no server.api_keys)".to_owned()
        } else {
            format!("{} gateway key(s)", s.api_keys.len())
        }
    );
    println!(
        "admin API: {}",
        if s.admin_key.is_some() {
            "on (server.admin_key)"
        } else {
            "off (no server.admin_key; WEIR_ADMIN_KEY can set one at serve time)"
        }
    );
    println!(
        "logging: {:?} at `{}`",
        config.logging.format, config.logging.level
    );
    println!("models:");
    for group in &config.models {
        let kind = if group.is_wildcard() { " (pattern)" } else { "" };
        println!("  {}{kind}", group.name);
        for d in &group.deployments {
            let target = match d.provider {
                ProviderKind::Mock => "in-process mock".to_owned(),
                _ => d.base_url.to_string(),
            };
            let model = d.model.as_deref().unwrap_or("<client's model>");
            let key = if d.api_key.is_some() { "key set" } else { "no key" };
            println!(
                "    - {} -> {} {target} model={model} ({key}; timeouts connect {:?} read {:?} total {:?}; pool {}/{} per host)",
                d.id,
                d.provider.as_str(),
                d.timeouts.connect,
                d.timeouts.read,
                d.timeouts.total,
                d.pool.max_connections,
                d.pool.max_connections_per_host,
            );
            let breaker = match &d.circuit_breaker {
                Some(b) => format!(
                    "opens after {} failures for {:?}",
                    b.failure_threshold, b.open_timeout
                ),
                None => "off".to_owned(),
            };
            let limits = d
                .rate_limits
                .as_ref()
                .map_or_else(|| "none".to_owned(), describe_limits);
            println!(
                "      retries {} (backoff {:?}..{:?}); breaker {breaker}; rate limits {limits}",
                d.retry.max_retries, d.retry.base_delay, d.retry.max_delay
            );
        }
    }
    let r = &config.resilience;
    println!(
        "resilience: request deadline {:?}; retry budget {}% of first attempts over {:?} (+{}/s)",
        r.request_deadline,
        r.retry_budget.ratio * 100.0,
        r.retry_budget.window,
        r.retry_budget.min_per_second
    );
    if let Some(limits) = &s.client_rate_limits {
        println!(
            "client rate limits (each gateway key): {}",
            describe_limits(limits)
        );
    }
    match &config.default_model {
        Some(m) => println!("default model (for requests without one): {m}"),
        None => println!("default model: none (pass-through requests must name a model)"),
    }
    Ok(())
}
