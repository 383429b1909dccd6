//! `weir-chaos`: the chaos suite's long runs (`run`), the soak load (`soak`) and the config
//! `scripts/soak.sh` gives its gateway (`config`).

// A command-line tool: the table on stdout is its output.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir_mock::server::FaultMix;

/// Chaos and soak runs for Weir: a faulty mock behind a real gateway, every outcome classified
/// (complete, clean error, error event, unshaped error, transport error, hang, silently wrong).
#[derive(Debug, Parser)]
#[command(name = "weir-chaos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a chaos mock and a gateway in this process, send a mix of unary and streamed
    /// requests on /v1/chat/completions and /v1/messages, and print the outcome table. Exits 1
    /// when the verdict (0 hangs, 0 silently wrong, calls ≤ attempts) is broken.
    Run {
        /// How long to send.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seeds the mock's faults and the traffic mix.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The mock's fault mix (see `weir mock --help`).
        #[arg(long, default_value = weir_chaos::DEFAULT_MIX)]
        fault_mix: FaultMix,
        /// YAML added under each deployment (8 spaces indented), e.g. a circuit_breaker block.
        #[arg(long, default_value = "")]
        deployment_extra: String,
    },
    /// Drive an external gateway (in front of `weir mock --fault-mix ...`) at a steady rate,
    /// sampling the gateway's RSS, descriptors and latency; prints a table and "flat" or not.
    Soak {
        /// The gateway, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        target: String,
        /// Requests started per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Sampling interval.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        sample_every: Duration,
        /// The gateway's pid (for RSS and descriptors).
        #[arg(long)]
        watch_pid: Option<u32>,
        /// Seeds the traffic mix.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print the gateway config the chaos runs use, for a mock at MOCK (host:port).
    Config {
        /// The mock's address, e.g. 127.0.0.1:9090.
        #[arg(long)]
        mock: SocketAddr,
        /// The gateway's read timeout.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        read_timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run {
            duration,
            concurrency,
            seed,
            fault_mix,
            deployment_extra,
        } => {
            let settings = weir_chaos::Settings {
                requests: None,
                duration: Some(duration),
                concurrency,
                seed,
                mix: fault_mix,
                deployment_extra,
                ..weir_chaos::Settings::default()
            };
            let report = weir_chaos::run(&settings).await?;
            println!("{}", report.table());
            Ok(report.verdict_holds())
        }
        Command::Soak {
            target,
            rate,
            duration,
            sample_every,
            watch_pid,
            seed,
        } => {
            let settings = weir_chaos::soak::SoakSettings {
                target,
                rate,
                duration,
                sample_every,
                watch_pid,
                seed,
                hang_bound: Duration::from_secs(60),
            };
            let (_, flat) = weir_chaos::soak::run(&settings).await?;
            Ok(flat)
        }
        Command::Config { mock, read_timeout } => {
            println!("{}", weir_chaos::gateway_yaml(mock, read_timeout, ""));
            Ok(true)
        }
    }
}
