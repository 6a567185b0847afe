//! One reading of one GPU (`GpuSample`).

use std::path::Path;

use gpufleet_model::{GpuProcess, GpuSample, GpuStatus, NvLinkSample, UnixMs};
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

use super::super::cadence::Cadence;
use super::gpm;
use super::inventory::probe_links;
use super::{GpuSlot, Reader, sample_value};

/// One reading of one GPU at `now`: the fast fields always, the slow ones when due (else
/// their last values, see [`super::super::cadence`]).
pub(super) fn read_gpu(
    nvml: &Nvml,
    slot: &mut GpuSlot,
    now: UnixMs,
    cadence: Cadence,
    proc_root: &Path,
) -> GpuSample {
    let device = match slot.device(nvml) {
        Ok(d) => d,
        Err(e) => {
            slot.held.reset();
            return slot.failed(&e);
        }
    };
    let index = slot.index;
    let need_uuid = slot.uuid.is_empty();
    let need_links = slot.links.is_none();
    let slow_due = slot.held.due(now, cadence);
    let mut r = Reader::new(device, slot);
    let uuid = if need_uuid {
        r.read("uuid", |d| d.uuid())
    } else {
        None
    };
    let found_links = need_links.then(|| probe_links(&mut r));

    let memory = r.read("memory_info", |d| d.memory_info());
    let utilization = r.read("utilization_rates", |d| d.utilization_rates());
    let mut s = GpuSample {
        index,
        status: GpuStatus::Ok,
        temperature_gpu_celsius: r
            .read("temperature_gpu", |d| d.temperature(TemperatureSensor::Gpu))
            .map(|t| t as i32),
        temperature_memory_celsius: read_memory_temperature(&mut r),
        fan_speed_percent: r.read("fan_speed", |d| d.fan_speed(0)),
        power_usage_milliwatts: r.read("power_usage", |d| d.power_usage()),
        power_limit_enforced_milliwatts: r
            .read("power_limit_enforced", |d| d.enforced_power_limit()),
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
        pcie_link_gen: r.read("pcie_gen", |d| d.current_pcie_link_gen()),
        pcie_link_width: r.read("pcie_width", |d| d.current_pcie_link_width()),
        performance_state: r
            .read("performance_state", |d| d.performance_state())
            .and_then(pstate_number),
        ..Default::default()
    };
    gpm::read(&mut r, &mut s);
    let links = found_links.as_ref().or(r.slot.links.as_ref()).cloned();
    if slow_due {
        read_slow(
            &mut r,
            &mut s,
            links.as_deref().unwrap_or_default(),
            proc_root,
        );
    }

    let lost = r.lost;
    if let Some(u) = uuid {
        slot.uuid = u;
    }
    if !lost && found_links.is_some() {
        slot.links = found_links;
    }
    if lost {
        slot.held.reset();
        return slot.failed(&NvmlError::GpuLost);
    }
    if slow_due {
        slot.held.keep(&s, now);
    } else {
        slot.held.restore(&mut s);
    }
    s.uuid.clone_from(&slot.uuid);
    s
}

/// The fields read every `slow_interval`: counters, ECC and row remapping, PCIe throughput,
/// applications clocks, NVLinks and processes.
fn read_slow(r: &mut Reader, s: &mut GpuSample, links: &[u32], proc_root: &Path) {
    let counters = read_counters(r);
    s.total_energy_millijoules = counters.total_energy_millijoules;
    s.violation_power_ns = counters.violations[0];
    s.violation_thermal_ns = counters.violations[1];
    s.violation_sync_boost_ns = counters.violations[2];
    s.violation_board_limit_ns = counters.violations[3];
    s.violation_low_utilization_ns = counters.violations[4];
    s.violation_reliability_ns = counters.violations[5];
    s.pcie_replay_count = counters.pcie_replay_count;
    s.ecc_corrected_volatile = ecc(
        r,
        "ecc_corrected_volatile",
        MemoryError::Corrected,
        EccCounter::Volatile,
    );
    s.ecc_uncorrected_volatile = ecc(
        r,
        "ecc_uncorrected_volatile",
        MemoryError::Uncorrected,
        EccCounter::Volatile,
    );
    s.ecc_corrected_aggregate = ecc(
        r,
        "ecc_corrected_aggregate",
        MemoryError::Corrected,
        EccCounter::Aggregate,
    );
    s.ecc_uncorrected_aggregate = ecc(
        r,
        "ecc_uncorrected_aggregate",
        MemoryError::Uncorrected,
        EccCounter::Aggregate,
    );
    s.retired_pages_single_bit = r
        .read("retired_pages_sbe", |d| {
            d.retired_pages(RetirementCause::MultipleSingleBitEccErrors)
        })
        .map(|p| p.len() as u32);
    s.retired_pages_double_bit = r
        .read("retired_pages_dbe", |d| {
            d.retired_pages(RetirementCause::DoubleBitEccError)
        })
        .map(|p| p.len() as u32);
    s.retired_pages_pending = r.read("retired_pages_pending", |d| d.are_pages_pending_retired());
    let remapped = r.read("remapped_rows", remapped_rows);
    s.remapped_rows_correctable = remapped.map(|r| r.correctable);
    s.remapped_rows_uncorrectable = remapped.map(|r| r.uncorrectable);
    s.remapped_rows_pending = remapped.map(|r| r.pending);
    s.remapped_rows_failure = remapped.map(|r| r.failure);
    s.pcie_tx_kbps = r.read("pcie_tx", |d| d.pcie_throughput(PcieUtilCounter::Send));
    s.pcie_rx_kbps = r.read("pcie_rx", |d| d.pcie_throughput(PcieUtilCounter::Receive));
    s.sm_clock_applications_mhz = r.read("app_clock_sm", |d| d.applications_clock(Clock::SM));
    s.memory_clock_applications_mhz =
        r.read("app_clock_mem", |d| d.applications_clock(Clock::Memory));
    s.nvlinks = links.iter().map(|&l| read_link(r, l)).collect();
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
}

/// HBM temperature: no nvmlDeviceGetTemperature sensor has it; it is only a field value.
fn read_memory_temperature(r: &mut Reader) -> Option<i32> {
    if let Some(values) = r.read_fields(&[MEMORY_TEMP]) {
        return values.first().map(|(_, v)| *v as i32);
    }
    r.read(MEMORY_TEMP.0, |d| {
        let mut v = d.field_values_for(&[FieldId(MEMORY_TEMP.1)])?;
        Ok(sample_value(
            v.pop().ok_or(NvmlError::NotSupported)??.value?,
        ))
    })
    .map(|v| v as i32)
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

const MEMORY_TEMP: (&str, u32) = ("temperature_memory", field_id::NVML_FI_DEV_MEMORY_TEMP);

/// Counters that `nvmlDeviceGetFieldValues` serves in one call. One by one they cost a driver
/// round trip each (the six violation counters ~0.7 ms each on an H100).
const BATCHED: [(&str, u32); 8] = [
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
