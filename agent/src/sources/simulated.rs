//! Simulated GPUs and host: the agent's source traits over [`gpufleet_sim`], so `--simulate`
//! runs the same sampling, detection and uplink as NVML does.

use gpufleet_model::{Event, GpuInventory, GpuSample, HostInfo, HostSample, UnixMs};

pub use gpufleet_sim::{
    Scenario, SimConfig, SimulatedGpus, SimulatedHost, model_by_name, model_list, models,
};

use super::cadence::{Cadence, HoldSlow};
use super::{GpuSource, HostSource, SourceError};

/// The simulated GPUs as the agent reads them: every field computed, then the read cadence
/// applied as NVML readings apply it, so tests in virtual time see what ships.
pub struct SimulatedSource {
    gpus: SimulatedGpus,
    hold: HoldSlow,
}

/// Builds a simulated node's GPU and host sources.
pub fn simulated_node(cfg: SimConfig) -> Result<(SimulatedSource, SimulatedHost), SourceError> {
    let (gpus, host) = gpufleet_sim::simulated_node(cfg)?;
    Ok((
        SimulatedSource {
            gpus,
            hold: HoldSlow::default(),
        },
        host,
    ))
}

impl From<gpufleet_sim::Error> for SourceError {
    fn from(e: gpufleet_sim::Error) -> Self {
        match e {
            gpufleet_sim::Error::Scenario { path, reason } => {
                SourceError::Scenario { path, reason }
            }
            gpufleet_sim::Error::Node(reason) => SourceError::Other(reason),
        }
    }
}

impl GpuSource for SimulatedSource {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn inventory(&mut self, now: UnixMs) -> Result<GpuInventory, SourceError> {
        Ok(self.gpus.inventory(now))
    }

    fn sample(&mut self, now: UnixMs) -> Vec<GpuSample> {
        let mut s = self.gpus.sample(now);
        self.hold.apply(&mut s, now);
        s
    }

    fn events(&mut self, now: UnixMs) -> Vec<Event> {
        self.gpus.events(now)
    }

    fn inventory_changed(&mut self, now: UnixMs) -> bool {
        self.gpus.inventory_changed(now)
    }

    fn set_cadence(&mut self, cadence: Cadence) {
        self.hold.cadence = cadence;
    }
}

impl HostSource for SimulatedHost {
    fn info(&mut self, now: UnixMs) -> HostInfo {
        SimulatedHost::info(self, now)
    }

    fn sample(&mut self, now: UnixMs) -> HostSample {
        SimulatedHost::sample(self, now)
    }

    fn events(&mut self, now: UnixMs) -> Vec<Event> {
        SimulatedHost::events(self, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_sources_answer_like_the_simulator() {
        let cfg = |name: &str| SimConfig {
            node_name: name.into(),
            model: "h100".into(),
            gpu_count: 8,
            seed: 1,
            scenario: None,
            start: UnixMs(1_000),
        };
        let (mut g, mut h) = simulated_node(cfg("gpu-node-01")).unwrap();
        let (direct, direct_host) = gpufleet_sim::simulated_node(cfg("gpu-node-01")).unwrap();
        let now = UnixMs(61_000);
        assert_eq!(GpuSource::kind(&g), "simulated");
        assert_eq!(GpuSource::sample(&mut g, now), direct.sample(now));
        assert_eq!(
            GpuSource::inventory(&mut g, now).unwrap(),
            direct.inventory(now)
        );
        assert_eq!(HostSource::sample(&mut h, now), direct_host.sample(now));
        let err = simulated_node(SimConfig {
            model: "h200".into(),
            ..cfg("gpu-node-01")
        })
        .map(|_| ())
        .expect_err("unknown model");
        assert!(matches!(err, SourceError::Other(_)), "{err}");
        assert!(
            err.to_string().contains("unknown GPU model `h200`"),
            "{err}"
        );
    }
}
