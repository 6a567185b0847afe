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
use gpufleet_model::labels::{LabelError, parse_labels};
use gpufleet_model::{Labels, UnixMs};

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

/// The node's labels: `--label` flags merged with `GPUFLEET_LABELS`.
#[derive(Args)]
struct LabelArgs {
    /// Label this node (repeatable; e.g. `--label pool=training --label rack=r12`), for
    /// `gpufleet nodes --selector`. Merged with GPUFLEET_LABELS (`pool=training,rack=r12`);
    /// a key given twice is an error.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

/// Where `GPUFLEET_LABELS` is read (comma-separated `key=value` items).
const LABELS_ENV: &str = "GPUFLEET_LABELS";

impl LabelArgs {
    /// The flags and the environment, merged and checked; an error names the bad label.
    fn labels(&self) -> Result<Labels> {
        let env = match std::env::var(LABELS_ENV) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{LABELS_ENV} is not valid UTF-8; write it as key=value,key2=value2")
            }
        };
        merge_labels(&self.labels, env.as_deref())
            .with_context(|| format!("bad node label (check --label and {LABELS_ENV})"))
    }
}

fn merge_labels(flags: &[String], env: Option<&str>) -> Result<Labels, LabelError> {
    parse_labels(flags.iter().map(String::as_str).chain(env))
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    labels: LabelArgs,
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
    #[command(flatten)]
    labels: LabelArgs,
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
    let labels = a.labels.labels()?;
    let (agent, events) = build_agent(&a.source, a.saturation_hold)?;
    tracing::info!(
        node = %agent.identity().hostname,
        gpus = agent.inventory().gpus.len(),
        source = agent.gpu_source_kind(),
        collector = %a.collector,
        labels = %gpufleet_model::labels::format_labels(&labels),
        "gpufleet-agent starting"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut cfg = UplinkConfig::new(a.collector.clone());
        cfg.buffer_samples = a.buffer_samples;
        cfg.labels = labels;
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
    let labels = a.labels.labels()?;
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
        labels,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_merge_and_a_key_twice_is_refused() {
        let flags = ["pool=training".to_string(), "rack=r12".to_string()];
        let l = merge_labels(&flags, Some("zone=eu-1, spare=")).unwrap();
        assert_eq!(
            gpufleet_model::labels::format_labels(&l),
            "pool=training,rack=r12,spare=,zone=eu-1"
        );
        assert!(merge_labels(&[], None).unwrap().is_empty());
        assert_eq!(
            merge_labels(&flags, Some("pool=inference")).unwrap_err(),
            LabelError::Duplicate("pool".into())
        );
        let e = merge_labels(&["pool=two words".to_string()], None).unwrap_err();
        assert!(e.to_string().contains("label pool"), "{e}");
    }
}
