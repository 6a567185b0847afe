//! `gpufleet-agent` command line: `run` (the daemon) and `probe` (one local reading).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gpufleet_agent::config::{self as agent_config, AgentConfig};
use gpufleet_agent::detect::{self, Detector, saturation::Thresholds};
use gpufleet_agent::exposition::{self, NodeExposition};
use gpufleet_agent::probe::{self, ProbeReport};
use gpufleet_agent::sampler::NodeAgent;
use gpufleet_agent::sources::cadence;
use gpufleet_agent::sources::simulated::{self, Scenario};
use gpufleet_agent::uplink::{SpoolConfig, UplinkConfig};
use gpufleet_agent::{GpuBackend, identity, start_node};
use gpufleet_model::config_file::{self, ConfigFile, Listen, LogFormat};
use gpufleet_model::labels::{LabelError, parse_labels};
use gpufleet_model::{Labels, UnixMs};
use serde::Serialize;

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
    Run(Box<RunArgs>),
    /// Read everything once and print it (no collector needed).
    Probe(Box<ProbeArgs>),
    /// List the GPU models `--simulate` can play.
    Models,
}

#[derive(Args, Clone, Serialize)]
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
    #[arg(long, default_value = agent_config::DEFAULT_MODEL, requires = "simulate")]
    model: String,
    /// Scenario file injecting faults into the simulation (docs/scenarios.md).
    #[arg(long, requires = "simulate")]
    scenario: Option<PathBuf>,
    /// Seed for the simulation's noise.
    #[arg(long, default_value_t = agent_config::DEFAULT_SEED, requires = "simulate")]
    seed: u64,
    /// Directory for the drift baseline (default: /var/lib/gpufleet-agent when writable; none
    /// when simulating).
    #[arg(long, env = "GPUFLEET_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where the kernel's sysfs is mounted: InfiniBand and the other host parts are read
    /// under it (a copy or a fixture tree for testing, as node_exporter's --path.sysfs).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Where procfs is mounted (/proc/net/dev and the other host parts).
    #[arg(long, default_value = "/proc")]
    procfs_root: PathBuf,
    /// The host's root filesystem, for the driver libraries and the package database the
    /// driver-stack part reads (node_exporter's --path.rootfs; `/host` inside a container).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// A mount point to watch (repeatable; as the host sees it, e.g. `--watch-mount /datasets
    /// --watch-mount /checkpoints`): mounted or not, read-only, statfs latency and space.
    /// Default: `/` and every network or parallel filesystem mounted (NFS, Lustre, GPFS,
    /// BeeGFS, CIFS, Weka, CephFS, JuiceFS…).
    #[arg(
        long = "watch-mount",
        visible_alias = "watch-mounts",
        value_name = "PATH"
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    watch_mounts: Vec<PathBuf>,
    /// The kernel log the agent reads Xids' companions from (NVSwitch SXids, PCIe, storage
    /// and NIC errors): a device like /dev/kmsg, or a file of `prio,seq,usec,-;message`
    /// records for testing.
    #[arg(long, default_value = gpufleet_agent::sources::nvml::kmsg::DEV_KMSG)]
    kmsg_path: PathBuf,
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

/// `--config` and `--print-default-config`.
#[derive(Args)]
struct ConfigArgs {
    /// Config file (TOML, docs/config.md). Default: /etc/gpufleet/agent.toml when it exists.
    /// Environment variables and flags override it.
    #[arg(long, env = "GPUFLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Print the complete default config file, every key commented, and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// Example lines shown commented out in the default file for keys without a default.
const EXAMPLES: &[(&str, &str)] = &[
    ("node_name", "node_name = \"gpu-node-01\""),
    (
        "nvml_lib",
        "nvml_lib = \"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\"",
    ),
    ("simulate", "simulate = 8"),
    ("scenario", "scenario = \"/etc/gpufleet/scenario.toml\""),
    ("state_dir", "state_dir = \"/var/lib/gpufleet-agent\""),
    ("tls_ca", "tls_ca = \"/etc/gpufleet/tls/ca.pem\""),
    ("tls_cert", "tls_cert = \"/etc/gpufleet/tls/node.pem\""),
    ("tls_key", "tls_key = \"/etc/gpufleet/tls/node.key\""),
    ("token_file", "token_file = \"/etc/gpufleet/token\""),
    ("labels", "pool = \"training\""),
    (
        "watch_mounts",
        "watch_mounts = [\"/\", \"/datasets\", \"/checkpoints\"]",
    ),
];

#[derive(Args, Serialize)]
struct RunArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    #[command(flatten)]
    #[serde(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    #[serde(skip)]
    labels: LabelArgs,
    /// Collector address.
    #[arg(
        long,
        env = "GPUFLEET_COLLECTOR",
        default_value = gpufleet_proto::DEFAULT_COLLECTOR_URL
    )]
    collector: String,
    /// Time between samples (the collector may change it).
    #[arg(long, env = "GPUFLEET_INTERVAL", default_value_t = gpufleet_agent::DEFAULT_SAMPLE_INTERVAL.into())]
    #[serde(serialize_with = "as_display")]
    interval: humantime::Duration,
    /// Time between reads of counters and slow fields (energy, violations, ECC, row
    /// remapping, PCIe replays and throughput, NVLink, processes); samples in between repeat
    /// their last values.
    #[arg(long, env = "GPUFLEET_SLOW_INTERVAL", default_value_t = cadence::DEFAULT_SLOW_INTERVAL.into())]
    #[serde(serialize_with = "as_display")]
    slow_interval: humantime::Duration,
    /// Time between full inventory reads (also read at once when a GPU or mode changes; the
    /// collector may change it).
    #[arg(long, default_value_t = gpufleet_agent::sampler::DEFAULT_INVENTORY_INTERVAL.into())]
    #[serde(serialize_with = "as_display")]
    inventory_interval: humantime::Duration,
    /// Samples kept while the collector is unreachable.
    #[arg(long, default_value_t = agent_config::DEFAULT_BUFFER_SAMPLES)]
    buffer_samples: usize,
    /// Cap in bytes on the on-disk spool in the state dir (`<state_dir>/spool`): what was not
    /// acknowledged survives a restart; over the cap the oldest goes, counted. 0: no spool.
    #[arg(long, default_value_t = gpufleet_agent::spool::DEFAULT_SPOOL_MAX_BYTES)]
    spool_max_bytes: u64,
    /// Samples a saturation must hold before it is reported.
    #[arg(long, default_value_t = detect::DEFAULT_SATURATION_HOLD)]
    saturation_hold: u32,
    /// Serve this node's /metrics (dcgm-exporter names) here, e.g. 0.0.0.0:9400; `off`: none.
    #[arg(long, env = "GPUFLEET_METRICS_LISTEN", default_value = "off")]
    metrics_listen: Listen,
    /// Log format: `human`, or `json` (one object a line, for log shippers).
    #[arg(long, env = "GPUFLEET_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    /// CA certificate (PEM) that signed the collector's: connect over TLS (https://).
    #[arg(long, env = "GPUFLEET_TLS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca: Option<PathBuf>,
    /// This node's client certificate (PEM), for a collector that requires one (mutual TLS);
    /// its CN or a DNS SAN must be the node name. Re-read at every reconnect.
    #[arg(long, env = "GPUFLEET_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "GPUFLEET_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,
    /// File holding this node's token (`gpufleet token create NODE` on the collector host),
    /// re-read at every reconnect; GPUFLEET_TOKEN gives the token itself instead.
    #[arg(long, env = "GPUFLEET_TOKEN_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

fn as_display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Built-in defaults < the config file < environment variables < flags; node labels from the
/// file, then `GPUFLEET_LABELS` and `--label` on top (a key there replaces the file's).
fn resolve(
    config: &ConfigArgs,
    flags: &impl Serialize,
    labels: &LabelArgs,
    matches: &clap::ArgMatches,
) -> Result<AgentConfig> {
    use clap::parser::ValueSource;
    let file = ConfigFile::read_given_or_default(
        config.config.as_deref(),
        std::path::Path::new(agent_config::DEFAULT_PATH),
    )?;
    let user_set = |key: &str| {
        matches!(
            matches.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let mut cfg: AgentConfig = file.layer(config_file::overrides(flags, user_set)?)?;
    cfg.labels.extend(labels.labels()?);
    gpufleet_model::labels::check_labels(&cfg.labels)
        .with_context(|| format!("bad node label in {}", file.origin))?;
    cfg.check().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn default_config_file() -> String {
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    config_file::commented_default(
        "gpufleet-agent configuration (docs/config.md). Every key is also a flag of\n\
         `gpufleet-agent run` (`--node-name` for node_name); flags win.",
        &AgentConfig::default(),
        &config_file::key_docs(&cmd, EXAMPLES),
    )
    .expect("the agent's defaults serialize to TOML")
}

#[derive(Args)]
struct ProbeArgs {
    /// Config file (TOML): its node and source keys apply. Default: /etc/gpufleet/agent.toml
    /// when it exists.
    #[arg(long, env = "GPUFLEET_CONFIG")]
    config: Option<PathBuf>,
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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = |name| {
        matches
            .subcommand_matches(name)
            .expect("the subcommand's matches")
    };
    let resolved = match &cli.command {
        Command::Run(a) if a.config.print_default_config => {
            print!("{}", default_config_file());
            return;
        }
        Command::Run(a) => resolve(&a.config, a, &a.labels, sub("run")).map(Some),
        Command::Probe(a) => {
            let config = ConfigArgs {
                config: a.config.clone(),
                print_default_config: false,
            };
            resolve(&config, &a.source, &a.labels, sub("probe")).map(Some)
        }
        Command::Models => Ok(None),
    };
    let resolved = resolved.unwrap_or_else(|e| {
        eprintln!("gpufleet-agent: error: {e:#}");
        std::process::exit(1);
    });
    init_logging(resolved.as_ref().map_or(LogFormat::Human, |c| c.log_format));
    let result = match (cli.command, resolved) {
        (Command::Run(_), Some(c)) => run(c),
        (Command::Probe(a), Some(c)) => run_probe(*a, c),
        _ => {
            for m in simulated::models() {
                println!("{m}");
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("gpufleet-agent: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUFLEET_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn backend(a: &AgentConfig) -> Result<GpuBackend> {
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
            roots: gpufleet_agent::sources::HostRoots {
                sysfs: a.sysfs_root.clone(),
                procfs: a.procfs_root.clone(),
                root: a.host_root.clone(),
                watch_mounts: a.watch_mounts.clone(),
                kmsg: a.kmsg_path.clone(),
            },
        },
    })
}

fn state_dir(a: &AgentConfig) -> Option<PathBuf> {
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

fn build_agent(a: &AgentConfig, hold: u32) -> Result<(NodeAgent, Vec<gpufleet_model::Event>)> {
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

/// The spool lives in the state dir; none without one, or with `spool_max_bytes = 0`.
fn spool(a: &AgentConfig) -> Option<SpoolConfig> {
    if a.spool_max_bytes == 0 {
        return None;
    }
    let Some(dir) = state_dir(a) else {
        tracing::warn!(
            "no spool: without a state dir (--state-dir) what the collector has not acknowledged is lost if the agent restarts"
        );
        return None;
    };
    Some(SpoolConfig {
        dir: dir.join("spool"),
        max_bytes: a.spool_max_bytes,
    })
}

fn run(a: AgentConfig) -> Result<()> {
    let (mut agent, events) = build_agent(&a, a.saturation_hold)?;
    agent.set_cadence(cadence::Cadence {
        slow_interval: a.slow_interval,
    });
    agent.set_inventory_interval_ms(a.inventory_interval.as_millis() as u64);
    tracing::info!(
        node = %agent.identity().hostname,
        gpus = agent.inventory().gpus.len(),
        source = agent.gpu_source_kind(),
        collector = %a.collector,
        labels = %gpufleet_model::labels::format_labels(&a.labels),
        "gpufleet-agent starting"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let exposition = match a.metrics_listen.addr() {
            Some(addr) => {
                let e = Arc::new(NodeExposition::new(
                    &agent.identity().hostname,
                    agent.inventory(),
                ));
                exposition::serve(addr, e.clone()).await?;
                Some(e)
            }
            None => None,
        };
        let mut cfg = UplinkConfig::new(a.collector.clone());
        cfg.buffer_samples = a.buffer_samples;
        cfg.spool = spool(&a);
        let cfg_spooled = cfg.spool.is_some();
        cfg.labels = a.labels.clone();
        cfg.credentials = a.credentials(std::env::var("GPUFLEET_TOKEN").ok());
        let running = gpufleet_agent::spawn_exposed(agent, events, cfg, a.interval, exposition);
        shutdown_signal().await;
        tracing::info!("shutting down");
        let stats = running.stats.clone();
        running.stop().await;
        use std::sync::atomic::Ordering::Relaxed;
        // One line a supervisor (or a test) can check against the collector's count.
        tracing::info!(
            "stopped: {} samples taken this run, {} not yet acknowledged{}, {} dropped",
            stats.samples.load(Relaxed),
            stats.buffered_samples.load(Relaxed),
            if cfg_spooled {
                " (kept in the spool)"
            } else {
                ""
            },
            stats.dropped_samples.load(Relaxed),
        );
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

fn run_probe(a: ProbeArgs, c: AgentConfig) -> Result<()> {
    let labels = c.labels.clone();
    let (mut agent, mut events) = build_agent(&c, 1)?;
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
        unavailable: agent
            .host_unavailable()
            .into_iter()
            .map(|(source, reason)| probe::Unavailable { source, reason })
            .collect(),
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

    /// `gpufleet-agent run ARGS` resolved against `file`, without this process's environment.
    fn resolved(args: &[&str], file: Option<&str>) -> Result<AgentConfig> {
        let cmd = Cli::command().mut_subcommands(|c| c.mut_args(|a| a.env(None)));
        let m = cmd.try_get_matches_from(args)?;
        let Command::Run(a) = Cli::from_arg_matches(&m)?.command else {
            unreachable!("a run command line")
        };
        let dir = tempfile::tempdir()?;
        // No file given stands for an empty one, whatever this machine's /etc holds.
        let path = match file {
            Some(text) => {
                let p = dir.path().join("agent.toml");
                std::fs::write(&p, text)?;
                p
            }
            None => PathBuf::from("/dev/null"),
        };
        let config = ConfigArgs {
            config: Some(path),
            print_default_config: false,
        };
        resolve(
            &config,
            &a,
            &LabelArgs {
                labels: a.labels.labels.clone(),
            },
            m.subcommand_matches("run").unwrap(),
        )
    }

    #[test]
    fn the_default_file_and_the_flag_defaults_are_the_config_defaults() {
        let text = default_config_file();
        let back: AgentConfig = ConfigFile::parse(&text, "default")
            .unwrap()
            .parse_as()
            .unwrap();
        assert_eq!(back, AgentConfig::default());
        assert_eq!(
            resolved(&["gpufleet-agent", "run"], None).unwrap(),
            AgentConfig::default()
        );
        for (key, _) in EXAMPLES {
            assert!(
                text.contains(&format!("# {key} = ")) || *key == "labels",
                "{key}: {text}"
            );
        }
        // Uncommented, the examples are valid too.
        let mut examples: Vec<&str> = EXAMPLES
            .iter()
            .filter(|(k, _)| *k != "labels")
            .map(|(_, e)| *e)
            .collect();
        examples.extend(["[labels]", "pool = \"training\""]);
        let c: AgentConfig = ConfigFile::parse(&examples.join("\n"), "examples")
            .unwrap()
            .parse_as()
            .unwrap();
        assert_eq!(c.simulate, Some(8));
        assert_eq!(c.labels["pool"], "training");
    }

    /// The shipped `deploy/config/agent.toml` reads through the real struct, as it is and
    /// with every commented-out key switched on.
    #[test]
    fn the_shipped_config_file_is_valid_with_and_without_its_comments() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let on = config_file::with_commented_keys_on(&text);
        for (what, t) in [("as shipped", text.as_str()), ("uncommented", on.as_str())] {
            let parsed: Result<AgentConfig, _> =
                ConfigFile::parse(t, "agent.toml").and_then(|f| f.parse_as());
            assert!(parsed.is_ok(), "{what}: {:?}", parsed.err());
        }
    }

    #[test]
    fn unusable_values_are_refused_naming_the_key_and_flag() {
        for (args, says) in [
            (&["--interval", "0s"][..], "interval 0ns is too short"),
            (&["--buffer-samples", "0"][..], "buffer_samples is 0"),
            (
                &["--collector", "grpc://x:1"][..],
                "(`collector` / --collector)",
            ),
        ] {
            let mut all = vec!["gpufleet-agent", "run"];
            all.extend_from_slice(args);
            let e = resolved(&all, None).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
        assert!(resolved(&["gpufleet-agent", "run", "--interval", "100ms"], None).is_ok());
        assert!(
            resolved(
                &["gpufleet-agent", "run", "--collector", "10.0.0.5:50051"],
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn the_file_sits_under_flags_and_its_labels_merge_with_them() {
        let file = "simulate = 2\ninterval = \"250ms\"\nnode_name = \"from-file\"\n[labels]\npool = \"training\"\nrack = \"r1\"\n";
        let c = resolved(
            &[
                "gpufleet-agent",
                "run",
                "--node-name",
                "from-flag",
                "--label",
                "rack=r2",
            ],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("from-flag"));
        assert_eq!(c.simulate, Some(2));
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(
            gpufleet_model::labels::format_labels(&c.labels),
            "pool=training,rack=r2"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
        for (text, line, key) in [
            ("simulate = 2\nintervall = \"1s\"\n", 2, "intervall"),
            ("interval = \"soon\"\n", 1, "interval"),
            ("[labels]\npool = 3\n", 2, "labels.pool"),
            ("metrics_listen = \"everywhere\"\n", 1, "metrics_listen"),
        ] {
            let e = resolved(&["gpufleet-agent", "run"], Some(text)).unwrap_err();
            let e = e.downcast::<config_file::ConfigError>().unwrap();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.to_string().contains("agent.toml, line"), "{e}");
        }
    }

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
