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

mod check;

/// The gateway allocates a little per request (bodies, headers, JSON); mimalloc makes that cheaper
/// than the system allocator under concurrency (see docs/benchmarks.md for the measured gain).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Weir: a fast, resilient, OpenAI-compatible LLM gateway.
///
/// Point any OpenAI client's base URL at `http://HOST:PORT/v1` (Anthropic clients: `/v1/messages`).
/// Without --config, `weir serve` routes by the provider keys in the environment: claude-* models
/// to Anthropic with ANTHROPIC_API_KEY, gemini-* models to Gemini with GEMINI_API_KEY, every other
/// model to OpenAI with OPENAI_API_KEY (OPENAI_BASE_URL for another OpenAI-compatible server); with
/// none of them set it answers from a built-in offline mock, and says so.
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
        /// YAML config file. Without one (zero-config): claude-* to Anthropic if ANTHROPIC_API_KEY
        /// is set, gemini-* to Gemini if GEMINI_API_KEY is set, other models to OpenAI if
        /// OPENAI_API_KEY is set (OPENAI_BASE_URL, OPENAI_TIMEOUT, OPENAI_MAX_RETRIES adjust it);
        /// with no key at all, the built-in offline mock.
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
    /// Run the mock upstream (for demos, tests and benchmarks): OpenAI, Anthropic and Gemini faces.
    ///
    /// Serves OpenAI's API under /v1 (chat completions, embeddings, images, models), Anthropic's
    /// Messages API at /v1/messages, and Gemini's generateContent / streamGenerateContent under
    /// /v1beta/models, so a config can point any provider at it. Faults and pacing are chosen per
    /// request with `x-mock-*` headers, an `x_mock` object in the JSON body, or a model named
    /// `mock:key=value,...`: status, retry_after, fail_times/fail_key, latency_ms, chunk_delay_ms,
    /// chunks, stop_after_chunks, drop_after_chunks, drop_mid_body, hang.
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
    if let Some(why) = check::refusal(&config) {
        anyhow::bail!(why);
    }
    let telemetry = weir_gateway::telemetry::init(&config.logging, &config.tracing)?;
    // The first log line says what is being served, so nobody mistakes the mock for OpenAI.
    match config.source {
        ConfigSource::BuiltinMock => tracing::warn!("{}", config.source),
        _ => tracing::info!("{}", config.source),
    }
    for warning in check::warnings(&config) {
        tracing::warn!("{warning}");
    }
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    let serving = match config.source {
        ConfigSource::BuiltinMock => "the built-in offline MOCK (canned answers, no real model)",
        _ if config
            .models
            .iter()
            .flat_map(|g| &g.deployments)
            .all(|d| d.provider == ProviderKind::Mock) =>
        {
            "the in-process mock provider only"
        }
        _ => "real upstreams",
    };
    // The ready line: where, what, and whether it is real, in words (the fields repeat it).
    tracing::info!(
        address = %local,
        models = ?models,
        auth = if config.server.api_keys.is_empty() { "off" } else { "on" },
        admin_api = if config.server.admin_key.is_some() { "on" } else { "off" },
        "weir gateway ready on http://{local}: OpenAI API at http://{local}/v1, Anthropic Messages at \
         /v1/messages; {} model(s) {models:?} served by {serving}",
        models.len()
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

fn check(path: &PathBuf) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(anyhow::Error::msg)?;
    if let Some(why) = check::refusal(&config) {
        anyhow::bail!(why);
    }
    print!("{}", check::report(&path.display().to_string(), &config));
    let warnings = check::warnings(&config);
    if !warnings.is_empty() {
        println!("warnings:");
        for warning in warnings {
            println!("  - {warning}");
        }
    }
    Ok(())
}
