//! The simulated host: a realistic two-socket GPU server (CPU, RAM, NICs, disks, OS) with a
//! healthy background load, changed by the node-scoped faults (CPU saturation, RAM pressure,
//! full disk, NIC saturation and errors, kernel change).

use gpufleet_model::{
    Acs, CpuConfigSample, DiskInfo, DiskSample, DriverDaemons, DriverStackInfo, EthernetPort,
    HostInfo, HostSample, IbDeviceInfo, IbPortSample, KernelModuleInfo, NicInfo, NicSample,
    OsSample, PcieDeviceInfo, PcieDeviceKind, PcieDeviceSample, StorageInfo, StorageMountSample,
    StorageNvmeInfo, StorageNvmeSample, StorageSample, StuckProcess,
};

use crate::faults::Fault;
use crate::hosts::HostProfile;
use crate::models::GpuModelProfile;
use crate::noise::Noise;
use crate::state::{Direction, HostLive, HostSetup, NodeInfoEdit, PcieTarget};

pub const OS_NAME: &str = "Ubuntu 22.04.4 LTS";
pub const KERNEL_VERSION: &str = "5.15.0-105-generic";
/// Swap the host gets when a scenario puts it under RAM pressure (it has none otherwise).
pub const PRESSURE_SWAP_BYTES: u64 = 64 * GIB;

const GIB: u64 = 1 << 30;

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
const F_CPU_FREQ: u64 = 40;
const F_STATFS: u64 = 50;
const F_NVME_TEMP: u64 = 60;
const F_FILES: u64 = 41;

/// `fs.file-max` as systemd sets it (LONG_MAX): on a healthy host the limit is never near.
pub const FILE_MAX_UNLIMITED: u64 = i64::MAX as u64;
/// The limit an administrator set on a host whose handles run out (`fs.file-max = 2097152`).
pub const FILE_MAX_SET: u64 = 2_097_152;
/// How long a process must be blocked before the agent can call it stuck: two process scans.
const STUCK_VISIBLE_MS: i64 = 10_000;

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
    /// The node's faults without a GPU, any scope: what sets the driver version.
    driver_faults: Vec<Fault>,
    /// PCI address of each fabric NIC (HCA), in the profile's order.
    hca_bdfs: Vec<String>,
    /// The PCIe tree: GPUs and HCAs below one PCIe switch per GPU pair ([`pcie_tree`]).
    pcie: Vec<SimPcie>,
}

/// One device of the simulated PCIe tree and what it is to the faults.
#[derive(Debug)]
struct SimPcie {
    info: PcieDeviceInfo,
    /// The GPU (index) or HCA (kernel name) it is; for a switch's downstream port, the GPU
    /// below it.
    gpu: Option<u32>,
    hca: Option<String>,
}

/// Host uptime at the virtual origin, seconds (3–45 days); GPUs share it for their counters.
pub(super) fn uptime_at_origin_s(node_noise: Noise) -> u64 {
    node_noise.between(F_UPTIME, 3.0 * 86_400.0, 45.0 * 86_400.0) as u64
}

impl HostSim {
    pub fn new(
        model: &'static GpuModelProfile,
        gpu_count: u32,
        node_noise: Noise,
        node_faults: &[Fault],
    ) -> Self {
        let profile = model.host;
        let noise = node_noise.child(0x4057);
        let (hca_bdfs, pcie) = pcie_tree(model, gpu_count);
        let faults: Vec<Fault> = node_faults
            .iter()
            .filter(|f| f.info.scope == crate::faults::Scope::Node)
            .cloned()
            .collect();
        let mut setup = HostSetup::default();
        for f in &faults {
            f.kind.host_setup(&mut setup);
        }
        let swap_total_bytes = if setup.swap { PRESSURE_SWAP_BYTES } else { 0 };
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
            driver_faults: node_faults
                .iter()
                .filter(|f| f.gpu.is_none())
                .cloned()
                .collect(),
            faults,
            hca_bdfs,
            pcie,
        }
    }

    /// The host's state at `t`: every fault of the node adds its effect.
    fn live(&self, t: i64) -> HostLive<'_> {
        let mut h = HostLive::default();
        for f in &self.faults {
            f.kind.host(&mut h, &f.at(t));
        }
        h
    }

    fn kernel_version(&self, t: i64) -> &str {
        let mut n = NodeInfoEdit::default();
        for f in self.faults.iter().filter(|f| f.active_at(t)) {
            f.kind.node_info(&mut n);
        }
        n.kernel_version.unwrap_or(KERNEL_VERSION)
    }

    /// Seconds since boot: a fault may have rebooted the node.
    fn uptime_s(&self, h: &HostLive, t: i64) -> u64 {
        match h.last_boot {
            Some(b) => ((t - b) / 1000) as u64,
            None => (self.uptime0_s as i64 + t.div_euclid(1000)).max(0) as u64,
        }
    }

    pub fn info(&self, t: i64) -> HostInfo {
        let p = self.profile;
        let h = self.live(t);
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
            uptime_seconds: self.uptime_s(&h, t),
            ib_devices: self
                .hcas(&h)
                .map(|(i, name, nic)| {
                    let ndr = nic.speed_mbps >= 400_000;
                    IbDeviceInfo {
                        // ConnectX-7 (NDR) or ConnectX-6 (HDR), as NVIDIA's systems ship them.
                        fw_version: if ndr { "28.39.1002" } else { "20.39.1002" }.to_string(),
                        board_id: if ndr {
                            "MT_0000000838"
                        } else {
                            "MT_0000000223"
                        }
                        .to_string(),
                        hca_type: if ndr { "MT4129" } else { "MT4123" }.to_string(),
                        pci_address: self.hca_bdfs.get(i).cloned().unwrap_or_default(),
                        numa_node: Some(if i < self.fabric_nics() / 2 { 0 } else { 1 }),
                        ports: 1,
                        name,
                    }
                })
                .collect(),
            driver_stack: Some(self.driver_stack(&h, t)),
            pcie_devices: self.pcie_info(&h),
            storage: Some(StorageInfo {
                nvme: crate::hosts::NVME
                    .iter()
                    .enumerate()
                    .map(|(i, (name, model, fw, pci))| StorageNvmeInfo {
                        name: name.to_string(),
                        model: model.to_string(),
                        serial: format!(
                            "S666NE0T8{:05}",
                            self.noise.bits(F_NVME_TEMP + 8 + i as u64) % 100_000
                        ),
                        firmware_rev: fw.to_string(),
                        transport: "pcie".into(),
                        address: pci.to_string(),
                    })
                    .collect(),
            }),
        }
    }

    /// `/` (the first disk, as `disks` reads it) and the network mounts, as the storage part
    /// reads them, and the NVMe controllers' health.
    fn storage(&self, h: &HostLive<'_>, root: Option<&DiskSample>, tick: i64) -> StorageSample {
        let n = self.noise;
        let mut mounts = Vec::new();
        if let (Some(d), Some(r)) = (self.profile.disks.first(), root) {
            mounts.push(StorageMountSample {
                mount_point: d.mount_point.to_string(),
                mounted: true,
                fstype: d.filesystem.to_string(),
                source: d.device.to_string(),
                read_only: false,
                was_writable: true,
                statfs_latency_ms: Some(0.02 + 0.005 * n.gauss(F_STATFS, tick).abs()),
                unresponsive: false,
                total_bytes: Some(r.total_bytes),
                available_bytes: Some(r.available_bytes),
                statfs_error: String::new(),
                view_read_only: false,
            });
        }
        for (i, m) in crate::hosts::NETWORK_MOUNTS.iter().enumerate() {
            let k = F_STATFS + 1 + i as u64;
            let free = if h.mounts_full.contains(&m.mount_point) {
                0.008 + 0.001 * n.gauss(k, tick)
            } else {
                m.available_fraction
            };
            mounts.push(StorageMountSample {
                mount_point: m.mount_point.to_string(),
                mounted: true,
                fstype: m.fstype.to_string(),
                source: m.source.to_string(),
                read_only: false,
                was_writable: true,
                // A round trip to the storage servers: about a millisecond.
                statfs_latency_ms: Some(0.6 + 0.2 * n.gauss(k, tick).abs()),
                unresponsive: false,
                total_bytes: Some(m.total_bytes),
                available_bytes: Some((m.total_bytes as f64 * free) as u64),
                statfs_error: String::new(),
                view_read_only: false,
            });
        }
        for m in &mut mounts {
            let p = m.mount_point.as_str();
            if h.mounts_read_only.contains(&p) {
                m.read_only = true;
            }
            if h.mounts_unresponsive.contains(&p) {
                m.unresponsive = true;
                (m.statfs_latency_ms, m.total_bytes, m.available_bytes) = (None, None, None);
            }
            if h.mounts_missing.contains(&p) {
                *m = StorageMountSample {
                    mount_point: m.mount_point.clone(),
                    was_writable: true,
                    ..Default::default()
                };
            }
        }
        let nvme = crate::hosts::NVME
            .iter()
            .enumerate()
            .map(|(i, (name, ..))| {
                let bad = h.nvme_unhealthy.iter().find(|u| u.0 == *name);
                let alarm = bad.is_some_and(|b| b.2);
                let temp = if alarm {
                    86_850
                } else {
                    36_850
                        + 2_000 * i as i64
                        + (1_000.0 * n.gauss(F_NVME_TEMP + i as u64, tick / 30)) as i64
                };
                StorageNvmeSample {
                    name: name.to_string(),
                    state: bad.map_or("live", |b| b.1).to_string(),
                    temperature_millicelsius: Some(temp),
                    temperature_max_millicelsius: Some(79_850),
                    temperature_crit_millicelsius: Some(84_850),
                    temperature_alarm: Some(alarm),
                }
            })
            .collect();
        StorageSample { mounts, nvme }
    }

    /// The PCIe tree as the node's faults leave it: ACS redirect on the switch ports above
    /// the GPUs an `pcie_acs_enabled` names.
    fn pcie_info(&self, h: &HostLive<'_>) -> Vec<PcieDeviceInfo> {
        self.pcie
            .iter()
            .map(|d| {
                let mut info = d.info.clone();
                if info.kind == PcieDeviceKind::Bridge
                    && info.acs == Acs::Control(0)
                    && d.gpu.is_some_and(|g| h.pcie_acs.contains(&g))
                {
                    info.acs = Acs::Control(ROOT_PORT_ACS);
                }
                info
            })
            .collect()
    }

    /// Each device's link (at its maximum) and AER counters (zero unless a fault counts).
    fn pcie_sample(&self, h: &HostLive<'_>) -> Vec<PcieDeviceSample> {
        self.pcie
            .iter()
            .map(|d| {
                let mut aer = [0u64; 3];
                if d.info.kind != PcieDeviceKind::Bridge {
                    for (target, counts) in &h.pcie_aer {
                        let hit = match target {
                            PcieTarget::Gpu(g) => d.gpu == Some(*g),
                            PcieTarget::Nic(n) => d.hca.as_deref() == Some(*n),
                        };
                        if hit {
                            for (a, c) in aer.iter_mut().zip(counts) {
                                *a += c;
                            }
                        }
                    }
                }
                let (mut speed, mut width) = (d.info.max_link_speed_mts, d.info.max_link_width);
                for (hca, s, w) in &h.pcie_link {
                    if d.hca.as_deref() == Some(*hca) {
                        speed = s.or(speed);
                        width = w.or(width);
                    }
                }
                PcieDeviceSample {
                    bdf: d.info.bdf.clone(),
                    link_speed_mts: speed,
                    link_width: width,
                    aer_correctable: Some(aer[0]),
                    aer_nonfatal: Some(aer[1]),
                    aer_fatal: Some(aer[2]),
                }
            })
            .collect()
    }

    /// Governors, frequencies, THP and EDAC as the host's sysfs would show them.
    /// The name a NIC fault without `nic` means: the host's first Ethernet port.
    fn first_ethernet(&self) -> &'static str {
        self.profile
            .nics
            .iter()
            .find(|n| is_ethernet(n))
            .map_or("eth0", |n| n.name)
    }

    fn eth_targets(&self, target: Option<&str>, name: &str) -> bool {
        target.unwrap_or(self.first_ethernet()) == name
    }

    /// The link speed a NIC negotiated (`None`: down), and whether at half duplex.
    fn eth_link(&self, h: &HostLive<'_>, nic: &crate::hosts::NicSpec) -> (Option<u64>, bool) {
        if h.eth_down.iter().any(|m| self.eth_targets(*m, nic.name)) {
            return (None, false);
        }
        match h.eth_speed.iter().find(|m| self.eth_targets(m.0, nic.name)) {
            Some((_, speed, half)) => (Some(speed.unwrap_or(nic.speed_mbps)), *half),
            None => (Some(nic.speed_mbps), false),
        }
    }

    fn ethernet(&self, h: &HostLive<'_>) -> Vec<EthernetPort> {
        self.profile
            .nics
            .iter()
            .filter(|n| is_ethernet(n))
            .enumerate()
            .map(|(i, nic)| {
                let (speed, half) = self.eth_link(h, nic);
                let changes: u64 = h
                    .eth_carrier_changes
                    .iter()
                    .filter(|(m, _)| self.eth_targets(*m, nic.name))
                    .map(|(_, c)| c)
                    .sum();
                EthernetPort {
                    name: nic.name.to_string(),
                    operstate: if speed.is_some() { "up" } else { "down" }.into(),
                    speed_mbps: speed,
                    duplex: match (speed, half) {
                        (None, _) => String::new(),
                        (Some(_), true) => "half".into(),
                        (Some(_), false) => "full".into(),
                    },
                    // One carrier-up at boot.
                    carrier_changes: Some(1 + changes),
                    pci_address: format!("0000:{:02x}:00.{}", 0x2a + i / 2, i % 2),
                    mtu: Some(nic.mtu),
                }
            })
            .collect()
    }

    fn os(&self, h: &HostLive<'_>, t: i64, tick: i64) -> OsSample {
        let (allocated, max) = match h.file_handles_percent {
            Some(pc) => (FILE_MAX_SET * u64::from(pc) / 100, FILE_MAX_SET),
            None => (
                (18_000.0 + 1_500.0 * self.noise.gauss(F_FILES, tick)) as u64,
                FILE_MAX_UNLIMITED,
            ),
        };
        let swapped_out = h.swapped_bytes.min(self.swap_total_bytes) / 4096;
        let mut stuck = Vec::new();
        let mut in_d = 0;
        for (j, (comm, wchan, count, since)) in h.stuck.iter().enumerate() {
            in_d += count;
            if t - since < STUCK_VISIBLE_MS {
                continue;
            }
            for k in 0..*count {
                stuck.push(StuckProcess {
                    pid: 40_000 + 100 * j as u32 + k,
                    comm: comm.to_string(),
                    blocked_seconds: ((t - since) / 1000) as u64,
                    wchan: wchan.to_string(),
                });
            }
        }
        stuck.truncate(8);
        OsSample {
            file_handles: Some(allocated),
            file_handles_max: Some(max),
            pages_swapped_in: Some(h.swap_pages),
            pages_swapped_out: Some(swapped_out + h.swap_pages),
            oom_kills: Some(h.oom_kills),
            uninterruptible: Some(in_d),
            stuck,
        }
    }

    fn cpu_config(&self, h: &HostLive<'_>, t: i64) -> CpuConfigSample {
        let p = self.profile;
        let cap = h
            .cpu_freq_cap_percent
            .map(|pc| p.cpu_max_khz * u64::from(pc) / 100);
        let top = cap.unwrap_or(p.cpu_max_khz);
        // Busy cores run near the top; powersave parks the idle ones low.
        let avg = match h.cpu_governor {
            Some(_) => top * 45 / 100,
            None => top * 82 / 100,
        };
        let wobble = (self.noise.gauss(F_CPU_FREQ, t.div_euclid(1000)) * 20_000.0) as i64;
        CpuConfigSample {
            governors: [(
                h.cpu_governor.unwrap_or("performance").to_string(),
                p.cpu_logical_cores,
            )]
            .into(),
            scaling_driver: p.scaling_driver.to_string(),
            freq_avg_khz: Some((avg as i64 + wobble).max(0) as u64),
            freq_max_khz: Some(p.cpu_max_khz),
            scaling_max_khz: Some(top),
            capped_cpus: if cap.is_some() {
                p.cpu_logical_cores
            } else {
                0
            },
            thp_enabled: "madvise".into(),
            edac_corrected_errors: Some(h.edac_errors.0),
            edac_uncorrected_errors: Some(h.edac_errors.1),
        }
    }

    fn fabric_nics(&self) -> usize {
        self.profile.nics.iter().filter(|n| n.fabric).count()
    }

    /// The host's InfiniBand HCAs still enumerated: one single-port HCA per fabric NIC,
    /// `mlx5_0`, `mlx5_1`, … in the profile's order.
    fn hcas<'s>(
        &'s self,
        h: &'s HostLive<'_>,
    ) -> impl Iterator<Item = (usize, String, &'static crate::hosts::NicSpec)> + 's {
        self.profile
            .nics
            .iter()
            .filter(|n| n.fabric)
            .enumerate()
            .map(|(i, nic)| (i, crate::faults::hca_name(i), nic))
            .filter(|(_, name, _)| !h.ib_missing.iter().any(|m| targets(*m, name)))
    }

    fn ib_ports(&self, h: &HostLive<'_>, t: i64) -> Vec<IbPortSample> {
        self.hcas(h)
            .map(|(_, name, nic)| {
                let down = h
                    .ib_down
                    .iter()
                    .find(|(m, _)| targets(*m, &name))
                    .map(|d| d.1);
                let rate = h
                    .ib_rate_gbps
                    .iter()
                    .find(|(m, _)| targets(*m, &name))
                    .map_or(nic.speed_mbps as f64 / 1000.0, |r| r.1);
                let symbol_errors = h
                    .ib_symbol_errors
                    .iter()
                    .filter(|(m, _)| targets(*m, &name))
                    .map(|(_, c)| c)
                    .sum();
                // Data moves at about 2 GB/s each way on average, and stops while down.
                let moving_s = down.unwrap_or(t).max(0) as u64 / 1000;
                let data = (self.uptime0_s + moving_s) * 2_000_000_000;
                IbPortSample {
                    port: 1,
                    state: if down.is_some() { "DOWN" } else { "ACTIVE" }.into(),
                    phys_state: if down.is_some() { "Disabled" } else { "LinkUp" }.into(),
                    link_layer: "InfiniBand".into(),
                    rate_gbps: Some(rate),
                    symbol_errors: Some(symbol_errors),
                    link_downed: Some(u64::from(down.is_some())),
                    rcv_errors: Some(0),
                    xmit_discards: Some(0),
                    excessive_buffer_overrun_errors: Some(0),
                    link_error_recovery: Some(0),
                    local_link_integrity_errors: Some(0),
                    rcv_data_bytes: Some(data),
                    xmit_data_bytes: Some(data + data / 97),
                    device: name,
                }
            })
            .collect()
    }

    /// Load average over the `k`th of [`LOAD_TAUS_S`](crate::state::LOAD_TAUS_S): the
    /// healthy level, pulled towards 1.6× the core count as far as the faults pull it.
    fn load_average(&self, h: &HostLive, k: usize) -> f64 {
        let cores = f64::from(self.profile.cpu_logical_cores);
        let healthy = cores * self.cpu_base / 100.0 * 1.05;
        let saturated = cores * 1.6;
        healthy + (saturated - healthy) * h.load_pull[k].min(1.0)
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
            |k: usize| self.load_average(&h, k) * (1.0 + 0.01 * n.gauss(F_LOAD + k as u64, tick));

        let total = p.memory_total_bytes;
        let available = if h.ram_pressure {
            (total as f64 * (0.015 + 0.003 * n.gauss(F_MEM, tick))) as u64
        } else {
            (total as f64 * (1.0 - self.mem_frac - 0.004 * n.gauss(F_MEM, tick))) as u64
        };
        let swapped = h.swapped_bytes;

        let disks: Vec<DiskSample> = p
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
                let errors: u64 = h
                    .nic_errors
                    .iter()
                    .filter(|(target, _)| target.unwrap_or(fault_nic) == nic.name)
                    .map(|(_, count)| count)
                    .sum();
                let link = if is_ethernet(nic) {
                    self.eth_link(&h, nic).0
                } else {
                    Some(nic.speed_mbps)
                };
                if link.is_none() {
                    (rx, tx) = (0.0, 0.0);
                }
                NicSample {
                    name: nic.name.to_string(),
                    rx_bytes_per_second: rx as u64,
                    tx_bytes_per_second: tx as u64,
                    rx_errors: Some(errors),
                    tx_errors: Some(0),
                    rx_dropped: Some(errors * 2 / 5),
                    tx_dropped: Some(0),
                    speed_mbps: link,
                }
            })
            .collect();

        HostSample {
            cpu_percent: Some(cpu as f32),
            cpu_per_core_percent: Vec::new(),
            load_average_1m: Some(load(0)),
            load_average_5m: Some(load(1)),
            load_average_15m: Some(load(2)),
            memory_used_bytes: total - available.min(total),
            memory_total_bytes: total,
            memory_available_bytes: available.min(total),
            swap_used_bytes: swapped.min(self.swap_total_bytes * 9 / 10),
            swap_total_bytes: self.swap_total_bytes,
            nics,
            uptime_seconds: self.uptime_s(&h, t),
            ib_ports: self.ib_ports(&h, t),
            cpu_config: Some(self.cpu_config(&h, t)),
            os: Some(self.os(&h, t, tick)),
            ethernet: self.ethernet(&h),
            driver_daemons: Some(DriverDaemons {
                persistenced: !h.persistenced_down,
                fabricmanager: self.profile.nvswitch_count() > 0 && !h.fabricmanager_down,
            }),
            pcie_devices: self.pcie_sample(&h),
            storage: Some(self.storage(&h, disks.first(), tick)),
            disks,
        }
    }
}

impl HostSim {
    /// Kernel-log events the node's faults write in `(after, until]` (ms from the origin),
    /// dated from `origin`, in time order.
    pub fn events(
        &self,
        after: i64,
        until: i64,
        origin: gpufleet_model::UnixMs,
    ) -> Vec<gpufleet_model::Event> {
        let mut out = Vec::new();
        for f in &self.faults {
            let Some(k) = f.kind.kernel_log() else {
                continue;
            };
            let Some(line) = gpufleet_model::kernel_log::classify(&k.line) else {
                continue;
            };
            let start = f.start_ms as i64;
            let end = f.end_ms.map_or(i64::MAX, |e| e as i64);
            let interval = k.interval_ms.max(1);
            // Occurrence n at start + n·interval, while the fault is on.
            let lo = after + 1 - start;
            let hi = until.min(end - 1) - start;
            if hi < 0 {
                continue;
            }
            let first = if lo <= 0 {
                0
            } else {
                (lo + interval - 1) / interval
            };
            for n in first..=hi / interval {
                out.push(line.event(origin.plus_ms(start + n * interval), "simulated"));
            }
        }
        out.sort_by_key(|e| e.timestamp);
        out
    }

    /// The node's driver at `t`: the simulated one unless a `driver_change` installed another.
    fn driver_version(&self, t: i64) -> &str {
        let mut n = NodeInfoEdit::default();
        for f in self.driver_faults.iter().filter(|f| f.active_at(t)) {
            f.kind.node_info(&mut n);
        }
        n.driver_version.unwrap_or(crate::gpu::DRIVER_VERSION)
    }

    /// Kernel modules, libraries and Fabric Manager as the node's faults leave them: every
    /// part at the driver's version unless a fault says otherwise.
    fn driver_stack(&self, h: &HostLive<'_>, t: i64) -> DriverStackInfo {
        let driver = self.driver_version(t);
        let version_of = |part: Option<&str>| {
            h.driver_versions
                .iter()
                .find(|(p, _)| *p == part)
                .map_or(driver, |(_, v)| *v)
                .to_string()
        };
        let nvswitches = self.profile.nvswitch_count();
        DriverStackInfo {
            modules: crate::faults::DRIVER_MODULES
                .iter()
                .filter(|m| !h.modules_missing.contains(m))
                .map(|m| KernelModuleInfo {
                    name: m.to_string(),
                    version: version_of(Some(m)),
                    state: "Live".into(),
                })
                .collect(),
            kernel_driver_version: version_of(Some("nvidia")),
            libcuda_version: version_of(None),
            libnvidia_ml_version: version_of(None),
            fabricmanager_version: if nvswitches > 0 {
                h.fabricmanager_version.unwrap_or(driver).to_string()
            } else {
                String::new()
            },
            nvswitch_count: nvswitches,
        }
    }
}

/// A fault aimed at `target` (`None`: the first HCA) hits HCA `name`.
/// A NIC the host shows under `/sys/class/net` as Ethernet (the `ibp…` ones are IPoIB).
fn is_ethernet(n: &crate::hosts::NicSpec) -> bool {
    !n.name.starts_with("ib")
}

fn targets(target: Option<&str>, name: &str) -> bool {
    match target {
        Some(crate::faults::ALL_HCAS) => true,
        t => t.unwrap_or("mlx5_0") == name,
    }
}

/// `ibp24s0` (the netdev name udev gives the HCA in PCI bus 24) → `0000:18:00.0`.
fn pci_of(netdev: &str) -> String {
    let bus = netdev
        .strip_prefix("ibp")
        .and_then(|r| r.split('s').next())
        .and_then(|b| b.parse::<u32>().ok())
        .unwrap_or(0);
    format!("0000:{bus:02x}:00.0")
}

/// ACS Control as Linux sets it on root ports when an IOMMU is on: SrcValid, ReqRedir,
/// CmpltRedir, UpstreamFwd.
const ROOT_PORT_ACS: u16 = 0x001d;

/// PCIe link rate of a generation, MT/s.
fn gen_mts(generation: u32) -> u32 {
    match generation {
        1 => 2_500,
        2 => 5_000,
        3 => 8_000,
        4 => 16_000,
        5 => 32_000,
        _ => 64_000,
    }
}

fn bus_of(bdf: &str) -> u8 {
    bdf.get(5..7)
        .and_then(|b| u8::from_str_radix(b, 16).ok())
        .unwrap_or(0)
}

/// The node's PCIe tree, HGX-style: GPUs 2k and 2k+1 below PCIe switch k with the HCAs
/// spread evenly over the switches, each switch under its own root port (root port
/// `BB-3:01.0`, switch upstream port `BB-2:00.0`, one downstream port `BB-1:0N.0` per device,
/// BB the switch's lowest device bus); the first half of the switches on NUMA node 0, the
/// rest on 1. HCAs sit at the bus their netdev name says (`ibp24s0` → `0000:18:00.0`), moved
/// up a bus where a GPU is. Returns the HCAs' addresses and the devices: endpoints in address
/// order, then bridges (as the agent lists them).
fn pcie_tree(model: &GpuModelProfile, gpu_count: u32) -> (Vec<String>, Vec<SimPcie>) {
    use gpufleet_model::pcie::normalize_bdf;
    let gpus: Vec<String> = (0..gpu_count)
        .map(|i| normalize_bdf(&model.pci_bus_id(i)))
        .collect();
    let mut taken: Vec<u8> = gpus.iter().map(|g| bus_of(g)).collect();
    let fabric: Vec<&crate::hosts::NicSpec> = model.host.nics.iter().filter(|n| n.fabric).collect();
    let hcas: Vec<String> = fabric
        .iter()
        .map(|n| {
            let mut bus = bus_of(&pci_of(n.name));
            while taken.contains(&bus) {
                bus = bus.wrapping_add(1);
            }
            taken.push(bus);
            format!("0000:{bus:02x}:00.0")
        })
        .collect();
    let switches = gpus.len().div_ceil(2).max(1);
    let gpu_link = (gen_mts(model.pcie_gen_max), model.pcie_width_max);
    let mut ends: Vec<SimPcie> = Vec::new();
    let mut bridges: Vec<SimPcie> = Vec::new();
    let dev =
        |bdf: String, kind, ids: (u32, u32, u32), numa: i32, link: (u32, u32)| PcieDeviceInfo {
            bdf,
            kind,
            vendor_id: ids.0,
            device_id: ids.1,
            class_code: ids.2,
            name: String::new(),
            numa_node: Some(numa),
            max_link_speed_mts: Some(link.0),
            max_link_width: Some(link.1),
            upstream: Vec::new(),
            acs: Acs::Unknown,
        };
    for k in 0..switches {
        let numa = i32::from(k * 2 >= switches && switches > 1);
        // (bdf, gpu, hca index)
        let mut below: Vec<(String, Option<u32>, Option<usize>)> = Vec::new();
        for g in [2 * k, 2 * k + 1] {
            if let Some(bdf) = gpus.get(g) {
                below.push((bdf.clone(), Some(g as u32), None));
            }
        }
        for (j, bdf) in hcas.iter().enumerate() {
            if j * switches / hcas.len().max(1) == k {
                below.push((bdf.clone(), None, Some(j)));
            }
        }
        if below.is_empty() {
            continue;
        }
        below.sort();
        let b0 = below.iter().map(|(b, ..)| bus_of(b)).min().unwrap_or(3);
        let rp = format!("0000:{:02x}:01.0", b0.wrapping_sub(3));
        let usp = format!("0000:{:02x}:00.0", b0.wrapping_sub(2));
        let mut root = dev(
            rp.clone(),
            PcieDeviceKind::Bridge,
            (0x8086, 0x352a, 0x060400),
            numa,
            gpu_link,
        );
        root.acs = Acs::Control(ROOT_PORT_ACS);
        bridges.push(SimPcie {
            info: root,
            gpu: None,
            hca: None,
        });
        let mut up = dev(
            usp.clone(),
            PcieDeviceKind::Bridge,
            (0x1000, 0xc030, 0x060400),
            numa,
            gpu_link,
        );
        up.upstream = vec![rp.clone()];
        up.acs = Acs::NotCapable;
        bridges.push(SimPcie {
            info: up,
            gpu: None,
            hca: None,
        });
        for (n, (bdf, gpu, hca)) in below.into_iter().enumerate() {
            let dsp = format!("0000:{:02x}:{n:02x}.0", b0.wrapping_sub(1));
            let mut down = dev(
                dsp.clone(),
                PcieDeviceKind::Bridge,
                (0x1000, 0xc030, 0x060400),
                numa,
                gpu_link,
            );
            down.upstream = vec![rp.clone(), usp.clone()];
            down.acs = Acs::Control(0);
            bridges.push(SimPcie {
                info: down,
                gpu,
                hca: None,
            });
            let mut end = match hca {
                None => dev(
                    bdf,
                    PcieDeviceKind::Gpu,
                    (0x10de, 0x2330, 0x030200),
                    numa,
                    gpu_link,
                ),
                Some(j) => {
                    let ndr = fabric[j].speed_mbps >= 400_000;
                    let mut d = dev(
                        bdf,
                        PcieDeviceKind::Nic,
                        (0x15b3, if ndr { 0x1021 } else { 0x101b }, 0x020700),
                        numa,
                        (if ndr { 32_000 } else { 16_000 }, 16),
                    );
                    d.name = crate::faults::hca_name(j);
                    d
                }
            };
            end.upstream = vec![rp.clone(), usp.clone(), dsp];
            ends.push(SimPcie {
                info: end,
                gpu,
                hca: hca.map(crate::faults::hca_name),
            });
        }
    }
    ends.sort_by(|a, b| a.info.bdf.cmp(&b.info.bdf));
    bridges.sort_by(|a, b| a.info.bdf.cmp(&b.info.bdf));
    ends.extend(bridges);
    (hcas, ends)
}
