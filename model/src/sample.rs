//! Fast-changing readings (see `sample.proto` for field docs). `None` = not read.

use serde::{Deserialize, Serialize};

use crate::UnixMs;

/// A percentage to the hundredth, as GPM readings are kept: the resolution dcgm-exporter
/// publishes them at (a ratio to 4 decimals), and what the store keeps compactly (a float
/// column of whole hundredths is stored as integers). Finer digits of a rate measured over one
/// interval are noise.
pub fn hundredths(percent: f64) -> f32 {
    ((percent * 100.0).round() / 100.0) as f32
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    pub timestamp: UnixMs,
    pub gpus: Vec<GpuSample>,
    pub host: HostSample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuStatus {
    #[default]
    Ok,
    /// NVML reports the GPU lost (fallen off the bus).
    Lost,
    /// Present in the inventory, but this read failed.
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub status: GpuStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub temperature_gpu_celsius: Option<i32>,
    pub temperature_memory_celsius: Option<i32>,
    pub fan_speed_percent: Option<u32>,
    pub power_usage_milliwatts: Option<u32>,
    pub power_limit_enforced_milliwatts: Option<u32>,
    pub total_energy_millijoules: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub bar1_used_bytes: Option<u64>,
    pub utilization_gpu_percent: Option<u32>,
    pub utilization_memory_percent: Option<u32>,
    pub utilization_encoder_percent: Option<u32>,
    pub utilization_decoder_percent: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub graphics_clock_mhz: Option<u32>,
    pub sm_clock_applications_mhz: Option<u32>,
    pub memory_clock_applications_mhz: Option<u32>,
    pub clock_event_reasons: Option<u64>,
    pub violation_power_ns: Option<u64>,
    pub violation_thermal_ns: Option<u64>,
    pub violation_sync_boost_ns: Option<u64>,
    pub violation_board_limit_ns: Option<u64>,
    pub violation_low_utilization_ns: Option<u64>,
    pub violation_reliability_ns: Option<u64>,
    pub pcie_link_gen: Option<u32>,
    pub pcie_link_width: Option<u32>,
    pub pcie_tx_kbps: Option<u32>,
    pub pcie_rx_kbps: Option<u32>,
    pub pcie_replay_count: Option<u64>,
    pub ecc_corrected_volatile: Option<u64>,
    pub ecc_uncorrected_volatile: Option<u64>,
    pub ecc_corrected_aggregate: Option<u64>,
    pub ecc_uncorrected_aggregate: Option<u64>,
    pub retired_pages_single_bit: Option<u32>,
    pub retired_pages_double_bit: Option<u32>,
    pub retired_pages_pending: Option<bool>,
    pub remapped_rows_correctable: Option<u32>,
    pub remapped_rows_uncorrectable: Option<u32>,
    pub remapped_rows_pending: Option<bool>,
    pub remapped_rows_failure: Option<bool>,
    pub performance_state: Option<u32>,
    /// GPM profiling readings over the last interval (Hopper and later; see `sample.proto`).
    pub gpm_graphics_active_percent: Option<f32>,
    pub gpm_sm_active_percent: Option<f32>,
    pub gpm_sm_occupancy_percent: Option<f32>,
    pub gpm_tensor_active_percent: Option<f32>,
    pub gpm_dram_active_percent: Option<f32>,
    pub gpm_fp64_active_percent: Option<f32>,
    pub gpm_fp32_active_percent: Option<f32>,
    pub gpm_fp16_active_percent: Option<f32>,
    pub gpm_pcie_tx_bytes_per_second: Option<u64>,
    pub gpm_pcie_rx_bytes_per_second: Option<u64>,
    pub gpm_nvlink_tx_bytes_per_second: Option<u64>,
    pub gpm_nvlink_rx_bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlinks: Vec<NvLinkSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<GpuProcess>,
}

impl GpuSample {
    /// A sample that only says the GPU could not be read.
    pub fn failed(index: u32, uuid: &str, status: GpuStatus, error: impl Into<String>) -> Self {
        GpuSample {
            index,
            uuid: uuid.to_string(),
            status,
            error: error.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NvLinkSample {
    pub link: u32,
    pub active: Option<bool>,
    pub replay_errors: Option<u64>,
    pub recovery_errors: Option<u64>,
    pub crc_flit_errors: Option<u64>,
    pub crc_data_errors: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub name: String,
    pub used_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostSample {
    pub cpu_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_per_core_percent: Vec<f32>,
    pub load_average_1m: Option<f64>,
    pub load_average_5m: Option<f64>,
    pub load_average_15m: Option<f64>,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub disks: Vec<DiskSample>,
    pub nics: Vec<NicSample>,
    pub uptime_seconds: u64,
    /// Every port of every RDMA device (InfiniBand HCAs, RoCE NICs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ib_ports: Vec<IbPortSample>,
    /// CPU frequency scaling, transparent hugepages, EDAC memory errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_config: Option<CpuConfigSample>,
    /// NVIDIA daemons running (`None`: processes could not be listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_daemons: Option<DriverDaemons>,
    /// Watched mounts and NVMe controllers (`None`: storage could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::StorageSample>,
    /// File handles, paging, OOM kills, stuck processes (`None`: procfs unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsSample>,
    /// Physical Ethernet ports from sysfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ethernet: Vec<EthernetPort>,
    /// Link and AER counters of the inventory's PCIe devices, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcie_devices: Vec<PcieDeviceSample>,
}

/// The operating system's own health, from procfs (`sys/fs/file-nr`, `vmstat`, `PID/stat`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OsSample {
    pub file_handles: Option<u64>,
    pub file_handles_max: Option<u64>,
    /// Cumulative since boot.
    pub pages_swapped_in: Option<u64>,
    pub pages_swapped_out: Option<u64>,
    pub oom_kills: Option<u64>,
    /// Processes in state D at the last scan.
    pub uninterruptible: Option<u32>,
    /// Processes blocked without being scheduled across scans, longest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<StuckProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StuckProcess {
    pub pid: u32,
    pub comm: String,
    pub blocked_seconds: u64,
    pub wchan: String,
}

/// One physical Ethernet port (`/sys/class/net/NIC`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EthernetPort {
    pub name: String,
    pub operstate: String,
    pub speed_mbps: Option<u64>,
    pub duplex: String,
    pub carrier_changes: Option<u64>,
    pub pci_address: String,
    pub mtu: Option<u32>,
}

impl EthernetPort {
    /// The link is up (`operstate` up; `unknown` counts as up when a speed was negotiated,
    /// as some drivers never set operstate).
    pub fn is_up(&self) -> bool {
        self.operstate == "up" || (self.operstate == "unknown" && self.speed_mbps.is_some())
    }
}

/// One PCIe device's link and AER error counters (cumulative since boot; `None` where the
/// device or kernel has no AER).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PcieDeviceSample {
    pub bdf: String,
    pub link_speed_mts: Option<u32>,
    pub link_width: Option<u32>,
    pub aer_correctable: Option<u64>,
    pub aer_nonfatal: Option<u64>,
    pub aer_fatal: Option<u64>,
}

/// How the host's CPUs and memory are set up (`/sys/devices/system/cpu`, `edac`, THP).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuConfigSample {
    /// CPUs per frequency governor.
    pub governors: std::collections::BTreeMap<String, u32>,
    pub scaling_driver: String,
    pub freq_avg_khz: Option<u64>,
    pub freq_max_khz: Option<u64>,
    pub scaling_max_khz: Option<u64>,
    pub capped_cpus: u32,
    pub thp_enabled: String,
    pub edac_corrected_errors: Option<u64>,
    pub edac_uncorrected_errors: Option<u64>,
}

impl CpuConfigSample {
    /// The governor most CPUs run, and on how many.
    pub fn main_governor(&self) -> Option<(&str, u32)> {
        self.governors
            .iter()
            .max_by_key(|(g, n)| (**n, std::cmp::Reverse(g.as_str())))
            .map(|(g, n)| (g.as_str(), *n))
    }

    pub fn cpus(&self) -> u32 {
        self.governors.values().sum()
    }
}

/// One port of an RDMA device (`/sys/class/infiniband/DEVICE/ports/PORT`). Counters are
/// cumulative since the driver loaded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IbPortSample {
    pub device: String,
    pub port: u32,
    /// `ACTIVE`, `DOWN`, `INIT`, `ARMED`, …
    pub state: String,
    /// `LinkUp`, `Disabled`, `Polling`, …
    pub phys_state: String,
    /// `InfiniBand` or `Ethernet` (RoCE).
    pub link_layer: String,
    pub rate_gbps: Option<f64>,
    pub symbol_errors: Option<u64>,
    pub link_downed: Option<u64>,
    pub rcv_errors: Option<u64>,
    pub xmit_discards: Option<u64>,
    pub excessive_buffer_overrun_errors: Option<u64>,
    pub link_error_recovery: Option<u64>,
    pub local_link_integrity_errors: Option<u64>,
    pub rcv_data_bytes: Option<u64>,
    pub xmit_data_bytes: Option<u64>,
}

impl IbPortSample {
    /// `mlx5_0/1`: how findings and metrics name the port.
    pub fn id(&self) -> String {
        format!("{}/{}", self.device, self.port)
    }

    pub fn is_infiniband(&self) -> bool {
        self.link_layer.eq_ignore_ascii_case("infiniband")
    }

    /// Logically and physically up.
    pub fn is_up(&self) -> bool {
        self.state.eq_ignore_ascii_case("active") && self.phys_state.eq_ignore_ascii_case("linkup")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskSample {
    pub mount_point: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicSample {
    pub name: String,
    pub rx_bytes_per_second: u64,
    pub tx_bytes_per_second: u64,
    pub rx_errors: Option<u64>,
    pub tx_errors: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_dropped: Option<u64>,
    pub speed_mbps: Option<u64>,
}

impl Sample {
    pub fn gpu(&self, index: u32) -> Option<&GpuSample> {
        self.gpus.iter().find(|g| g.index == index)
    }
}

/// Which NVIDIA driver daemons run, from `/proc/PID/comm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriverDaemons {
    /// `nvidia-persistenced`.
    pub persistenced: bool,
    /// `nv-fabricmanager` (NVIDIA Fabric Manager).
    pub fabricmanager: bool,
}
