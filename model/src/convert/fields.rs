//! Hand-written, field-by-field copies between domain and wire types for messages whose fields
//! match one to one. Both sides are complete struct literals, so a field added to the .proto or to the
//! domain type and not here fails to compile.

use gpufleet_proto::v1 as pb;

use crate::*;

impl From<GpuInfo> for pb::GpuInfo {
    fn from(v: GpuInfo) -> Self {
        pb::GpuInfo {
            index: v.index,
            name: v.name,
            uuid: v.uuid,
            serial: v.serial,
            pci_bus_id: v.pci_bus_id,
            architecture: v.architecture,
            memory_total_bytes: v.memory_total_bytes,
            bar1_total_bytes: v.bar1_total_bytes,
            vbios_version: v.vbios_version,
            inforom_image_version: v.inforom_image_version,
            gsp_firmware_version: v.gsp_firmware_version,
            persistence_mode: v.persistence_mode,
            compute_mode: v.compute_mode,
            mig_enabled: v.mig_enabled,
            ecc_enabled: v.ecc_enabled,
            pcie_link_gen_max: v.pcie_link_gen_max,
            pcie_link_width_max: v.pcie_link_width_max,
            sm_clock_max_mhz: v.sm_clock_max_mhz,
            memory_clock_max_mhz: v.memory_clock_max_mhz,
            graphics_clock_max_mhz: v.graphics_clock_max_mhz,
            power_limit_default_milliwatts: v.power_limit_default_milliwatts,
            power_limit_min_milliwatts: v.power_limit_min_milliwatts,
            power_limit_max_milliwatts: v.power_limit_max_milliwatts,
            temperature_slowdown_celsius: v.temperature_slowdown_celsius,
            temperature_shutdown_celsius: v.temperature_shutdown_celsius,
            temperature_max_operating_celsius: v.temperature_max_operating_celsius,
            memory_temperature_max_operating_celsius: v.memory_temperature_max_operating_celsius,
            cuda_compute_capability: v.cuda_compute_capability,
            nvlink_count: v.nvlink_count,
            fan_count: v.fan_count,
            board_part_number: v.board_part_number,
        }
    }
}

impl From<pb::GpuInfo> for GpuInfo {
    fn from(v: pb::GpuInfo) -> Self {
        GpuInfo {
            index: v.index,
            name: v.name,
            uuid: v.uuid,
            serial: v.serial,
            pci_bus_id: v.pci_bus_id,
            architecture: v.architecture,
            memory_total_bytes: v.memory_total_bytes,
            bar1_total_bytes: v.bar1_total_bytes,
            vbios_version: v.vbios_version,
            inforom_image_version: v.inforom_image_version,
            gsp_firmware_version: v.gsp_firmware_version,
            persistence_mode: v.persistence_mode,
            compute_mode: v.compute_mode,
            mig_enabled: v.mig_enabled,
            ecc_enabled: v.ecc_enabled,
            pcie_link_gen_max: v.pcie_link_gen_max,
            pcie_link_width_max: v.pcie_link_width_max,
            sm_clock_max_mhz: v.sm_clock_max_mhz,
            memory_clock_max_mhz: v.memory_clock_max_mhz,
            graphics_clock_max_mhz: v.graphics_clock_max_mhz,
            power_limit_default_milliwatts: v.power_limit_default_milliwatts,
            power_limit_min_milliwatts: v.power_limit_min_milliwatts,
            power_limit_max_milliwatts: v.power_limit_max_milliwatts,
            temperature_slowdown_celsius: v.temperature_slowdown_celsius,
            temperature_shutdown_celsius: v.temperature_shutdown_celsius,
            temperature_max_operating_celsius: v.temperature_max_operating_celsius,
            memory_temperature_max_operating_celsius: v.memory_temperature_max_operating_celsius,
            cuda_compute_capability: v.cuda_compute_capability,
            nvlink_count: v.nvlink_count,
            fan_count: v.fan_count,
            board_part_number: v.board_part_number,
        }
    }
}

impl From<NvLinkSample> for pb::NvLinkSample {
    fn from(v: NvLinkSample) -> Self {
        pb::NvLinkSample {
            link: v.link,
            active: v.active,
            replay_errors: v.replay_errors,
            recovery_errors: v.recovery_errors,
            crc_flit_errors: v.crc_flit_errors,
            crc_data_errors: v.crc_data_errors,
        }
    }
}

impl From<pb::NvLinkSample> for NvLinkSample {
    fn from(v: pb::NvLinkSample) -> Self {
        NvLinkSample {
            link: v.link,
            active: v.active,
            replay_errors: v.replay_errors,
            recovery_errors: v.recovery_errors,
            crc_flit_errors: v.crc_flit_errors,
            crc_data_errors: v.crc_data_errors,
        }
    }
}

impl From<GpuProcess> for pb::GpuProcess {
    fn from(v: GpuProcess) -> Self {
        pb::GpuProcess {
            pid: v.pid,
            name: v.name,
            used_memory_bytes: v.used_memory_bytes,
        }
    }
}

impl From<pb::GpuProcess> for GpuProcess {
    fn from(v: pb::GpuProcess) -> Self {
        GpuProcess {
            pid: v.pid,
            name: v.name,
            used_memory_bytes: v.used_memory_bytes,
        }
    }
}

impl From<DiskSample> for pb::DiskSample {
    fn from(v: DiskSample) -> Self {
        pb::DiskSample {
            mount_point: v.mount_point,
            total_bytes: v.total_bytes,
            available_bytes: v.available_bytes,
        }
    }
}

impl From<pb::DiskSample> for DiskSample {
    fn from(v: pb::DiskSample) -> Self {
        DiskSample {
            mount_point: v.mount_point,
            total_bytes: v.total_bytes,
            available_bytes: v.available_bytes,
        }
    }
}

impl From<NicSample> for pb::NicSample {
    fn from(v: NicSample) -> Self {
        pb::NicSample {
            name: v.name,
            rx_bytes_per_second: v.rx_bytes_per_second,
            tx_bytes_per_second: v.tx_bytes_per_second,
            rx_errors: v.rx_errors,
            tx_errors: v.tx_errors,
            rx_dropped: v.rx_dropped,
            tx_dropped: v.tx_dropped,
            speed_mbps: v.speed_mbps,
        }
    }
}

impl From<pb::NicSample> for NicSample {
    fn from(v: pb::NicSample) -> Self {
        NicSample {
            name: v.name,
            rx_bytes_per_second: v.rx_bytes_per_second,
            tx_bytes_per_second: v.tx_bytes_per_second,
            rx_errors: v.rx_errors,
            tx_errors: v.tx_errors,
            rx_dropped: v.rx_dropped,
            tx_dropped: v.tx_dropped,
            speed_mbps: v.speed_mbps,
        }
    }
}

impl From<NicInfo> for pb::NicInfo {
    fn from(v: NicInfo) -> Self {
        pb::NicInfo {
            name: v.name,
            mac_address: v.mac_address,
            speed_mbps: v.speed_mbps,
            mtu: v.mtu,
        }
    }
}

impl From<pb::NicInfo> for NicInfo {
    fn from(v: pb::NicInfo) -> Self {
        NicInfo {
            name: v.name,
            mac_address: v.mac_address,
            speed_mbps: v.speed_mbps,
            mtu: v.mtu,
        }
    }
}

impl From<DiskInfo> for pb::DiskInfo {
    fn from(v: DiskInfo) -> Self {
        pb::DiskInfo {
            mount_point: v.mount_point,
            device: v.device,
            filesystem: v.filesystem,
            total_bytes: v.total_bytes,
        }
    }
}

impl From<pb::DiskInfo> for DiskInfo {
    fn from(v: pb::DiskInfo) -> Self {
        DiskInfo {
            mount_point: v.mount_point,
            device: v.device,
            filesystem: v.filesystem,
            total_bytes: v.total_bytes,
        }
    }
}

impl From<DriverInfo> for pb::DriverInfo {
    fn from(v: DriverInfo) -> Self {
        pb::DriverInfo {
            driver_version: v.driver_version,
            nvml_version: v.nvml_version,
            cuda_driver_version: v.cuda_driver_version,
        }
    }
}

impl From<pb::DriverInfo> for DriverInfo {
    fn from(v: pb::DriverInfo) -> Self {
        DriverInfo {
            driver_version: v.driver_version,
            nvml_version: v.nvml_version,
            cuda_driver_version: v.cuda_driver_version,
        }
    }
}

impl From<GpuSample> for pb::GpuSample {
    fn from(v: GpuSample) -> Self {
        pb::GpuSample {
            index: v.index,
            uuid: v.uuid,
            status: pb::GpuStatus::from(v.status) as i32,
            error: v.error,
            temperature_gpu_celsius: v.temperature_gpu_celsius,
            temperature_memory_celsius: v.temperature_memory_celsius,
            fan_speed_percent: v.fan_speed_percent,
            power_usage_milliwatts: v.power_usage_milliwatts,
            power_limit_enforced_milliwatts: v.power_limit_enforced_milliwatts,
            total_energy_millijoules: v.total_energy_millijoules,
            memory_used_bytes: v.memory_used_bytes,
            memory_total_bytes: v.memory_total_bytes,
            bar1_used_bytes: v.bar1_used_bytes,
            utilization_gpu_percent: v.utilization_gpu_percent,
            utilization_memory_percent: v.utilization_memory_percent,
            utilization_encoder_percent: v.utilization_encoder_percent,
            utilization_decoder_percent: v.utilization_decoder_percent,
            sm_clock_mhz: v.sm_clock_mhz,
            memory_clock_mhz: v.memory_clock_mhz,
            graphics_clock_mhz: v.graphics_clock_mhz,
            sm_clock_applications_mhz: v.sm_clock_applications_mhz,
            memory_clock_applications_mhz: v.memory_clock_applications_mhz,
            clock_event_reasons: v.clock_event_reasons,
            violation_power_ns: v.violation_power_ns,
            violation_thermal_ns: v.violation_thermal_ns,
            pcie_link_gen: v.pcie_link_gen,
            pcie_link_width: v.pcie_link_width,
            pcie_tx_kbps: v.pcie_tx_kbps,
            pcie_rx_kbps: v.pcie_rx_kbps,
            pcie_replay_count: v.pcie_replay_count,
            ecc_corrected_volatile: v.ecc_corrected_volatile,
            ecc_uncorrected_volatile: v.ecc_uncorrected_volatile,
            ecc_corrected_aggregate: v.ecc_corrected_aggregate,
            ecc_uncorrected_aggregate: v.ecc_uncorrected_aggregate,
            retired_pages_single_bit: v.retired_pages_single_bit,
            retired_pages_double_bit: v.retired_pages_double_bit,
            retired_pages_pending: v.retired_pages_pending,
            remapped_rows_correctable: v.remapped_rows_correctable,
            remapped_rows_uncorrectable: v.remapped_rows_uncorrectable,
            remapped_rows_pending: v.remapped_rows_pending,
            remapped_rows_failure: v.remapped_rows_failure,
            performance_state: v.performance_state,
            nvlinks: v.nvlinks.into_iter().map(Into::into).collect(),
            processes: v.processes.into_iter().map(Into::into).collect(),
            violation_sync_boost_ns: v.violation_sync_boost_ns,
            violation_board_limit_ns: v.violation_board_limit_ns,
            violation_low_utilization_ns: v.violation_low_utilization_ns,
            violation_reliability_ns: v.violation_reliability_ns,
            gpm_graphics_active_percent: v.gpm_graphics_active_percent,
            gpm_sm_active_percent: v.gpm_sm_active_percent,
            gpm_sm_occupancy_percent: v.gpm_sm_occupancy_percent,
            gpm_tensor_active_percent: v.gpm_tensor_active_percent,
            gpm_dram_active_percent: v.gpm_dram_active_percent,
            gpm_fp64_active_percent: v.gpm_fp64_active_percent,
            gpm_fp32_active_percent: v.gpm_fp32_active_percent,
            gpm_fp16_active_percent: v.gpm_fp16_active_percent,
            gpm_pcie_tx_bytes_per_second: v.gpm_pcie_tx_bytes_per_second,
            gpm_pcie_rx_bytes_per_second: v.gpm_pcie_rx_bytes_per_second,
            gpm_nvlink_tx_bytes_per_second: v.gpm_nvlink_tx_bytes_per_second,
            gpm_nvlink_rx_bytes_per_second: v.gpm_nvlink_rx_bytes_per_second,
        }
    }
}

impl From<pb::GpuSample> for GpuSample {
    fn from(v: pb::GpuSample) -> Self {
        GpuSample {
            index: v.index,
            uuid: v.uuid,
            status: GpuStatus::from(pb::GpuStatus::try_from(v.status).unwrap_or_default()),
            error: v.error,
            temperature_gpu_celsius: v.temperature_gpu_celsius,
            temperature_memory_celsius: v.temperature_memory_celsius,
            fan_speed_percent: v.fan_speed_percent,
            power_usage_milliwatts: v.power_usage_milliwatts,
            power_limit_enforced_milliwatts: v.power_limit_enforced_milliwatts,
            total_energy_millijoules: v.total_energy_millijoules,
            memory_used_bytes: v.memory_used_bytes,
            memory_total_bytes: v.memory_total_bytes,
            bar1_used_bytes: v.bar1_used_bytes,
            utilization_gpu_percent: v.utilization_gpu_percent,
            utilization_memory_percent: v.utilization_memory_percent,
            utilization_encoder_percent: v.utilization_encoder_percent,
            utilization_decoder_percent: v.utilization_decoder_percent,
            sm_clock_mhz: v.sm_clock_mhz,
            memory_clock_mhz: v.memory_clock_mhz,
            graphics_clock_mhz: v.graphics_clock_mhz,
            sm_clock_applications_mhz: v.sm_clock_applications_mhz,
            memory_clock_applications_mhz: v.memory_clock_applications_mhz,
            clock_event_reasons: v.clock_event_reasons,
            violation_power_ns: v.violation_power_ns,
            violation_thermal_ns: v.violation_thermal_ns,
            pcie_link_gen: v.pcie_link_gen,
            pcie_link_width: v.pcie_link_width,
            pcie_tx_kbps: v.pcie_tx_kbps,
            pcie_rx_kbps: v.pcie_rx_kbps,
            pcie_replay_count: v.pcie_replay_count,
            ecc_corrected_volatile: v.ecc_corrected_volatile,
            ecc_uncorrected_volatile: v.ecc_uncorrected_volatile,
            ecc_corrected_aggregate: v.ecc_corrected_aggregate,
            ecc_uncorrected_aggregate: v.ecc_uncorrected_aggregate,
            retired_pages_single_bit: v.retired_pages_single_bit,
            retired_pages_double_bit: v.retired_pages_double_bit,
            retired_pages_pending: v.retired_pages_pending,
            remapped_rows_correctable: v.remapped_rows_correctable,
            remapped_rows_uncorrectable: v.remapped_rows_uncorrectable,
            remapped_rows_pending: v.remapped_rows_pending,
            remapped_rows_failure: v.remapped_rows_failure,
            performance_state: v.performance_state,
            nvlinks: v.nvlinks.into_iter().map(Into::into).collect(),
            processes: v.processes.into_iter().map(Into::into).collect(),
            violation_sync_boost_ns: v.violation_sync_boost_ns,
            violation_board_limit_ns: v.violation_board_limit_ns,
            violation_low_utilization_ns: v.violation_low_utilization_ns,
            violation_reliability_ns: v.violation_reliability_ns,
            gpm_graphics_active_percent: v.gpm_graphics_active_percent,
            gpm_sm_active_percent: v.gpm_sm_active_percent,
            gpm_sm_occupancy_percent: v.gpm_sm_occupancy_percent,
            gpm_tensor_active_percent: v.gpm_tensor_active_percent,
            gpm_dram_active_percent: v.gpm_dram_active_percent,
            gpm_fp64_active_percent: v.gpm_fp64_active_percent,
            gpm_fp32_active_percent: v.gpm_fp32_active_percent,
            gpm_fp16_active_percent: v.gpm_fp16_active_percent,
            gpm_pcie_tx_bytes_per_second: v.gpm_pcie_tx_bytes_per_second,
            gpm_pcie_rx_bytes_per_second: v.gpm_pcie_rx_bytes_per_second,
            gpm_nvlink_tx_bytes_per_second: v.gpm_nvlink_tx_bytes_per_second,
            gpm_nvlink_rx_bytes_per_second: v.gpm_nvlink_rx_bytes_per_second,
        }
    }
}

impl From<HostSample> for pb::HostSample {
    fn from(v: HostSample) -> Self {
        pb::HostSample {
            cpu_percent: v.cpu_percent,
            cpu_per_core_percent: v.cpu_per_core_percent,
            load_average_1m: v.load_average_1m,
            load_average_5m: v.load_average_5m,
            load_average_15m: v.load_average_15m,
            memory_used_bytes: v.memory_used_bytes,
            memory_total_bytes: v.memory_total_bytes,
            memory_available_bytes: v.memory_available_bytes,
            swap_used_bytes: v.swap_used_bytes,
            swap_total_bytes: v.swap_total_bytes,
            disks: v.disks.into_iter().map(Into::into).collect(),
            nics: v.nics.into_iter().map(Into::into).collect(),
            uptime_seconds: v.uptime_seconds,
            ib_ports: v.ib_ports.into_iter().map(Into::into).collect(),
            cpu_config: v.cpu_config.map(Into::into),
            driver_daemons: v.driver_daemons.map(Into::into),
            storage: v.storage.map(Into::into),
            os: v.os.map(Into::into),
            ethernet: v.ethernet.into_iter().map(Into::into).collect(),
            pcie_devices: v.pcie_devices.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::HostSample> for HostSample {
    fn from(v: pb::HostSample) -> Self {
        HostSample {
            cpu_percent: v.cpu_percent,
            cpu_per_core_percent: v.cpu_per_core_percent,
            load_average_1m: v.load_average_1m,
            load_average_5m: v.load_average_5m,
            load_average_15m: v.load_average_15m,
            memory_used_bytes: v.memory_used_bytes,
            memory_total_bytes: v.memory_total_bytes,
            memory_available_bytes: v.memory_available_bytes,
            swap_used_bytes: v.swap_used_bytes,
            swap_total_bytes: v.swap_total_bytes,
            disks: v.disks.into_iter().map(Into::into).collect(),
            nics: v.nics.into_iter().map(Into::into).collect(),
            uptime_seconds: v.uptime_seconds,
            ib_ports: v.ib_ports.into_iter().map(Into::into).collect(),
            cpu_config: v.cpu_config.map(Into::into),
            driver_daemons: v.driver_daemons.map(Into::into),
            storage: v.storage.map(Into::into),
            os: v.os.map(Into::into),
            ethernet: v.ethernet.into_iter().map(Into::into).collect(),
            pcie_devices: v.pcie_devices.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<HostInfo> for pb::HostInfo {
    fn from(v: HostInfo) -> Self {
        pb::HostInfo {
            os_name: v.os_name,
            kernel_version: v.kernel_version,
            cpu_model: v.cpu_model,
            cpu_logical_cores: v.cpu_logical_cores,
            cpu_physical_cores: v.cpu_physical_cores,
            memory_total_bytes: v.memory_total_bytes,
            swap_total_bytes: v.swap_total_bytes,
            nics: v.nics.into_iter().map(Into::into).collect(),
            disks: v.disks.into_iter().map(Into::into).collect(),
            uptime_seconds: v.uptime_seconds,
            ib_devices: v.ib_devices.into_iter().map(Into::into).collect(),
            driver_stack: v.driver_stack.map(Into::into),
            pcie_devices: v.pcie_devices.into_iter().map(Into::into).collect(),
            storage: v.storage.map(Into::into),
        }
    }
}

impl From<pb::HostInfo> for HostInfo {
    fn from(v: pb::HostInfo) -> Self {
        HostInfo {
            os_name: v.os_name,
            kernel_version: v.kernel_version,
            cpu_model: v.cpu_model,
            cpu_logical_cores: v.cpu_logical_cores,
            cpu_physical_cores: v.cpu_physical_cores,
            memory_total_bytes: v.memory_total_bytes,
            swap_total_bytes: v.swap_total_bytes,
            nics: v.nics.into_iter().map(Into::into).collect(),
            disks: v.disks.into_iter().map(Into::into).collect(),
            uptime_seconds: v.uptime_seconds,
            ib_devices: v.ib_devices.into_iter().map(Into::into).collect(),
            driver_stack: v.driver_stack.map(Into::into),
            pcie_devices: v.pcie_devices.into_iter().map(Into::into).collect(),
            storage: v.storage.map(Into::into),
        }
    }
}

macro_rules! ib_port_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    device: v.device,
                    port: v.port,
                    state: v.state,
                    phys_state: v.phys_state,
                    link_layer: v.link_layer,
                    rate_gbps: v.rate_gbps,
                    symbol_errors: v.symbol_errors,
                    link_downed: v.link_downed,
                    rcv_errors: v.rcv_errors,
                    xmit_discards: v.xmit_discards,
                    excessive_buffer_overrun_errors: v.excessive_buffer_overrun_errors,
                    link_error_recovery: v.link_error_recovery,
                    local_link_integrity_errors: v.local_link_integrity_errors,
                    rcv_data_bytes: v.rcv_data_bytes,
                    xmit_data_bytes: v.xmit_data_bytes,
                }
            }
        }
    };
}
ib_port_fields!(IbPortSample => pb::IbPortSample);
ib_port_fields!(pb::IbPortSample => IbPortSample);

macro_rules! ib_device_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    name: v.name,
                    fw_version: v.fw_version,
                    board_id: v.board_id,
                    hca_type: v.hca_type,
                    pci_address: v.pci_address,
                    numa_node: v.numa_node,
                    ports: v.ports,
                }
            }
        }
    };
}
ib_device_fields!(IbDeviceInfo => pb::IbDeviceInfo);
ib_device_fields!(pb::IbDeviceInfo => IbDeviceInfo);

macro_rules! cpu_config_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    governors: v.governors.into_iter().collect(),
                    scaling_driver: v.scaling_driver,
                    freq_avg_khz: v.freq_avg_khz,
                    freq_max_khz: v.freq_max_khz,
                    scaling_max_khz: v.scaling_max_khz,
                    capped_cpus: v.capped_cpus,
                    thp_enabled: v.thp_enabled,
                    edac_corrected_errors: v.edac_corrected_errors,
                    edac_uncorrected_errors: v.edac_uncorrected_errors,
                }
            }
        }
    };
}
cpu_config_fields!(CpuConfigSample => pb::CpuConfigSample);
cpu_config_fields!(pb::CpuConfigSample => CpuConfigSample);

macro_rules! driver_stack_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    modules: v.modules.into_iter().map(Into::into).collect(),
                    kernel_driver_version: v.kernel_driver_version,
                    libcuda_version: v.libcuda_version,
                    libnvidia_ml_version: v.libnvidia_ml_version,
                    fabricmanager_version: v.fabricmanager_version,
                    nvswitch_count: v.nvswitch_count,
                }
            }
        }
    };
}
driver_stack_fields!(DriverStackInfo => pb::DriverStackInfo);
driver_stack_fields!(pb::DriverStackInfo => DriverStackInfo);

macro_rules! kernel_module_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    name: v.name,
                    version: v.version,
                    state: v.state,
                }
            }
        }
    };
}
kernel_module_fields!(KernelModuleInfo => pb::KernelModuleInfo);
kernel_module_fields!(pb::KernelModuleInfo => KernelModuleInfo);

macro_rules! driver_daemons_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    persistenced: v.persistenced,
                    fabricmanager: v.fabricmanager,
                }
            }
        }
    };
}
driver_daemons_fields!(DriverDaemons => pb::DriverDaemons);
driver_daemons_fields!(pb::DriverDaemons => DriverDaemons);

macro_rules! os_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    file_handles: v.file_handles,
                    file_handles_max: v.file_handles_max,
                    pages_swapped_in: v.pages_swapped_in,
                    pages_swapped_out: v.pages_swapped_out,
                    oom_kills: v.oom_kills,
                    uninterruptible: v.uninterruptible,
                    stuck: v.stuck.into_iter().map(Into::into).collect(),
                }
            }
        }
    };
}

macro_rules! pcie_sample_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    bdf: v.bdf,
                    link_speed_mts: v.link_speed_mts,
                    link_width: v.link_width,
                    aer_correctable: v.aer_correctable,
                    aer_nonfatal: v.aer_nonfatal,
                    aer_fatal: v.aer_fatal,
                }
            }
        }
    };
}
os_fields!(OsSample => pb::OsSample);
os_fields!(pb::OsSample => OsSample);

macro_rules! stuck_process_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    pid: v.pid,
                    comm: v.comm,
                    blocked_seconds: v.blocked_seconds,
                    wchan: v.wchan,
                }
            }
        }
    };
}
stuck_process_fields!(StuckProcess => pb::StuckProcess);
stuck_process_fields!(pb::StuckProcess => StuckProcess);

macro_rules! ethernet_port_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    name: v.name,
                    operstate: v.operstate,
                    speed_mbps: v.speed_mbps,
                    duplex: v.duplex,
                    carrier_changes: v.carrier_changes,
                    pci_address: v.pci_address,
                    mtu: v.mtu,
                }
            }
        }
    };
}
ethernet_port_fields!(EthernetPort => pb::EthernetPort);
ethernet_port_fields!(pb::EthernetPort => EthernetPort);
pcie_sample_fields!(PcieDeviceSample => pb::PcieDeviceSample);
pcie_sample_fields!(pb::PcieDeviceSample => PcieDeviceSample);

impl From<PcieDeviceKind> for pb::PcieDeviceKind {
    fn from(v: PcieDeviceKind) -> Self {
        match v {
            PcieDeviceKind::Unknown => pb::PcieDeviceKind::Unspecified,
            PcieDeviceKind::Gpu => pb::PcieDeviceKind::Gpu,
            PcieDeviceKind::NvSwitch => pb::PcieDeviceKind::Nvswitch,
            PcieDeviceKind::Nic => pb::PcieDeviceKind::Nic,
            PcieDeviceKind::Nvme => pb::PcieDeviceKind::Nvme,
            PcieDeviceKind::Bridge => pb::PcieDeviceKind::Bridge,
        }
    }
}

impl From<pb::PcieDeviceKind> for PcieDeviceKind {
    fn from(v: pb::PcieDeviceKind) -> Self {
        match v {
            pb::PcieDeviceKind::Unspecified => PcieDeviceKind::Unknown,
            pb::PcieDeviceKind::Gpu => PcieDeviceKind::Gpu,
            pb::PcieDeviceKind::Nvswitch => PcieDeviceKind::NvSwitch,
            pb::PcieDeviceKind::Nic => PcieDeviceKind::Nic,
            pb::PcieDeviceKind::Nvme => PcieDeviceKind::Nvme,
            pb::PcieDeviceKind::Bridge => PcieDeviceKind::Bridge,
        }
    }
}

impl From<PcieDeviceInfo> for pb::PcieDeviceInfo {
    fn from(v: PcieDeviceInfo) -> Self {
        let (acs, acs_ctl) = match v.acs {
            Acs::Unknown => (pb::PcieAcsState::Unknown, 0),
            Acs::NotCapable => (pb::PcieAcsState::NotCapable, 0),
            Acs::Control(c) => (pb::PcieAcsState::Capable, u32::from(c)),
        };
        pb::PcieDeviceInfo {
            bdf: v.bdf,
            kind: pb::PcieDeviceKind::from(v.kind) as i32,
            vendor_id: v.vendor_id,
            device_id: v.device_id,
            class_code: v.class_code,
            name: v.name,
            numa_node: v.numa_node,
            max_link_speed_mts: v.max_link_speed_mts,
            max_link_width: v.max_link_width,
            upstream: v.upstream,
            acs: acs as i32,
            acs_ctl,
        }
    }
}

impl From<pb::PcieDeviceInfo> for PcieDeviceInfo {
    fn from(v: pb::PcieDeviceInfo) -> Self {
        // Unknown enum values read as the safe default: kind unknown, ACS unknown.
        let acs = match pb::PcieAcsState::try_from(v.acs).unwrap_or_default() {
            pb::PcieAcsState::Unknown => Acs::Unknown,
            pb::PcieAcsState::NotCapable => Acs::NotCapable,
            // The register is 16 bits; anything above is not a reading.
            pb::PcieAcsState::Capable => {
                u16::try_from(v.acs_ctl).map_or(Acs::Unknown, Acs::Control)
            }
        };
        PcieDeviceInfo {
            bdf: v.bdf,
            kind: pb::PcieDeviceKind::try_from(v.kind)
                .unwrap_or_default()
                .into(),
            vendor_id: v.vendor_id,
            device_id: v.device_id,
            class_code: v.class_code,
            name: v.name,
            numa_node: v.numa_node,
            max_link_speed_mts: v.max_link_speed_mts,
            max_link_width: v.max_link_width,
            upstream: v.upstream,
            acs,
        }
    }
}

macro_rules! storage_sample_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    mounts: v.mounts.into_iter().map(Into::into).collect(),
                    nvme: v.nvme.into_iter().map(Into::into).collect(),
                }
            }
        }
    };
}
storage_sample_fields!(StorageSample => pb::StorageSample);
storage_sample_fields!(pb::StorageSample => StorageSample);

macro_rules! storage_mount_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    mount_point: v.mount_point,
                    mounted: v.mounted,
                    fstype: v.fstype,
                    source: v.source,
                    read_only: v.read_only,
                    view_read_only: v.view_read_only,
                    was_writable: v.was_writable,
                    statfs_latency_ms: v.statfs_latency_ms,
                    unresponsive: v.unresponsive,
                    total_bytes: v.total_bytes,
                    available_bytes: v.available_bytes,
                    statfs_error: v.statfs_error,
                }
            }
        }
    };
}
storage_mount_fields!(StorageMountSample => pb::StorageMountSample);
storage_mount_fields!(pb::StorageMountSample => StorageMountSample);

macro_rules! storage_nvme_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    name: v.name,
                    state: v.state,
                    temperature_millicelsius: v.temperature_millicelsius,
                    temperature_max_millicelsius: v.temperature_max_millicelsius,
                    temperature_crit_millicelsius: v.temperature_crit_millicelsius,
                    temperature_alarm: v.temperature_alarm,
                }
            }
        }
    };
}
storage_nvme_fields!(StorageNvmeSample => pb::StorageNvmeSample);
storage_nvme_fields!(pb::StorageNvmeSample => StorageNvmeSample);

macro_rules! storage_info_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    nvme: v.nvme.into_iter().map(Into::into).collect(),
                }
            }
        }
    };
}
storage_info_fields!(StorageInfo => pb::StorageInfo);
storage_info_fields!(pb::StorageInfo => StorageInfo);

macro_rules! storage_nvme_info_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self {
                    name: v.name,
                    model: v.model,
                    serial: v.serial,
                    firmware_rev: v.firmware_rev,
                    transport: v.transport,
                    address: v.address,
                }
            }
        }
    };
}
storage_nvme_info_fields!(StorageNvmeInfo => pb::StorageNvmeInfo);
storage_nvme_info_fields!(pb::StorageNvmeInfo => StorageNvmeInfo);
