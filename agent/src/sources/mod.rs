//! Signal sources: where readings come from. Each source is one module behind one of two small
//! traits; [`open_gpu_source`] is the one place that picks a GPU backend.
//!
//! Sources never fail wholesale on a bad field: a reading the hardware does not offer
//! (NotSupported, NoPermission) is `None`, and a GPU that cannot be read at all is reported
//! with a non-OK [`GpuStatus`](gpufleet_model::GpuStatus) in its sample.

use gpufleet_model::{Event, GpuSample, HostInfo, HostSample, UnixMs};

pub use gpufleet_model::GpuInventory;

pub mod cadence;
pub mod cpu_config;
pub mod driver_stack;
pub mod ethernet;
pub mod host;
pub mod infiniband;
pub mod kernel_log;
pub mod nvml;
pub mod os;
pub mod pcie;
pub mod simulated;
pub mod storage;

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
    /// Parts of the host that could not be read at the last read, and why (for `probe`).
    fn unavailable(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Host events since the last call (kernel-log errors); called once per sample.
    fn events(&mut self, _now: UnixMs) -> Vec<Event> {
        Vec::new()
    }
}

/// One part of the host read from sysfs or procfs beyond what sysinfo gives (InfiniBand, …).
/// Each part fails alone: an error means "this part is unavailable here, and why" — the
/// rest of the sample goes on. Listed once, in [`host_parts`].
pub trait HostPart: Send {
    /// Short name shown by `probe`, e.g. `infiniband`.
    fn name(&self) -> &'static str;
    /// Adds this part's inventory to `info`.
    fn info(&mut self, info: &mut HostInfo) -> Result<(), String>;
    /// Adds this part's readings to `sample`.
    fn sample(&mut self, now: UnixMs, sample: &mut HostSample) -> Result<(), String>;
    /// Events that arrived since the last call (the kernel log's errors). Must not block.
    fn events(&mut self, _now: UnixMs) -> Vec<Event> {
        Vec::new()
    }
}

/// Where the host parts read the kernel's files: `/sys` and `/proc` on a real host, fixture
/// trees in tests (`--sysfs-root`, `--procfs-root`), as node_exporter does; `root` is the
/// host's root filesystem for the few files outside them (driver libraries, the package
/// database; `--host-root`, node_exporter's `--path.rootfs`). Also what the parts are told
/// to watch there: the storage part's mount points (`--watch-mount`; empty: its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    pub sysfs: std::path::PathBuf,
    pub procfs: std::path::PathBuf,
    pub root: std::path::PathBuf,
    pub watch_mounts: Vec<std::path::PathBuf>,
    /// The kernel log (`/dev/kmsg`; a file of records for tests, `--kmsg-path`).
    pub kmsg: std::path::PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots {
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
            root: "/".into(),
            watch_mounts: Vec::new(),
            kmsg: nvml::kmsg::DEV_KMSG.into(),
        }
    }
}

/// Every host part, in the order `probe` shows them: the one place a part is registered.
pub fn host_parts(roots: &HostRoots) -> Vec<Box<dyn HostPart>> {
    vec![
        Box::new(infiniband::InfiniBand::new(&roots.sysfs)),
        Box::new(cpu_config::CpuConfig::new(&roots.sysfs)),
        Box::new(driver_stack::DriverStack::new(roots)),
        Box::new(storage::Storage::new(roots)),
        Box::new(ethernet::Ethernet::new(&roots.sysfs)),
        Box::new(os::Os::new(&roots.procfs)),
        Box::new(kernel_log::KernelLog::open(&roots.kmsg)),
        Box::new(pcie::Pcie::new(&roots.sysfs)),
    ]
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
