//! What a node is made of and which versions it runs (see `inventory.proto` for field docs).

use serde::{Deserialize, Serialize};

use crate::UnixMs;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub hostname: String,
    pub machine_id: String,
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub read_at: UnixMs,
    pub driver: DriverInfo,
    pub gpus: Vec<GpuInfo>,
    pub host: HostInfo,
}

/// What a GPU backend (NVML or the simulator) knows about a node's GPUs and driver: the GPU
/// half of an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuInventory {
    pub driver: DriverInfo,
    pub gpus: Vec<GpuInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriverInfo {
    pub driver_version: String,
    pub nvml_version: String,
    pub cuda_driver_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub serial: String,
    pub pci_bus_id: String,
    pub architecture: String,
    pub memory_total_bytes: Option<u64>,
    pub bar1_total_bytes: Option<u64>,
    pub vbios_version: String,
    pub inforom_image_version: String,
    pub gsp_firmware_version: String,
    pub persistence_mode: Option<bool>,
    pub compute_mode: String,
    pub mig_enabled: Option<bool>,
    pub ecc_enabled: Option<bool>,
    pub pcie_link_gen_max: Option<u32>,
    pub pcie_link_width_max: Option<u32>,
    pub sm_clock_max_mhz: Option<u32>,
    pub memory_clock_max_mhz: Option<u32>,
    pub graphics_clock_max_mhz: Option<u32>,
    pub power_limit_default_milliwatts: Option<u32>,
    pub power_limit_min_milliwatts: Option<u32>,
    pub power_limit_max_milliwatts: Option<u32>,
    pub temperature_slowdown_celsius: Option<i32>,
    pub temperature_shutdown_celsius: Option<i32>,
    pub temperature_max_operating_celsius: Option<i32>,
    pub memory_temperature_max_operating_celsius: Option<i32>,
    pub cuda_compute_capability: String,
    pub nvlink_count: u32,
    pub fan_count: Option<u32>,
    pub board_part_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub os_name: String,
    pub kernel_version: String,
    pub cpu_model: String,
    pub cpu_logical_cores: u32,
    pub cpu_physical_cores: Option<u32>,
    pub memory_total_bytes: u64,
    pub swap_total_bytes: u64,
    pub nics: Vec<NicInfo>,
    pub disks: Vec<DiskInfo>,
    pub uptime_seconds: u64,
    /// RDMA devices (InfiniBand HCAs, RoCE NICs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ib_devices: Vec<IbDeviceInfo>,
    /// The NVIDIA driver stack (`None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_stack: Option<DriverStackInfo>,
    /// GPUs, NVSwitches, NICs, NVMe drives and the bridges above them
    /// (`/sys/bus/pci/devices`): endpoints in address order, then bridges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcie_devices: Vec<PcieDeviceInfo>,
    /// Local NVMe controllers (`None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::StorageInfo>,
}

/// What a PCIe device is, by vendor and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PcieDeviceKind {
    #[default]
    Unknown,
    /// NVIDIA 3D or VGA controller.
    Gpu,
    /// NVIDIA bridge/other: an NVSwitch.
    NvSwitch,
    /// Mellanox/NVIDIA InfiniBand or Ethernet controller.
    Nic,
    Nvme,
    /// A root port or PCIe switch port above one of the others.
    Bridge,
}

impl PcieDeviceKind {
    /// `GPU`, `NIC`, … as findings and `/metrics` name it.
    pub fn label(self) -> &'static str {
        match self {
            PcieDeviceKind::Unknown => "unknown",
            PcieDeviceKind::Gpu => "gpu",
            PcieDeviceKind::NvSwitch => "nvswitch",
            PcieDeviceKind::Nic => "nic",
            PcieDeviceKind::Nvme => "nvme",
            PcieDeviceKind::Bridge => "bridge",
        }
    }
}

/// A bridge's Access Control Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Acs {
    /// Not read: the extended config space is readable only as root (or not a bridge).
    #[default]
    Unknown,
    /// No ACS extended capability.
    NotCapable,
    /// The ACS Control register ([`crate::pcie::acs`] names its bits).
    Control(u16),
}

/// One PCIe device (`/sys/bus/pci/devices/BDF`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PcieDeviceInfo {
    /// `0000:18:00.0`.
    pub bdf: String,
    pub kind: PcieDeviceKind,
    pub vendor_id: u32,
    pub device_id: u32,
    pub class_code: u32,
    /// `mlx5_0`, `nvme0`, … (`""`: none).
    pub name: String,
    pub numa_node: Option<i32>,
    pub max_link_speed_mts: Option<u32>,
    pub max_link_width: Option<u32>,
    /// Bridges above the device, root port first.
    pub upstream: Vec<String>,
    /// Bridges only.
    pub acs: Acs,
}

/// One RDMA device from `/sys/class/infiniband/DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IbDeviceInfo {
    pub name: String,
    pub fw_version: String,
    pub board_id: String,
    pub hca_type: String,
    pub pci_address: String,
    pub numa_node: Option<i32>,
    pub ports: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicInfo {
    pub name: String,
    pub mac_address: String,
    pub speed_mbps: Option<u64>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskInfo {
    pub mount_point: String,
    pub device: String,
    pub filesystem: String,
    pub total_bytes: u64,
}

impl Inventory {
    pub fn gpu(&self, index: u32) -> Option<&GpuInfo> {
        self.gpus.iter().find(|g| g.index == index)
    }

    /// Same hardware and versions, ignoring when it was read and the host's uptime.
    pub fn same_content(&self, other: &Inventory) -> bool {
        let strip = |i: &Inventory| {
            let mut i = i.clone();
            i.read_at = UnixMs(0);
            i.host.uptime_seconds = 0;
            i
        };
        strip(self) == strip(other)
    }
}

/// The NVIDIA driver stack as the host shows it: kernel modules, user-space libraries and
/// Fabric Manager. A version is `""` when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DriverStackInfo {
    /// Loaded NVIDIA kernel modules, in name order.
    pub modules: Vec<KernelModuleInfo>,
    /// `/proc/driver/nvidia/version`'s "NVRM version".
    pub kernel_driver_version: String,
    pub libcuda_version: String,
    pub libnvidia_ml_version: String,
    /// Installed Fabric Manager package (`""`: not installed).
    pub fabricmanager_version: String,
    /// NVSwitch devices on the PCI bus.
    pub nvswitch_count: u32,
}

/// One loaded kernel module (`/proc/modules`, `/sys/module/NAME/version`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelModuleInfo {
    pub name: String,
    pub version: String,
    /// `Live`, `Loading`, `Unloading`.
    pub state: String,
}

impl DriverStackInfo {
    /// The loaded module called `name`.
    pub fn module(&self, name: &str) -> Option<&KernelModuleInfo> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The kernel driver's version: the `nvidia` module's, else `/proc/driver/nvidia`'s.
    pub fn kernel_version(&self) -> &str {
        match self.module("nvidia").map(|m| m.version.as_str()) {
            Some(v) if !v.is_empty() => v,
            _ => &self.kernel_driver_version,
        }
    }
}
