//! Semantic checks after decoding: what a well-formed message can still get wrong.
//!
//! - **Impossible readings become absent.** NaN, infinities, NVML's "no value" sentinels
//!   (`0xFFFFFFFF`, `u64::MAX`) and values outside what any GPU or host can report (a 4 GHz
//!   temperature, 300 % utilization) are dropped to `None`, like a reading the GPU does not
//!   offer. Rejecting the whole batch instead would lose every good reading of the node for one
//!   bad field — some drivers do return sentinels — and the agent would resend it forever.
//! - **Structural contradictions are refused**: two GPUs with one index or one UUID in a
//!   sample or an inventory; a record so large no real GPU or host produces it (which also
//!   caps every string in it).

use gpufleet_proto::v1 as pb;
use prost::Message;

use super::ConvertError;
use crate::{GpuSample, HostSample, Inventory, Sample};

/// Largest encoded size of one GPU's inventory entry or sample (names, UUIDs, versions,
/// processes and links included). A real H100's sample with 64 processes is under 8 KiB.
pub const MAX_GPU_RECORD_BYTES: usize = 64 * 1024;
/// Largest encoded size of a host's inventory or sample (many disks and NICs).
pub const MAX_HOST_RECORD_BYTES: usize = 256 * 1024;
/// Largest encoded size of one event.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// Refuses a record larger than `max` bytes, naming it.
pub fn record_size(field: &'static str, m: &impl Message, max: usize) -> Result<(), ConvertError> {
    let len = m.encoded_len();
    if len > max {
        return Err(ConvertError::Invalid {
            field,
            reason: format!("{len} bytes, more than the limit of {max}"),
        });
    }
    Ok(())
}

pub fn gpu_sample_sizes(s: &pb::Sample) -> Result<(), ConvertError> {
    for g in &s.gpus {
        record_size("sample.gpus[]", g, MAX_GPU_RECORD_BYTES)?;
    }
    if let Some(h) = &s.host {
        record_size("sample.host", h, MAX_HOST_RECORD_BYTES)?;
    }
    Ok(())
}

pub fn inventory_sizes(i: &pb::Inventory) -> Result<(), ConvertError> {
    for g in &i.gpus {
        record_size("inventory.gpus[]", g, MAX_GPU_RECORD_BYTES)?;
    }
    if let Some(h) = &i.host {
        record_size("inventory.host", h, MAX_HOST_RECORD_BYTES)?;
    }
    if let Some(d) = &i.driver {
        record_size("inventory.driver", d, 4 * 1024)?;
    }
    Ok(())
}

/// Refuses two entries with one index or one (non-empty) UUID.
pub fn unique_gpus<'a>(
    field: &'static str,
    gpus: impl Iterator<Item = (u32, &'a str)>,
) -> Result<(), ConvertError> {
    let mut indices = std::collections::HashSet::new();
    let mut uuids = std::collections::HashSet::new();
    for (index, uuid) in gpus {
        if !indices.insert(index) {
            return Err(ConvertError::Invalid {
                field,
                reason: format!("GPU index {index} appears twice"),
            });
        }
        if !uuid.is_empty() && !uuids.insert(uuid) {
            return Err(ConvertError::Invalid {
                field,
                reason: format!("GPU UUID {uuid} appears twice"),
            });
        }
    }
    Ok(())
}

pub fn check_inventory(i: &Inventory) -> Result<(), ConvertError> {
    unique_gpus(
        "inventory.gpus",
        i.gpus.iter().map(|g| (g.index, g.uuid.as_str())),
    )
}

/// Keeps `v` only within `lo..=hi`; counts what it drops.
fn within<T: PartialOrd + Copy>(v: &mut Option<T>, lo: T, hi: T, dropped: &mut u32) {
    if let Some(x) = *v
        && !(lo..=hi).contains(&x)
    {
        *v = None;
        *dropped += 1;
    }
}

/// Counters: anything but the `u64::MAX` sentinel.
fn counter(v: &mut Option<u64>, dropped: &mut u32) {
    within(v, 0, u64::MAX - 1, dropped);
}

/// Drops impossible readings of one GPU to absent; returns how many.
pub fn sanitize_gpu(g: &mut GpuSample) -> u32 {
    let mut n = 0;
    let d = &mut n;
    within(&mut g.temperature_gpu_celsius, -60, 200, d);
    within(&mut g.temperature_memory_celsius, -60, 200, d);
    within(&mut g.fan_speed_percent, 0, 200, d);
    // 10 kW: several times the largest board (GB200 superchips draw about 2.7 kW).
    within(&mut g.power_usage_milliwatts, 0, 10_000_000, d);
    within(&mut g.power_limit_enforced_milliwatts, 0, 10_000_000, d);
    for u in [
        &mut g.utilization_gpu_percent,
        &mut g.utilization_memory_percent,
        &mut g.utilization_encoder_percent,
        &mut g.utilization_decoder_percent,
    ] {
        within(u, 0, 100, d);
    }
    for c in [
        &mut g.sm_clock_mhz,
        &mut g.memory_clock_mhz,
        &mut g.graphics_clock_mhz,
        &mut g.sm_clock_applications_mhz,
        &mut g.memory_clock_applications_mhz,
    ] {
        within(c, 0, 20_000, d);
    }
    within(&mut g.pcie_link_gen, 0, 8, d);
    within(&mut g.pcie_link_width, 0, 32, d);
    within(&mut g.pcie_tx_kbps, 0, u32::MAX - 1, d);
    within(&mut g.pcie_rx_kbps, 0, u32::MAX - 1, d);
    within(&mut g.performance_state, 0, 15, d);
    for p in [
        &mut g.gpm_graphics_active_percent,
        &mut g.gpm_sm_active_percent,
        &mut g.gpm_sm_occupancy_percent,
        &mut g.gpm_tensor_active_percent,
        &mut g.gpm_dram_active_percent,
        &mut g.gpm_fp64_active_percent,
        &mut g.gpm_fp32_active_percent,
        &mut g.gpm_fp16_active_percent,
    ] {
        // NaN fails every comparison, so `within` drops it too.
        within(p, 0.0, 100.0, d);
    }
    for c in [
        &mut g.gpm_pcie_tx_bytes_per_second,
        &mut g.gpm_pcie_rx_bytes_per_second,
        &mut g.gpm_nvlink_tx_bytes_per_second,
        &mut g.gpm_nvlink_rx_bytes_per_second,
    ] {
        counter(c, d);
    }
    for c in [
        &mut g.total_energy_millijoules,
        &mut g.memory_used_bytes,
        &mut g.memory_total_bytes,
        &mut g.bar1_used_bytes,
        &mut g.violation_power_ns,
        &mut g.violation_thermal_ns,
        &mut g.violation_sync_boost_ns,
        &mut g.violation_board_limit_ns,
        &mut g.violation_low_utilization_ns,
        &mut g.violation_reliability_ns,
        &mut g.pcie_replay_count,
        &mut g.ecc_corrected_volatile,
        &mut g.ecc_uncorrected_volatile,
        &mut g.ecc_corrected_aggregate,
        &mut g.ecc_uncorrected_aggregate,
    ] {
        counter(c, d);
    }
    for c in [
        &mut g.retired_pages_single_bit,
        &mut g.retired_pages_double_bit,
        &mut g.remapped_rows_correctable,
        &mut g.remapped_rows_uncorrectable,
    ] {
        within(c, 0, u32::MAX - 1, d);
    }
    n
}

/// Drops impossible host readings (NaN, infinities, negative loads) to absent; returns how
/// many.
pub fn sanitize_host(h: &mut HostSample) -> u32 {
    let mut n = 0;
    within(&mut h.cpu_percent, 0.0, 100.0, &mut n);
    for l in [
        &mut h.load_average_1m,
        &mut h.load_average_5m,
        &mut h.load_average_15m,
    ] {
        // NaN fails every comparison, so `within` drops it too.
        within(l, 0.0, 1e6, &mut n);
    }
    for p in &mut h.ib_ports {
        // The fastest InfiniBand generation today signals at 800 Gb/s per port (XDR).
        within(&mut p.rate_gbps, 0.0, 10_000.0, &mut n);
        for c in [
            &mut p.symbol_errors,
            &mut p.link_downed,
            &mut p.rcv_errors,
            &mut p.xmit_discards,
            &mut p.excessive_buffer_overrun_errors,
            &mut p.link_error_recovery,
            &mut p.local_link_integrity_errors,
            &mut p.rcv_data_bytes,
            &mut p.xmit_data_bytes,
        ] {
            // u64::MAX is how a missing counter reads through some drivers.
            if *c == Some(u64::MAX) {
                *c = None;
                n += 1;
            }
        }
    }
    for e in &mut h.ethernet {
        // Ethernet tops out at 800 Gb/s today; a link that reads 0 or u32::MAX has no speed.
        within(&mut e.speed_mbps, 1, 10_000_000, &mut n);
    }
    for d in &mut h.pcie_devices {
        for c in [
            &mut d.aer_correctable,
            &mut d.aer_nonfatal,
            &mut d.aer_fatal,
        ] {
            if *c == Some(u64::MAX) {
                *c = None;
                n += 1;
            }
        }
    }
    if let Some(st) = h.storage.as_mut() {
        for m in &mut st.mounts {
            // A statfs is bounded by the agent's time-out (seconds); an hour is impossible.
            within(&mut m.statfs_latency_ms, 0.0, 3_600_000.0, &mut n);
            if m.available_bytes > m.total_bytes && m.total_bytes.is_some() {
                m.available_bytes = None;
                n += 1;
            }
        }
        for c in &mut st.nvme {
            // Kelvin's zero to well past any drive's critical point, millidegrees.
            for t in [
                &mut c.temperature_millicelsius,
                &mut c.temperature_max_millicelsius,
                &mut c.temperature_crit_millicelsius,
            ] {
                within(t, -273_150, 1_000_000, &mut n);
            }
        }
    }
    let before = h.cpu_per_core_percent.len();
    h.cpu_per_core_percent.retain(|c| (0.0..=100.0).contains(c));
    n + (before - h.cpu_per_core_percent.len()) as u32
}

/// [`sanitize_gpu`] and [`sanitize_host`] over a sample, after refusing duplicate GPUs.
pub fn check_sample(s: &mut Sample) -> Result<u32, ConvertError> {
    unique_gpus(
        "sample.gpus",
        s.gpus.iter().map(|g| (g.index, g.uuid.as_str())),
    )?;
    let gpus: u32 = s.gpus.iter_mut().map(sanitize_gpu).sum();
    Ok(gpus + sanitize_host(&mut s.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_readings_become_absent_and_are_counted() {
        type Case = (
            &'static str,
            fn(&mut GpuSample),
            fn(&GpuSample) -> bool,
            u32,
        );
        let cases: &[Case] = &[
            (
                "sane values stay",
                |g| g.sm_clock_mhz = Some(1980),
                |g| g.sm_clock_mhz == Some(1980),
                0,
            ),
            (
                "clock sentinel",
                |g| g.sm_clock_mhz = Some(u32::MAX),
                |g| g.sm_clock_mhz.is_none(),
                1,
            ),
            (
                "hot as the sun",
                |g| g.temperature_gpu_celsius = Some(5_000),
                |g| g.temperature_gpu_celsius.is_none(),
                1,
            ),
            (
                "300 % busy",
                |g| g.utilization_gpu_percent = Some(300),
                |g| g.utilization_gpu_percent.is_none(),
                1,
            ),
            (
                "counter sentinel",
                |g| g.ecc_uncorrected_volatile = Some(u64::MAX),
                |g| g.ecc_uncorrected_volatile.is_none(),
                1,
            ),
            (
                "a big real counter stays",
                |g| g.pcie_replay_count = Some(1 << 40),
                |g| g.pcie_replay_count == Some(1 << 40),
                0,
            ),
            (
                "GPM activity above 100 %",
                |g| g.gpm_tensor_active_percent = Some(250.0),
                |g| g.gpm_tensor_active_percent.is_none(),
                1,
            ),
            (
                "GPM NaN",
                |g| g.gpm_sm_active_percent = Some(f32::NAN),
                |g| g.gpm_sm_active_percent.is_none(),
                1,
            ),
            (
                "GPM idle tensor cores are a value",
                |g| g.gpm_tensor_active_percent = Some(0.0),
                |g| g.gpm_tensor_active_percent == Some(0.0),
                0,
            ),
            (
                "P32 is not a state",
                |g| g.performance_state = Some(32),
                |g| g.performance_state.is_none(),
                1,
            ),
            (
                "cold is fine",
                |g| g.temperature_gpu_celsius = Some(-5),
                |g| g.temperature_gpu_celsius == Some(-5),
                0,
            ),
        ];
        for (name, set, check, dropped) in cases {
            let mut g = GpuSample::default();
            set(&mut g);
            assert_eq!(sanitize_gpu(&mut g), *dropped, "{name}");
            assert!(check(&g), "{name}: {g:?}");
        }
    }

    #[test]
    fn nan_and_infinities_never_reach_the_host_readings() {
        let mut h = HostSample {
            cpu_percent: Some(f32::NAN),
            cpu_per_core_percent: vec![12.0, f32::INFINITY, f32::NAN, 99.0],
            load_average_1m: Some(f64::NEG_INFINITY),
            load_average_5m: Some(f64::NAN),
            load_average_15m: Some(3.5),
            ..Default::default()
        };
        assert_eq!(sanitize_host(&mut h), 5);
        assert_eq!(h.cpu_percent, None);
        assert_eq!(h.cpu_per_core_percent, [12.0, 99.0]);
        assert_eq!((h.load_average_1m, h.load_average_5m), (None, None));
        assert_eq!(h.load_average_15m, Some(3.5));

        let mut h = HostSample {
            storage: Some(crate::StorageSample {
                mounts: vec![crate::StorageMountSample {
                    statfs_latency_ms: Some(f64::NAN),
                    total_bytes: Some(100),
                    available_bytes: Some(200),
                    ..Default::default()
                }],
                nvme: vec![crate::StorageNvmeSample {
                    temperature_millicelsius: Some(-300_000),
                    temperature_crit_millicelsius: Some(84_850),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        assert_eq!(sanitize_host(&mut h), 3);
        let st = h.storage.unwrap();
        assert_eq!(
            (st.mounts[0].statfs_latency_ms, st.mounts[0].available_bytes),
            (None, None)
        );
        assert_eq!(st.nvme[0].temperature_millicelsius, None);
        assert_eq!(st.nvme[0].temperature_crit_millicelsius, Some(84_850));
    }

    #[test]
    fn duplicate_gpus_are_refused() {
        let two = |a: (u32, &'static str), b: (u32, &'static str)| {
            unique_gpus("sample.gpus", [a, b].into_iter())
        };
        assert!(two((0, "GPU-a"), (1, "GPU-b")).is_ok());
        assert!(
            two((0, ""), (1, "")).is_ok(),
            "unknown UUIDs are not duplicates"
        );
        let e = two((0, "GPU-a"), (0, "GPU-b")).unwrap_err();
        assert!(e.to_string().contains("GPU index 0 appears twice"), "{e}");
        let e = two((0, "GPU-a"), (1, "GPU-a")).unwrap_err();
        assert!(
            e.to_string().contains("GPU UUID GPU-a appears twice"),
            "{e}"
        );
    }

    #[test]
    fn oversized_records_are_refused_with_their_size() {
        let g = pb::GpuInfo {
            name: "x".repeat(MAX_GPU_RECORD_BYTES),
            ..Default::default()
        };
        let inv = pb::Inventory {
            gpus: vec![g],
            ..Default::default()
        };
        let e = inventory_sizes(&inv).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid inventory.gpus[]: "),
            "{e}"
        );
        assert!(
            e.to_string().contains("more than the limit of 65536"),
            "{e}"
        );
    }
}
