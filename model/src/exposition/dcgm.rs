//! The GPU series under dcgm-exporter's names, types, units and labels, so its Grafana
//! dashboard (12239) and the alerts written for it work unchanged against gpufleet. One row of
//! [`FIELDS`] per DCGM field our samples have an equivalent for.
//!
//! Absent is not zero: a reading the GPU did not give (`None`) produces no series for that
//! GPU. dcgm-exporter's counters do not end in `_total` (some end in `_TOTAL`): in the classic
//! format they are typed `counter` as dcgm-exporter types them; OpenMetrics requires counter
//! samples to end in `_total`, so there they are typed `unknown`, names unchanged.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{Format, LabelSet};
use crate::{GpuInfo, GpuSample};

/// One GPU as the exposition sees it: who it is and what it last read.
#[derive(Debug, Clone, Copy)]
pub struct GpuView<'a> {
    /// The node's name (`Hostname`: the node's, never the collector's).
    pub hostname: &'a str,
    pub info: &'a GpuInfo,
    pub driver_version: &'a str,
    /// The latest sample of this GPU, if any arrived.
    pub sample: Option<&'a GpuSample>,
    /// The last Xid this GPU reported (0: none since the collector or agent started).
    pub last_xid: u32,
    /// Xid events this GPU reported since the collector or agent started.
    pub xid_events: u64,
}

impl<'a> GpuView<'a> {
    /// dcgm-exporter's label set: `gpu, UUID, device, modelName, Hostname, pci_bus_id,
    /// DCGM_FI_DRIVER_VERSION`.
    pub fn labels(&self, gpu: &'a str, device: &'a str) -> LabelSet<'a, 7> {
        LabelSet([
            ("gpu", gpu),
            ("UUID", &self.info.uuid),
            ("device", device),
            ("modelName", &self.info.name),
            ("Hostname", self.hostname),
            ("pci_bus_id", &self.info.pci_bus_id),
            ("DCGM_FI_DRIVER_VERSION", self.driver_version),
        ])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One DCGM field: name, type, help (with dcgm-exporter's unit) and how to read it.
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: fn(&GpuView) -> Option<f64>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn s<'a>(g: &GpuView<'a>) -> Option<&'a GpuSample> {
    g.sample
}

fn nvlink_sum(g: &GpuView, f: fn(&crate::NvLinkSample) -> Option<u64>) -> Option<f64> {
    let links = &s(g)?.nvlinks;
    let mut sum = None;
    for l in links {
        if let Some(v) = f(l) {
            *sum.get_or_insert(0.0) += v as f64;
        }
    }
    sum
}

/// A GPM percentage as DCGM's ratio, rounded to 4 decimals as dcgm-exporter prints them.
fn ratio(percent: f32) -> Option<f64> {
    Some((f64::from(percent) * 100.0).round() / 10_000.0)
}

macro_rules! field {
    ($name:literal, $kind:ident, $help:literal, |$g:ident| $e:expr) => {
        Field {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            value: |$g: &GpuView| -> Option<f64> { $e },
        }
    };
}

/// Every DCGM field gpufleet exports, in dcgm-exporter's order where it has one.
pub const FIELDS: &[Field] = &[
    field!(
        "DCGM_FI_DEV_SM_CLOCK",
        Gauge,
        "SM clock frequency (in MHz).",
        |g| Some(s(g)?.sm_clock_mhz? as f64)
    ),
    field!(
        "DCGM_FI_DEV_MEM_CLOCK",
        Gauge,
        "Memory clock frequency (in MHz).",
        |g| Some(s(g)?.memory_clock_mhz? as f64)
    ),
    field!(
        "DCGM_FI_DEV_APP_SM_CLOCK",
        Gauge,
        "SM application clock (in MHz).",
        |g| Some(s(g)?.sm_clock_applications_mhz? as f64)
    ),
    field!(
        "DCGM_FI_DEV_APP_MEM_CLOCK",
        Gauge,
        "Memory application clock (in MHz).",
        |g| Some(s(g)?.memory_clock_applications_mhz? as f64)
    ),
    field!(
        "DCGM_FI_DEV_MEMORY_TEMP",
        Gauge,
        "Memory temperature (in C).",
        |g| Some(s(g)?.temperature_memory_celsius? as f64)
    ),
    field!(
        "DCGM_FI_DEV_GPU_TEMP",
        Gauge,
        "GPU temperature (in C).",
        |g| Some(s(g)?.temperature_gpu_celsius? as f64)
    ),
    field!("DCGM_FI_DEV_FAN_SPEED", Gauge, "Fan speed (in %).", |g| {
        Some(s(g)?.fan_speed_percent? as f64)
    }),
    field!(
        "DCGM_FI_DEV_POWER_USAGE",
        Gauge,
        "Power draw (in W).",
        |g| Some(s(g)?.power_usage_milliwatts? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        Gauge,
        "Enforced power limit (in W).",
        |g| Some(s(g)?.power_limit_enforced_milliwatts? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        Counter,
        "Total energy consumption since boot (in mJ).",
        |g| Some(s(g)?.total_energy_millijoules? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PSTATE",
        Gauge,
        "Performance state (P-state) 0-15, 0 the highest.",
        |g| Some(s(g)?.performance_state? as f64)
    ),
    field!(
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        Gauge,
        "Bitmask of the reasons clocks are held down (NVML clocks event reasons).",
        |g| Some(s(g)?.clock_event_reasons? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
        Counter,
        "PCIe TX throughput as NVML reads it (in KB/s; dcgm-exporter types it a counter).",
        |g| Some(s(g)?.pcie_tx_kbps? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
        Counter,
        "PCIe RX throughput as NVML reads it (in KB/s; dcgm-exporter types it a counter).",
        |g| Some(s(g)?.pcie_rx_kbps? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        Counter,
        "Total number of PCIe retries.",
        |g| Some(s(g)?.pcie_replay_count? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PCIE_LINK_GEN",
        Gauge,
        "Current PCIe link generation.",
        |g| Some(s(g)?.pcie_link_gen? as f64)
    ),
    field!(
        "DCGM_FI_DEV_PCIE_LINK_WIDTH",
        Gauge,
        "Current PCIe link width (lanes).",
        |g| Some(s(g)?.pcie_link_width? as f64)
    ),
    field!(
        "DCGM_FI_DEV_GPU_UTIL",
        Gauge,
        "GPU utilization (in %).",
        |g| Some(s(g)?.utilization_gpu_percent? as f64)
    ),
    field!(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        Gauge,
        "Memory utilization (in %).",
        |g| Some(s(g)?.utilization_memory_percent? as f64)
    ),
    field!(
        "DCGM_FI_DEV_ENC_UTIL",
        Gauge,
        "Encoder utilization (in %).",
        |g| Some(s(g)?.utilization_encoder_percent? as f64)
    ),
    field!(
        "DCGM_FI_DEV_DEC_UTIL",
        Gauge,
        "Decoder utilization (in %).",
        |g| Some(s(g)?.utilization_decoder_percent? as f64)
    ),
    field!(
        "DCGM_FI_DEV_XID_ERRORS",
        Gauge,
        "Value of the last XID error encountered (0: none).",
        |g| Some(g.last_xid as f64)
    ),
    field!(
        "DCGM_FI_DEV_FB_FREE",
        Gauge,
        "Frame buffer memory free (in MiB).",
        |g| {
            let s = s(g)?;
            Some(s.memory_total_bytes?.saturating_sub(s.memory_used_bytes?) as f64 / MIB)
        }
    ),
    field!(
        "DCGM_FI_DEV_FB_USED",
        Gauge,
        "Frame buffer memory used (in MiB).",
        |g| Some(s(g)?.memory_used_bytes? as f64 / MIB)
    ),
    field!(
        "DCGM_FI_DEV_FB_TOTAL",
        Gauge,
        "Frame buffer memory total (in MiB).",
        |g| Some(s(g)?.memory_total_bytes? as f64 / MIB)
    ),
    field!(
        "DCGM_FI_DEV_BAR1_USED",
        Gauge,
        "BAR1 memory used (in MiB).",
        |g| Some(s(g)?.bar1_used_bytes? as f64 / MIB)
    ),
    field!(
        "DCGM_FI_DEV_POWER_VIOLATION",
        Counter,
        "Throttling duration due to power constraints (in us).",
        |g| Some(s(g)?.violation_power_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        Counter,
        "Throttling duration due to thermal constraints (in us).",
        |g| Some(s(g)?.violation_thermal_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
        Counter,
        "Throttling duration due to sync-boost constraints (in us).",
        |g| Some(s(g)?.violation_sync_boost_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
        Counter,
        "Throttling duration due to board limit constraints (in us).",
        |g| Some(s(g)?.violation_board_limit_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
        Counter,
        "Throttling duration due to low utilization (in us).",
        |g| Some(s(g)?.violation_low_utilization_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_RELIABILITY_VIOLATION",
        Counter,
        "Throttling duration due to reliability constraints (in us).",
        |g| Some(s(g)?.violation_reliability_ns? as f64 / 1000.0)
    ),
    field!(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        Counter,
        "Total number of single-bit volatile ECC errors.",
        |g| Some(s(g)?.ecc_corrected_volatile? as f64)
    ),
    field!(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        Counter,
        "Total number of double-bit volatile ECC errors.",
        |g| Some(s(g)?.ecc_uncorrected_volatile? as f64)
    ),
    field!(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        Counter,
        "Total number of single-bit persistent ECC errors.",
        |g| Some(s(g)?.ecc_corrected_aggregate? as f64)
    ),
    field!(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        Counter,
        "Total number of double-bit persistent ECC errors.",
        |g| Some(s(g)?.ecc_uncorrected_aggregate? as f64)
    ),
    field!(
        "DCGM_FI_DEV_RETIRED_SBE",
        Counter,
        "Total number of retired pages due to single-bit errors.",
        |g| Some(s(g)?.retired_pages_single_bit? as f64)
    ),
    field!(
        "DCGM_FI_DEV_RETIRED_DBE",
        Counter,
        "Total number of retired pages due to double-bit errors.",
        |g| Some(s(g)?.retired_pages_double_bit? as f64)
    ),
    field!(
        "DCGM_FI_DEV_RETIRED_PENDING",
        Counter,
        "Pages pending retirement (1: some, 0: none).",
        |g| Some(u8::from(s(g)?.retired_pages_pending?) as f64)
    ),
    field!(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        Counter,
        "Number of remapped rows for uncorrectable errors.",
        |g| Some(s(g)?.remapped_rows_uncorrectable? as f64)
    ),
    field!(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        Counter,
        "Number of remapped rows for correctable errors.",
        |g| Some(s(g)?.remapped_rows_correctable? as f64)
    ),
    field!(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        Gauge,
        "Whether remapping of rows has failed (1: failed).",
        |g| Some(u8::from(s(g)?.remapped_rows_failure?) as f64)
    ),
    field!(
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        Gauge,
        "Whether a row remapping is pending a reset (1: pending).",
        |g| Some(u8::from(s(g)?.remapped_rows_pending?) as f64)
    ),
    field!(
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        Counter,
        "Total number of NVLink flow-control CRC errors.",
        |g| nvlink_sum(g, |l| l.crc_flit_errors)
    ),
    field!(
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        Counter,
        "Total number of NVLink data CRC errors.",
        |g| nvlink_sum(g, |l| l.crc_data_errors)
    ),
    field!(
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
        Counter,
        "Total number of NVLink retries.",
        |g| nvlink_sum(g, |l| l.replay_errors)
    ),
    field!(
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
        Counter,
        "Total number of NVLink recovery errors.",
        |g| nvlink_sum(g, |l| l.recovery_errors)
    ),
    // Profiling fields: NVML's GPM percentages as DCGM's 0-1 ratios.
    field!(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        Gauge,
        "Ratio of time the graphics or compute engine was active (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_graphics_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_SM_ACTIVE",
        Gauge,
        "Ratio of time an SM had at least one warp assigned, averaged over SMs (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_sm_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_SM_OCCUPANCY",
        Gauge,
        "Ratio of resident warps to the SMs' maximum, averaged over SMs (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_sm_occupancy_percent?)
    ),
    field!(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        Gauge,
        "Ratio of cycles the tensor pipes were active (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_tensor_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        Gauge,
        "Ratio of peak device memory bandwidth in use (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_dram_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
        Gauge,
        "Ratio of cycles the FP64 pipes were active (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_fp64_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
        Gauge,
        "Ratio of cycles the FP32 pipes were active (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_fp32_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
        Gauge,
        "Ratio of cycles the FP16 pipes were active (0-1; from NVML GPM).",
        |g| ratio(s(g)?.gpm_fp16_active_percent?)
    ),
    field!(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        Gauge,
        "PCIe bytes transmitted per second (from NVML GPM).",
        |g| Some(s(g)?.gpm_pcie_tx_bytes_per_second? as f64)
    ),
    field!(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        Gauge,
        "PCIe bytes received per second (from NVML GPM).",
        |g| Some(s(g)?.gpm_pcie_rx_bytes_per_second? as f64)
    ),
    field!(
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        Gauge,
        "NVLink bytes transmitted per second, all links (from NVML GPM).",
        |g| Some(s(g)?.gpm_nvlink_tx_bytes_per_second? as f64)
    ),
    field!(
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        Gauge,
        "NVLink bytes received per second, all links (from NVML GPM).",
        |g| Some(s(g)?.gpm_nvlink_rx_bytes_per_second? as f64)
    ),
];

/// gpufleet's own per-GPU Xid count, under the DCGM label set (so it joins with them).
pub const XID_EVENTS: &str = "gpufleet_gpu_xid_events";

/// Encodes every DCGM family over `gpus`, then `gpufleet_gpu_xid_events_total` (present at 0
/// for every GPU). A family no GPU has a reading for is left out.
pub fn encode(
    enc: &mut DescriptorEncoder,
    gpus: &[GpuView],
    format: Format,
) -> Result<(), std::fmt::Error> {
    // Label values that are not borrowed from the inventory, made once per scrape.
    let idx: Vec<(String, String)> = gpus
        .iter()
        .map(|g| (g.info.index.to_string(), format!("nvidia{}", g.info.index)))
        .collect();
    let mut values = Vec::with_capacity(gpus.len());
    for f in FIELDS {
        values.clear();
        values.extend(gpus.iter().map(|g| (f.value)(g)));
        if values.iter().all(Option::is_none) {
            continue;
        }
        let kind = match (f.kind, format) {
            (Kind::Gauge, _) => MetricType::Gauge,
            (Kind::Counter, Format::Prometheus) => MetricType::Counter,
            (Kind::Counter, Format::OpenMetrics) => MetricType::Unknown,
        };
        let mut family = enc.encode_descriptor(f.name, f.help, None, kind)?;
        for ((g, v), (gpu, device)) in gpus.iter().zip(&values).zip(&idx) {
            if let Some(v) = v {
                let labels = g.labels(gpu, device);
                let mut m = family.encode_family(&labels)?;
                // Integral readings print as integers ("65", not "65.0"), as dcgm-exporter's do.
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    m.encode_gauge(&(*v as i64))?;
                } else {
                    m.encode_gauge(v)?;
                }
            }
        }
    }
    if !gpus.is_empty() {
        let mut family = enc.encode_descriptor(
            XID_EVENTS,
            "Xid errors this GPU reported (from the kernel log or NVML events) since this process started.",
            None,
            MetricType::Counter,
        )?;
        for (g, (gpu, device)) in gpus.iter().zip(&idx) {
            family
                .encode_family(&g.labels(gpu, device))?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                    &g.xid_events,
                    None,
                )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dcgm_exporters() {
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a DCGM name listed twice");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("DCGM_FI_DEV_") || n.starts_with("DCGM_FI_PROF_"))
        );
    }

    #[test]
    fn absent_readings_give_no_value_and_units_are_dcgms() {
        let info = GpuInfo {
            uuid: "GPU-1".into(),
            ..Default::default()
        };
        let sample = GpuSample {
            power_usage_milliwatts: Some(250_500),
            memory_used_bytes: Some(3 << 20),
            memory_total_bytes: Some(8 << 20),
            violation_power_ns: Some(2_000),
            remapped_rows_correctable: Some(0),
            gpm_tensor_active_percent: Some(0.0),
            gpm_sm_active_percent: Some(87.25),
            ..Default::default()
        };
        let g = GpuView {
            hostname: "n1",
            info: &info,
            driver_version: "550.54.15",
            sample: Some(&sample),
            last_xid: 0,
            xid_events: 0,
        };
        let get = |name: &str| (FIELDS.iter().find(|f| f.name == name).unwrap().value)(&g);
        assert_eq!(get("DCGM_FI_DEV_POWER_USAGE"), Some(250.5));
        assert_eq!(get("DCGM_FI_DEV_FB_USED"), Some(3.0));
        assert_eq!(get("DCGM_FI_DEV_FB_FREE"), Some(5.0));
        assert_eq!(get("DCGM_FI_DEV_POWER_VIOLATION"), Some(2.0));
        assert_eq!(
            get("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"),
            Some(0.0),
            "a zero count is a value"
        );
        assert_eq!(get("DCGM_FI_DEV_GPU_TEMP"), None, "absent is not zero");
        assert_eq!(get("DCGM_FI_DEV_XID_ERRORS"), Some(0.0));
        assert_eq!(get("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL"), None);
        assert_eq!(
            get("DCGM_FI_PROF_SM_ACTIVE"),
            Some(0.8725),
            "a ratio, as DCGM's"
        );
        assert_eq!(
            get("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
            Some(0.0),
            "idle tensor cores are a value"
        );
        assert_eq!(get("DCGM_FI_PROF_DRAM_ACTIVE"), None, "no GPM, no series");
    }
}
