//! `gpufleet-agent` command line: `run` (the daemon) and `probe` (one local reading).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gpufleet_agent::detect::{self, Detector, saturation::Thresholds};
use gpufleet_agent::probe::{self, ProbeReport};
use gpufleet_agent::sampler::NodeAgent;
use gpufleet_agent::sources::simulated::{self, Scenario};
use gpufleet_agent::uplink::UplinkConfig;
use gpufleet_agent::{GpuBackend, identity, start_node};
use gpufleet_model::UnixMs;

#[derive(Parser)]
#[command(
    name = "gpufleet-agent",
    version,
    about = "Read-only GPU and host telemetry agent for gpufleet",
    long_about = "Reads every GPU through NVML (or simulated GPUs) and the host, detects drift and \
                  saturation locally, and streams it to the gpufleet collector. It never changes \
                  GPU state."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: sample on an interval and stream to the collector.
    Run(RunArgs),
    /// Read everything once and print it (no collector needed).
    Probe(ProbeArgs),
    /// List the GPU models `--simulate` can play.
    Models,
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// Name of this node in the fleet (default: the hostname).
    #[arg(long, env = "GPUFLEET_NODE_NAME")]
    node_name: Option<String>,
    /// Path of libnvidia-ml.so to load instead of the system's libnvidia-ml.so.1.
    #[arg(long, env = "GPUFLEET_NVML_LIB", conflicts_with = "simulate")]
    nvml_lib: Option<PathBuf>,
    /// Simulate N GPUs instead of reading NVML (no GPU or driver needed).
    #[arg(long, value_name = "N")]
    simulate: Option<u32>,
    /// GPU model to simulate (see `gpufleet-agent models`).
    #[arg(long, default_value = "h100-sxm-80gb", requires = "simulate")]
    model: String,
    /// Scenario file injecting faults into the simulation (docs/scenarios.md).
    #[arg(long, requires = "simulate")]
    scenario: Option<PathBuf>,
    /// Seed for the simulation's noise.
    #[arg(long, default_value_t = 1, requires = "simulate")]
    seed: u64,
    /// Directory for the drift baseline (default: /var/lib/gpufleet-agent when writable; none
    /// when simulating).
    #[arg(long, env = "GPUFLEET_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Collector address.
    #[arg(
        long,
        env = "GPUFLEET_COLLECTOR",
        default_value = gpufleet_proto::DEFAULT_COLLECTOR_URL
    )]
    collector: String,
    /// Time between samples (the collector may change it).
    #[arg(long, default_value_t = gpufleet_agent::DEFAULT_SAMPLE_INTERVAL.into())]
    interval: humantime::Duration,
    /// Samples kept while the collector is unreachable.
    #[arg(long, default_value_t = 3600)]
    buffer_samples: usize,
    /// Samples a saturation must hold before it is reported.
    #[arg(long, default_value_t = detect::DEFAULT_SATURATION_HOLD)]
    saturation_hold: u32,
}

#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Time between the two reads probe takes (rates and CPU use need two).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    window: Duration,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GPUFLEET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = real_main() {
        eprintln!("gpufleet-agent: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(a) => run(a),
        Command::Probe(a) => run_probe(a),
        Command::Models => {
            for m in simulated::models() {
                println!("{m}");
            }
            Ok(())
        }
    }
}

fn backend(a: &SourceArgs) -> Result<GpuBackend> {
    Ok(match a.simulate {
        Some(0) => bail!("--simulate needs at least 1 GPU"),
        Some(n) => {
            if simulated::model_by_name(&a.model).is_none() {
                bail!(
                    "unknown GPU model {:?}; `gpufleet-agent models` lists the ones --simulate knows",
                    a.model
                );
            }
            let scenario = match &a.scenario {
                Some(p) => Some(Arc::new(Scenario::load(p)?)),
                None => None,
            };
            GpuBackend::Simulated {
                gpus: n,
                model: a.model.clone(),
                scenario,
                seed: a.seed,
            }
        }
        None => GpuBackend::Nvml {
            lib: a.nvml_lib.clone(),
        },
    })
}

fn state_dir(a: &SourceArgs) -> Option<PathBuf> {
    if a.state_dir.is_some() || a.simulate.is_some() {
        return a.state_dir.clone();
    }
    let default = PathBuf::from("/var/lib/gpufleet-agent");
    match std::fs::create_dir_all(&default) {
        Ok(()) => Some(default),
        Err(e) => {
            tracing::warn!(
                "no drift baseline across restarts: cannot use {} ({e}); pass --state-dir",
                default.display()
            );
            None
        }
    }
}

fn build_agent(a: &SourceArgs, hold: u32) -> Result<(NodeAgent, Vec<gpufleet_model::Event>)> {
    let backend = backend(a)?;
    // A scenario names its nodes; without --node-name, play the one its faults target.
    let scenario_node = match &backend {
        GpuBackend::Simulated {
            scenario: Some(s), ..
        } if a.node_name.is_none() => Some(s.primary_node()),
        _ => None,
    };
    let identity = identity::local(a.node_name.as_deref().or(scenario_node.as_deref()));
    gpufleet_model::convert::validate_node_name(&identity.hostname)
        .context("the node name cannot be used; pass --node-name")?;
    let now = UnixMs::now();
    let detector = Detector::new(state_dir(a), Thresholds::default(), hold);
    Ok(start_node(identity, &backend, detector, now)?)
}

fn run(a: RunArgs) -> Result<()> {
    let (agent, events) = build_agent(&a.source, a.saturation_hold)?;
    tracing::info!(
        node = %agent.identity().hostname,
        gpus = agent.inventory().gpus.len(),
        source = agent.gpu_source_kind(),
        collector = %a.collector,
        "gpufleet-agent starting"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut cfg = UplinkConfig::new(a.collector.clone());
        cfg.buffer_samples = a.buffer_samples;
        let running = gpufleet_agent::spawn(agent, events, cfg, a.interval.into());
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run_probe(a: ProbeArgs) -> Result<()> {
    let (mut agent, mut events) = build_agent(&a.source, 1)?;
    // Two reads: rates, CPU use and saturation need an interval.
    events.extend(agent.tick(UnixMs::now()).events);
    std::thread::sleep(a.window);
    let started = Instant::now();
    let tick = agent.tick(UnixMs::now());
    let read_ms = started.elapsed().as_secs_f64() * 1000.0;
    events.extend(tick.events);
    let report = ProbeReport {
        schema: probe::SCHEMA,
        node: agent.identity().clone(),
        gpu_source: agent.gpu_source_kind().to_string(),
        inventory: agent.inventory().clone(),
        findings: agent.detector().current(agent.inventory()),
        sample: tick.sample,
        events,
        read_ms,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", probe::render_text(&report));
    }
    Ok(())
}
