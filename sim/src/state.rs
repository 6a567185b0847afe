//! The simulated state faults edit: one GPU's state at an instant ([`GpuLive`]), its
//! counter-like readings ([`GpuCounters`]), what its inventory reports ([`GpuInfoEdit`],
//! [`NodeInfoEdit`]), and the host's state ([`HostLive`]). `gpu.rs` and `host.rs` build these,
//! hand them to every fault of the node, and turn the result into NVML-like readings; a fault
//! never sees more than these.

use crate::models::GpuModelProfile;

/// One GPU's state at an instant, before noise. Faults edit it; `GpuNode::finish` derives
/// power and temperature from it.
#[derive(Debug, Clone, Copy)]
pub struct GpuLive {
    pub util: f64,
    pub mem_util: f64,
    /// SM clock as a fraction of max.
    pub sm_ratio: f64,
    /// Clocks at idle (no work or work starved).
    pub idle_clocks: bool,
    /// Locked application clock, MHz.
    pub app_sm_mhz: Option<u32>,
    /// Locked memory application clock, MHz.
    pub app_mem_mhz: Option<u32>,
    /// Multiplies the power the workload would draw.
    pub power_mult: f64,
    /// Enforced power limit, W.
    pub limit_w: f64,
    /// Temperature forced by a fault, °C.
    pub temp_pin: Option<f64>,
    pub fan_pin: Option<f64>,
    pub reasons: u64,
    pub pcie_gen: u32,
    pub pcie_width: u32,
    /// Multiplies host↔device traffic.
    pub traffic: f64,
    pub process: bool,
    /// The workload's use of the tensor cores, as a fraction of mixed-precision training's
    /// (1.0); the rest of its math runs on the FP32 pipes.
    pub tensor_share: f64,
    pub memory_full: bool,
    pub lost: bool,
    /// Set by `finish`.
    pub power_w: f64,
    pub power_pinned: bool,
    pub temp_c: f64,
}

/// What a fault's GPU effect may depend on besides its parameters.
pub struct GpuCtx {
    pub profile: &'static GpuModelProfile,
    /// Milliseconds since the fault started (≥ 0 while active).
    pub elapsed_ms: i64,
    /// The GPU's noise-free temperature under the workload, °C.
    pub temp_base: f64,
}

/// A fault's timing at one instant: offsets (ms) from the virtual origin.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub t: i64,
    pub start: i64,
    pub end: Option<i64>,
}

impl At {
    /// On at `t`.
    #[inline]
    pub fn active(&self) -> bool {
        self.t >= self.start && self.end.is_none_or(|e| self.t < e)
    }

    /// Started by `t` (it may have ended since).
    #[inline]
    pub fn started(&self) -> bool {
        self.t >= self.start
    }

    /// Milliseconds the fault has been on by `t` (0 before it starts; stops at its end).
    #[inline]
    pub fn on_for_ms(&self) -> u64 {
        let until = self.end.map_or(self.t, |e| self.t.min(e));
        until.saturating_sub(self.start).max(0) as u64
    }

    /// `count` per minute over the time the fault has been on, as a whole count.
    #[inline]
    pub fn per_minute(&self, count: u32) -> u64 {
        u64::from(count) * self.on_for_ms() / 60_000
    }
}

/// One NVLink's counter-like state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkCounters {
    pub active: bool,
    /// CRC flit errors; replay, recovery and data errors derive from them.
    pub errors: u64,
    /// Link recoveries (one per down event).
    pub recoveries: u64,
}

/// Counter-like readings of one GPU: functions of how long faults have been on, so they keep
/// what they counted after a fault ends.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuCounters {
    pub pcie_replays: u64,
    pub ecc_volatile: u64,
    pub ecc_aggregate: u64,
    pub remap_pending: bool,
    pub remap_failure: bool,
    pub nvlinks: Vec<LinkCounters>,
}

impl GpuCounters {
    pub fn new(nvlink_count: u32) -> Self {
        GpuCounters {
            pcie_replays: 0,
            ecc_volatile: 0,
            ecc_aggregate: 0,
            remap_pending: false,
            remap_failure: false,
            nvlinks: vec![
                LinkCounters {
                    active: true,
                    errors: 0,
                    recoveries: 0,
                };
                nvlink_count as usize
            ],
        }
    }
}

/// What one GPU's inventory reports while faults are on.
#[derive(Debug, Default)]
pub struct GpuInfoEdit<'a> {
    pub vbios_version: Option<&'a str>,
    pub persistence_off: bool,
}

/// What the node's inventory reports while faults are on (the last active fault wins).
#[derive(Debug, Default)]
pub struct NodeInfoEdit<'a> {
    pub driver_version: Option<&'a str>,
    pub kernel_version: Option<&'a str>,
}

/// Kernel log lines a node-scoped fault writes while it is on: `line` every `interval_ms`,
/// the first at the fault's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLogSchedule {
    pub line: String,
    pub interval_ms: i64,
}

/// An Xid a fault raises: `repeat` times, `interval_ms` apart, from its start while it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidSchedule {
    pub xid: u32,
    pub repeat: u32,
    pub interval_ms: i64,
}

impl XidSchedule {
    /// One Xid at the fault's start.
    pub const fn once(xid: u32) -> Self {
        XidSchedule {
            xid,
            repeat: 1,
            interval_ms: 1,
        }
    }
}

/// Which NIC traffic direction a saturation fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rx,
    Tx,
    Both,
}

impl<'de> serde::Deserialize<'de> for Direction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "rx" => Ok(Direction::Rx),
            "tx" => Ok(Direction::Tx),
            "both" => Ok(Direction::Both),
            other => Err(serde::de::Error::custom(format!(
                "direction = \"{other}\": use \"rx\", \"tx\" or \"both\""
            ))),
        }
    }
}

/// Load-average time constants (1, 5 and 15 minutes), seconds.
pub const LOAD_TAUS_S: [f64; 3] = [60.0, 300.0, 900.0];

/// The host's state at one instant, as the node's faults leave it. `None` for a NIC means the
/// profile's default fault NIC.
#[derive(Debug, Default)]
pub struct HostLive<'a> {
    pub cpu_saturated: bool,
    /// Per [`LOAD_TAUS_S`]: how far the load average is pulled towards saturation (0..=1).
    pub load_pull: [f64; 3],
    pub ram_pressure: bool,
    /// Swap written so far, bytes (capped by the host).
    pub swapped_bytes: u64,
    pub full_mount: Option<&'a str>,
    pub saturated_nic: Option<(Option<&'a str>, Direction)>,
    /// Receive errors per NIC.
    pub nic_errors: Vec<(Option<&'a str>, u64)>,
    /// Offset (ms) of the latest reboot a fault caused, if any.
    pub last_boot: Option<i64>,
    /// InfiniBand HCAs (kernel names, `None`: the first) whose port is down, and since when.
    pub ib_down: Vec<(Option<&'a str>, i64)>,
    /// HCAs whose link trained at a lower rate, Gb/s.
    pub ib_rate_gbps: Vec<(Option<&'a str>, f64)>,
    /// Symbol errors per HCA so far.
    pub ib_symbol_errors: Vec<(Option<&'a str>, u64)>,
    /// HCAs no longer enumerated (dead card, fallen off the bus).
    pub ib_missing: Vec<Option<&'a str>>,
    /// A CPU frequency governor other than `performance` on all CPUs.
    pub cpu_governor: Option<&'a str>,
    /// CPUs' frequency capped at this percentage of their maximum.
    pub cpu_freq_cap_percent: Option<u32>,
    /// Memory errors EDAC counted so far: (corrected, uncorrected).
    pub edac_errors: (u64, u64),
    /// NVIDIA kernel modules not loaded.
    pub modules_missing: Vec<&'a str>,
    /// Parts of the driver stack at another version: a module, or (`None`) the user-space
    /// libraries.
    pub driver_versions: Vec<(Option<&'a str>, &'a str)>,
    pub persistenced_down: bool,
    pub fabricmanager_down: bool,
    /// The installed Fabric Manager's version when it differs from the driver's.
    pub fabricmanager_version: Option<&'a str>,
    /// Ethernet ports (`None`: the host's first) whose link is down.
    pub eth_down: Vec<Option<&'a str>>,
    /// Ethernet ports that negotiated a lower speed (Mb/s), or half duplex.
    pub eth_speed: Vec<(Option<&'a str>, Option<u64>, bool)>,
    /// Carrier changes per Ethernet port so far (two per flap).
    pub eth_carrier_changes: Vec<(Option<&'a str>, u64)>,
    /// File handles allocated as a percentage of the kernel's maximum.
    pub file_handles_percent: Option<u32>,
    /// Processes blocked in D state: (command, kernel wait channel, how many, since when).
    pub stuck: Vec<(&'a str, &'a str, u32, i64)>,
    /// Processes the OOM killer ended so far.
    pub oom_kills: u64,
    /// Pages swapped in and out so far by thrashing (swap use stays flat).
    pub swap_pages: u64,
    /// GPUs whose PCIe switch port has ACS P2P redirect on.
    pub pcie_acs: Vec<u32>,
    /// AER errors counted so far per PCIe device: (correctable, non-fatal, fatal).
    pub pcie_aer: Vec<(PcieTarget<'a>, [u64; 3])>,
    /// HCAs whose PCIe link trained low: (HCA, rate in MT/s, lanes); `None` keeps the rated one.
    pub pcie_link: Vec<(&'a str, Option<u32>, Option<u32>)>,
    /// Watched mounts remounted read-only, hung (statfs times out), unmounted, or nearly full.
    pub mounts_read_only: Vec<&'a str>,
    pub mounts_unresponsive: Vec<&'a str>,
    pub mounts_missing: Vec<&'a str>,
    pub mounts_full: Vec<&'a str>,
    /// NVMe controllers out of order: (controller, state, temperature alarm).
    pub nvme_unhealthy: Vec<(&'a str, &'a str, bool)>,
}

/// A GPU's or an HCA's PCIe device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcieTarget<'a> {
    /// By GPU index.
    Gpu(u32),
    /// By the HCA's kernel name (`mlx5_0`).
    Nic(&'a str),
}

/// Host facts that hold for the node's whole life once a scenario names a fault.
#[derive(Debug, Default)]
pub struct HostSetup {
    /// The host has swap (only RAM-pressure scenarios give it one).
    pub swap: bool,
}
