//! The agent's pipeline for one node: sources → local detection → what goes on the wire.
//! [`NodeAgent::tick`] takes one reading at a given time and is all a test needs to drive an
//! agent in virtual time; `run` calls it on a timer.

use gpufleet_model::{
    Event, EventKind, GpuStatus, Inventory, NodeIdentity, Sample, Severity, UnixMs,
};

use crate::detect::Detector;
use crate::sources::{GpuSource, HostSource, SourceError};

/// Default period between full inventory reads (also read on change).
pub const INVENTORY_INTERVAL_MS: u64 = 60_000;
/// [`INVENTORY_INTERVAL_MS`] as the `inventory_interval` key's default.
pub const DEFAULT_INVENTORY_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(INVENTORY_INTERVAL_MS);

pub struct NodeAgent {
    identity: NodeIdentity,
    gpu: Box<dyn GpuSource>,
    host: Box<dyn HostSource>,
    detector: Detector,
    inventory: Inventory,
    inventory_read_at: UnixMs,
    inventory_interval_ms: u64,
    /// GPU statuses in the previous sample, to notice a GPU going away.
    last_status: Vec<(u32, GpuStatus)>,
}

/// What one tick produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub sample: Sample,
    pub events: Vec<Event>,
    /// The new inventory, when it changed during this tick.
    pub inventory: Option<Inventory>,
}

impl NodeAgent {
    /// Reads the first inventory. Fails only when the GPU backend cannot list GPUs at all.
    /// Parts of the host that could not be read at the last tick, and why (for `probe`).
    pub fn host_unavailable(&self) -> Vec<(&'static str, String)> {
        self.host.unavailable()
    }

    pub fn new(
        identity: NodeIdentity,
        mut gpu: Box<dyn GpuSource>,
        mut host: Box<dyn HostSource>,
        mut detector: Detector,
        now: UnixMs,
    ) -> Result<(Self, Vec<Event>), SourceError> {
        let gi = gpu.inventory(now)?;
        let inventory = Inventory {
            read_at: now,
            driver: gi.driver,
            gpus: gi.gpus,
            host: host.info(now),
        };
        let events = detector.on_inventory(&inventory, now);
        Ok((
            NodeAgent {
                identity,
                gpu,
                host,
                detector,
                inventory,
                inventory_read_at: now,
                inventory_interval_ms: INVENTORY_INTERVAL_MS,
                last_status: Vec::new(),
            },
            events,
        ))
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn gpu_source_kind(&self) -> &'static str {
        self.gpu.kind()
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// How often the GPU source reads counters and slow fields.
    pub fn set_cadence(&mut self, cadence: crate::sources::cadence::Cadence) {
        self.gpu.set_cadence(cadence);
    }

    /// Time the GPU source spent inside NVML so far (see [`GpuSource::read_time`]).
    pub fn gpu_read_time(&self) -> std::time::Duration {
        self.gpu.read_time()
    }

    pub fn set_inventory_interval_ms(&mut self, ms: u64) {
        self.inventory_interval_ms = ms.max(1_000);
    }

    /// One reading of every GPU and the host at `now`, with the events it produced.
    pub fn tick(&mut self, now: UnixMs) -> Tick {
        let gpus = self.gpu.sample(now);
        let host = self.host.sample(now);
        let sample = Sample {
            timestamp: now,
            gpus,
            host,
        };
        let mut events = self.gpu.events(now);
        events.extend(self.host.events(now));

        let status: Vec<(u32, GpuStatus)> =
            sample.gpus.iter().map(|g| (g.index, g.status)).collect();
        let mut status_changed = false;
        for g in &sample.gpus {
            let before = self
                .last_status
                .iter()
                .find(|(i, _)| *i == g.index)
                .map(|(_, s)| *s);
            if before.is_some_and(|b| b != g.status) {
                status_changed = true;
            }
            if g.status == GpuStatus::Lost && before != Some(GpuStatus::Lost) {
                events.push(
                    Event::new(
                        now,
                        EventKind::GpuLost,
                        Severity::Critical,
                        "gpu.lost",
                        format!("GPU {} stopped answering: {}", g.index, g.error),
                    )
                    .on_gpu(g.index, &g.uuid)
                    .from_source(self.gpu.kind()),
                );
            }
        }
        self.last_status = status;

        let mut inventory = None;
        if status_changed
            || self.gpu.inventory_changed(now)
            || now.since(self.inventory_read_at) >= self.inventory_interval_ms
        {
            self.inventory_read_at = now;
            match self.gpu.inventory(now) {
                Ok(gi) => {
                    let fresh = Inventory {
                        read_at: now,
                        driver: gi.driver,
                        gpus: gi.gpus,
                        host: self.host.info(now),
                    };
                    if !fresh.same_content(&self.inventory) {
                        events.extend(self.detector.on_inventory(&fresh, now));
                        inventory = Some(fresh.clone());
                    }
                    self.inventory = fresh;
                }
                Err(e) => events.push(
                    Event::new(
                        now,
                        EventKind::Agent,
                        Severity::Warning,
                        "agent.inventory_failed",
                        format!("cannot re-read inventory: {e}"),
                    )
                    .from_source("agent"),
                ),
            }
        }
        events.extend(self.detector.on_sample(&sample, &self.inventory));
        Tick {
            sample,
            events,
            inventory,
        }
    }
}
