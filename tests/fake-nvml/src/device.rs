//! Per-GPU NVML functions, answered from the GPU's fixture fields.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong};

use nvml_wrapper_sys::bindings::*;

use crate::fixture::{Gpu, Ret};
use crate::{nvml_exports, put, put_str, with_gpu};

const INVALID: Ret = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
const NOT_SUPPORTED: Ret = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;

fn enable_state(on: bool) -> nvmlEnableState_t {
    if on {
        nvmlEnableState_enum_NVML_FEATURE_ENABLED
    } else {
        nvmlEnableState_enum_NVML_FEATURE_DISABLED
    }
}

fn clock_key(kind: nvmlClockType_t, keys: [&'static str; 3]) -> Result<&'static str, Ret> {
    match kind {
        nvmlClockType_enum_NVML_CLOCK_GRAPHICS => Ok(keys[0]),
        nvmlClockType_enum_NVML_CLOCK_SM => Ok(keys[1]),
        nvmlClockType_enum_NVML_CLOCK_MEM => Ok(keys[2]),
        nvmlClockType_enum_NVML_CLOCK_VIDEO => Err(NOT_SUPPORTED),
        _ => Err(INVALID),
    }
}

fn architecture(name: &str) -> nvmlDeviceArchitecture_t {
    match name.to_ascii_lowercase().as_str() {
        "kepler" => NVML_DEVICE_ARCH_KEPLER,
        "maxwell" => NVML_DEVICE_ARCH_MAXWELL,
        "pascal" => NVML_DEVICE_ARCH_PASCAL,
        "volta" => NVML_DEVICE_ARCH_VOLTA,
        "turing" => NVML_DEVICE_ARCH_TURING,
        "ampere" => NVML_DEVICE_ARCH_AMPERE,
        "ada" => NVML_DEVICE_ARCH_ADA,
        "hopper" => NVML_DEVICE_ARCH_HOPPER,
        "blackwell" => NVML_DEVICE_ARCH_BLACKWELL,
        other => other.parse().unwrap_or(NVML_DEVICE_ARCH_UNKNOWN),
    }
}

fn compute_mode(name: &str) -> nvmlComputeMode_t {
    match name.to_ascii_lowercase().as_str() {
        "exclusive_thread" => nvmlComputeMode_enum_NVML_COMPUTEMODE_EXCLUSIVE_THREAD,
        "prohibited" => nvmlComputeMode_enum_NVML_COMPUTEMODE_PROHIBITED,
        "exclusive_process" => nvmlComputeMode_enum_NVML_COMPUTEMODE_EXCLUSIVE_PROCESS,
        _ => nvmlComputeMode_enum_NVML_COMPUTEMODE_DEFAULT,
    }
}

/// `00000000:1A:00.0` → (domain, bus, device).
fn parse_bus_id(id: &str) -> Option<(u32, u32, u32)> {
    let (main, _func) = id.rsplit_once('.')?;
    let mut parts = main.split(':').map(|p| u32::from_str_radix(p, 16).ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Copies `s` into a fixed C array, NUL-terminated, truncating if needed.
fn fill<const N: usize>(dst: &mut [c_char; N], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes().take(N - 1)) {
        *d = b as c_char;
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Checks a link number against the board's links: beyond NVML's maximum is an invalid
/// argument, a link the board lacks is not supported.
fn link(g: &mut Gpu, link: c_uint) -> Result<(), Ret> {
    if link >= NVML_NVLINK_MAX_LINKS {
        return Err(INVALID);
    }
    if link >= g.u32("nvlink_count")? {
        return Err(NOT_SUPPORTED);
    }
    Ok(())
}

fn retired_pages_key(cause: nvmlPageRetirementCause_t) -> Result<&'static str, Ret> {
    match cause {
        nvmlPageRetirementCause_enum_NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS => {
            Ok("retired_pages_sbe")
        }
        nvmlPageRetirementCause_enum_NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR => {
            Ok("retired_pages_dbe")
        }
        _ => Err(INVALID),
    }
}

nvml_exports! {
    fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) {
        put_str(name, length, &with_gpu(device, |g| g.string("name"))?)
    }

    fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) {
        put_str(uuid, length, &with_gpu(device, |g| g.string("uuid"))?)
    }

    fn nvmlDeviceGetSerial(device: nvmlDevice_t, serial: *mut c_char, length: c_uint) {
        put_str(serial, length, &with_gpu(device, |g| g.string("serial"))?)
    }

    fn nvmlDeviceGetBoardPartNumber(device: nvmlDevice_t, part_number: *mut c_char, length: c_uint) {
        put_str(part_number, length, &with_gpu(device, |g| g.string("board_part_number"))?)
    }

    fn nvmlDeviceGetVbiosVersion(device: nvmlDevice_t, version: *mut c_char, length: c_uint) {
        put_str(version, length, &with_gpu(device, |g| g.string("vbios_version"))?)
    }

    fn nvmlDeviceGetInforomImageVersion(device: nvmlDevice_t, version: *mut c_char, length: c_uint) {
        put_str(version, length, &with_gpu(device, |g| g.string("inforom_image_version"))?)
    }

    fn nvmlDeviceGetGspFirmwareVersion(device: nvmlDevice_t, version: *mut c_char) {
        let v = with_gpu(device, |g| g.string("gsp_firmware_version"))?;
        put_str(version, NVML_GSP_FIRMWARE_VERSION_BUF_SIZE, &v)
    }

    fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) {
        let (id, device_id, subsystem_id) = with_gpu(device, |g| {
            Ok((g.string("pci_bus_id")?, g.u32("pci_device_id")?, g.u32("pci_subsystem_id")?))
        })?;
        let (domain, bus, dev) = parse_bus_id(&id).ok_or(nvmlReturn_enum_NVML_ERROR_UNKNOWN)?;
        let mut info = nvmlPciInfo_t {
            busIdLegacy: [0; 16],
            domain,
            bus,
            device: dev,
            pciDeviceId: device_id,
            pciSubSystemId: subsystem_id,
            busId: [0; 32],
        };
        fill(&mut info.busId, &id);
        fill(&mut info.busIdLegacy, &format!("{:04X}:{bus:02X}:{dev:02X}.0", domain & 0xffff));
        put(pci, info)
    }

    fn nvmlDeviceGetArchitecture(device: nvmlDevice_t, arch: *mut nvmlDeviceArchitecture_t) {
        put(arch, architecture(&with_gpu(device, |g| g.string("architecture"))?))
    }

    fn nvmlDeviceGetCudaComputeCapability(device: nvmlDevice_t, major: *mut c_int, minor: *mut c_int) {
        let cc = with_gpu(device, |g| g.string("cuda_compute_capability"))?;
        let (ma, mi) = cc.split_once('.').ok_or(nvmlReturn_enum_NVML_ERROR_UNKNOWN)?;
        put(major, ma.parse().map_err(|_| nvmlReturn_enum_NVML_ERROR_UNKNOWN)?)?;
        put(minor, mi.parse().map_err(|_| nvmlReturn_enum_NVML_ERROR_UNKNOWN)?)
    }

    fn nvmlDeviceGetMemoryInfo_v2(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) {
        if memory.is_null() {
            return Err(INVALID);
        }
        let version = (size_of::<nvmlMemory_v2_t>() | (2 << 24)) as c_uint;
        if (*memory).version != version {
            return Err(nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let (total, reserved, used) = with_gpu(device, |g| {
            Ok((g.u64("memory_total")?, g.u64("memory_reserved")?, g.u64("memory_used")?))
        })?;
        put(memory, nvmlMemory_v2_t {
            version,
            total,
            reserved,
            free: total.saturating_sub(reserved).saturating_sub(used),
            used,
        })
    }

    fn nvmlDeviceGetBAR1MemoryInfo(device: nvmlDevice_t, bar1_memory: *mut nvmlBAR1Memory_t) {
        let (total, used) = with_gpu(device, |g| Ok((g.u64("bar1_total")?, g.u64("bar1_used")?)))?;
        put(bar1_memory, nvmlBAR1Memory_t {
            bar1Total: total,
            bar1Free: total.saturating_sub(used),
            bar1Used: used,
        })
    }

    fn nvmlDeviceGetPersistenceMode(device: nvmlDevice_t, mode: *mut nvmlEnableState_t) {
        put(mode, enable_state(with_gpu(device, |g| g.bool("persistence_mode"))?))
    }

    fn nvmlDeviceGetComputeMode(device: nvmlDevice_t, mode: *mut nvmlComputeMode_t) {
        put(mode, compute_mode(&with_gpu(device, |g| g.string("compute_mode"))?))
    }

    fn nvmlDeviceGetMigMode(device: nvmlDevice_t, current_mode: *mut c_uint, pending_mode: *mut c_uint) {
        let on = with_gpu(device, |g| g.bool("mig_mode"))? as c_uint;
        put(current_mode, on)?;
        put(pending_mode, on)
    }

    fn nvmlDeviceGetEccMode(device: nvmlDevice_t, current: *mut nvmlEnableState_t, pending: *mut nvmlEnableState_t) {
        let on = with_gpu(device, |g| g.bool("ecc_mode"))?;
        put(current, enable_state(on))?;
        put(pending, enable_state(on))
    }

    fn nvmlDeviceGetMaxPcieLinkGeneration(device: nvmlDevice_t, max_link_gen: *mut c_uint) {
        put(max_link_gen, with_gpu(device, |g| g.u32("pcie_max_gen"))?)
    }

    fn nvmlDeviceGetMaxPcieLinkWidth(device: nvmlDevice_t, max_link_width: *mut c_uint) {
        put(max_link_width, with_gpu(device, |g| g.u32("pcie_max_width"))?)
    }

    fn nvmlDeviceGetCurrPcieLinkGeneration(device: nvmlDevice_t, curr_link_gen: *mut c_uint) {
        put(curr_link_gen, with_gpu(device, |g| g.u32("pcie_gen"))?)
    }

    fn nvmlDeviceGetCurrPcieLinkWidth(device: nvmlDevice_t, curr_link_width: *mut c_uint) {
        put(curr_link_width, with_gpu(device, |g| g.u32("pcie_width"))?)
    }

    fn nvmlDeviceGetPcieThroughput(device: nvmlDevice_t, counter: nvmlPcieUtilCounter_t, value: *mut c_uint) {
        let key = match counter {
            nvmlPcieUtilCounter_enum_NVML_PCIE_UTIL_TX_BYTES => "pcie_tx",
            nvmlPcieUtilCounter_enum_NVML_PCIE_UTIL_RX_BYTES => "pcie_rx",
            _ => return Err(INVALID),
        };
        put(value, with_gpu(device, |g| g.u32(key))?)
    }

    fn nvmlDeviceGetPcieReplayCounter(device: nvmlDevice_t, value: *mut c_uint) {
        put(value, with_gpu(device, |g| g.u32("pcie_replay"))?)
    }

    fn nvmlDeviceGetMaxClockInfo(device: nvmlDevice_t, type_: nvmlClockType_t, clock: *mut c_uint) {
        let key = clock_key(type_, ["max_clock_graphics", "max_clock_sm", "max_clock_mem"])?;
        put(clock, with_gpu(device, |g| g.u32(key))?)
    }

    fn nvmlDeviceGetClockInfo(device: nvmlDevice_t, type_: nvmlClockType_t, clock: *mut c_uint) {
        let key = clock_key(type_, ["clock_graphics", "clock_sm", "clock_mem"])?;
        put(clock, with_gpu(device, |g| g.u32(key))?)
    }

    fn nvmlDeviceGetApplicationsClock(device: nvmlDevice_t, clock_type: nvmlClockType_t, clock_mhz: *mut c_uint) {
        // Applications clocks are set for graphics (= SM) and memory.
        let key = clock_key(clock_type, ["app_clock_sm", "app_clock_sm", "app_clock_mem"])?;
        put(clock_mhz, with_gpu(device, |g| g.u32(key))?)
    }

    fn nvmlDeviceGetCurrentClocksThrottleReasons(device: nvmlDevice_t, clocks_throttle_reasons: *mut c_ulonglong) {
        put(clocks_throttle_reasons, with_gpu(device, |g| g.u64("clock_event_reasons"))?)
    }

    fn nvmlDeviceGetPowerManagementDefaultLimit(device: nvmlDevice_t, default_limit: *mut c_uint) {
        put(default_limit, with_gpu(device, |g| g.u32("power_limit_default"))?)
    }

    fn nvmlDeviceGetPowerManagementLimitConstraints(device: nvmlDevice_t, min_limit: *mut c_uint, max_limit: *mut c_uint) {
        let (min, max) = with_gpu(device, |g| Ok((g.u32("power_limit_min")?, g.u32("power_limit_max")?)))?;
        put(min_limit, min)?;
        put(max_limit, max)
    }

    fn nvmlDeviceGetEnforcedPowerLimit(device: nvmlDevice_t, limit: *mut c_uint) {
        put(limit, with_gpu(device, |g| g.u32("power_limit_enforced"))?)
    }

    fn nvmlDeviceGetPowerUsage(device: nvmlDevice_t, power: *mut c_uint) {
        put(power, with_gpu(device, |g| g.u32("power_usage"))?)
    }

    fn nvmlDeviceGetTotalEnergyConsumption(device: nvmlDevice_t, energy: *mut c_ulonglong) {
        put(energy, with_gpu(device, |g| g.u64("total_energy"))?)
    }

    fn nvmlDeviceGetTemperatureThreshold(device: nvmlDevice_t, threshold_type: nvmlTemperatureThresholds_t, temp: *mut c_uint) {
        let key = match threshold_type {
            nvmlTemperatureThresholds_enum_NVML_TEMPERATURE_THRESHOLD_SHUTDOWN => "temp_threshold_shutdown",
            nvmlTemperatureThresholds_enum_NVML_TEMPERATURE_THRESHOLD_SLOWDOWN => "temp_threshold_slowdown",
            nvmlTemperatureThresholds_enum_NVML_TEMPERATURE_THRESHOLD_MEM_MAX => "temp_threshold_mem_max",
            nvmlTemperatureThresholds_enum_NVML_TEMPERATURE_THRESHOLD_GPU_MAX => "temp_threshold_gpu_max",
            _ => return Err(NOT_SUPPORTED),
        };
        put(temp, with_gpu(device, |g| g.u32(key))?)
    }

    fn nvmlDeviceGetTemperature(device: nvmlDevice_t, sensor_type: nvmlTemperatureSensors_t, temp: *mut c_uint) {
        if sensor_type != nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU {
            return Err(INVALID);
        }
        put(temp, with_gpu(device, |g| g.u32("temperature_gpu"))?)
    }

    // The fields gpufleet reads have data (each entry answers or fails on its own); other
    // fields answer NOT_SUPPORTED in their slot.
    fn nvmlDeviceGetFieldValues(device: nvmlDevice_t, values_count: c_int, values: *mut nvmlFieldValue_t) {
        if values.is_null() || values_count < 0 {
            return Err(INVALID);
        }
        // SAFETY: the caller passes `values_count` initialised entries.
        let values = std::slice::from_raw_parts_mut(values, values_count as usize);
        with_gpu(device, |g| {
            g.bool("field_values")?;
            for v in values.iter_mut() {
                v.timestamp = now_us();
                v.latencyUsec = 0;
                let (key, unsigned_long_long) = match v.fieldId {
                    field_id::NVML_FI_DEV_PERF_POLICY_POWER => ("violation_power", true),
                    field_id::NVML_FI_DEV_PERF_POLICY_THERMAL => ("violation_thermal", true),
                    field_id::NVML_FI_DEV_PERF_POLICY_SYNC_BOOST => ("violation_sync_boost", true),
                    field_id::NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT => ("violation_board_limit", true),
                    field_id::NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION => ("violation_low_utilization", true),
                    field_id::NVML_FI_DEV_PERF_POLICY_RELIABILITY => ("violation_reliability", true),
                    field_id::NVML_FI_DEV_MEMORY_TEMP => ("temperature_memory", false),
                    field_id::NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION => ("total_energy", true),
                    field_id::NVML_FI_DEV_PCIE_REPLAY_COUNTER => ("pcie_replay", false),
                    _ => {
                        v.nvmlReturn = NOT_SUPPORTED;
                        continue;
                    }
                };
                match g.u64(key) {
                    Ok(n) if unsigned_long_long => {
                        v.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
                        v.value = nvmlValue_t { ullVal: n };
                        v.nvmlReturn = nvmlReturn_enum_NVML_SUCCESS;
                    }
                    Ok(n) => {
                        v.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT;
                        v.value = nvmlValue_t { uiVal: n as c_uint };
                        v.nvmlReturn = nvmlReturn_enum_NVML_SUCCESS;
                    }
                    Err(code) => v.nvmlReturn = code,
                }
            }
            Ok(())
        })
    }

    fn nvmlDeviceGetNumFans(device: nvmlDevice_t, num_fans: *mut c_uint) {
        put(num_fans, with_gpu(device, |g| g.u32("fan_count"))?)
    }

    fn nvmlDeviceGetFanSpeed_v2(device: nvmlDevice_t, fan: c_uint, speed: *mut c_uint) {
        let (value, fans) = with_gpu(device, |g| Ok((g.u32("fan_speed")?, g.u32("fan_count")?)))?;
        if fan >= fans {
            return Err(INVALID);
        }
        put(speed, value)
    }

    fn nvmlDeviceGetUtilizationRates(device: nvmlDevice_t, utilization: *mut nvmlUtilization_t) {
        let (gpu, memory) = with_gpu(device, |g| {
            Ok((g.u32("utilization_gpu")?, g.u32("utilization_memory")?))
        })?;
        put(utilization, nvmlUtilization_t { gpu, memory })
    }

    fn nvmlDeviceGetEncoderUtilization(device: nvmlDevice_t, utilization: *mut c_uint, sampling_period_us: *mut c_uint) {
        put(utilization, with_gpu(device, |g| g.u32("utilization_encoder"))?)?;
        put(sampling_period_us, 167_000)
    }

    fn nvmlDeviceGetDecoderUtilization(device: nvmlDevice_t, utilization: *mut c_uint, sampling_period_us: *mut c_uint) {
        put(utilization, with_gpu(device, |g| g.u32("utilization_decoder"))?)?;
        put(sampling_period_us, 167_000)
    }

    fn nvmlDeviceGetViolationStatus(device: nvmlDevice_t, perf_policy_type: nvmlPerfPolicyType_t, viol_time: *mut nvmlViolationTime_t) {
        let key = match perf_policy_type {
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_POWER => "violation_power",
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_THERMAL => "violation_thermal",
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_SYNC_BOOST => "violation_sync_boost",
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_BOARD_LIMIT => "violation_board_limit",
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_LOW_UTILIZATION => "violation_low_utilization",
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_RELIABILITY => "violation_reliability",
            _ => return Err(NOT_SUPPORTED),
        };
        let ns = with_gpu(device, |g| g.u64(key))?;
        put(viol_time, nvmlViolationTime_t { referenceTime: now_us() as u64, violationTime: ns })
    }

    fn nvmlDeviceGetTotalEccErrors(device: nvmlDevice_t, error_type: nvmlMemoryErrorType_t, counter_type: nvmlEccCounterType_t, ecc_counts: *mut c_ulonglong) {
        let corrected = nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_CORRECTED;
        let uncorrected = nvmlMemoryErrorType_enum_NVML_MEMORY_ERROR_TYPE_UNCORRECTED;
        let volatile = nvmlEccCounterType_enum_NVML_VOLATILE_ECC;
        let aggregate = nvmlEccCounterType_enum_NVML_AGGREGATE_ECC;
        let key = match (error_type, counter_type) {
            (e, c) if e == corrected && c == volatile => "ecc_corrected_volatile",
            (e, c) if e == uncorrected && c == volatile => "ecc_uncorrected_volatile",
            (e, c) if e == corrected && c == aggregate => "ecc_corrected_aggregate",
            (e, c) if e == uncorrected && c == aggregate => "ecc_uncorrected_aggregate",
            _ => return Err(INVALID),
        };
        put(ecc_counts, with_gpu(device, |g| {
            if !g.bool("ecc_mode")? {
                return Err(NOT_SUPPORTED);
            }
            g.u64(key)
        })?)
    }

    // With `*page_count` too small: the count and INSUFFICIENT_SIZE, as NVML does.
    fn nvmlDeviceGetRetiredPages(device: nvmlDevice_t, cause: nvmlPageRetirementCause_t, page_count: *mut c_uint, addresses: *mut c_ulonglong) {
        let key = retired_pages_key(cause)?;
        let n = with_gpu(device, |g| g.u32(key))?;
        if page_count.is_null() {
            return Err(INVALID);
        }
        let room = *page_count;
        *page_count = n;
        if room < n {
            return Err(nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE);
        }
        for i in 0..n as usize {
            put(addresses.add(i), 0x1000 * (i as u64 + 1))?;
        }
        Ok(())
    }

    fn nvmlDeviceGetRetiredPages_v2(device: nvmlDevice_t, cause: nvmlPageRetirementCause_t, page_count: *mut c_uint, addresses: *mut c_ulonglong, timestamps: *mut c_ulonglong) {
        let key = retired_pages_key(cause)?;
        let n = with_gpu(device, |g| g.u32(key))?;
        if page_count.is_null() {
            return Err(INVALID);
        }
        let room = *page_count;
        *page_count = n;
        if room < n {
            return Err(nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE);
        }
        for i in 0..n as usize {
            put(addresses.add(i), 0x1000 * (i as u64 + 1))?;
            put(timestamps.add(i), 1_700_000_000 + i as u64)?;
        }
        Ok(())
    }

    fn nvmlDeviceGetRetiredPagesPendingStatus(device: nvmlDevice_t, is_pending: *mut nvmlEnableState_t) {
        put(is_pending, enable_state(with_gpu(device, |g| g.bool("retired_pages_pending"))?))
    }

    fn nvmlDeviceGetRemappedRows(device: nvmlDevice_t, corr_rows: *mut c_uint, unc_rows: *mut c_uint, is_pending: *mut c_uint, failure_occurred: *mut c_uint) {
        let (corr, unc, pending, failure) = with_gpu(device, |g| {
            Ok((
                g.u32("remapped_correctable")?,
                g.u32("remapped_uncorrectable")?,
                g.bool("remapped_pending")?,
                g.bool("remapped_failure")?,
            ))
        })?;
        put(corr_rows, corr)?;
        put(unc_rows, unc)?;
        put(is_pending, pending as c_uint)?;
        put(failure_occurred, failure as c_uint)
    }

    fn nvmlDeviceGetPerformanceState(device: nvmlDevice_t, p_state: *mut nvmlPstates_t) {
        put(p_state, with_gpu(device, |g| g.u32("performance_state"))?)
    }

    fn nvmlDeviceGetNvLinkState(device: nvmlDevice_t, link_: c_uint, is_active: *mut nvmlEnableState_t) {
        let on = with_gpu(device, |g| {
            link(g, link_)?;
            g.bool_for("nvlink_active", link_)
        })?;
        put(is_active, enable_state(on))
    }

    fn nvmlDeviceGetNvLinkErrorCounter(device: nvmlDevice_t, link_: c_uint, counter: nvmlNvLinkErrorCounter_t, counter_value: *mut c_ulonglong) {
        let key = match counter {
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_REPLAY => "nvlink_replay_errors",
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_RECOVERY => "nvlink_recovery_errors",
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_FLIT => "nvlink_crc_flit_errors",
            nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_DATA => "nvlink_crc_data_errors",
            _ => return Err(NOT_SUPPORTED),
        };
        let v = with_gpu(device, |g| {
            link(g, link_)?;
            g.u64_for(key, link_)
        })?;
        put(counter_value, v)
    }

    // NVML's two-call protocol: too small a buffer (or null) gets the count and
    // INSUFFICIENT_SIZE, unless there is nothing to report.
    fn nvmlDeviceGetComputeRunningProcesses_v3(device: nvmlDevice_t, info_count: *mut c_uint, infos: *mut nvmlProcessInfo_t) {
        let list = with_gpu(device, |g| g.processes())?;
        if info_count.is_null() {
            return Err(INVALID);
        }
        let room = *info_count as usize;
        *info_count = list.len() as c_uint;
        if list.is_empty() {
            return Ok(());
        }
        if infos.is_null() || room < list.len() {
            return Err(nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE);
        }
        for (i, (pid, used)) in list.into_iter().enumerate() {
            put(infos.add(i), nvmlProcessInfo_t {
                pid,
                usedGpuMemory: used,
                gpuInstanceId: u32::MAX,
                computeInstanceId: u32::MAX,
            })?;
        }
        Ok(())
    }
}
