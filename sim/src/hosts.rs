//! Host profiles: the servers simulated GPUs sit in (CPU, RAM, NICs, disks), as NVIDIA's
//! reference systems ship them.

#[cfg(test)]
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
    /// The CPUs' highest frequency (kHz) and their cpufreq driver.
    pub cpu_max_khz: u64,
    pub scaling_driver: &'static str,
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

/// A dataset or checkpoint mount on shared storage (the same on every simulated host).
#[derive(Debug, PartialEq)]
pub struct MountSpec {
    pub mount_point: &'static str,
    pub fstype: &'static str,
    pub source: &'static str,
    pub total_bytes: u64,
    /// Fraction free on a healthy cluster.
    pub available_fraction: f64,
}

/// Datasets on NFS, checkpoints on Lustre, as training clusters mount them. The storage part
/// also watches `/`, the first of the profile's disks.
pub const NETWORK_MOUNTS: &[MountSpec] = &[
    MountSpec {
        mount_point: "/datasets",
        fstype: "nfs4",
        source: "storage01:/export/datasets",
        total_bytes: 512 * TIB,
        available_fraction: 0.31,
    },
    MountSpec {
        mount_point: "/checkpoints",
        fstype: "lustre",
        source: "10.0.0.2@o2ib:10.0.0.3@o2ib:/ckpt",
        total_bytes: 2048 * TIB,
        available_fraction: 0.44,
    },
];

/// The local NVMe controllers (the M.2 boot pair): name, model, firmware, PCI address.
pub const NVME: &[(&str, &str, &str, &str)] = &[
    (
        "nvme0",
        "SAMSUNG MZ1L21T9HCLS-00A07",
        "GDC7302Q",
        "0000:c4:00.0",
    ),
    (
        "nvme1",
        "SAMSUNG MZ1L21T9HCLS-00A07",
        "GDC7302Q",
        "0000:c5:00.0",
    ),
];

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
    cpu_max_khz: 3_800_000,
    scaling_driver: "intel_pstate",
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
    cpu_max_khz: 3_400_000,
    scaling_driver: "acpi-cpufreq",
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
    cpu_max_khz: 3_800_000,
    scaling_driver: "amd-pstate-epp",
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

impl HostProfile {
    /// NVSwitch chips on the board (where Fabric Manager must run): 4 on HGX H100, 6 on
    /// DGX A100, none in a PCIe server.
    pub fn nvswitch_count(&self) -> u32 {
        match self.name {
            "hgx-h100" => 4,
            "dgx-a100" => 6,
            _ => 0,
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
