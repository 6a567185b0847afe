//! The simulated GPUs of one node. Each reading is computed from scratch: the workload's
//! noise-free state ([`GpuLive`](crate::state::GpuLive)), changed by the faults active at that instant, then turned into
//! NVML-like values with bounded, hashed noise. Counters (energy, violation time, replays, ECC
//! and NVLink errors) are integrals over time of that same state, so they are exact, grow
//! monotonically, and need no memory of earlier samples.

use gpufleet_model::clock_events as ce;
use gpufleet_model::{
    DriverInfo, Event, EventKind, GpuInfo, GpuProcess, GpuSample, GpuStatus, NvLinkSample,
    Severity, UnixMs,
};

use gpufleet_model::GpuInventory;

use crate::faults::Fault;
use crate::models::GpuModelProfile;
use crate::noise::Noise;
use crate::scenario::Workload;
use crate::state::{GpuCounters, GpuCtx, GpuInfoEdit, GpuLive, NodeInfoEdit};

pub const DRIVER_VERSION: &str = "550.54.15";
/// Temperature of an unpowered GPU in the simulated data hall, °C.
const AMBIENT_C: f64 = 28.0;
const MIB: u64 = 1 << 20;
/// Framebuffer taken by the CUDA context and driver reservations while a process runs.
const CONTEXT_BYTES: u64 = 512 * MIB;
/// NVML's `XidCriticalError` event type.
const NVML_EVENT_XID: u64 = 0x8;

// Noise fields.
const F_UTIL: u64 = 1;
const F_MEM_UTIL: u64 = 2;
const F_CLOCK: u64 = 3;
const F_POWER: u64 = 4;
const F_TEMP: u64 = 5;
const F_MEM_TEMP: u64 = 6;
const F_FAN: u64 = 7;
const F_PCIE_RX: u64 = 8;
const F_PCIE_TX: u64 = 9;
const F_MEM_FULL: u64 = 10;
const F_GPM: u64 = 11;
const F_NVLINK_RX: u64 = 12;
const C_TEMP: u64 = 100;
const C_POWER: u64 = 101;
const C_MEM: u64 = 102;
const C_MEM_UTIL: u64 = 103;
const C_UUID: u64 = 104;
const C_SERIAL: u64 = 106;

/// Per-GPU constants, computed once.
#[derive(Debug)]
pub(super) struct GpuSim {
    pub index: u32,
    pub uuid: String,
    pub serial: String,
    pub pci_bus_id: String,
    noise: Noise,
    /// Noise-free temperature under the training workload, °C.
    temp_base: f64,
    /// Power the workload draws at full utilization and max clock, W.
    nominal_w: f64,
    /// Noise-free power of the healthy training workload (for the temperature model), W.
    ref_power_w: f64,
    mem_frac: f64,
    mem_util_base: f64,
    pid: u32,
    /// Indices into [`GpuNode::faults`] of the faults that change this GPU's readings.
    faults: Vec<usize>,
}

/// Energy (mJ) and clock-event time (ns) integrated up to an instant.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counters {
    energy_mj: f64,
    power_ns: f64,
    thermal_ns: f64,
    board_ns: f64,
    low_util_ns: f64,
}

/// All simulated GPUs of one node.
#[derive(Debug)]
pub(super) struct GpuNode {
    pub profile: &'static GpuModelProfile,
    workload: Workload,
    /// Faults that act on this node.
    pub faults: Vec<Fault>,
    pub gpus: Vec<GpuSim>,
    /// Milliseconds from boot to the virtual origin.
    uptime0_ms: i64,
}

impl GpuNode {
    pub fn new(
        profile: &'static GpuModelProfile,
        node_noise: Noise,
        gpu_count: u32,
        workload: Workload,
        faults: Vec<Fault>,
        uptime0_s: u64,
    ) -> Self {
        let pid_base = 2_000 + (node_noise.bits(0x91D) % 60_000) as u32;
        let limit_w = f64::from(profile.power_limit_default_mw) / 1000.0;
        let idle_w = f64::from(profile.power_idle_mw) / 1000.0;
        let gpus = (0..gpu_count)
            .map(|index| {
                let n = node_noise.child(u64::from(index));
                let nominal_w = limit_w * n.between(C_POWER, 0.75, 0.81);
                let (a, b) = (n.bits(C_UUID), n.bits(C_UUID + 1));
                GpuSim {
                    index,
                    uuid: format!(
                        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                        a >> 32,
                        (a >> 16) & 0xFFFF,
                        a & 0xFFFF,
                        b >> 48,
                        b & 0xFFFF_FFFF_FFFF
                    ),
                    serial: format!(
                        "{}{:09}",
                        profile.serial_prefix,
                        n.bits(C_SERIAL) % 1_000_000_000
                    ),
                    pci_bus_id: profile.pci_bus_id(index),
                    noise: n,
                    temp_base: n.between(C_TEMP, 62.0, 68.0),
                    nominal_w,
                    ref_power_w: idle_w + (nominal_w - idle_w) * TRAINING_UTIL / 100.0,
                    mem_frac: n.between(C_MEM, 0.72, 0.86),
                    mem_util_base: n.between(C_MEM_UTIL, 40.0, 55.0),
                    pid: pid_base + 7 * index,
                    faults: faults
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| f.touches_gpus() && f.applies_to_gpu(index))
                        .map(|(i, _)| i)
                        .collect(),
                }
            })
            .collect();
        GpuNode {
            profile,
            workload,
            faults,
            gpus,
            uptime0_ms: uptime0_s as i64 * 1000,
        }
    }

    fn baseline(&self) -> GpuLive {
        let p = self.profile;
        let mut l = GpuLive {
            util: TRAINING_UTIL,
            mem_util: 0.0,
            sm_ratio: 1.0,
            idle_clocks: false,
            app_sm_mhz: None,
            app_mem_mhz: None,
            power_mult: 1.0,
            limit_w: f64::from(p.power_limit_default_mw) / 1000.0,
            temp_pin: None,
            fan_pin: None,
            reasons: 0,
            pcie_gen: p.pcie_gen_max,
            pcie_width: p.pcie_width_max,
            traffic: 1.0,
            process: true,
            tensor_share: 1.0,
            memory_full: false,
            lost: false,
            power_w: 0.0,
            power_pinned: false,
            temp_c: AMBIENT_C,
        };
        if self.workload == Workload::Idle {
            l.util = 0.0;
            l.idle_clocks = true;
            l.reasons = ce::GPU_IDLE;
            l.process = false;
            l.traffic = 0.001;
        }
        l
    }

    /// Noise-free state of GPU `g` at `t` ms after the origin.
    pub fn live(&self, g: &GpuSim, t: i64) -> GpuLive {
        let mut l = self.baseline();
        if self.workload == Workload::Training {
            l.mem_util = g.mem_util_base;
        }
        for f in self.gpu_faults(g).filter(|f| f.active_at(t)) {
            let ctx = GpuCtx {
                profile: self.profile,
                elapsed_ms: t - f.start_ms as i64,
                temp_base: g.temp_base,
            };
            f.kind.gpu(&mut l, &ctx);
            l.lost |= f.kind.loses_gpu();
        }
        self.finish(g, &mut l);
        l
    }

    /// Power from utilization and clock (capped by the enforced limit), then temperature.
    fn finish(&self, g: &GpuSim, l: &mut GpuLive) {
        if l.lost {
            l.power_w = 0.0;
            l.temp_c = AMBIENT_C;
            l.reasons = 0;
            return;
        }
        let idle = f64::from(self.profile.power_idle_mw) / 1000.0;
        let span = (g.nominal_w - idle).max(0.0);
        let u = (l.util / 100.0).clamp(0.0, 1.0);
        let mut power = if l.idle_clocks {
            idle
        } else {
            idle + span * u * l.sm_ratio.powf(1.5)
        } * l.power_mult;
        let cap = l.limit_w * 0.995;
        if power > cap {
            if !l.idle_clocks && span * u > 0.0 {
                let r = ((cap / l.power_mult - idle) / (span * u))
                    .max(0.0)
                    .powf(2.0 / 3.0);
                l.sm_ratio = l.sm_ratio.min(r.max(0.2));
            }
            power = cap;
            l.power_pinned = true;
            l.reasons |= ce::SW_POWER_CAP;
        }
        l.power_w = power;
        l.temp_c = l
            .temp_pin
            .unwrap_or(AMBIENT_C + (g.temp_base - AMBIENT_C) * power / g.ref_power_w);
    }

    /// Energy and violation counters of `g` at `t`: the exact integral of the noise-free
    /// state since boot, which is constant between fault boundaries.
    fn counters(&self, g: &GpuSim, t: i64) -> Counters {
        let boot = -self.uptime0_ms;
        let mut c = Counters::default();
        if t <= boot {
            return c;
        }
        let mut add = |a: i64, b: i64| {
            let l = self.live(g, a + (b - a) / 2);
            let ms = (b - a) as f64;
            c.energy_mj += l.power_w * ms;
            let ns = ms * 1e6;
            if l.reasons & ce::SW_POWER_CAP != 0 {
                c.power_ns += ns;
            }
            if l.reasons & (ce::SW_THERMAL_SLOWDOWN | ce::HW_THERMAL_SLOWDOWN) != 0 {
                c.thermal_ns += ns;
            }
            if l.reasons & (ce::HW_SLOWDOWN | ce::HW_POWER_BRAKE_SLOWDOWN) != 0 {
                c.board_ns += ns;
            }
            if l.reasons & ce::GPU_IDLE != 0 {
                c.low_util_ns += ns;
            }
        };
        if g.faults.is_empty() {
            add(boot, t);
            return c;
        }
        let mut points = vec![boot, t];
        for &i in &g.faults {
            let f = &self.faults[i];
            let start = f.start_ms as i64;
            points.push(start);
            points.extend(f.end_ms.map(|e| e as i64));
            let ctx = GpuCtx {
                profile: self.profile,
                elapsed_ms: 0,
                temp_base: g.temp_base,
            };
            points.extend(
                f.kind
                    .gpu_breakpoints(&ctx)
                    .into_iter()
                    .flatten()
                    .map(|d| start + d),
            );
        }
        points.retain(|p| (boot..=t).contains(p));
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            add(w[0], w[1]);
        }
        c
    }

    /// The faults that change what `g` reads.
    fn gpu_faults<'a>(&'a self, g: &'a GpuSim) -> impl Iterator<Item = &'a Fault> + 'a {
        g.faults.iter().map(|&i| &self.faults[i])
    }

    /// One reading of GPU `g` at `t` ms after the origin; `tick` (the absolute second) keys
    /// the noise.
    pub fn sample(&self, g: &GpuSim, t: i64, tick: i64) -> GpuSample {
        let l = self.live(g, t);
        if l.lost {
            return GpuSample::failed(g.index, &g.uuid, GpuStatus::Lost, "GPU is lost");
        }
        let p = self.profile;
        let n = g.noise;

        let util = if l.util >= 99.95 || l.util <= 0.05 {
            l.util
        } else {
            let sigma = if l.util > 90.0 { 0.4 } else { 3.0 };
            (l.util + sigma * n.gauss(F_UTIL, tick)).clamp(0.0, 100.0)
        };
        let mem_util = if l.mem_util <= 0.05 {
            0.0
        } else {
            (l.mem_util + 2.0 * n.gauss(F_MEM_UTIL, tick)).clamp(0.0, 100.0)
        };

        let max = p.sm_clock_max_mhz;
        let step = p.clock_step_mhz;
        let sm_mhz = match l.app_sm_mhz {
            _ if l.idle_clocks => p.sm_clock_idle_mhz,
            Some(app) if l.sm_ratio * f64::from(max) >= f64::from(app) - 0.5 => app,
            _ if l.sm_ratio >= 0.999 && l.reasons == 0 => {
                // Healthy boost: at max, now and then a step or two below (within 2 %).
                let max_dip = (max / 50 / step).min(2);
                let u = n.unit(F_CLOCK, tick);
                let dip = if u < 0.80 {
                    0
                } else if u < 0.95 {
                    1
                } else {
                    2
                };
                max - dip.min(max_dip) * step
            }
            _ => {
                let steps = (f64::from(max) * l.sm_ratio / f64::from(step)
                    + 0.6 * n.gauss(F_CLOCK, tick))
                .round();
                ((steps.max(0.0) as u32) * step).clamp(p.sm_clock_idle_mhz, max)
            }
        };

        let power_w = if l.power_pinned {
            l.power_w * (1.0 - 0.004 * n.gauss(F_POWER, tick).abs())
        } else {
            (l.power_w * (1.0 + 0.015 * n.gauss(F_POWER, tick))).min(l.limit_w)
        };
        let temp = match l.temp_pin {
            Some(pin) => pin + 0.3 * n.gauss(F_TEMP, tick),
            None => {
                l.temp_c + 0.5 * n.wander(F_TEMP, tick as f64, 90.0) + 0.3 * n.gauss(F_TEMP, tick)
            }
        };
        let fan = p.has_fans().then(|| {
            let auto = 25.0 + (temp - 35.0) * 1.2 + n.gauss(F_FAN, tick);
            l.fan_pin.unwrap_or(auto).clamp(0.0, 100.0).round() as u32
        });

        let link_cap_kbps =
            gpufleet_model::pcie::link_kbps(l.pcie_gen, l.pcie_width).unwrap_or(0) as f64 * 0.8;
        let rx = (f64::from(p.pcie_rx_kbps) * l.traffic * (1.0 + 0.12 * n.gauss(F_PCIE_RX, tick)))
            .min(link_cap_kbps);
        let tx = rx * 0.4 * (1.0 + 0.1 * n.gauss(F_PCIE_TX, tick));

        let total = p.memory_total_bytes;
        let process_bytes = if l.memory_full {
            total - CONTEXT_BYTES - (16 + (n.unit(F_MEM_FULL, tick) * 32.0) as u64) * MIB
        } else {
            (total as f64 * g.mem_frac) as u64 / MIB * MIB
        };
        let used = if l.process {
            process_bytes + CONTEXT_BYTES
        } else {
            4 * MIB
        };

        let c = self.counters(g, t);
        let counts = self.gpu_counters(g, t);
        let rows = p.row_remapping;
        let gpm = p.has_gpm().then(|| {
            gpm_metrics(&l, util, mem_util, rx, tx, p.nvlink_count, |f, k| {
                n.gauss(f * 64 + k, tick)
            })
        });
        let gpm = gpm.as_ref();

        GpuSample {
            index: g.index,
            uuid: g.uuid.clone(),
            status: GpuStatus::Ok,
            error: String::new(),
            temperature_gpu_celsius: Some(temp.round() as i32),
            temperature_memory_celsius: p
                .memory_temperature_max_operating_celsius
                .map(|_| (temp + 5.0 + 0.3 * n.gauss(F_MEM_TEMP, tick)).round() as i32),
            fan_speed_percent: fan,
            power_usage_milliwatts: Some((power_w * 1000.0) as u32),
            power_limit_enforced_milliwatts: Some((l.limit_w * 1000.0).round() as u32),
            total_energy_millijoules: Some(c.energy_mj as u64),
            memory_used_bytes: Some(used),
            memory_total_bytes: Some(total),
            bar1_used_bytes: Some(if l.process { 34 * MIB } else { MIB }),
            utilization_gpu_percent: Some(util.round() as u32),
            utilization_memory_percent: Some(mem_util.round() as u32),
            utilization_encoder_percent: Some(0),
            utilization_decoder_percent: Some(0),
            sm_clock_mhz: Some(sm_mhz),
            memory_clock_mhz: Some(l.app_mem_mhz.unwrap_or(p.memory_clock_max_mhz)),
            graphics_clock_mhz: Some(sm_mhz),
            sm_clock_applications_mhz: Some(l.app_sm_mhz.unwrap_or(max)),
            memory_clock_applications_mhz: Some(l.app_mem_mhz.unwrap_or(p.memory_clock_max_mhz)),
            clock_event_reasons: Some(l.reasons),
            violation_power_ns: Some(c.power_ns as u64),
            violation_thermal_ns: Some(c.thermal_ns as u64),
            violation_sync_boost_ns: Some(0),
            violation_board_limit_ns: Some(c.board_ns as u64),
            violation_low_utilization_ns: Some(c.low_util_ns as u64),
            violation_reliability_ns: Some(0),
            pcie_link_gen: Some(l.pcie_gen),
            pcie_link_width: Some(l.pcie_width),
            pcie_tx_kbps: Some(tx as u32),
            pcie_rx_kbps: Some(rx as u32),
            pcie_replay_count: Some(counts.pcie_replays),
            ecc_corrected_volatile: Some(0),
            ecc_uncorrected_volatile: Some(counts.ecc_volatile),
            ecc_corrected_aggregate: Some(0),
            ecc_uncorrected_aggregate: Some(counts.ecc_aggregate),
            retired_pages_single_bit: (!rows).then_some(0),
            retired_pages_double_bit: (!rows).then_some(counts.ecc_aggregate as u32),
            retired_pages_pending: (!rows).then_some(counts.remap_pending),
            remapped_rows_correctable: rows.then_some(0),
            remapped_rows_uncorrectable: rows.then_some(counts.ecc_aggregate as u32),
            remapped_rows_pending: rows.then_some(counts.remap_pending),
            remapped_rows_failure: rows.then_some(counts.remap_failure),
            performance_state: Some(0),
            gpm_graphics_active_percent: gpm.map(|m| m.graphics),
            gpm_sm_active_percent: gpm.map(|m| m.sm_active),
            gpm_sm_occupancy_percent: gpm.map(|m| m.sm_occupancy),
            gpm_tensor_active_percent: gpm.map(|m| m.tensor),
            gpm_dram_active_percent: gpm.map(|m| m.dram),
            gpm_fp64_active_percent: gpm.map(|m| m.fp64),
            gpm_fp32_active_percent: gpm.map(|m| m.fp32),
            gpm_fp16_active_percent: gpm.map(|m| m.fp16),
            gpm_pcie_tx_bytes_per_second: gpm.map(|m| m.pcie_tx),
            gpm_pcie_rx_bytes_per_second: gpm.map(|m| m.pcie_rx),
            gpm_nvlink_tx_bytes_per_second: gpm.map(|m| m.nvlink_tx),
            gpm_nvlink_rx_bytes_per_second: gpm.map(|m| m.nvlink_rx),
            nvlinks: counts
                .nvlinks
                .iter()
                .zip(0..)
                .map(|(c, link)| NvLinkSample {
                    link,
                    active: Some(c.active),
                    replay_errors: Some(c.errors / 2),
                    recovery_errors: Some(c.recoveries + c.errors / 50),
                    crc_flit_errors: Some(c.errors),
                    crc_data_errors: Some(c.errors / 10),
                })
                .collect(),
            processes: if l.process {
                vec![GpuProcess {
                    pid: g.pid,
                    name: "python3".to_string(),
                    used_memory_bytes: Some(process_bytes),
                }]
            } else {
                Vec::new()
            },
        }
    }

    /// Counter-like readings of `g` at `t`: every fault of the GPU adds what it has counted.
    fn gpu_counters(&self, g: &GpuSim, t: i64) -> GpuCounters {
        let mut c = GpuCounters::new(self.profile.nvlink_count);
        for f in self.gpu_faults(g) {
            f.kind.gpu_counters(&f.at(t), &mut c);
        }
        c
    }

    /// Whether `g` has fallen off the bus at `t`.
    fn lost(&self, g: &GpuSim, t: i64) -> bool {
        self.gpu_faults(g)
            .any(|f| f.kind.loses_gpu() && f.active_at(t))
    }

    /// What the node's inventory reports at `t`, as its active faults leave it.
    pub fn node_info(&self, t: i64) -> NodeInfoEdit<'_> {
        let mut n = NodeInfoEdit::default();
        for f in self.faults.iter().filter(|f| f.active_at(t)) {
            f.kind.node_info(&mut n);
        }
        n
    }

    pub fn driver_version(&self, t: i64) -> &str {
        self.node_info(t).driver_version.unwrap_or(DRIVER_VERSION)
    }

    pub fn inventory(&self, t: i64) -> GpuInventory {
        let p = self.profile;
        let driver = self.driver_version(t).to_string();
        let cuda = cuda_version_of(&driver);
        let cuda_major = cuda.split('.').next().unwrap_or("12");
        let gpus = self
            .gpus
            .iter()
            .filter(|g| !self.lost(g, t))
            .map(|g| {
                let mut edit = GpuInfoEdit::default();
                for f in self.gpu_faults(g).filter(|f| f.active_at(t)) {
                    f.kind.gpu_info(&mut edit);
                }
                let vbios = edit.vbios_version.unwrap_or(p.vbios_version);
                let persistence = !edit.persistence_off;
                GpuInfo {
                    index: g.index,
                    name: p.product_name.to_string(),
                    uuid: g.uuid.clone(),
                    serial: g.serial.clone(),
                    pci_bus_id: g.pci_bus_id.clone(),
                    architecture: p.architecture.to_string(),
                    memory_total_bytes: Some(p.memory_total_bytes),
                    bar1_total_bytes: Some(p.bar1_total_bytes),
                    vbios_version: vbios.to_string(),
                    inforom_image_version: p.inforom_image_version.to_string(),
                    gsp_firmware_version: driver.clone(),
                    persistence_mode: Some(persistence),
                    compute_mode: "Default".to_string(),
                    mig_enabled: p.mig_capable.then_some(false),
                    ecc_enabled: Some(true),
                    pcie_link_gen_max: Some(p.pcie_gen_max),
                    pcie_link_width_max: Some(p.pcie_width_max),
                    sm_clock_max_mhz: Some(p.sm_clock_max_mhz),
                    memory_clock_max_mhz: Some(p.memory_clock_max_mhz),
                    graphics_clock_max_mhz: Some(p.sm_clock_max_mhz),
                    power_limit_default_milliwatts: Some(p.power_limit_default_mw),
                    power_limit_min_milliwatts: Some(p.power_limit_min_mw),
                    power_limit_max_milliwatts: Some(p.power_limit_max_mw),
                    temperature_slowdown_celsius: Some(p.temperature_slowdown_celsius),
                    temperature_shutdown_celsius: Some(p.temperature_shutdown_celsius),
                    temperature_max_operating_celsius: Some(p.temperature_max_operating_celsius),
                    memory_temperature_max_operating_celsius: p
                        .memory_temperature_max_operating_celsius,
                    cuda_compute_capability: p.cuda_compute_capability.to_string(),
                    nvlink_count: p.nvlink_count,
                    fan_count: Some(p.fan_count),
                    board_part_number: p.board_part_number.to_string(),
                }
            })
            .collect();
        GpuInventory {
            driver: DriverInfo {
                nvml_version: format!("{cuda_major}.{driver}"),
                cuda_driver_version: cuda.to_string(),
                driver_version: driver,
            },
            gpus,
        }
    }

    /// Xid events with offsets in `(after, until]` (ms after the origin), in time order.
    pub fn events(&self, after: i64, until: i64, origin: UnixMs) -> Vec<Event> {
        let mut out = Vec::new();
        if until <= after {
            return out;
        }
        for f in &self.faults {
            let start = f.start_ms as i64;
            let end = f.end_ms.map_or(i64::MAX, |e| e as i64);
            let Some(x) = f.kind.xid() else {
                continue;
            };
            let (xid, repeat, interval) = (x.xid, x.repeat, x.interval_ms.max(1));
            // Occurrence k happens at start + k·interval, for k < repeat, while the fault is on.
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
            let last = (hi / interval).min(i64::from(repeat) - 1);
            for k in first..=last {
                let at = start + k * interval;
                for g in self.gpus.iter().filter(|g| f.applies_to_gpu(g.index)) {
                    // A lost GPU reports nothing more, apart from the loss itself.
                    let is_loss = f.kind.loses_gpu();
                    if !is_loss
                        && self.gpu_faults(g).any(|l| {
                            l.kind.loses_gpu() && l.active_at(at) && (l.start_ms as i64) < at
                        })
                    {
                        continue;
                    }
                    out.push(xid_event(g, xid, origin.plus_ms(at), f.name()));
                }
            }
        }
        out.sort_by_key(|e| (e.timestamp, e.gpu_index));
        out
    }
}

/// Healthy training utilization, %, before noise.
const TRAINING_UTIL: f64 = 98.6;

/// GPM readings of one GPU over one interval.
struct Gpm {
    graphics: f32,
    sm_active: f32,
    sm_occupancy: f32,
    tensor: f32,
    dram: f32,
    fp64: f32,
    fp32: f32,
    fp16: f32,
    pcie_tx: u64,
    pcie_rx: u64,
    nvlink_tx: u64,
    nvlink_rx: u64,
}

/// Mixed-precision training on an H100 as profilers show it, per unit of utilization: the
/// graphics engine busy whenever a kernel runs, SMs busy most of that time at moderate
/// occupancy, tensor pipes active about half of it, little FP32/FP16 pipe and no FP64 work.
const TRAINING_SM_ACTIVE: f64 = 0.88;
const TRAINING_OCCUPANCY: f64 = 0.42;
const TRAINING_TENSOR: f64 = 0.48;
const TRAINING_FP32: f64 = 0.12;
const TRAINING_FP16: f64 = 0.09;
/// An FP32 workload without tensor cores keeps its FP32 pipes this busy instead.
const NO_TENSOR_FP32: f64 = 0.55;
/// NVLink traffic of data-parallel training's all-reduce on an 8-GPU NVSwitch board, each
/// direction, bytes/s at full utilization.
const TRAINING_NVLINK_BYTES: f64 = 85e9;

/// GPM metrics from the noise-free state `l`, the noisy utilization and PCIe readings, and
/// `noise(field, k)`, a standard normal draw per metric.
fn gpm_metrics(
    l: &GpuLive,
    util: f64,
    mem_util: f64,
    rx_kbps: f64,
    tx_kbps: f64,
    nvlinks: u32,
    noise: impl Fn(u64, u64) -> f64,
) -> Gpm {
    let busy = util / 100.0;
    let pct = |v: f64, k: u64, sigma: f64| {
        if v <= 0.0 {
            0.0
        } else {
            gpufleet_model::hundredths((v + sigma * noise(F_GPM, k)).clamp(0.0, 100.0))
        }
    };
    let sm_active = 100.0 * busy * if l.process { TRAINING_SM_ACTIVE } else { 1.0 };
    let tensor = if l.process {
        100.0 * busy * TRAINING_TENSOR * l.tensor_share
    } else {
        0.0
    };
    let fp32_share =
        TRAINING_FP32 + (NO_TENSOR_FP32 - TRAINING_FP32) * (1.0 - l.tensor_share.clamp(0.0, 1.0));
    let (fp32, fp16) = if l.process {
        (
            100.0 * busy * fp32_share,
            100.0 * busy * TRAINING_FP16 * l.tensor_share,
        )
    } else {
        (0.0, 0.0)
    };
    let nvlink = if nvlinks == 0 || !l.process {
        0.0
    } else {
        TRAINING_NVLINK_BYTES * busy * l.traffic.min(1.0) * (1.0 + 0.08 * noise(F_NVLINK_RX, 0))
    };
    Gpm {
        graphics: pct(util * 0.995, 0, 0.2),
        sm_active: pct(sm_active, 1, 1.0),
        sm_occupancy: pct(sm_active * TRAINING_OCCUPANCY, 2, 0.8),
        tensor: pct(tensor, 3, 1.2),
        dram: pct(mem_util * 0.9, 4, 1.0),
        fp64: if l.process && busy > 0.0 { 0.01 } else { 0.0 },
        fp32: pct(fp32, 5, 0.6),
        fp16: pct(fp16, 6, 0.4),
        pcie_tx: (tx_kbps * 1024.0) as u64,
        pcie_rx: (rx_kbps * 1024.0) as u64,
        nvlink_tx: (nvlink * (1.0 + 0.02 * noise(F_NVLINK_RX, 1))).max(0.0) as u64,
        nvlink_rx: nvlink.max(0.0) as u64,
    }
}

fn xid_event(g: &GpuSim, xid: u32, at: UnixMs, fault: &str) -> Event {
    let info = gpufleet_model::xid::lookup(xid);
    let severity = match info.map(|i| i.immediate_resolution) {
        Some("IGNORE") => Severity::Info,
        Some("RESTART_APP") | None => Severity::Warning,
        Some(_) => Severity::Critical,
    };
    let message = match info {
        Some(i) => format!("Xid {xid}: {} ({})", i.description, i.mnemonic),
        None => format!("Xid {xid}"),
    };
    let mut e = Event::new(at, EventKind::Xid, severity, format!("xid.{xid}"), message)
        .on_gpu(g.index, &g.uuid)
        .from_source("simulated")
        .detail("pci_bus_id", &g.pci_bus_id)
        .detail("simulated_fault", fault);
    e.xid = Some(xid);
    e.nvml_event_type = Some(NVML_EVENT_XID);
    e
}

/// CUDA version a driver branch ships with (`550.54.15` → `12.4`).
fn cuda_version_of(driver: &str) -> &'static str {
    match driver.split('.').next().and_then(|b| b.parse::<u32>().ok()) {
        Some(..=529) => "12.0",
        Some(530..=534) => "12.1",
        Some(535..=544) => "12.2",
        Some(545..=549) => "12.3",
        Some(550..=554) => "12.4",
        Some(555..=559) => "12.5",
        Some(560..=564) => "12.6",
        Some(565..=569) => "12.7",
        Some(570..=574) => "12.8",
        Some(575..=579) => "12.9",
        Some(_) => "13.0",
        None => "12.4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_follow_the_driver_branch() {
        for (driver, cuda) in [
            ("550.54.15", "12.4"),
            ("535.161.08", "12.2"),
            ("570.86.10", "12.8"),
            ("580.105.08", "13.0"),
            ("x", "12.4"),
        ] {
            assert_eq!(cuda_version_of(driver), cuda, "{driver}");
        }
    }
}
