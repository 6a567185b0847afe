//! `gpufleet demo`: a whole fleet on one machine with no GPU — a collector on an ephemeral
//! loopback port with a temporary data dir, one simulated agent per node of a scenario
//! (real gRPC over loopback), faults injected, and the diagnosis printed once every expected
//! cause has been named.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gpufleet_collector::cli;
use gpufleet_collector::server::{self, ServerConfig};
use gpufleet_model::{Finding, UnixMs};
use gpufleet_sim::Scenario;

use crate::agents::spawn_labelled_scenario_agents;

/// The built-in demo scenario (also at scenarios/demo.toml).
pub const DEMO_SCENARIO: &str = include_str!("../../scenarios/demo.toml");

pub struct DemoOptions {
    pub scenario: Scenario,
    pub timeout: Duration,
    pub sample_interval: Duration,
}

/// Whether a finding satisfies an expectation of the scenario.
fn matches(f: &Finding, node: &str, gpu: Option<u32>, cause: &str) -> bool {
    f.node == node && f.rule_id.starts_with(cause) && (gpu.is_none() || f.gpu_index == gpu)
}

pub async fn run(opts: DemoOptions) -> Result<String> {
    let started = Instant::now();
    let data = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("valid address"),
        data.path().to_path_buf(),
    );
    config.eval_interval = Duration::from_millis(500);
    let server = server::start(config).await?;
    let sc = Arc::new(opts.scenario);
    let fleet_spec = &sc.fleet;
    // Labelled as `gpufleet-agent run --label pool=demo` would, so the table shows the column.
    let agents = spawn_labelled_scenario_agents(&sc, &server.url(), opts.sample_interval, |_| {
        [("pool".to_string(), "demo".to_string())].into()
    })?;
    eprintln!(
        "demo: collector at {} (data in {}), {} simulated node(s) × {} {} GPU(s), scenario {:?}",
        server.url(),
        data.path().display(),
        agents.len(),
        fleet_spec.gpus_per_node,
        fleet_spec.model,
        sc.name
    );

    let mut client = cli::connect(&server.url()).await?;
    let deadline = Instant::now() + opts.timeout;
    let (diagnosis, missing) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = cli::diagnose(&mut client, None, None).await?;
        let missing: Vec<String> = sc
            .expect
            .iter()
            .filter(|e| {
                !d.findings
                    .iter()
                    .any(|f| matches(f, &e.node, e.gpu, &e.cause))
            })
            .map(|e| {
                format!(
                    "{} on {}{}",
                    e.cause,
                    e.node,
                    e.gpu.map(|g| format!(" GPU {g}")).unwrap_or_default()
                )
            })
            .collect();
        let connected = server.fleet.with_nodes(|n| {
            n.iter()
                .filter(|n| n.connected && n.latest().is_some())
                .count()
        });
        if connected == agents.len() && missing.is_empty() {
            break (d, missing);
        }
        if Instant::now() > deadline {
            break (d, missing);
        }
    };
    let nodes = cli::nodes(&mut client, &gpufleet_model::Selector::everything()).await?;
    let now = UnixMs::now();
    let mut out = String::new();
    out += &format!("Fleet ({} nodes)\n", nodes.len());
    out += &cli::render::nodes(&nodes, now);
    out += "\nDiagnosis\n";
    out += &cli::render::diagnosis(&diagnosis);
    out += &format!(
        "\nDemo finished in {:.1}s.\n",
        started.elapsed().as_secs_f64()
    );
    for a in agents {
        a.stop().await;
    }
    server.stop().await?;
    if !missing.is_empty() {
        print!("{out}");
        bail!(
            "the demo's faults were not all diagnosed within {:?}: missing {}",
            opts.timeout,
            missing.join("; ")
        );
    }
    Ok(out)
}
