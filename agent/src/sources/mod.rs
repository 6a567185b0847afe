//! Signal sources: where readings come from. Each source is one module behind one of two small
//! traits; [`open_gpu_source`] is the one place that picks a GPU backend.
//!
//! Sources never fail wholesale on a bad field: a reading the hardware does not offer
//! (NotSupported, NoPermission) is `None`, and a GPU that cannot be read at all is reported
//! with a non-OK [`GpuStatus`](gpufleet_model::GpuStatus) in its sample.

use gpufleet_model::{Event, GpuSample, HostInfo, HostSample, UnixMs};

pub use gpufleet_model::GpuInventory;

pub mod cadence;
pub mod host;
pub mod nvml;
pub mod simulated;

/// A GPU backend (NVML or simulated). Blocking: callers keep it off the async reactor.
///
/// Architecture invariant: implementations only read. No NVML setter, reset or clear is ever
/// called (see `clippy.toml` and the fake-library test).
pub trait GpuSource: Send {
    /// `"nvml"` or `"simulated"`.
    fn kind(&self) -> &'static str;
    /// Driver versions and one [`GpuInfo`] per GPU. Called at start, on an interval, and
    /// after a GPU changes state.
    fn inventory(&mut self, now: UnixMs) -> Result<GpuInventory, SourceError>;
    /// One reading of every GPU. Never fails as a whole; a GPU that cannot be read gets a
    /// sample with a non-OK status.
    fn sample(&mut self, now: UnixMs) -> Vec<GpuSample>;
    /// Events (Xid, ECC, ...) that arrived since the last call. Must not block for long.
    fn events(&mut self, now: UnixMs) -> Vec<Event>;
    /// True when the source knows its inventory changed since this was last asked (a driver
    /// or mode change took effect), so the sampler re-reads it now instead of at the next
    /// inventory interval. Cheap; called every sample.
    fn inventory_changed(&mut self, _now: UnixMs) -> bool {
        false
    }
    /// How often counters and slow fields are read ([`cadence`]); between reads a sample
    /// repeats their last values.
    fn set_cadence(&mut self, cadence: cadence::Cadence);
    /// Time spent inside the backend's own calls (NVML) since the source opened: the part of
    /// the agent's cost that is the driver's, not the agent's. Zero for the simulator.
    fn read_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The host side of a GPU server (the SCORN list: storage, CPUs, OS, RAM, NICs).
pub trait HostSource: Send {
    fn info(&mut self, now: UnixMs) -> HostInfo;
    fn sample(&mut self, now: UnixMs) -> HostSample;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot load the NVIDIA management library {lib} ({reason}). Is the NVIDIA driver installed? \
         Use --nvml-lib PATH to point at it, or --simulate N to run with simulated GPUs"
    )]
    LibraryMissing { lib: String, reason: String },
    #[error("NVML {call} failed: {reason}")]
    Nvml { call: &'static str, reason: String },
    #[error("scenario {path}: {reason}")]
    Scenario { path: String, reason: String },
    #[error("{0}")]
    Other(String),
}
