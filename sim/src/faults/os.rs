//! The operating system and the Ethernet links: `nic_link_down`, `nic_speed_degraded`,
//! `nic_flapping`, `file_handles_exhausted`, `processes_stuck`, `oom_kills` and
//! `swap_thrashing`. They change what the host's procfs and sysfs show; the GPUs keep their
//! workload, so the diagnosis has to find them from the host side. The simulated Ethernet
//! ports are the profile's NICs that are not InfiniBand (`eth0`, and the PCIe server's
//! `ens1f0np0`/`ens1f1np1`); a kind without `nic` targets the first.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, HostLive, HostSetup};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<NicLinkDown>(
        "nic_link_down",
        &[],
        Scope::Node,
        "host.nic.link_down",
        "an Ethernet port loses its link (cable, transceiver or switch port)",
    ),
    kind::<NicSpeedDegraded>(
        "nic_speed_degraded",
        &[],
        Scope::Node,
        "host.nic.speed_degraded",
        "an Ethernet port negotiates a lower speed than its peers' (or half duplex)",
    ),
    kind::<NicFlapping>(
        "nic_flapping",
        &[],
        Scope::Node,
        "host.nic.flapping",
        "an Ethernet port's link going down and up again, several times a minute",
    ),
    kind::<FileHandlesExhausted>(
        "file_handles_exhausted",
        &[],
        Scope::Node,
        "host.os.file_handles",
        "the kernel's file handles nearly all allocated (a descriptor leak)",
    ),
    kind::<ProcessesStuck>(
        "processes_stuck",
        &[],
        Scope::Node,
        "host.os.stuck_processes",
        "processes blocked in uninterruptible sleep (D state) without running, e.g. on a hung NFS",
    ),
    kind::<OomKills>(
        "oom_kills",
        &[],
        Scope::Node,
        "host.memory.oom_kills",
        "the kernel's OOM killer ending processes",
    ),
    kind::<SwapThrashing>(
        "swap_thrashing",
        &[],
        Scope::Node,
        "host.memory.swap_thrashing",
        "pages moving in and out of swap at a high rate while swap use stays flat",
    ),
];

/// The Ethernet ports of a profile's host.
pub fn ethernet_ports(p: &GpuModelProfile) -> Vec<&'static str> {
    p.host
        .nics
        .iter()
        .filter(|n| !n.name.starts_with("ib"))
        .map(|n| n.name)
        .collect()
}

fn check_nic(nic: &Option<String>, p: &GpuModelProfile) -> Result<(), String> {
    let ports = ethernet_ports(p);
    match nic {
        Some(n) if !ports.contains(&n.as_str()) => Err(format!(
            "nic = \"{n}\" is not an Ethernet port of the simulated host of {} ({})",
            p.id,
            ports.join(", ")
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicLinkDown {
    /// The port (default: the host's first Ethernet port).
    pub nic: Option<String>,
}

impl Params for NicLinkDown {}

impl FaultKind for NicLinkDown {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nic(&self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.eth_down.push(self.nic.as_deref());
        }
        if at.started() {
            // Down once, and up again if the fault ended.
            let changes = if at.active() { 1 } else { 2 };
            h.eth_carrier_changes.push((self.nic.as_deref(), changes));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicSpeedDegraded {
    pub nic: Option<String>,
    /// The speed it negotiates, Mb/s (default 25,000: a 100 GbE port at 25 Gb/s).
    pub speed_mbps: u64,
    /// Half duplex instead of (or as well as) the lower speed.
    pub half_duplex: bool,
}

impl Default for NicSpeedDegraded {
    fn default() -> Self {
        NicSpeedDegraded {
            nic: None,
            speed_mbps: 25_000,
            half_duplex: false,
        }
    }
}

impl Params for NicSpeedDegraded {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("speed_mbps", self.speed_mbps, 10, 800_000).map(|_| ())
    }
}

impl FaultKind for NicSpeedDegraded {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nic(&self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.eth_speed
                .push((self.nic.as_deref(), Some(self.speed_mbps), self.half_duplex));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicFlapping {
    pub nic: Option<String>,
    /// Flaps (down and up again) per minute.
    pub per_minute: u32,
}

impl Default for NicFlapping {
    fn default() -> Self {
        NicFlapping {
            nic: None,
            per_minute: 3,
        }
    }
}

impl Params for NicFlapping {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("per_minute", self.per_minute, 1, 600).map(|_| ())
    }
}

impl FaultKind for NicFlapping {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nic(&self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        let flaps = at.per_minute(self.per_minute);
        h.eth_carrier_changes.push((self.nic.as_deref(), 2 * flaps));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileHandlesExhausted {
    /// File handles allocated, as a percentage of `file-max`.
    pub percent: u32,
}

impl Default for FileHandlesExhausted {
    fn default() -> Self {
        FileHandlesExhausted { percent: 97 }
    }
}

impl Params for FileHandlesExhausted {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("percent", self.percent, 50, 100).map(|_| ())
    }
}

impl FaultKind for FileHandlesExhausted {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.file_handles_percent = Some(self.percent);
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessesStuck {
    /// The blocked processes' command name.
    pub comm: String,
    /// The kernel function they wait in (`/proc/PID/wchan`).
    pub wchan: String,
    pub count: u32,
}

impl Default for ProcessesStuck {
    fn default() -> Self {
        ProcessesStuck {
            comm: "python3".into(),
            wchan: "nfs_wait_bit_killable".into(),
            count: 4,
        }
    }
}

impl Params for ProcessesStuck {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        if self.comm.is_empty() || self.comm.len() > 15 {
            return Err(format!(
                "comm = \"{}\": 1 to 15 bytes, as the kernel keeps it",
                self.comm
            ));
        }
        in_range("count", self.count, 1, 1000).map(|_| ())
    }
}

impl FaultKind for ProcessesStuck {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.stuck
                .push((&self.comm, &self.wchan, self.count, at.start));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OomKills {
    pub per_minute: u32,
}

impl Default for OomKills {
    fn default() -> Self {
        OomKills { per_minute: 2 }
    }
}

impl Params for OomKills {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for OomKills {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.oom_kills += at.per_minute(self.per_minute);
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwapThrashing {
    /// Pages (4 KiB) swapped in, and as many out, per second.
    pub pages_per_second: u32,
}

impl Default for SwapThrashing {
    fn default() -> Self {
        SwapThrashing {
            pages_per_second: 5_000,
        }
    }
}

impl Params for SwapThrashing {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("pages_per_second", self.pages_per_second, 1, 10_000_000).map(|_| ())
    }
}

impl FaultKind for SwapThrashing {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.swap_pages += u64::from(self.pages_per_second) * at.on_for_ms() / 1000;
        if at.active() {
            // Swap holds a steady working set: a quarter of the host's swap.
            h.swapped_bytes = h.swapped_bytes.max(crate::host::PRESSURE_SWAP_BYTES / 4);
        }
    }

    fn host_setup(&self, s: &mut HostSetup) {
        s.swap = true;
    }
}
