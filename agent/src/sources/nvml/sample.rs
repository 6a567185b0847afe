//! One reading of one GPU (`GpuSample`).

use std::path::Path;

use gpufleet_model::{GpuProcess, GpuSample, GpuStatus, NvLinkSample};
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformancePolicy, PerformanceState,
    RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id;
use nvml_wrapper::{Device, Nvml};

use super::inventory::probe_links;
use super::{GpuSlot, Reader, SlowReadings, sample_value};

pub(super) fn read_gpu(
    nvml: &Nvml,
    slot: &mut GpuSlot,
    read_slow: bool,
    proc_root: &Path,
) -> GpuSample {
    let device = match slot.device(nvml) {
        Ok(d) => d,
        Err(e) => return slot.failed(&e),
    };
    let index = slot.index;
    let need_uuid = slot.uuid.is_empty();
    let need_links = slot.links.is_none();
    let mut r = Reader::new(device, slot);
    let uuid = if need_uuid {
        r.read("uuid", |d| d.uuid())
    } else {
        None
    };
    let found_links = need_links.then(|| probe_links(&mut r));

    let counters = read_counters(&mut r);
    let memory = r.read("memory_info", |d| d.memory_info());
    let utilization = r.read("utilization_rates", |d| d.utilization_rates());
    let remapped = r.read("remapped_rows", remapped_rows);
    let mut s = GpuSample {
        index,
        status: GpuStatus::Ok,
        temperature_gpu_celsius: r
            .read("temperature_gpu", |d| d.temperature(TemperatureSensor::Gpu))
            .map(|t| t as i32),
        temperature_memory_celsius: counters.temperature_memory_celsius,
        fan_speed_percent: r.read("fan_speed", |d| d.fan_speed(0)),
        power_usage_milliwatts: r.read("power_usage", |d| d.power_usage()),
        power_limit_enforced_milliwatts: r
            .read("power_limit_enforced", |d| d.enforced_power_limit()),
        total_energy_millijoules: counters.total_energy_millijoules,
        memory_used_bytes: memory.as_ref().map(|m| m.used),
        memory_total_bytes: memory.as_ref().map(|m| m.total),
        bar1_used_bytes: r
            .read("bar1_memory_info", |d| d.bar1_memory_info())
            .map(|b| b.used),
        utilization_gpu_percent: utilization.as_ref().map(|u| u.gpu),
        utilization_memory_percent: utilization.as_ref().map(|u| u.memory),
        utilization_encoder_percent: r
            .read("utilization_encoder", |d| d.encoder_utilization())
            .map(|u| u.utilization),
        utilization_decoder_percent: r
            .read("utilization_decoder", |d| d.decoder_utilization())
            .map(|u| u.utilization),
        sm_clock_mhz: r.read("clock_sm", |d| d.clock_info(Clock::SM)),
        memory_clock_mhz: r.read("clock_mem", |d| d.clock_info(Clock::Memory)),
        graphics_clock_mhz: r.read("clock_graphics", |d| d.clock_info(Clock::Graphics)),
        clock_event_reasons: r
            .read("clock_event_reasons", |d| d.current_throttle_reasons())
            .map(|b| b.bits()),
        violation_power_ns: counters.violations[0],
        violation_thermal_ns: counters.violations[1],
        violation_sync_boost_ns: counters.violations[2],
        violation_board_limit_ns: counters.violations[3],
        violation_low_utilization_ns: counters.violations[4],
        violation_reliability_ns: counters.violations[5],
        pcie_link_gen: r.read("pcie_gen", |d| d.current_pcie_link_gen()),
        pcie_link_width: r.read("pcie_width", |d| d.current_pcie_link_width()),
        pcie_replay_count: counters.pcie_replay_count,
        ecc_corrected_volatile: ecc(
            &mut r,
            "ecc_corrected_volatile",
            MemoryError::Corrected,
            EccCounter::Volatile,
        ),
        ecc_uncorrected_volatile: ecc(
            &mut r,
            "ecc_uncorrected_volatile",
            MemoryError::Uncorrected,
            EccCounter::Volatile,
        ),
        ecc_corrected_aggregate: ecc(
            &mut r,
            "ecc_corrected_aggregate",
            MemoryError::Corrected,
            EccCounter::Aggregate,
        ),
        ecc_uncorrected_aggregate: ecc(
            &mut r,
            "ecc_uncorrected_aggregate",
            MemoryError::Uncorrected,
            EccCounter::Aggregate,
        ),
        retired_pages_single_bit: r
            .read("retired_pages_sbe", |d| {
                d.retired_pages(RetirementCause::MultipleSingleBitEccErrors)
            })
            .map(|p| p.len() as u32),
        retired_pages_double_bit: r
            .read("retired_pages_dbe", |d| {
                d.retired_pages(RetirementCause::DoubleBitEccError)
            })
            .map(|p| p.len() as u32),
        retired_pages_pending: r.read("retired_pages_pending", |d| d.are_pages_pending_retired()),
        remapped_rows_correctable: remapped.map(|r| r.correctable),
        remapped_rows_uncorrectable: remapped.map(|r| r.uncorrectable),
        remapped_rows_pending: remapped.map(|r| r.pending),
        remapped_rows_failure: remapped.map(|r| r.failure),
        performance_state: r
            .read("performance_state", |d| d.performance_state())
            .and_then(pstate_number),
        ..Default::default()
    };
    if read_slow {
        r.slot.slow = SlowReadings {
            pcie_tx_kbps: r.read("pcie_tx", |d| d.pcie_throughput(PcieUtilCounter::Send)),
            pcie_rx_kbps: r.read("pcie_rx", |d| d.pcie_throughput(PcieUtilCounter::Receive)),
            sm_clock_applications_mhz: r.read("app_clock_sm", |d| d.applications_clock(Clock::SM)),
            memory_clock_applications_mhz: r
                .read("app_clock_mem", |d| d.applications_clock(Clock::Memory)),
        };
    }
    let slow = r.slot.slow;
    s.pcie_tx_kbps = slow.pcie_tx_kbps;
    s.pcie_rx_kbps = slow.pcie_rx_kbps;
    s.sm_clock_applications_mhz = slow.sm_clock_applications_mhz;
    s.memory_clock_applications_mhz = slow.memory_clock_applications_mhz;

    let links = found_links
        .clone()
        .or_else(|| r.slot.links.clone())
        .unwrap_or_default();
    s.nvlinks = links.iter().map(|&l| read_link(&mut r, l)).collect();
    s.processes = r
        .read("processes", |d| d.running_compute_processes())
        .unwrap_or_default()
        .into_iter()
        .map(|p| GpuProcess {
            pid: p.pid,
            name: process_name(proc_root, p.pid),
            used_memory_bytes: match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            },
        })
        .collect();

    let lost = r.lost;
    if let Some(u) = uuid {
        slot.uuid = u;
    }
    if !lost && found_links.is_some() {
        slot.links = found_links;
    }
    if lost {
        return slot.failed(&NvmlError::GpuLost);
    }
    s.uuid.clone_from(&slot.uuid);
    s
}

fn ecc(
    r: &mut Reader,
    field: &'static str,
    error: MemoryError,
    counter: EccCounter,
) -> Option<u64> {
    r.read(field, |d| d.total_ecc_errors(error, counter))
}

fn read_link(r: &mut Reader, link: u32) -> NvLinkSample {
    let active = r.read_link("nvlink_state", link, |d| {
        d.link_wrapper_for(link).is_active()
    });
    let mut counter =
        |field, c| r.read_link(field, link, |d| d.link_wrapper_for(link).error_counter(c));
    NvLinkSample {
        link,
        active,
        replay_errors: counter("nvlink_replay", ErrorCounter::DlReplay),
        recovery_errors: counter("nvlink_recovery", ErrorCounter::DlRecovery),
        crc_flit_errors: counter("nvlink_crc_flit", ErrorCounter::DlCrcFlit),
        crc_data_errors: counter("nvlink_crc_data", ErrorCounter::DlCrcData),
    }
}

/// Counters and readings that `nvmlDeviceGetFieldValues` serves in one call. One by one they
/// cost a driver round trip each (the six violation counters ~0.7 ms each on an H100).
const BATCHED: [(&str, u32); 9] = [
    ("violation_power", field_id::NVML_FI_DEV_PERF_POLICY_POWER),
    (
        "violation_thermal",
        field_id::NVML_FI_DEV_PERF_POLICY_THERMAL,
    ),
    (
        "violation_sync_boost",
        field_id::NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
    ),
    (
        "violation_board_limit",
        field_id::NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
    ),
    (
        "violation_low_utilization",
        field_id::NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
    ),
    (
        "violation_reliability",
        field_id::NVML_FI_DEV_PERF_POLICY_RELIABILITY,
    ),
    // HBM temperature has no nvmlDeviceGetTemperature sensor; it is only a field value.
    ("temperature_memory", field_id::NVML_FI_DEV_MEMORY_TEMP),
    (
        "total_energy",
        field_id::NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
    ),
    ("pcie_replay", field_id::NVML_FI_DEV_PCIE_REPLAY_COUNTER),
];

const POLICIES: [PerformancePolicy; 6] = [
    PerformancePolicy::Power,
    PerformancePolicy::Thermal,
    PerformancePolicy::SyncBoost,
    PerformancePolicy::BoardLimit,
    PerformancePolicy::LowUtilization,
    PerformancePolicy::Reliability,
];

struct Counters {
    /// In the order of [`POLICIES`].
    violations: [Option<u64>; 6],
    temperature_memory_celsius: Option<i32>,
    total_energy_millijoules: Option<u64>,
    pcie_replay_count: Option<u64>,
}

/// The [`BATCHED`] fields in one call, or one by one where NVML refuses the batch.
fn read_counters(r: &mut Reader) -> Counters {
    if let Some(values) = r.read_fields(&BATCHED) {
        let get = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let violations = std::array::from_fn(|i| get(BATCHED[i].0).map(|v| v as u64));
        return Counters {
            violations,
            temperature_memory_celsius: get("temperature_memory").map(|v| v as i32),
            total_energy_millijoules: get("total_energy").map(|v| v as u64),
            pcie_replay_count: get("pcie_replay").map(|v| v as u64),
        };
    }
    let mut violations = [None; 6];
    for (i, policy) in POLICIES.into_iter().enumerate() {
        violations[i] = r
            .read(BATCHED[i].0, |d| d.violation_status(policy))
            .map(|v| v.violation_time);
    }
    Counters {
        violations,
        temperature_memory_celsius: r
            .read("temperature_memory", |d| {
                let mut v = d.field_values_for(&[FieldId(field_id::NVML_FI_DEV_MEMORY_TEMP)])?;
                Ok(sample_value(
                    v.pop().ok_or(NvmlError::NotSupported)??.value?,
                ))
            })
            .map(|v| v as i32),
        total_energy_millijoules: r.read("total_energy", |d| d.total_energy_consumption()),
        pcie_replay_count: r
            .read("pcie_replay", |d| d.pcie_replay_counter())
            .map(u64::from),
    }
}

#[derive(Clone, Copy)]
struct RemappedRows {
    correctable: u32,
    uncorrectable: u32,
    pending: bool,
    failure: bool,
}

/// `nvmlDeviceGetRemappedRows`, which `nvml-wrapper` does not wrap.
fn remapped_rows(d: &Device) -> Result<RemappedRows, NvmlError> {
    let sym = d
        .nvml()
        .lib()
        .nvmlDeviceGetRemappedRows
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    let (mut corr, mut unc, mut pending, mut failure) = (0, 0, 0, 0);
    // SAFETY: the handle belongs to the live NVML session `d` borrows; the out-pointers are
    // valid locals of the types nvml.h declares.
    let rc = unsafe { sym(d.handle(), &mut corr, &mut unc, &mut pending, &mut failure) };
    nvml_try(rc)?;
    Ok(RemappedRows {
        correctable: corr,
        uncorrectable: unc,
        pending: pending != 0,
        failure: failure != 0,
    })
}

/// P0..P15 as a number; NVML's "unknown" P-state as absent.
fn pstate_number(p: PerformanceState) -> Option<u32> {
    match p {
        PerformanceState::Unknown => None,
        known => Some(known.as_c()),
    }
}

/// A process's command name from `/proc/<pid>/comm` ("" if it cannot be read, e.g. another
/// PID namespace).
fn process_name(proc_root: &Path, pid: u32) -> String {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}
