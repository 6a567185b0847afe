//! `gpufleet-agent`: a read-only daemon that reads every GPU (NVML or simulated) and the host,
//! detects drift and saturation locally, and streams it all to the collector.
//!
//! Data flow: [`sources`] → [`sampler::NodeAgent::tick`] (+ [`detect`]) → [`uplink`] → gRPC.
//! Architecture invariant: nothing here changes GPU state.

pub mod config;
pub mod detect;
pub mod exposition;
pub mod identity;
pub mod probe;
pub mod sampler;
pub mod sources;
pub mod spool;
pub mod uplink;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gpufleet_model::{NodeIdentity, UnixMs};
use tokio::sync::{mpsc, watch};

use sampler::NodeAgent;
use sources::{GpuSource, HostSource, SourceError};
use uplink::{Pushed, Update, Uplink, UplinkConfig, UplinkStats};

/// Time between samples unless the collector says otherwise (`run --interval`).
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Which GPU backend to read, and how.
#[derive(Debug, Clone)]
pub enum GpuBackend {
    /// The real driver through NVML; `lib` overrides the library path. The host is read
    /// through sysinfo and the kernel's files under `roots`.
    Nvml {
        lib: Option<PathBuf>,
        roots: sources::HostRoots,
    },
    /// Simulated GPUs and host.
    Simulated {
        gpus: u32,
        model: String,
        scenario: Option<Arc<sources::simulated::Scenario>>,
        seed: u64,
    },
}

/// The GPU and host sources of one node.
pub struct Sources {
    pub gpu: Box<dyn GpuSource>,
    pub host: Box<dyn HostSource>,
}

/// Opens the GPU and host sources for a backend: the one place a backend is chosen.
pub fn open_sources(
    backend: &GpuBackend,
    node_name: &str,
    now: UnixMs,
) -> Result<Sources, SourceError> {
    match backend {
        GpuBackend::Nvml { lib, roots } => Ok(Sources {
            gpu: Box::new(sources::nvml::NvmlSource::open(lib.as_deref())?),
            host: Box::new(sources::host::SysinfoHost::new(roots)?),
        }),
        GpuBackend::Simulated {
            gpus,
            model,
            scenario,
            seed,
        } => {
            let (g, h) = sources::simulated::simulated_node(sources::simulated::SimConfig {
                node_name: node_name.to_string(),
                model: model.clone(),
                gpu_count: *gpus,
                seed: *seed,
                scenario: scenario.clone(),
                start: now,
            })?;
            Ok(Sources {
                gpu: Box::new(g),
                host: Box::new(h),
            })
        }
    }
}

/// Opens the sources for `backend` and reads the node's first inventory: an agent ready to
/// tick, with the events its start produced (e.g. drift against the stored baseline).
pub fn start_node(
    identity: NodeIdentity,
    backend: &GpuBackend,
    detector: detect::Detector,
    now: UnixMs,
) -> Result<(NodeAgent, Vec<gpufleet_model::Event>), SourceError> {
    let sources = open_sources(backend, &identity.hostname, now)?;
    NodeAgent::new(identity, sources.gpu, sources.host, detector, now)
}

/// A running agent: a sampling thread and an uplink task.
pub struct RunningAgent {
    pub stats: Arc<UplinkStats>,
    shutdown: watch::Sender<bool>,
    uplink: tokio::task::JoinHandle<()>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl RunningAgent {
    /// Stops sampling, gives the uplink a moment to flush, and waits for both.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.uplink.await;
        if let Some(t) = self.sampler.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts streaming `agent` to the collector. Must be called inside a tokio runtime.
pub fn spawn(
    agent: NodeAgent,
    first_events: Vec<gpufleet_model::Event>,
    uplink: UplinkConfig,
    sample_interval: Duration,
) -> RunningAgent {
    spawn_exposed(agent, first_events, uplink, sample_interval, None)
}

/// [`spawn`], also handing every reading to `exposition` (the agent's `/metrics`).
pub fn spawn_exposed(
    agent: NodeAgent,
    first_events: Vec<gpufleet_model::Event>,
    uplink: UplinkConfig,
    sample_interval: Duration,
    exposition: Option<Arc<exposition::NodeExposition>>,
) -> RunningAgent {
    let stats = Arc::new(UplinkStats::default());
    if let Some(e) = &exposition {
        e.set_uplink(stats.clone());
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (pushed_tx, pushed_rx) = watch::channel(Pushed {
        sample_interval_ms: None,
        inventory_interval_ms: None,
    });
    let (updates_tx, updates_rx) = mpsc::channel::<Update>(256);
    let identity: NodeIdentity = agent.identity().clone();
    let up = Uplink::new(
        uplink,
        identity,
        agent.gpu_source_kind(),
        agent.inventory().clone(),
        stats.clone(),
    );
    let uplink_task = tokio::spawn(up.run(updates_rx, pushed_tx, shutdown_rx.clone()));
    let sampler_stats = stats.clone();
    let sampler = std::thread::Builder::new()
        .name("gpufleet-sampler".into())
        .spawn(move || {
            sample_loop(
                agent,
                first_events,
                sample_interval,
                SamplerLinks {
                    updates: updates_tx,
                    pushed: pushed_rx,
                    shutdown: shutdown_rx,
                    exposition,
                    stats: sampler_stats,
                },
            )
        })
        .expect("spawning the sampler thread");
    RunningAgent {
        stats,
        shutdown: shutdown_tx,
        uplink: uplink_task,
        sampler: Some(sampler),
    }
}

/// What the sampler thread talks to: the uplink's queue and counters, the settings the
/// collector pushed, the stop signal, the agent's `/metrics`.
struct SamplerLinks {
    updates: mpsc::Sender<Update>,
    pushed: watch::Receiver<Pushed>,
    shutdown: watch::Receiver<bool>,
    exposition: Option<Arc<exposition::NodeExposition>>,
    stats: Arc<UplinkStats>,
}

/// Blocking loop: NVML calls block, so sampling lives on its own thread, never on the reactor.
fn sample_loop(
    mut agent: NodeAgent,
    mut pending_events: Vec<gpufleet_model::Event>,
    mut interval: Duration,
    links: SamplerLinks,
) {
    let SamplerLinks {
        updates,
        pushed,
        shutdown,
        exposition,
        stats,
    } = links;
    let mut next = std::time::Instant::now();
    let mut dropped = 0u64;
    while !*shutdown.borrow() {
        let p = *pushed.borrow();
        if let Some(ms) = p.sample_interval_ms {
            interval = Duration::from_millis(ms.clamp(100, 3_600_000) as u64);
        }
        if let Some(ms) = p.inventory_interval_ms {
            agent.set_inventory_interval_ms(ms as u64);
        }
        let tick = agent.tick(UnixMs::now());
        if let Some(e) = &exposition {
            e.update(&tick.sample, &tick.events, tick.inventory.as_ref());
        }
        pending_events.extend(tick.events);
        let update = Update {
            sample: tick.sample,
            events: std::mem::take(&mut pending_events),
            inventory: tick.inventory,
        };
        stats.samples.fetch_add(1, Ordering::Relaxed);
        match updates.try_send(update) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(u)) => {
                // The uplink is behind; keep events (rare, small), drop the sample — counted,
                // and reported to the collector like any other drop.
                pending_events = u.events;
                stats.sampler_dropped.fetch_add(1, Ordering::Relaxed);
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!("uplink is behind: {dropped} samples dropped so far");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
        next += interval;
        let now = std::time::Instant::now();
        if next < now {
            next = now; // fell behind (slow NVML); don't burst to catch up
        }
        // Sleep in short steps so shutdown is prompt.
        while std::time::Instant::now() < next && !*shutdown.borrow() {
            std::thread::sleep((next - std::time::Instant::now()).min(Duration::from_millis(100)));
        }
    }
}
