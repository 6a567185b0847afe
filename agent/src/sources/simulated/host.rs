//! The simulated host: a realistic two-socket GPU server (CPU, RAM, NICs, disks, OS) with a
//! healthy background load, changed by the node-scoped faults (CPU saturation, RAM pressure,
//! full disk, NIC saturation and errors, kernel change).

use gpufleet_model::{DiskInfo, DiskSample, HostInfo, HostSample, NicInfo, NicSample};

use super::faults::{Direction, Fault, FaultKind, per_minute_count};
use super::noise::Noise;

pub const OS_NAME: &str = "Ubuntu 22.04.4 LTS";
pub const KERNEL_VERSION: &str = "5.15.0-105-generic";
/// Swap the host gets when a scenario puts it under RAM pressure (it has none otherwise).
pub const PRESSURE_SWAP_BYTES: u64 = 64 * GIB;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// One server type.
#[derive(Debug, PartialEq)]
pub struct HostProfile {
    pub name: &'static str,
    pub cpu_model: &'static str,
    pub cpu_logical_cores: u32,
    pub cpu_physical_cores: u32,
    pub memory_total_bytes: u64,
    pub nics: &'static [NicSpec],
    pub disks: &'static [DiskSpec],
}

#[derive(Debug, PartialEq)]
pub struct NicSpec {
    pub name: &'static str,
    pub speed_mbps: u64,
    pub mtu: u32,
    /// Carries the training job's collective traffic (the GPU fabric NICs).
    pub fabric: bool,
}

#[derive(Debug, PartialEq)]
pub struct DiskSpec {
    pub mount_point: &'static str,
    pub device: &'static str,
    pub filesystem: &'static str,
    pub total_bytes: u64,
}

const fn ib(name: &'static str, speed_mbps: u64) -> NicSpec {
    NicSpec {
        name,
        speed_mbps,
        mtu: 4096,
        fabric: true,
    }
}

const ETH0_100G: NicSpec = NicSpec {
    name: "eth0",
    speed_mbps: 100_000,
    mtu: 9000,
    fabric: false,
};

const DISKS_28TB: &[DiskSpec] = &[
    DiskSpec {
        mount_point: "/",
        device: "/dev/nvme0n1p2",
        filesystem: "ext4",
        total_bytes: 1_800_000_000_000,
    },
    DiskSpec {
        mount_point: "/raid",
        device: "/dev/md0",
        filesystem: "ext4",
        total_bytes: 28_000_000_000_000,
    },
];
const DISKS_15TB: &[DiskSpec] = &[
    DiskSpec {
        mount_point: "/",
        device: "/dev/nvme0n1p2",
        filesystem: "ext4",
        total_bytes: 1_800_000_000_000,
    },
    DiskSpec {
        mount_point: "/raid",
        device: "/dev/md0",
        filesystem: "ext4",
        total_bytes: 15_000_000_000_000,
    },
];

/// HGX H100 (DGX H100-like): 2× Xeon 8480+, 2 TiB, 8× 400 Gb/s InfiniBand.
pub static HGX_H100: HostProfile = HostProfile {
    name: "hgx-h100",
    cpu_model: "Intel(R) Xeon(R) Platinum 8480+",
    cpu_logical_cores: 224,
    cpu_physical_cores: 112,
    memory_total_bytes: 2 * TIB,
    nics: &[
        ETH0_100G,
        ib("ibp24s0", 400_000),
        ib("ibp64s0", 400_000),
        ib("ibp79s0", 400_000),
        ib("ibp94s0", 400_000),
        ib("ibp154s0", 400_000),
        ib("ibp170s0", 400_000),
        ib("ibp192s0", 400_000),
        ib("ibp206s0", 400_000),
    ],
    disks: DISKS_28TB,
};

/// DGX A100-like: 2× EPYC 7742, 2 TiB, 8× 200 Gb/s InfiniBand.
pub static DGX_A100: HostProfile = HostProfile {
    name: "dgx-a100",
    cpu_model: "AMD EPYC 7742 64-Core Processor",
    cpu_logical_cores: 256,
    cpu_physical_cores: 128,
    memory_total_bytes: 2 * TIB,
    nics: &[
        ETH0_100G,
        ib("ibp12s0", 200_000),
        ib("ibp18s0", 200_000),
        ib("ibp75s0", 200_000),
        ib("ibp84s0", 200_000),
        ib("ibp141s0", 200_000),
        ib("ibp148s0", 200_000),
        ib("ibp186s0", 200_000),
        ib("ibp204s0", 200_000),
    ],
    disks: DISKS_15TB,
};

/// A PCIe GPU server (L40S, T4, RTX 6000 Ada): 2× EPYC 9454, 1 TiB, 2× 200 GbE.
pub static PCIE_SERVER: HostProfile = HostProfile {
    name: "pcie-server",
    cpu_model: "AMD EPYC 9454 48-Core Processor",
    cpu_logical_cores: 192,
    cpu_physical_cores: 96,
    memory_total_bytes: TIB,
    nics: &[
        NicSpec {
            name: "eth0",
            speed_mbps: 25_000,
            mtu: 1500,
            fabric: false,
        },
        NicSpec {
            name: "ens1f0np0",
            speed_mbps: 200_000,
            mtu: 9000,
            fabric: true,
        },
        NicSpec {
            name: "ens1f1np1",
            speed_mbps: 200_000,
            mtu: 9000,
            fabric: true,
        },
    ],
    disks: DISKS_15TB,
};

impl HostProfile {
    /// The NIC a NIC fault without `nic` targets: the first fabric NIC.
    pub fn default_fault_nic(&self) -> &'static str {
        self.nics
            .iter()
            .find(|n| n.fabric)
            .or(self.nics.first())
            .map_or("eth0", |n| n.name)
    }
}

/// The host's state at one instant, as the active faults leave it.
#[derive(Debug, Default)]
pub(super) struct HostLive<'a> {
    pub cpu_saturated: bool,
    pub ram_pressure: bool,
    pub full_mount: Option<&'a str>,
    pub saturated_nic: Option<(Option<&'a str>, Direction)>,
}

// Noise fields.
const F_CPU: u64 = 1;
const F_LOAD: u64 = 2;
const F_MEM: u64 = 3;
const F_UPTIME: u64 = 4;
const F_DISK: u64 = 10;
const F_NIC: u64 = 30;
const F_NIC_RX: u64 = 31;
const F_NIC_TX: u64 = 32;
const F_MAC: u64 = 33;

/// Per-node constants of the simulated host.
#[derive(Debug)]
pub(super) struct HostSim {
    profile: &'static HostProfile,
    noise: Noise,
    /// Faults that act on this node's host.
    faults: Vec<Fault>,
    uptime0_s: u64,
    cpu_base: f64,
    mem_frac: f64,
    swap_total_bytes: u64,
    disk_avail_frac: Vec<f64>,
    nic_load: Vec<f64>,
    macs: Vec<String>,
}

/// Host uptime at the virtual origin, seconds (3–45 days); GPUs share it for their counters.
pub(super) fn uptime_at_origin_s(node_noise: Noise) -> u64 {
    node_noise.between(F_UPTIME, 3.0 * 86_400.0, 45.0 * 86_400.0) as u64
}

impl HostSim {
    pub fn new(profile: &'static HostProfile, node_noise: Noise, node_faults: &[Fault]) -> Self {
        let noise = node_noise.child(0x4057);
        let faults: Vec<Fault> = node_faults
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FaultKind::HostCpuSaturated
                        | FaultKind::HostRamPressure
                        | FaultKind::DiskFull { .. }
                        | FaultKind::NicSaturated { .. }
                        | FaultKind::NicErrors { .. }
                        | FaultKind::KernelChange { .. }
                )
            })
            .cloned()
            .collect();
        let swap_total_bytes = if faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::HostRamPressure))
        {
            PRESSURE_SWAP_BYTES
        } else {
            0
        };
        HostSim {
            profile,
            noise,
            uptime0_s: uptime_at_origin_s(node_noise),
            cpu_base: noise.between(F_CPU, 19.0, 25.0),
            mem_frac: noise.between(F_MEM, 0.25, 0.35),
            swap_total_bytes,
            disk_avail_frac: (0..profile.disks.len() as u64)
                .map(|i| {
                    if i == 0 {
                        noise.between(F_DISK + i, 0.55, 0.80)
                    } else {
                        noise.between(F_DISK + i, 0.35, 0.70)
                    }
                })
                .collect(),
            nic_load: profile
                .nics
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    if n.fabric {
                        noise.between(F_NIC + 16 * i as u64, 0.15, 0.35)
                    } else {
                        0.0002
                    }
                })
                .collect(),
            macs: (0..profile.nics.len() as u64)
                .map(|i| {
                    let b = noise.bits(F_MAC + 16 * i);
                    let oui = if i == 0 { "3c:ec:ef" } else { "b8:3f:d2" };
                    format!(
                        "{oui}:{:02x}:{:02x}:{:02x}",
                        b & 0xFF,
                        (b >> 8) & 0xFF,
                        (b >> 16) & 0xFF
                    )
                })
                .collect(),
            faults,
        }
    }

    fn live(&self, t: i64) -> HostLive<'_> {
        let mut h = HostLive::default();
        for f in self.faults.iter().filter(|f| f.active_at(t)) {
            match &f.kind {
                FaultKind::HostCpuSaturated => h.cpu_saturated = true,
                FaultKind::HostRamPressure => h.ram_pressure = true,
                FaultKind::DiskFull { mount } => h.full_mount = Some(mount),
                FaultKind::NicSaturated { nic, direction } => {
                    h.saturated_nic = Some((nic.as_deref(), *direction))
                }
                _ => {}
            }
        }
        h
    }

    fn kernel_version(&self, t: i64) -> &str {
        self.faults
            .iter()
            .filter(|f| f.active_at(t))
            .filter_map(|f| match &f.kind {
                FaultKind::KernelChange { kernel_version } => Some(kernel_version.as_str()),
                _ => None,
            })
            .next_back()
            .unwrap_or(KERNEL_VERSION)
    }

    /// Seconds since boot: a kernel change reboots the node (at its start, and again at its end).
    fn uptime_s(&self, t: i64) -> u64 {
        let last_boot = self
            .faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::KernelChange { .. }))
            .flat_map(|f| [Some(f.start_ms as i64), f.end_ms.map(|e| e as i64)])
            .flatten()
            .filter(|b| *b <= t)
            .max();
        match last_boot {
            Some(b) => ((t - b) / 1000) as u64,
            None => (self.uptime0_s as i64 + t.div_euclid(1000)).max(0) as u64,
        }
    }

    pub fn info(&self, t: i64) -> HostInfo {
        let p = self.profile;
        HostInfo {
            os_name: OS_NAME.to_string(),
            kernel_version: self.kernel_version(t).to_string(),
            cpu_model: p.cpu_model.to_string(),
            cpu_logical_cores: p.cpu_logical_cores,
            cpu_physical_cores: Some(p.cpu_physical_cores),
            memory_total_bytes: p.memory_total_bytes,
            swap_total_bytes: self.swap_total_bytes,
            nics: p
                .nics
                .iter()
                .zip(&self.macs)
                .map(|(n, mac)| NicInfo {
                    name: n.name.to_string(),
                    mac_address: mac.clone(),
                    speed_mbps: Some(n.speed_mbps),
                    mtu: Some(n.mtu),
                })
                .collect(),
            disks: p
                .disks
                .iter()
                .map(|d| DiskInfo {
                    mount_point: d.mount_point.to_string(),
                    device: d.device.to_string(),
                    filesystem: d.filesystem.to_string(),
                    total_bytes: d.total_bytes,
                })
                .collect(),
            uptime_seconds: self.uptime_s(t),
        }
    }

    /// Load average over `tau_s`: healthy level, pulled towards 1.6× the core count while a
    /// CPU saturation fault is on, decaying back after it ends.
    fn load_average(&self, t: i64, tau_s: f64) -> f64 {
        let cores = f64::from(self.profile.cpu_logical_cores);
        let healthy = cores * self.cpu_base / 100.0 * 1.05;
        let saturated = cores * 1.6;
        let mut pull = 0.0;
        for f in self
            .faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::HostCpuSaturated) && f.started_by(t))
        {
            let on_s = f.on_for_ms(t) as f64 / 1000.0;
            let since_end_s = f
                .end_ms
                .map_or(0.0, |e| ((t - e as i64).max(0)) as f64 / 1000.0);
            pull += (1.0 - (-on_s / tau_s).exp()) * (-since_end_s / tau_s).exp();
        }
        healthy + (saturated - healthy) * pull.min(1.0)
    }

    pub fn sample(&self, t: i64, tick: i64) -> HostSample {
        let p = self.profile;
        let n = self.noise;
        let h = self.live(t);

        let cpu = if h.cpu_saturated {
            (99.2 + 0.2 * n.gauss(F_CPU, tick)).min(100.0)
        } else {
            self.cpu_base + 1.2 * n.gauss(F_CPU, tick)
        };
        let load =
            |tau: f64, k: u64| self.load_average(t, tau) * (1.0 + 0.01 * n.gauss(F_LOAD + k, tick));

        let total = p.memory_total_bytes;
        let available = if h.ram_pressure {
            (total as f64 * (0.015 + 0.003 * n.gauss(F_MEM, tick))) as u64
        } else {
            (total as f64 * (1.0 - self.mem_frac - 0.004 * n.gauss(F_MEM, tick))) as u64
        };
        // Swap fills at 50 MiB/s while under pressure (up to 90 %) and stays used afterwards.
        let swapped: u64 = self
            .faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::HostRamPressure))
            .map(|f| f.on_for_ms(t) * (50 << 20) / 1000)
            .sum();

        let disks = p
            .disks
            .iter()
            .zip(&self.disk_avail_frac)
            .enumerate()
            .map(|(i, (d, frac))| {
                let frac = if h.full_mount == Some(d.mount_point) {
                    0.008 + 0.001 * n.gauss(F_DISK + i as u64, tick)
                } else {
                    *frac
                };
                DiskSample {
                    mount_point: d.mount_point.to_string(),
                    total_bytes: d.total_bytes,
                    available_bytes: (d.total_bytes as f64 * frac) as u64,
                }
            })
            .collect();

        let fault_nic = p.default_fault_nic();
        let nics = p
            .nics
            .iter()
            .zip(&self.nic_load)
            .enumerate()
            .map(|(i, (nic, load))| {
                let k = F_NIC + 16 * i as u64;
                let bytes_per_s = nic.speed_mbps as f64 * 1e6 / 8.0;
                let mut rx = bytes_per_s * (load * (1.0 + 0.1 * n.gauss(k + F_NIC_RX, tick)));
                let mut tx = bytes_per_s * (load * (1.0 + 0.1 * n.gauss(k + F_NIC_TX, tick)));
                if let Some((target, dir)) = h.saturated_nic
                    && target.unwrap_or(fault_nic) == nic.name
                {
                    let full =
                        |f: u64| bytes_per_s * (0.985 + 0.003 * n.gauss(k + f, tick)).min(0.998);
                    match dir {
                        Direction::Rx => rx = full(F_NIC_RX),
                        Direction::Tx => tx = full(F_NIC_TX),
                        Direction::Both => (rx, tx) = (full(F_NIC_RX), full(F_NIC_TX)),
                    }
                }
                let errors: u64 = self
                    .faults
                    .iter()
                    .filter_map(|f| match &f.kind {
                        FaultKind::NicErrors {
                            nic: target,
                            per_minute,
                        } if target.as_deref().unwrap_or(fault_nic) == nic.name => {
                            Some(per_minute_count(*per_minute, f.on_for_ms(t)))
                        }
                        _ => None,
                    })
                    .sum();
                NicSample {
                    name: nic.name.to_string(),
                    rx_bytes_per_second: rx as u64,
                    tx_bytes_per_second: tx as u64,
                    rx_errors: Some(errors),
                    tx_errors: Some(0),
                    rx_dropped: Some(errors * 2 / 5),
                    tx_dropped: Some(0),
                    speed_mbps: Some(nic.speed_mbps),
                }
            })
            .collect();

        HostSample {
            cpu_percent: Some(cpu as f32),
            cpu_per_core_percent: Vec::new(),
            load_average_1m: Some(load(60.0, 0)),
            load_average_5m: Some(load(300.0, 1)),
            load_average_15m: Some(load(900.0, 2)),
            memory_used_bytes: total - available.min(total),
            memory_total_bytes: total,
            memory_available_bytes: available.min(total),
            swap_used_bytes: swapped.min(self.swap_total_bytes * 9 / 10),
            swap_total_bytes: self.swap_total_bytes,
            disks,
            nics,
            uptime_seconds: self.uptime_s(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_consistent() {
        for p in [&HGX_H100, &DGX_A100, &PCIE_SERVER] {
            assert!(
                p.cpu_physical_cores * 2 == p.cpu_logical_cores,
                "{}",
                p.name
            );
            assert!(p.memory_total_bytes >= 512 * GIB, "{}", p.name);
            assert_eq!(p.disks[0].mount_point, "/", "{}", p.name);
            assert!(p.nics.iter().any(|n| n.fabric), "{}", p.name);
        }
        assert_eq!(HGX_H100.default_fault_nic(), "ibp24s0");
    }
}
