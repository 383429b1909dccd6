//! Scenario orchestration: starts the mock and the gateways, checks every target answers, then
//! measures each scenario round by round (warmup, measured window, CPU read around it), keeps the
//! processes alive between phases, and assembles the run's `Report`.
//!
//! The processes are started once and kept for every scenario and round, so each phase sees the
//! same warmed-up processes; the order within a round alternates (see `rounds`), so neither
//! gateway of an A/B pair is always measured second.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use crate::cli::{Args, Scenario};
use crate::cpu::read_cpu_ticks;
use crate::load::{Phases, RequestTemplate, Target, build_client, preflight, run_closed, run_open};
use crate::process::{Service, read_status_kib};
use crate::report::{
    AbRatios, Comparison, Machine, OpenInfo, ProcessPhase, ProcessStats, Processes, Report, SCHEMA_VERSION,
    ScenarioReport, Settings, TargetCpu, TargetReport,
};
use crate::rounds::{Pool, RoundsReport, pooled_report, round_order};
use crate::setup::{Binaries, cache_section, gateway_config, limits_config};
use crate::stats::Recorder;

/// What the report says about reading its numbers.
const NOTE: &str = "The load generator, the mock and the gateway share this machine's cores; absolute \
numbers depend on the host, so compare gateway against direct (added latency, throughput ratio). \
Open-loop latency is measured from each request's scheduled send time; there the throughput ratio \
is 1.0 unless a target falls behind the offered rate, so compare latency. Closed-loop throughput \
ratios show how much CPU the gateway needs per request on this shared machine; `cpu` measures it directly \
(utime + stime over the measured phase, divided by the completed requests; 10 ms ticks, so short phases are \
coarse, see `low_resolution`). In an A/B run, `b_over_a` divides gateway B's figures by gateway A's. With \
--rounds above 1, the per-target figures pool every round and `rounds` has the medians across rounds and the \
per-round B/A ratios (median, min, max): read `rounds.b_over_a.gateway_cpu_per_req`.";

/// Facts about the machine the run needs.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Logical cores.
    pub cores: usize,
    /// Worker threads of the load generator's runtime.
    pub threads: usize,
    /// `USER_HZ`, the unit of `/proc/<pid>/stat` CPU times.
    pub clock_ticks_per_s: u64,
}

/// A child's memory figures for the report, read at the end of the run so they include the peak.
fn process_stats(svc: &Service) -> ProcessStats {
    ProcessStats {
        pid: svc.pid,
        base_url: svc.base_url.clone(),
        rss_start_kib: svc.rss_start_kib,
        rss_end_kib: svc.rss_now_kib(),
        rss_peak_kib: svc.rss_peak_kib(),
    }
}

/// A phase length for the progress lines on stderr.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The processes a target's requests cost CPU in: the gateway (none for direct), and the mock.
#[derive(Debug, Clone, Copy)]
struct Charged {
    gateway: Option<u32>,
    mock: u32,
}

/// `utime + stime` of the charged processes, in clock ticks.
type Ticks = (Option<u64>, Option<u64>);

impl Charged {
    fn read(self) -> Ticks {
        (self.gateway.and_then(read_cpu_ticks), read_cpu_ticks(self.mock))
    }

    /// Turns the readings from before and after the measured phase into per-request figures, and
    /// warns about figures too coarse to trust (`label` names the phase).
    fn phase(self, before: Ticks, after: Ticks, completed: u64, hz: u64, label: &str) -> TargetCpu {
        let one =
            |pid: u32, ticks| ProcessPhase::new(pid, ticks, hz, completed, read_status_kib(pid, "VmHWM"));
        let cpu = TargetCpu {
            gateway: self.gateway.and_then(|pid| one(pid, (before.0, after.0))),
            mock: one(self.mock, (before.1, after.1)),
        };
        let named = [
            ("gateway", self.gateway.is_some(), cpu.gateway),
            ("mock", true, cpu.mock),
        ];
        for (name, expected, phase) in named {
            match phase {
                Some(p) if p.low_resolution => eprintln!(
                    "warning: {label}: the {name} used only {} clock ticks ({} ms of CPU) in the measured \
                     phase; its CPU µs/req is coarse (each reading is rounded to a tick): use a longer --duration",
                    p.cpu_ticks, p.cpu_ms
                ),
                None if expected => {
                    eprintln!("warning: {label}: could not read the {name}'s CPU time from /proc")
                }
                _ => {}
            }
        }
        cpu
    }
}

/// The progress line's CPU figures: what a reader watching a long run wants to see per phase.
fn cpu_summary(cpu: &TargetCpu) -> String {
    [("gateway", cpu.gateway), ("mock", cpu.mock)]
        .into_iter()
        .filter_map(|(name, p)| Some(format!("{name} {:.1} µs/req", p?.cpu_us_per_req?)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one target's phase in one round needs besides the target.
struct RoundRun<'a> {
    args: &'a Args,
    sc: Scenario,
    req: &'a RequestTemplate,
    phases: Phases,
    drain_timeout: Duration,
    hz: u64,
}

impl RoundRun<'_> {
    /// Warms up and measures one target: its report, and the samples and open-loop counts to pool.
    async fn target(
        &self,
        t: &Target,
        charged: Charged,
        label: &str,
    ) -> Result<(TargetReport, Recorder, Option<OpenInfo>)> {
        let (args, phases) = (self.args, self.phases);
        eprintln!(
            "{label}: {} warmup + {} ...",
            secs(phases.warmup),
            secs(phases.duration)
        );
        // CPU is read when the measured window opens (after the warmup) and once its last request
        // has finished, so the warmup's work is not charged to the measured requests.
        let (rec, open, before) = if self.sc.open {
            let (out, before) = run_open(
                t,
                self.req,
                args.rate,
                args.max_outstanding as usize,
                phases,
                self.drain_timeout,
                move || charged.read(),
            )
            .await?;
            let info = OpenInfo {
                scheduled: out.scheduled,
                unfinished: out.unfinished,
            };
            (out.recorder, Some(info), before)
        } else {
            let (rec, before) = run_closed(t, self.req, args.concurrency as usize, phases, move || {
                charged.read()
            })
            .await?;
            (rec, None, before)
        };
        let after = charged.read();
        let mut tr = TargetReport::new(t.name, &t.url, &rec, phases.duration, open);
        tr.cpu = charged.phase(before, after, tr.completed(), self.hz, label);
        Ok((tr, rec, open))
    }
}

/// Starts the processes, measures every scenario (each round, each target) and assembles the
/// report. The children are stopped before returning; on an error they are killed on drop.
pub async fn measure(
    args: &Args,
    scenarios: &[Scenario],
    bins: &Binaries,
    out_dir: &Path,
    tmp: &Path,
    host: Host,
) -> Result<Report> {
    let loopback = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(["--host", "127.0.0.1", "--port", "0"].iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    eprintln!("starting mock: {} mock", bins.weir.display());
    let mut mock = Service::start(
        "mock",
        &bins.weir,
        &loopback(&["mock"]),
        &out_dir.join("mock.stderr.log"),
        args.startup_timeout,
    )
    .await?;
    eprintln!("mock listening on {} (pid {})", mock.base_url, mock.pid);

    let config_path = tmp.join("gateway.yaml");
    let config = limits_config(&gateway_config(&mock.base_url), args.limits, &args.redis_url)
        + &cache_section(args.cache, &args.redis_url);
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    let config_arg = config_path.to_string_lossy().into_owned();
    // In an A/B run both gateways run throughout, in front of the same mock; the one not being
    // measured is idle, so it costs the other nothing but memory.
    let mut gateways = Vec::new();
    for spec in &bins.gateways {
        eprintln!("starting {}: {} serve", spec.name, spec.bin.display());
        let gateway = Service::start(
            spec.name,
            &spec.bin,
            &loopback(&["serve", "--config", &config_arg]),
            &out_dir.join(format!("{}.stderr.log", spec.name)),
            args.startup_timeout,
        )
        .await?;
        eprintln!(
            "{} listening on {} (pid {})",
            spec.name, gateway.base_url, gateway.pid
        );
        gateways.push(gateway);
    }

    let concurrency = args.concurrency as usize;
    let max_outstanding = args.max_outstanding as usize;
    let pool = concurrency.max(max_outstanding);
    // Every target with the processes its requests cost CPU in; run in this order per scenario.
    let mut targets = vec![(
        Target::new(
            "direct",
            &mock.base_url,
            build_client(pool, args.request_timeout)?,
        ),
        Charged {
            gateway: None,
            mock: mock.pid,
        },
    )];
    for g in &gateways {
        targets.push((
            Target::new(g.name, &g.base_url, build_client(pool, args.request_timeout)?),
            Charged {
                gateway: Some(g.pid),
                mock: mock.pid,
            },
        ));
    }

    for stream in [false, true] {
        if scenarios.iter().any(|s| s.stream == stream) {
            let req = RequestTemplate::new(stream, args.upstream_latency_ms, args.chunk_delay_ms)?;
            for (t, _) in &targets {
                preflight(t, &req).await?;
            }
        }
    }

    let phases = Phases {
        warmup: args.warmup,
        duration: args.duration,
    };
    // Long enough for every in-flight request to hit its own timeout.
    let drain_timeout = args.request_timeout + Duration::from_secs(2);
    let mut results = Vec::new();
    for &sc in scenarios {
        let req = RequestTemplate::new(sc.stream, args.upstream_latency_ms, args.chunk_delay_ms)?;
        // Per target (in `targets` order): every round's report, and the samples of all rounds.
        let mut per_round: Vec<Vec<TargetReport>> = targets.iter().map(|_| Vec::new()).collect();
        let mut pools = targets.iter().map(|_| Pool::new()).collect::<Result<Vec<_>>>()?;
        for round in 0..args.rounds {
            for i in round_order(targets.len(), round) {
                let Some(((t, charged), (reports, pooled))) =
                    targets.get(i).zip(per_round.get_mut(i).zip(pools.get_mut(i)))
                else {
                    bail!("internal error: no target {i}");
                };
                let label = if args.rounds > 1 {
                    format!("{} {} round {}/{}", sc.name(), t.name, round + 1, args.rounds)
                } else {
                    format!("{} {}", sc.name(), t.name)
                };
                let run = RoundRun {
                    args,
                    sc,
                    req: &req,
                    phases,
                    drain_timeout,
                    hz: host.clock_ticks_per_s,
                };
                let (tr, rec, open) = run.target(t, *charged, &label).await?;
                mock.ensure_running()?;
                for g in &mut gateways {
                    g.ensure_running()?;
                }
                eprintln!(
                    "{label}: ok {} errors {} {:.1} req/s; {}",
                    tr.ok,
                    tr.error_total + tr.dropped + tr.unfinished,
                    tr.achieved_rps,
                    cpu_summary(&tr.cpu)
                );
                pooled.add(&rec, open)?;
                reports.push(tr);
            }
        }
        let mut measured = targets
            .iter()
            .zip(&pools)
            .zip(&per_round)
            .map(|(((t, _), p), rounds)| {
                pooled_report(t.name, &t.url, p, phases.duration, rounds, host.clock_ticks_per_s)
            });
        let (Some(dr), Some(gw)) = (measured.next(), measured.next()) else {
            bail!("internal error: missing target results");
        };
        let gateway_b = measured.next();
        results.push(ScenarioReport {
            name: sc.name().to_owned(),
            mode: sc.mode().to_owned(),
            stream: sc.stream,
            comparison: Comparison::new(&dr, &gw),
            comparison_b: gateway_b.as_ref().map(|b| Comparison::new(&dr, b)),
            b_over_a: gateway_b.as_ref().map(|b| AbRatios::new(&gw, b)),
            direct: dr,
            gateway: gw,
            gateway_b,
            rounds: (args.rounds > 1).then(|| RoundsReport::new(&per_round)),
        });
    }

    let mut gateway_stats = gateways.iter().map(process_stats);
    let Some(gateway_a) = gateway_stats.next() else {
        bail!("internal error: no gateway");
    };
    let processes = Processes {
        mock: process_stats(&mock),
        gateway: gateway_a,
        gateway_b: gateway_stats.next(),
    };
    for g in gateways {
        g.stop().await;
    }
    mock.stop().await;

    let timestamp_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        timestamp_unix_s,
        machine: Machine {
            cores: host.cores,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        },
        weir_bin: bins.weir.display().to_string(),
        gateway_bins: bins
            .gateways
            .iter()
            .map(|g| g.bin.display().to_string())
            .collect(),
        clock_ticks_per_s: host.clock_ticks_per_s,
        settings: Settings {
            scenarios: scenarios.iter().map(|s| s.name().to_owned()).collect(),
            concurrency,
            rate: args.rate,
            max_outstanding,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            upstream_latency_ms: args.upstream_latency_ms,
            chunk_delay_ms: args.chunk_delay_ms,
            request_timeout_s: args.request_timeout.as_secs_f64(),
            load_threads: host.threads,
            rounds: args.rounds,
        },
        processes,
        scenarios: results,
        note: NOTE.to_owned(),
    })
}
