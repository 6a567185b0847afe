//! `gpufleet-sim`: simulated GPU servers, deterministic and in virtual time — GPU models, host
//! profiles, noise, scenario files and the fault catalog. It depends on the domain model only;
//! the agent adapts it to its source traits, and tests and the demo play scenarios with it.
//!
//! A simulated node answers what NVML and the host would: inventory, samples and events.
//! Every reading is a pure function of (config, virtual time `now`, GPU index): noise is a hash
//! of (seed, node, GPU, field, second), and counters are integrals of the simulated state, so
//! the same inputs always give the same outputs and nothing drifts with the sampling rate.
//! Faults come from a [`Scenario`] (see `docs/scenarios.md`); their times are offsets from
//! [`SimConfig::start`].
//!
//! Code map (each module uses only those before it): `noise.rs` the hashed noise · `hosts.rs`
//! and `models.rs` host and GPU model profiles · `state.rs` what faults edit · `faults/` the
//! fault kinds, one file per family · `scenario.rs` the file format · `gpu.rs` GPU readings,
//! inventory and Xid events · `host.rs` host readings.
//!
//! Must never: read the wall clock, keep RNG state, or let healthy noise cross a threshold a
//! diagnosis uses (noise is bounded; see `healthy_readings_stay_in_bounds`).

use std::sync::Arc;

use gpufleet_model::{Event, GpuInventory, GpuSample, HostInfo, HostSample, UnixMs};

mod faults;
mod gpu;
mod host;
mod hosts;
mod models;
mod noise;
mod scenario;
mod state;
#[cfg(test)]
mod tests;

pub use faults::{Direction, Fault, FaultKind, FaultKindInfo, Scope, fault_kind, fault_kinds};
pub use hosts::{DiskSpec, HostProfile, NicSpec};
pub use models::{GpuModelProfile, model_by_name, model_list, models};
pub use scenario::{Expectation, FleetSpec, Scenario, Workload};

/// What went wrong building a simulated node or reading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("scenario {path}: {reason}")]
    Scenario { path: String, reason: String },
    #[error("{0}")]
    Node(String),
}

use gpu::GpuNode;
use host::HostSim;
use noise::Noise;

/// Most GPUs a simulated node may have.
pub const MAX_GPUS: u32 = 16;

/// One simulated node.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub node_name: String,
    /// GPU model name or alias, e.g. `h100-sxm-80gb`, `h100`, `"H100 SXM 80GB"`.
    pub model: String,
    pub gpu_count: u32,
    pub seed: u64,
    /// Faults to inject (those for `node_name`) and the workload; `None` = healthy training.
    pub scenario: Option<Arc<Scenario>>,
    /// Virtual time origin; fault times are offsets from it.
    pub start: UnixMs,
}

/// The GPUs of a simulated node.
#[derive(Debug)]
pub struct SimulatedGpus {
    node: GpuNode,
    node_name: String,
    start: UnixMs,
    /// Offset (ms) up to which events have been handed out.
    events_until: i64,
    /// Inventory-changing fault transitions passed so far (see `inventory_changed`).
    inventory_epoch: usize,
}

/// The host of a simulated node.
#[derive(Debug)]
pub struct SimulatedHost {
    host: HostSim,
    start: UnixMs,
    /// Kernel-log events up to this offset (ms) have been handed out.
    events_until: i64,
}

/// Builds a simulated node: its GPUs and its host. Fails on an unknown model, a bad GPU count,
/// or scenario faults that cannot apply to this node's model and GPU count.
pub fn simulated_node(cfg: SimConfig) -> Result<(SimulatedGpus, SimulatedHost), Error> {
    let profile = model_by_name(&cfg.model).ok_or_else(|| {
        Error::Node(format!(
            "unknown GPU model `{}`; known models: {}",
            cfg.model,
            model_list()
        ))
    })?;
    if cfg.gpu_count > MAX_GPUS {
        return Err(Error::Node(format!(
            "cannot simulate {} GPUs on one node (at most {MAX_GPUS})",
            cfg.gpu_count
        )));
    }
    if cfg.node_name.trim().is_empty() {
        return Err(Error::Node("a simulated node needs a name".into()));
    }
    let (faults, workload) = match &cfg.scenario {
        None => (Vec::new(), Workload::default()),
        Some(s) => (node_faults(s, &cfg, profile)?, s.fleet.workload),
    };
    let node_noise = Noise::new(noise::hash_str(&cfg.node_name) ^ noise::mix(cfg.seed));
    let uptime0_s = host::uptime_at_origin_s(node_noise);
    let host = HostSim::new(profile.host, node_noise, &faults);
    let gpus = GpuNode::new(
        profile,
        node_noise,
        cfg.gpu_count,
        workload,
        faults,
        uptime0_s,
    );
    Ok((
        SimulatedGpus {
            node: gpus,
            node_name: cfg.node_name,
            start: cfg.start,
            events_until: -1,
            inventory_epoch: 0,
        },
        SimulatedHost {
            host,
            start: cfg.start,
            events_until: -1,
        },
    ))
}

/// The scenario's faults for this node, checked against its model and GPU count.
fn node_faults(
    s: &Scenario,
    cfg: &SimConfig,
    profile: &GpuModelProfile,
) -> Result<Vec<Fault>, Error> {
    let err = |reason: String| Error::Scenario {
        path: s.origin.clone(),
        reason,
    };
    let names = s.node_names();
    if s.faults.iter().any(|f| f.node.is_some()) && !names.contains(&cfg.node_name) {
        return Err(err(format!(
            "its faults target nodes by name, and this node (`{}`) is not one of them; \
             simulate one of the fleet's nodes ({} .. {}), e.g. `{}`",
            cfg.node_name,
            names.first().map_or("", |n| n.as_str()),
            names.last().map_or("", |n| n.as_str()),
            s.primary_node()
        )));
    }
    let faults: Vec<Fault> = s.faults_for(&cfg.node_name).cloned().collect();
    for f in &faults {
        f.validate_for(profile, cfg.gpu_count).map_err(|e| {
            err(format!(
                "line {}: fault {} on {} ({} × {}): {e}",
                f.line,
                f.name(),
                cfg.node_name,
                cfg.gpu_count,
                profile.id
            ))
        })?;
    }
    Ok(faults)
}

impl SimulatedGpus {
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn model(&self) -> &'static GpuModelProfile {
        self.node.profile
    }

    pub fn gpu_count(&self) -> u32 {
        self.node.gpus.len() as u32
    }

    /// Events stamped in `(after, until]`, without moving the cursor [`GpuSource::events`] keeps.
    pub fn events_between(&self, after: UnixMs, until: UnixMs) -> Vec<Event> {
        self.node
            .events(after.0 - self.start.0, until.0 - self.start.0, self.start)
    }
}

impl SimulatedGpus {
    /// Driver versions and one `GpuInfo` per GPU still on the bus.
    pub fn inventory(&self, now: UnixMs) -> GpuInventory {
        self.node.inventory(now.0 - self.start.0)
    }

    /// One reading of every GPU.
    pub fn sample(&self, now: UnixMs) -> Vec<GpuSample> {
        let t = now.0 - self.start.0;
        let tick = now.0.div_euclid(1000);
        self.node
            .gpus
            .iter()
            .map(|g| self.node.sample(g, t, tick))
            .collect()
    }

    /// True when a fault that changes the inventory started or ended since the last call.
    pub fn inventory_changed(&mut self, now: UnixMs) -> bool {
        let t = now.0 - self.start.0;
        let epoch: usize = self
            .node
            .faults
            .iter()
            .filter(|f| f.kind.changes_inventory())
            .map(|f| {
                usize::from(t >= f.start_ms as i64)
                    + usize::from(f.end_ms.is_some_and(|e| t >= e as i64))
            })
            .sum();
        let changed = epoch != self.inventory_epoch;
        self.inventory_epoch = epoch;
        changed
    }

    /// Events stamped since the last call, up to `now`.
    pub fn events(&mut self, now: UnixMs) -> Vec<Event> {
        let t = now.0 - self.start.0;
        if t <= self.events_until {
            return Vec::new();
        }
        let events = self.node.events(self.events_until, t, self.start);
        self.events_until = t;
        events
    }
}

impl SimulatedHost {
    /// Kernel-log events since the last call (on the first: since the virtual origin).
    pub fn events(&mut self, now: UnixMs) -> Vec<Event> {
        let t = now.0 - self.start.0;
        if t <= self.events_until {
            return Vec::new();
        }
        let events = self.host.events(self.events_until, t, self.start);
        self.events_until = t;
        events
    }

    /// Kernel-log events in `(after, until]`, without moving the cursor.
    pub fn events_between(&self, after: UnixMs, until: UnixMs) -> Vec<Event> {
        self.host
            .events(after.0 - self.start.0, until.0 - self.start.0, self.start)
    }

    pub fn info(&self, now: UnixMs) -> HostInfo {
        self.host.info(now.0 - self.start.0)
    }

    pub fn sample(&self, now: UnixMs) -> HostSample {
        self.host
            .sample(now.0 - self.start.0, now.0.div_euclid(1000))
    }
}
