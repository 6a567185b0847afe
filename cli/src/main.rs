//! `gpufleet` command line: the collector (`serve`), the ops CLI (`nodes`, `node`,
//! `diagnose`, `audit`, `versions`, `changes`, `history`, `alerts`, `silence`), the
//! collector's tokens (`token`, on the collector host) and the one-command `demo`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gpufleet_collector::cli::audit::{self as audit_out, AuditOutput};
use gpufleet_collector::cli::{self, Output};
use gpufleet_collector::compliance::policy::{Policy, PolicyError};
use gpufleet_collector::config::{self as collector_config, CollectorConfig};
use gpufleet_collector::server;
use gpufleet_harness::demo;
use gpufleet_model::config_file::{ConfigFile, LogFormat};
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

/// The collector to ask (for commands with their own `-o`).
#[derive(clap::Args)]
struct CollectorArg {
    /// Collector to ask.
    #[arg(
        long,
        env = "GPUFLEET_COLLECTOR",
        default_value = gpufleet_collector::DEFAULT_COLLECTOR_URL
    )]
    collector: String,
    #[command(flatten)]
    credentials: CredentialArgs,
}

/// How the CLI proves who it is (docs/security.md).
#[derive(clap::Args)]
struct CredentialArgs {
    /// CA certificate (PEM) that signed the collector's: connect over TLS (https://).
    #[arg(long, env = "GPUFLEET_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for a collector that requires them (mutual TLS).
    #[arg(long, env = "GPUFLEET_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "GPUFLEET_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// File holding a read or admin token (`gpufleet token create`); GPUFLEET_TOKEN gives the
    /// token itself instead.
    #[arg(long, env = "GPUFLEET_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
}

impl CredentialArgs {
    fn credentials(&self) -> Result<gpufleet_proto::client::Credentials> {
        use gpufleet_proto::client::TokenSource;
        let token = match (&self.token_file, std::env::var("GPUFLEET_TOKEN")) {
            (Some(f), _) => TokenSource::File(f.clone()),
            (None, Ok(t)) => TokenSource::Value(t),
            (None, Err(std::env::VarError::NotPresent)) => TokenSource::None,
            (None, Err(std::env::VarError::NotUnicode(_))) => {
                anyhow::bail!("GPUFLEET_TOKEN is not valid UTF-8")
            }
        };
        Ok(gpufleet_proto::client::Credentials {
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token,
        })
    }
}

impl CollectorArg {
    async fn connect(&self) -> Result<cli::Client> {
        cli::connect_with(&self.collector, &self.credentials.credentials()?).await
    }
}

impl ClientArgs {
    async fn connect(&self) -> Result<cli::Client> {
        cli::connect_with(&self.collector, &self.credentials.credentials()?).await
    }
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
    #[command(flatten)]
    credentials: CredentialArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: ingest agent streams, store history, answer queries, serve /metrics.
    Serve {
        /// Config file (TOML, docs/config.md). Default: /etc/gpufleet/collector.toml when it
        /// exists. Environment variables and flags override it.
        #[arg(long, env = "GPUFLEET_CONFIG")]
        config: Option<PathBuf>,
        /// Print the complete default config file, every key commented, and exit.
        #[arg(long)]
        print_default_config: bool,
        #[command(flatten)]
        settings: Box<CollectorConfig>,
        /// Send every alert to this generic webhook (JSON, docs/alerts.md), no routing file
        /// needed. Repeatable; adds to `alerts.webhooks` in the config file.
        #[arg(long = "alert-webhook", value_name = "URL")]
        alert_webhooks: Vec<String>,
    },
    /// Firing alerts and the silences holding them back; `--deliveries`: recent notifications
    /// and how their delivery went; `alerts test SINK`: send a test notification.
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsAction>,
        /// List recent deliveries instead (newest first).
        #[arg(long)]
        deliveries: bool,
        /// Most deliveries listed.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hold back alerts about a node (or one GPU, or causes with a prefix) for a while.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Audit driver/firmware compliance: every selected node against a policy (or the fleet
    /// majority per GPU model). Exit status 0: all comply; 1: some violate or are stale;
    /// 2: bad usage, bad policy, or the collector cannot be reached.
    Audit {
        /// Policy file (TOML, docs/policy.md). Default: the collector's `serve --policy`, else
        /// the most common value among nodes of the same GPU model.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Only nodes whose labels match, kubectl-style (`pool=training,rack!=r13`).
        #[arg(long, short = 'l', default_value = "")]
        selector: String,
        /// A node silent for this long is stale (never compliant).
        #[arg(long, default_value_t = gpufleet_collector::compliance::audit::DEFAULT_STALE_AFTER.into())]
        stale_after: humantime::Duration,
        #[command(flatten)]
        collector: CollectorArg,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = AuditOutput::Table)]
        output: AuditOutput,
        /// In the table, list compliant nodes too (by default they are only counted; JSON,
        /// CSV and JUnit always carry every node).
        #[arg(long)]
        all: bool,
    },
    /// The fleet's version matrix: per GPU model, nodes and GPUs per value of one field.
    Versions {
        /// driver, cuda, vbios, inforom, gsp, kernel, os (or any policy field name).
        #[arg(long, default_value = "driver")]
        field: String,
        /// Only nodes whose labels match, kubectl-style.
        #[arg(long, short = 'l', default_value = "")]
        selector: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every version or mode change on the selected nodes (driver, firmware, kernel, modes,
    /// GPU count, a GPU swapped), with old and new value, oldest first.
    Changes {
        /// Only changes since then: a duration back from now (`24h`, `7d`) or an RFC 3339 time.
        #[arg(long, default_value = DEFAULT_CHANGES_SINCE, value_parser = parse_since)]
        since: UnixMs,
        /// Only nodes whose labels match, kubectl-style.
        #[arg(long, short = 'l', default_value = "")]
        selector: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One node's version and mode changes, oldest first.
    History {
        node: String,
        /// Only changes since then: a duration back from now (`7d`) or an RFC 3339 time.
        #[arg(long, default_value = DEFAULT_HISTORY_SINCE, value_parser = parse_since)]
        since: UnixMs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One reading of a node over time (temperature, power, utilization, clocks, ...): min,
    /// mean and max per step, from the 1-minute or 1-hour aggregates for long windows
    /// (docs/storage.md). `gpufleet series --list` names the readings.
    Series {
        /// The node.
        #[arg(required_unless_present = "list")]
        node: Option<String>,
        /// The reading, e.g. `temperature`, `power`, `utilization`, `cpu`.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the readings there are.
        #[arg(long)]
        list: bool,
        /// Only this GPU (default: every GPU of the node).
        #[arg(long)]
        gpu: Option<u32>,
        /// Window start: a duration back from now (`24h`, `30d`) or an RFC 3339 time.
        #[arg(long, default_value = DEFAULT_SERIES_SINCE, value_parser = parse_since)]
        since: UnixMs,
        /// Window end (default: now).
        #[arg(long, value_parser = parse_since)]
        until: Option<UnixMs>,
        /// Bucket width (`10s`, `1m`, `1h`); whole hours read the 1-hour tier, whole minutes
        /// the 1-minute tier. Default: about 300 points over the window.
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<std::time::Duration>,
        /// Which aggregate the table shows per bucket (JSON has all).
        #[arg(long, value_enum, default_value = "mean")]
        stat: cli::series::Stat,
        #[command(flatten)]
        client: ClientArgs,
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
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Node {
        #[arg(required = true)]
        name: Option<String>,
        #[command(subcommand)]
        action: Option<NodeAction>,
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
    /// The collector's bearer tokens (docs/security.md): run on the collector host, as the
    /// collector's user; they are kept (hashed) in its database.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        /// The collector's config file, for its `data_dir`. Default:
        /// /etc/gpufleet/collector.toml when it exists.
        #[arg(long, env = "GPUFLEET_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The collector's data directory (default: the config's `data_dir`, else
        /// /var/lib/gpufleet).
        #[arg(long, env = "GPUFLEET_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
        output: Output,
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

/// `gpufleet changes` looks this far back by default.
const DEFAULT_CHANGES_SINCE: &str = "24h";
/// `gpufleet history NODE` looks this far back by default.
const DEFAULT_HISTORY_SINCE: &str = "7d";
/// `gpufleet series` looks this far back by default.
const DEFAULT_SERIES_SINCE: &str = "24h";

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token and print it, once. Default: node NAME's token, which may only stream as
    /// that node.
    Create {
        name: String,
        /// A token for the query service's reading calls (`gpufleet nodes`, dashboards).
        #[arg(long, conflicts_with = "admin")]
        read_only: bool,
        /// A token that may also change state (silences, `node rm`, `alerts test`).
        #[arg(long)]
        admin: bool,
        /// Replace the token of that name (the old one stops working at once).
        #[arg(long)]
        replace: bool,
    },
    /// Every token: name, scope, created, last used (never the token).
    List,
    /// Remove a token: calls with it are refused within a second, and its open stream ends.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Forget a decommissioned node: its state and everything stored about it. Its agent must
    /// be stopped first; its firing findings resolve.
    Rm { name: String },
}

#[derive(Subcommand)]
enum AlertsAction {
    /// Send a clearly marked test notification through a configured sink and print the
    /// receiver's answer (exit 1 if it was not delivered).
    Test {
        /// Sink name (`gpufleet alerts` lists them; `webhook-1` is the first --alert-webhook).
        sink: String,
    },
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Add a silence: matching alerts are recorded, not sent, until it expires.
    Add {
        #[arg(long)]
        node: String,
        /// Only this GPU (default: the whole node).
        #[arg(long)]
        gpu: Option<u32>,
        /// Only causes starting with this, e.g. `gpu.thermal` (default: all).
        #[arg(long, default_value = "")]
        cause: String,
        /// How long it holds: `2h`, `30m`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (shown in `silence list`).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List active silences (`--all`: expired ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Remove a silence by id.
    Rm { id: i64 },
}

fn main() {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Gating commands keep 1 for "not compliant": their errors (bad policy, no collector) are 2.
    let error_status = match cli.command {
        Command::Audit { .. } | Command::Versions { .. } => 2,
        _ => 1,
    };
    let fail = |e: anyhow::Error| -> ! {
        eprintln!("gpufleet: error: {e:#}");
        std::process::exit(error_status);
    };
    let mut log_format = LogFormat::Human;
    if let Command::Serve {
        config,
        print_default_config,
        settings,
        ..
    } = &mut cli.command
    {
        if *print_default_config {
            print!("{}", CollectorConfig::default_file());
            return;
        }
        let serve = matches
            .subcommand_matches("serve")
            .expect("the serve subcommand");
        **settings =
            resolve_serve_config(config.as_deref(), settings, serve).unwrap_or_else(|e| fail(e));
        settings
            .check()
            .map_err(anyhow::Error::msg)
            .unwrap_or_else(|e| fail(e));
        log_format = settings.log_format;
    }
    init_logging(log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    match rt.block_on(real_main(cli)) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => fail(e),
    }
}

/// Built-in defaults < the config file < environment variables < flags.
fn resolve_serve_config(
    path: Option<&std::path::Path>,
    flags: &CollectorConfig,
    matches: &clap::ArgMatches,
) -> Result<CollectorConfig> {
    use clap::parser::ValueSource;
    let file = ConfigFile::read_given_or_default(
        path,
        std::path::Path::new(collector_config::DEFAULT_PATH),
    )?;
    let user_set = |key: &str| {
        matches!(
            matches.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    Ok(CollectorConfig::resolve(&file, flags, user_set)?)
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

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs the command; `Ok` carries the exit status.
async fn real_main(cli: Cli) -> Result<i32> {
    run(cli.command).await
}

async fn run(command: Command) -> Result<i32> {
    match command {
        Command::Audit {
            policy,
            selector,
            stale_after,
            collector,
            output,
            all,
        } => {
            let selector = gpufleet_model::Selector::parse(&selector)?;
            let policy = match policy {
                Some(path) => {
                    // Checked here first, so a bad file is reported with its line even when
                    // the collector is unreachable.
                    let origin = path.display().to_string();
                    let text = std::fs::read_to_string(&path).map_err(|e| PolicyError {
                        origin: origin.clone(),
                        line: None,
                        message: format!("cannot read it: {e}"),
                    })?;
                    Policy::parse(&text, &origin)?;
                    Some((text, origin))
                }
                None => None,
            };
            let mut c = collector.connect().await?;
            let a = cli::audit(&mut c, policy, &selector.to_string(), stale_after.into()).await?;
            match output {
                AuditOutput::Table => print!("{}", audit_out::table_of(&a, UnixMs::now(), all)),
                AuditOutput::Json => print_json(&a)?,
                AuditOutput::Csv => print!("{}", audit_out::csv(&a)?),
                AuditOutput::Junit => print!("{}", audit_out::junit(&a)?),
            }
            if !matches!(output, AuditOutput::Table) {
                eprintln!("{}", audit_out::summary_line(&a));
            }
            Ok(if a.summary.all_compliant() { 0 } else { 1 })
        }
        Command::Versions {
            field,
            selector,
            client,
        } => {
            let selector = gpufleet_model::Selector::parse(&selector)?;
            if gpufleet_collector::compliance::fields::field(&field).is_none() {
                anyhow::bail!(
                    "unknown field {field:?}; use driver, cuda, vbios, inforom, gsp, kernel, os or one of {}",
                    gpufleet_collector::compliance::fields::field_names()
                );
            }
            let mut c = client.connect().await?;
            let m = cli::versions(&mut c, &field, &selector.to_string()).await?;
            match client.output {
                Output::Json => print_json(&m)?,
                Output::Table => print!("{}", audit_out::versions_table(&m)),
            }
            Ok(0)
        }
        Command::Serve {
            settings,
            alert_webhooks,
            ..
        } => {
            let policy_file = match &settings.policy {
                Some(path) => Some(Arc::new(
                    Policy::load(path).context("cannot start with this policy (--policy)")?,
                )),
                None => None,
            };
            let mut config = settings.server_config();
            config.alerts.webhooks.extend(alert_webhooks);
            config.alerts.check()?;
            let server = server::start(config).await?;
            if let Some(tls) = server.auth.tls() {
                tokio::spawn(reload_tls_on_sighup(tls.clone()));
            }
            if let (Some(path), Some(p)) = (settings.policy, policy_file) {
                tracing::info!("compliance: {}", p.describe());
                server.evaluator.set_policy(Some(p));
                tokio::spawn(reload_on_sighup(path, server.evaluator.clone()));
            }
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; }
                _ = terminate() => {}
            }
            tracing::info!("shutting down");
            server.stop().await?;
            Ok(0)
        }
        Command::Changes {
            since,
            selector,
            client,
        } => {
            let selector = gpufleet_model::Selector::parse(&selector)?;
            let mut c = client.connect().await?;
            let changes = cli::changes(&mut c, None, Some(since), &selector.to_string()).await?;
            match client.output {
                Output::Json => print_json(&changes)?,
                Output::Table => print!(
                    "{}",
                    cli::changes::table_of(&changes, cli::changes::Scope::Fleet, Some(since))
                ),
            }
            Ok(0)
        }
        Command::Series {
            node,
            name,
            list,
            gpu,
            since,
            until,
            step,
            stat,
            client,
        } => {
            let mut c = client.connect().await?;
            let node = node.unwrap_or_default();
            let ask = cli::series::Ask {
                node: &node,
                name: if list {
                    ""
                } else {
                    name.as_deref().unwrap_or_default()
                },
                gpu,
                since,
                until,
                step_ms: step.map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64),
            };
            let r = cli::series::fetch(&mut c, &ask).await?;
            match (client.output, list) {
                (Output::Json, true) => print_json(&cli::series::list_json(&r))?,
                (Output::Json, false) => print_json(&cli::series::json(&r, &node))?,
                (Output::Table, true) => print!("{}", cli::series::list(&r)),
                (Output::Table, false) => print!("{}", cli::series::render(&r, &node, stat)),
            }
            Ok(0)
        }
        Command::History {
            node,
            since,
            client,
        } => {
            let mut c = client.connect().await?;
            let changes = cli::changes(&mut c, Some(&node), Some(since), "").await?;
            match client.output {
                Output::Json => print_json(&changes)?,
                Output::Table => print!(
                    "{}",
                    cli::changes::table_of(&changes, cli::changes::Scope::Node, Some(since))
                ),
            }
            Ok(0)
        }
        Command::Alerts {
            action: Some(AlertsAction::Test { sink }),
            client,
            ..
        } => {
            let mut c = client.connect().await?;
            let (delivered, answer) = cli::alerts::test_sink(&mut c, &sink).await?;
            match client.output {
                Output::Json => print_json(&serde_json::json!({
                    "sink": sink, "delivered": delivered, "answer": answer
                }))?,
                Output::Table if delivered => println!("{sink}: delivered: {answer}"),
                Output::Table => println!("{sink}: NOT delivered: {answer}"),
            }
            Ok(if delivered { 0 } else { 1 })
        }
        Command::Alerts {
            action: None,
            deliveries,
            limit,
            client,
        } => {
            let mut c = client.connect().await?;
            let now = UnixMs::now();
            if deliveries {
                let d = cli::alerts::deliveries(&mut c, limit).await?;
                match client.output {
                    Output::Json => print_json(&d)?,
                    Output::Table => print!("{}", cli::alerts::deliveries_table(&d, now)),
                }
            } else {
                let a = cli::alerts::list(&mut c).await?;
                match client.output {
                    Output::Json => print_json(&a)?,
                    Output::Table => print!("{}", cli::alerts::alerts_table(&a, now)),
                }
            }
            Ok(0)
        }
        Command::Silence { action, client } => {
            let mut c = client.connect().await?;
            let now = UnixMs::now();
            match action {
                SilenceAction::Add {
                    node,
                    gpu,
                    cause,
                    duration,
                    comment,
                } => {
                    let s = cli::alerts::add_silence(
                        &mut c,
                        cli::alerts::SilenceRequest {
                            node,
                            gpu,
                            cause_prefix: cause,
                            duration,
                            comment,
                        },
                    )
                    .await?;
                    match client.output {
                        Output::Json => print_json(&s)?,
                        Output::Table => print!(
                            "silence #{} added\n{}",
                            s.id,
                            cli::alerts::silences_table(std::slice::from_ref(&s), now)
                        ),
                    }
                }
                SilenceAction::List { all } => {
                    let ss = cli::alerts::silences(&mut c, all).await?;
                    match client.output {
                        Output::Json => print_json(&ss)?,
                        Output::Table => print!("{}", cli::alerts::silences_table(&ss, now)),
                    }
                }
                SilenceAction::Rm { id } => {
                    cli::alerts::remove_silence(&mut c, id).await?;
                    println!("silence #{id} removed");
                }
            }
            Ok(0)
        }
        Command::Nodes { selector, client } => {
            let selector = selector.unwrap_or_default();
            let mut c = client.connect().await?;
            let cli::NodeListing {
                nodes,
                security_warning,
            } = cli::list_nodes(&mut c, &selector).await?;
            if let Some(w) = security_warning {
                eprintln!("warning: {w}");
            }
            match client.output {
                Output::Json => print_json(&nodes)?,
                Output::Table if nodes.is_empty() && !selector.is_everything() => {
                    print!("{}", cli::render::no_node_matches(&selector))
                }
                Output::Table => print!("{}", cli::render::nodes(&nodes, UnixMs::now())),
            }
            Ok(0)
        }
        Command::Node {
            action: Some(NodeAction::Rm { name }),
            client,
            ..
        } => {
            let mut c = client.connect().await?;
            cli::remove_node(&mut c, &name).await?;
            println!("node {name} removed");
            Ok(0)
        }
        Command::Node { name, client, .. } => {
            let name =
                name.context("name a node: `gpufleet node NAME` (or `gpufleet node rm NAME`)")?;
            let mut c = client.connect().await?;
            let d = cli::node(&mut c, &name).await?;
            match client.output {
                Output::Json => print_json(&d)?,
                Output::Table => print!("{}", cli::render::node(&d, UnixMs::now())),
            }
            Ok(0)
        }
        Command::Diagnose {
            node,
            since,
            client,
        } => {
            let mut c = client.connect().await?;
            let d = cli::diagnose(&mut c, node.as_deref(), since).await?;
            match client.output {
                Output::Json => print_json(&d)?,
                Output::Table => print!("{}", cli::render::diagnosis(&d)),
            }
            Ok(0)
        }
        Command::Token {
            action,
            config,
            data_dir,
            output,
        } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => {
                    let file = ConfigFile::read_given_or_default(
                        config.as_deref(),
                        std::path::Path::new(collector_config::DEFAULT_PATH),
                    )?;
                    file.parse_as::<CollectorConfig>()?.data_dir
                }
            };
            let mut store = cli::tokens::open(&data_dir)?;
            match action {
                TokenAction::Create {
                    name,
                    read_only,
                    admin,
                    replace,
                } => {
                    use gpufleet_collector::auth::tokens::Scope;
                    let scope = match (read_only, admin) {
                        (_, true) => Scope::Admin,
                        (true, _) => Scope::Read,
                        _ => Scope::Node,
                    };
                    let token = cli::tokens::create(&mut store, &name, scope, replace)?;
                    match output {
                        Output::Json => print_json(&serde_json::json!({
                            "name": name, "scope": scope, "token": token
                        }))?,
                        Output::Table => println!("{token}"),
                    }
                    eprintln!(
                        "{scope} token {name:?} stored (hashed) in {}; this is the only time it \
                         is shown: put it in the client's --token-file (mode 0600)",
                        store.path().display()
                    );
                }
                TokenAction::List => {
                    let list = store.list()?;
                    match output {
                        Output::Json => print_json(&list)?,
                        Output::Table => print!("{}", cli::tokens::table_of(&list)),
                    }
                }
                TokenAction::Revoke { name } => {
                    store.revoke(&name)?;
                    println!("token {name:?} revoked");
                }
            }
            Ok(0)
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
            Ok(0)
        }
    }
}

/// Re-reads the policy on every SIGHUP; a bad file keeps the policy in force and says why.
async fn reload_on_sighup(path: PathBuf, evaluator: Arc<gpufleet_collector::evaluator::Evaluator>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the policy will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match Policy::load(&path) {
            Ok(p) => {
                tracing::info!("compliance: reloaded {}", p.describe());
                evaluator.set_policy(Some(Arc::new(p)));
            }
            Err(e) => tracing::error!("{e}; keeping the policy in force"),
        }
    }
}

/// Re-reads the TLS certificate, key and client CA on every SIGHUP; new connections use them,
/// open ones keep theirs. A bad file keeps the settings in force and says why.
async fn reload_tls_on_sighup(tls: Arc<gpufleet_collector::auth::tls::ServerTls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: TLS certificates will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let files = tls.files().clone();
        let t = tls.clone();
        match tokio::task::spawn_blocking(move || t.reload()).await {
            Ok(Ok(())) => tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded"),
            Ok(Err(e)) => tracing::error!("{e}; keeping the TLS settings in force"),
            Err(e) => tracing::error!("reloading TLS failed: {e}"),
        }
    }
}

/// `--since`: a duration back from now, or an RFC 3339 timestamp.
fn parse_since(s: &str) -> Result<UnixMs, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(UnixMs::now().plus_ms(-(d.as_millis().min(i64::MAX as u128) as i64)));
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map(|t| {
            UnixMs(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            )
        })
        .map_err(|_| {
            format!("{s:?} is neither a duration (2h, 30m) nor a time (2026-11-25T08:00:00Z)")
        })?;
    // A time still to come selects nothing; say so rather than answer with an empty list.
    if t > UnixMs::now().plus_ms(60_000) {
        return Err(format!(
            "{s:?} is in the future; --since takes a time in the past, or a duration back from now (2h)"
        ));
    }
    Ok(t)
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

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_durations_and_past_times_only() {
        assert!(parse_since("2h").is_ok());
        assert!(parse_since("2026-11-25T08:00:00Z").is_ok());
        let e = parse_since("9999-12-31T23:59:59Z").unwrap_err();
        assert!(e.contains("is in the future"), "{e}");
        assert!(
            parse_since("yesterday-ish")
                .unwrap_err()
                .contains("neither a duration")
        );
    }
}
