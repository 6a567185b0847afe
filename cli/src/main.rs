//! `gpufleet` command line: the collector (`serve`), the ops CLI (`nodes`, `node`,
//! `diagnose`) and the one-command `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gpufleet_collector::cli::{self, Output};
use gpufleet_collector::fleet::Window;
use gpufleet_collector::server::{self, ServerConfig};
use gpufleet_harness::demo;
use gpufleet_model::{Selector, UnixMs};
use gpufleet_sim::Scenario;

#[derive(Parser)]
#[command(
    name = "gpufleet",
    version,
    about = "Run a GPU fleet: collect telemetry from gpufleet agents, diagnose slow nodes, tell on-call",
    after_help = "Try it without a GPU: gpufleet demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Collector to ask.
    #[arg(
        long,
        env = "GPUFLEET_COLLECTOR",
        default_value = gpufleet_collector::DEFAULT_COLLECTOR_URL,
        global = true
    )]
    collector: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: ingest agent streams, store history, answer queries.
    Serve {
        /// Address to listen on for agents and the CLI (gRPC).
        #[arg(long, env = "GPUFLEET_LISTEN", default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        /// Where the embedded database lives.
        #[arg(long, env = "GPUFLEET_DATA_DIR", default_value = "/var/lib/gpufleet")]
        data_dir: PathBuf,
        /// Ask every agent to sample at this interval (default: agents keep their own).
        #[arg(long, value_parser = humantime::parse_duration)]
        sample_interval: Option<Duration>,
        /// Recent samples kept in memory per node for diagnosis.
        #[arg(long, default_value_t = 300)]
        window_samples: usize,
        /// How long samples and events are kept in the database.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: Duration,
    },
    /// List the fleet's nodes with their GPUs, versions, health and labels.
    Nodes {
        /// Only the nodes whose labels match, in kubectl's syntax: `pool=training`,
        /// `pool=training,rack!=r13`, `rack in (r12,r13)`, `gpu-spare`, `!draining`.
        #[arg(short = 'l', long, value_parser = Selector::parse)]
        selector: Option<Selector>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one node: inventory, versions, latest readings, findings, recent events.
    Node {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Name the causes of underperformance, most impactful first (whole fleet, or one node).
    Diagnose {
        node: Option<String>,
        /// Also list every finding that fired since then, resolved or not: a duration back
        /// from now (`2h`, `30m`) or an RFC 3339 time (`2026-11-25T08:00:00Z`).
        #[arg(long, value_parser = parse_since)]
        since: Option<UnixMs>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a whole simulated fleet with injected faults on this machine and show the diagnosis.
    Demo {
        /// Scenario file (default: the built-in demo, scenarios/demo.toml).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Give up if the expected causes are not all named by then.
        #[arg(long, default_value = "50s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Agents' sample interval.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GPUFLEET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    if let Err(e) = rt.block_on(real_main(cli)) {
        eprintln!("gpufleet: error: {e:#}");
        std::process::exit(1);
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            sample_interval,
            window_samples,
            retention,
        } => {
            let mut config = ServerConfig::new(listen, data_dir);
            config.window = Window {
                samples: window_samples.max(10),
                ..Window::default()
            };
            config.sample_interval_ms =
                sample_interval.map(|d| d.as_millis().clamp(100, u32::MAX as u128) as u32);
            config.retention = retention;
            let server = server::start(config).await?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; }
                _ = terminate() => {}
            }
            tracing::info!("shutting down");
            server.stop().await
        }
        Command::Nodes { selector, client } => {
            let selector = selector.unwrap_or_default();
            let mut c = cli::connect(&client.collector).await?;
            let nodes = cli::nodes(&mut c, &selector).await?;
            match client.output {
                Output::Json => print_json(&nodes),
                Output::Table if nodes.is_empty() && !selector.is_everything() => {
                    print!("{}", cli::render::no_node_matches(&selector));
                    Ok(())
                }
                Output::Table => {
                    print!("{}", cli::render::nodes(&nodes, UnixMs::now()));
                    Ok(())
                }
            }
        }
        Command::Node { name, client } => {
            let mut c = cli::connect(&client.collector).await?;
            let d = cli::node(&mut c, &name).await?;
            match client.output {
                Output::Json => print_json(&d),
                Output::Table => {
                    print!("{}", cli::render::node(&d, UnixMs::now()));
                    Ok(())
                }
            }
        }
        Command::Diagnose {
            node,
            since,
            client,
        } => {
            let mut c = cli::connect(&client.collector).await?;
            let d = cli::diagnose(&mut c, node.as_deref(), since).await?;
            match client.output {
                Output::Json => print_json(&d),
                Output::Table => {
                    print!("{}", cli::render::diagnosis(&d));
                    Ok(())
                }
            }
        }
        Command::Demo {
            scenario,
            timeout,
            interval,
        } => {
            let scenario = match scenario {
                Some(p) => Scenario::load(&p)?,
                None => Scenario::parse(demo::DEMO_SCENARIO, "built-in demo scenario")
                    .context("the built-in demo scenario is broken")?,
            };
            let out = demo::run(demo::DemoOptions {
                scenario,
                timeout,
                sample_interval: interval,
            })
            .await?;
            print!("{out}");
            Ok(())
        }
    }
}

/// `--since`: a duration back from now, or an RFC 3339 timestamp.
fn parse_since(s: &str) -> Result<UnixMs, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(UnixMs::now().plus_ms(-(d.as_millis().min(i64::MAX as u128) as i64)));
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| {
            UnixMs(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            )
        })
        .map_err(|_| {
            format!("{s:?} is neither a duration (2h, 30m) nor a time (2026-11-25T08:00:00Z)")
        })
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
