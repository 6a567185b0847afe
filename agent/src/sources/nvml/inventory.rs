//! Driver versions and what each GPU is (`GpuInfo`).

use gpufleet_model::{DriverInfo, GpuInfo};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, ComputeMode, TemperatureThreshold};
use nvml_wrapper::enums::device::DeviceArchitecture;
use nvml_wrapper_sys::bindings::NVML_NVLINK_MAX_LINKS;

use super::{GpuSlot, Reader};

pub(super) fn driver_info(nvml: &Nvml) -> DriverInfo {
    DriverInfo {
        driver_version: nvml.sys_driver_version().unwrap_or_default(),
        nvml_version: nvml.sys_nvml_version().unwrap_or_default(),
        cuda_driver_version: nvml
            .sys_cuda_driver_version()
            .map(|v| {
                format!(
                    "{}.{}",
                    nvml_wrapper::cuda_driver_version_major(v),
                    nvml_wrapper::cuda_driver_version_minor(v)
                )
            })
            .unwrap_or_default(),
    }
}

/// One GPU's `GpuInfo`. A GPU that cannot be read keeps what the last inventory found.
pub(super) fn read_gpu(nvml: &Nvml, slot: &mut GpuSlot) -> GpuInfo {
    let fallback = |slot: &GpuSlot| {
        slot.last_info.clone().unwrap_or_else(|| GpuInfo {
            index: slot.index,
            uuid: slot.uuid.clone(),
            pci_bus_id: slot.pci_bus_id.clone(),
            ..Default::default()
        })
    };
    let device = match slot.device(nvml) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(gpu = slot.index, error = %e, "GPU not readable for the inventory");
            return fallback(slot);
        }
    };
    let index = slot.index;
    let need_links = slot.links.is_none();
    let mut r = Reader::new(device, slot);

    let memory = r.read("memory_info", |d| d.memory_info());
    let power = r.read("power_limit_constraints", |d| {
        d.power_management_limit_constraints()
    });
    let links = need_links.then(|| probe_links(&mut r));
    let mut info = GpuInfo {
        index,
        name: r.read("name", |d| d.name()).unwrap_or_default(),
        uuid: r.read("uuid", |d| d.uuid()).unwrap_or_default(),
        serial: r.read("serial", |d| d.serial()).unwrap_or_default(),
        pci_bus_id: r
            .read("pci_info", |d| d.pci_info())
            .map(|p| p.bus_id)
            .unwrap_or_default(),
        architecture: r
            .read("architecture", |d| d.architecture())
            .map(architecture_name)
            .unwrap_or_default()
            .to_string(),
        memory_total_bytes: memory.map(|m| m.total),
        bar1_total_bytes: r
            .read("bar1_memory_info", |d| d.bar1_memory_info())
            .map(|b| b.total),
        vbios_version: r
            .read("vbios_version", |d| d.vbios_version())
            .unwrap_or_default(),
        inforom_image_version: r
            .read("inforom_image_version", |d| d.info_rom_image_version())
            .unwrap_or_default(),
        gsp_firmware_version: r
            .read("gsp_firmware_version", |d| d.gsp_firmware_version())
            .unwrap_or_default(),
        persistence_mode: r.read("persistence_mode", |d| d.is_in_persistent_mode()),
        compute_mode: r
            .read("compute_mode", |d| d.compute_mode())
            .map(compute_mode_name)
            .unwrap_or_default()
            .to_string(),
        // NVML_DEVICE_MIG_ENABLE = 1
        mig_enabled: r.read("mig_mode", |d| d.mig_mode()).map(|m| m.current == 1),
        ecc_enabled: r
            .read("ecc_mode", |d| d.is_ecc_enabled())
            .map(|e| e.currently_enabled),
        pcie_link_gen_max: r.read("pcie_max_gen", |d| d.max_pcie_link_gen()),
        pcie_link_width_max: r.read("pcie_max_width", |d| d.max_pcie_link_width()),
        sm_clock_max_mhz: r.read("max_clock_sm", |d| d.max_clock_info(Clock::SM)),
        memory_clock_max_mhz: r.read("max_clock_mem", |d| d.max_clock_info(Clock::Memory)),
        graphics_clock_max_mhz: r.read("max_clock_graphics", |d| d.max_clock_info(Clock::Graphics)),
        power_limit_default_milliwatts: r.read("power_limit_default", |d| {
            d.power_management_limit_default()
        }),
        power_limit_min_milliwatts: power.as_ref().map(|p| p.min_limit),
        power_limit_max_milliwatts: power.as_ref().map(|p| p.max_limit),
        temperature_slowdown_celsius: threshold(
            &mut r,
            "temp_slowdown",
            TemperatureThreshold::Slowdown,
        ),
        temperature_shutdown_celsius: threshold(
            &mut r,
            "temp_shutdown",
            TemperatureThreshold::Shutdown,
        ),
        temperature_max_operating_celsius: threshold(
            &mut r,
            "temp_gpu_max",
            TemperatureThreshold::GpuMax,
        ),
        memory_temperature_max_operating_celsius: threshold(
            &mut r,
            "temp_mem_max",
            TemperatureThreshold::MemoryMax,
        ),
        cuda_compute_capability: r
            .read("cuda_compute_capability", |d| d.cuda_compute_capability())
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_default(),
        nvlink_count: 0,
        fan_count: r.read("fan_count", |d| d.num_fans()),
        board_part_number: r
            .read("board_part_number", |d| d.board_part_number())
            .unwrap_or_default(),
    };
    let lost = r.lost;
    if let Some(links) = links {
        if !lost {
            slot.links = Some(links);
        }
    }
    info.nvlink_count = slot.links.as_ref().map_or(0, |l| l.len() as u32);
    if lost {
        tracing::debug!(gpu = index, "GPU lost while reading its inventory");
        return fallback(slot);
    }
    if !info.uuid.is_empty() {
        slot.uuid.clone_from(&info.uuid);
    }
    if !info.pci_bus_id.is_empty() {
        slot.pci_bus_id.clone_from(&info.pci_bus_id);
    }
    slot.last_info = Some(info.clone());
    info
}

fn threshold(r: &mut Reader, field: &'static str, t: TemperatureThreshold) -> Option<i32> {
    r.read(field, |d| d.temperature_threshold(t))
        .map(|c| c as i32)
}

/// Links that answer NVML on this GPU; probed once.
pub(super) fn probe_links(r: &mut Reader) -> Vec<u32> {
    (0..NVML_NVLINK_MAX_LINKS)
        .filter(|&l| {
            r.read_link("nvlink_state", l, |d| d.link_wrapper_for(l).is_active())
                .is_some()
        })
        .collect()
}

fn architecture_name(a: DeviceArchitecture) -> &'static str {
    match a {
        DeviceArchitecture::Kepler => "Kepler",
        DeviceArchitecture::Maxwell => "Maxwell",
        DeviceArchitecture::Pascal => "Pascal",
        DeviceArchitecture::Volta => "Volta",
        DeviceArchitecture::Turing => "Turing",
        DeviceArchitecture::Ampere => "Ampere",
        DeviceArchitecture::Ada => "Ada",
        DeviceArchitecture::Hopper => "Hopper",
        DeviceArchitecture::Blackwell => "Blackwell",
        DeviceArchitecture::Unknown => "",
    }
}

fn compute_mode_name(m: ComputeMode) -> &'static str {
    match m {
        ComputeMode::Default => "Default",
        ComputeMode::ExclusiveThread => "ExclusiveThread",
        ComputeMode::Prohibited => "Prohibited",
        ComputeMode::ExclusiveProcess => "ExclusiveProcess",
    }
}
