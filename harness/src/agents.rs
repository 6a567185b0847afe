//! In-process simulated agents streaming to a collector over real gRPC, built exactly as
//! `gpufleet-agent run --simulate` builds them.

use std::sync::Arc;
use std::time::Duration;

use gpufleet_agent::detect::{DEFAULT_SATURATION_HOLD, Detector, saturation::Thresholds};
use gpufleet_agent::uplink::UplinkConfig;
use gpufleet_agent::{GpuBackend, RunningAgent, start_node};
use gpufleet_model::{Labels, NodeIdentity, UnixMs};
use gpufleet_sim::Scenario;

/// The agent's local detector as `gpufleet-agent run` builds it for a simulated node (no
/// baseline on disk).
pub fn shipped_detector() -> Detector {
    Detector::new(None, Thresholds::default(), DEFAULT_SATURATION_HOLD)
}

/// A simulated agent (`gpus` of `model`, no scenario) named `node`, streaming to `uplink`
/// every `interval` (with `uplink.labels`, as `--label` gives them). Must be called inside a
/// tokio runtime.
pub fn spawn_simulated_agent(
    node: &str,
    model: &str,
    gpus: u32,
    uplink: UplinkConfig,
    interval: Duration,
) -> RunningAgent {
    let backend = GpuBackend::Simulated {
        gpus,
        model: model.into(),
        scenario: None,
        seed: 1,
    };
    let identity = NodeIdentity {
        hostname: node.into(),
        ..Default::default()
    };
    let (agent, events) = start_node(identity, &backend, shipped_detector(), UnixMs::now())
        .expect("a simulated node without a scenario always starts");
    gpufleet_agent::spawn(agent, events, uplink, interval)
}

/// One agent per node of `scenario`, streaming to `collector_url`, without labels. Must be
/// called inside a tokio runtime.
pub fn spawn_scenario_agents(
    scenario: &Arc<Scenario>,
    collector_url: &str,
    interval: Duration,
) -> anyhow::Result<Vec<RunningAgent>> {
    spawn_labelled_scenario_agents(scenario, collector_url, interval, |_| Labels::new())
}

/// [`spawn_scenario_agents`], each node labelled with what `labels` gives for its name (as
/// its `--label` flags would).
pub fn spawn_labelled_scenario_agents(
    scenario: &Arc<Scenario>,
    collector_url: &str,
    interval: Duration,
    labels: impl Fn(&str) -> Labels,
) -> anyhow::Result<Vec<RunningAgent>> {
    let fleet = &scenario.fleet;
    let now = UnixMs::now();
    let mut agents = Vec::new();
    for (i, name) in scenario.node_names().into_iter().enumerate() {
        let backend = GpuBackend::Simulated {
            gpus: fleet.gpus_per_node,
            model: fleet.model_for(i).to_string(),
            scenario: Some(scenario.clone()),
            seed: fleet.seed.wrapping_add(i as u64),
        };
        let identity = NodeIdentity {
            hostname: name,
            machine_id: format!("demo-{i:04}"),
            boot_id: String::new(),
        };
        let mut uplink = UplinkConfig::new(collector_url.to_string());
        uplink.labels = labels(&identity.hostname);
        let (agent, events) = start_node(identity, &backend, shipped_detector(), now)?;
        agents.push(gpufleet_agent::spawn(agent, events, uplink, interval));
    }
    Ok(agents)
}
