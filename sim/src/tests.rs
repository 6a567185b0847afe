//! Tests of the simulator as a whole: determinism, healthy bounds per model, the effect of
//! every fault kind (absent before its start, present while on, gone after its end), and that
//! the docs and scenario files agree with the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gpufleet_model::clock_events as ce;
use gpufleet_model::{EventKind, GpuSample, GpuStatus, HostInfo, HostSample};

use super::*;

/// 2026-01-01T00:00:00Z: the virtual origin of these tests.
const T0: UnixMs = UnixMs(1_767_225_600_000);

fn at(seconds: i64) -> UnixMs {
    T0.plus_ms(seconds * 1000)
}

fn config(node: &str, model: &str, seed: u64, scenario: Option<Arc<Scenario>>) -> SimConfig {
    SimConfig {
        node_name: node.to_string(),
        model: model.to_string(),
        gpu_count: 8,
        seed,
        scenario,
        start: T0,
    }
}

fn node(model: &str, scenario: Option<Arc<Scenario>>) -> (SimulatedGpus, SimulatedHost) {
    simulated_node(config("gpu-node-01", model, 7, scenario)).expect("simulated node")
}

fn scenario(text: &str) -> Arc<Scenario> {
    Arc::new(Scenario::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}")))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn same_inputs_give_the_same_readings() {
    let s = scenario(
        "name = \"d\"\n[[fault]]\nkind = \"thermal_throttle\"\ngpu = 1\nstart = \"10s\"\n",
    );
    let (a, ha) = node("h100", Some(s.clone()));
    let (b, hb) = node("h100", Some(s));
    // b samples in another order and at other times first: readings must not depend on history.
    for t in [500, 3, 77] {
        b.sample(at(t));
        hb.sample(at(t));
    }
    for t in [0, 1, 15, 42, 300, 3_599] {
        assert_eq!(a.sample(at(t)), b.sample(at(t)), "gpus at {t}s");
        assert_eq!(ha.sample(at(t)), hb.sample(at(t)), "host at {t}s");
        assert_eq!(a.inventory(at(t)), b.inventory(at(t)));
        assert_eq!(ha.info(at(t)), hb.info(at(t)));
    }
    // Within one second gauges are equal (counters keep counting); other seeds and nodes differ.
    let gauges = |s: &GpuSample| {
        (
            s.temperature_gpu_celsius,
            s.power_usage_milliwatts,
            s.sm_clock_mhz,
            s.utilization_gpu_percent,
        )
    };
    assert_eq!(
        gauges(&a.sample(at(42))[0]),
        gauges(&a.sample(at(42).plus_ms(999))[0])
    );
    let (c, _) = simulated_node(config("gpu-node-01", "h100", 8, None)).unwrap();
    let (d, _) = simulated_node(config("gpu-node-02", "h100", 7, None)).unwrap();
    assert_ne!(
        a.sample(at(42))[0].power_usage_milliwatts,
        c.sample(at(42))[0].power_usage_milliwatts
    );
    assert_ne!(a.inventory(T0).gpus[0].uuid, d.inventory(T0).gpus[0].uuid);
}

#[test]
fn inventory_looks_like_nvml() {
    let (gpus, host) = node("h100", None);
    let inv = gpus.inventory(T0);
    assert_eq!(
        (
            inv.driver.driver_version.as_str(),
            inv.driver.nvml_version.as_str(),
            inv.driver.cuda_driver_version.as_str()
        ),
        ("550.54.15", "12.550.54.15", "12.4")
    );
    let buses: Vec<&str> = inv.gpus.iter().map(|g| &g.pci_bus_id[9..11]).collect();
    assert_eq!(buses, ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]);
    let mut uuids = BTreeSet::new();
    for g in &inv.gpus {
        assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
        let parts: Vec<usize> = g
            .uuid
            .strip_prefix("GPU-")
            .unwrap()
            .split('-')
            .map(str::len)
            .collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{}", g.uuid);
        assert!(
            g.uuid[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        );
        assert!(uuids.insert(g.uuid.clone()));
        assert_eq!(g.serial.len(), 13, "{}", g.serial);
        assert_eq!(
            (
                g.power_limit_default_milliwatts,
                g.power_limit_min_milliwatts
            ),
            (Some(700_000), Some(200_000))
        );
        assert_eq!(
            (g.sm_clock_max_mhz, g.memory_clock_max_mhz),
            (Some(1980), Some(2619))
        );
        assert_eq!(
            (g.pcie_link_gen_max, g.pcie_link_width_max),
            (Some(5), Some(16))
        );
        assert_eq!(
            (
                g.temperature_slowdown_celsius,
                g.temperature_shutdown_celsius,
                g.temperature_max_operating_celsius
            ),
            (Some(89), Some(95), Some(87))
        );
        assert_eq!(
            (g.nvlink_count, g.fan_count, g.persistence_mode),
            (18, Some(0), Some(true))
        );
        assert_eq!(g.gsp_firmware_version, "550.54.15");
    }
    let info = host.info(T0);
    assert_eq!(
        (info.os_name.as_str(), info.kernel_version.as_str()),
        ("Ubuntu 22.04.4 LTS", "5.15.0-105-generic")
    );
    assert_eq!(
        (info.cpu_model.as_str(), info.cpu_logical_cores),
        ("Intel(R) Xeon(R) Platinum 8480+", 224)
    );
    assert_eq!(
        (info.memory_total_bytes, info.swap_total_bytes),
        (2 << 40, 0)
    );
    assert_eq!(
        info.nics
            .iter()
            .filter(|n| n.speed_mbps == Some(400_000))
            .count(),
        8
    );
    assert_eq!(
        info.disks
            .iter()
            .map(|d| d.mount_point.as_str())
            .collect::<Vec<_>>(),
        ["/", "/raid"]
    );
    let later = host.info(at(3_600));
    assert_eq!(later.uptime_seconds, info.uptime_seconds + 3_600);
    assert!(info.uptime_seconds >= 3 * 86_400);
}

/// Bounds no healthy reading may leave (what a diagnosis with sane thresholds relies on).
fn check_healthy_gpu(s: &GpuSample, p: &GpuModelProfile, what: &str) {
    let limit = f64::from(p.power_limit_default_mw);
    let power = f64::from(s.power_usage_milliwatts.unwrap());
    let sm = s.sm_clock_mhz.unwrap();
    let temp = s.temperature_gpu_celsius.unwrap();
    let mem_total = s.memory_total_bytes.unwrap() as f64;
    assert_eq!(s.status, GpuStatus::Ok, "{what}");
    assert!(
        s.utilization_gpu_percent.unwrap() >= 95,
        "{what}: util {:?}",
        s.utilization_gpu_percent
    );
    assert_eq!(s.clock_event_reasons, Some(0), "{what}");
    assert!(
        sm <= p.sm_clock_max_mhz && f64::from(sm) >= 0.98 * f64::from(p.sm_clock_max_mhz),
        "{what}: sm {sm}"
    );
    assert_eq!(s.memory_clock_mhz, Some(p.memory_clock_max_mhz), "{what}");
    assert!(
        (0.70..=0.85).contains(&(power / limit)),
        "{what}: power {power} of {limit}"
    );
    assert_eq!(
        s.power_limit_enforced_milliwatts,
        Some(p.power_limit_default_mw),
        "{what}"
    );
    assert!((58..=72).contains(&temp), "{what}: temp {temp}");
    assert!(
        temp <= p.temperature_max_operating_celsius - 10,
        "{what}: temp {temp}"
    );
    assert_eq!(
        (s.pcie_link_gen, s.pcie_link_width),
        (Some(p.pcie_gen_max), Some(p.pcie_width_max)),
        "{what}"
    );
    assert_eq!(s.pcie_replay_count, Some(0), "{what}");
    assert_eq!(
        (
            s.ecc_uncorrected_volatile,
            s.ecc_uncorrected_aggregate,
            s.ecc_corrected_volatile
        ),
        (Some(0), Some(0), Some(0)),
        "{what}"
    );
    assert_ne!(s.remapped_rows_pending, Some(true), "{what}");
    assert_ne!(s.remapped_rows_failure, Some(true), "{what}");
    assert_ne!(s.retired_pages_pending, Some(true), "{what}");
    assert_eq!(s.nvlinks.len() as u32, p.nvlink_count, "{what}");
    for l in &s.nvlinks {
        assert_eq!(
            (
                l.active,
                l.replay_errors,
                l.crc_flit_errors,
                l.recovery_errors
            ),
            (Some(true), Some(0), Some(0), Some(0)),
            "{what}"
        );
    }
    assert_eq!(
        (
            s.violation_power_ns,
            s.violation_thermal_ns,
            s.violation_board_limit_ns
        ),
        (Some(0), Some(0), Some(0)),
        "{what}"
    );
    assert_eq!(s.processes.len(), 1, "{what}");
    assert_eq!(s.processes[0].name, "python3");
    let used = s.memory_used_bytes.unwrap() as f64;
    assert!(
        (0.70..0.90).contains(&(used / mem_total)),
        "{what}: memory {used} of {mem_total}"
    );
    if let Some(fan) = s.fan_speed_percent {
        assert!((30..=80).contains(&fan), "{what}: fan {fan}");
    }
    if p.has_gpm() {
        let pct = |v: Option<f32>| f64::from(v.unwrap_or(-1.0));
        assert!(pct(s.gpm_graphics_active_percent) >= 94.0, "{what}: {s:?}");
        assert!(
            (75.0..=95.0).contains(&pct(s.gpm_sm_active_percent)),
            "{what}: {s:?}"
        );
        assert!(
            (30.0..=60.0).contains(&pct(s.gpm_tensor_active_percent)),
            "{what}: tensor {:?}",
            s.gpm_tensor_active_percent
        );
        assert!(pct(s.gpm_sm_occupancy_percent) < pct(s.gpm_sm_active_percent));
        assert!(s.gpm_pcie_rx_bytes_per_second.unwrap() > 0, "{what}");
        if p.nvlink_count > 0 {
            assert!(s.gpm_nvlink_rx_bytes_per_second.unwrap() > 10_000_000_000);
        }
    } else {
        assert_eq!(
            s.gpm_tensor_active_percent, None,
            "{what}: absent, not zero"
        );
        assert_eq!(s.gpm_sm_active_percent, None, "{what}");
    }
}

fn check_healthy_host(h: &HostSample, info: &HostInfo, what: &str) {
    let cpu = h.cpu_percent.unwrap();
    assert!((13.0..=31.0).contains(&cpu), "{what}: cpu {cpu}");
    let cores = f64::from(info.cpu_logical_cores);
    assert!(
        h.load_average_1m.unwrap() < 0.4 * cores,
        "{what}: load {:?}",
        h.load_average_1m
    );
    let used = h.memory_used_bytes as f64 / h.memory_total_bytes as f64;
    assert!((0.20..=0.40).contains(&used), "{what}: ram {used}");
    assert_eq!(
        h.memory_used_bytes + h.memory_available_bytes,
        h.memory_total_bytes,
        "{what}"
    );
    assert_eq!((h.swap_used_bytes, h.swap_total_bytes), (0, 0), "{what}");
    for d in &h.disks {
        assert!(
            d.available_bytes as f64 > 0.3 * d.total_bytes as f64,
            "{what}: {d:?}"
        );
    }
    for n in &h.nics {
        let bytes_per_s = n.speed_mbps.unwrap() as f64 * 1e6 / 8.0;
        assert!(
            (n.rx_bytes_per_second.max(n.tx_bytes_per_second) as f64) < 0.5 * bytes_per_s,
            "{what}: {n:?}"
        );
        assert_eq!(
            (n.rx_errors, n.rx_dropped, n.tx_errors),
            (Some(0), Some(0), Some(0)),
            "{what}"
        );
    }
}

#[test]
fn healthy_readings_stay_in_bounds() {
    for p in models() {
        for n in 0..12 {
            let name = format!("gpu-node-{n:02}");
            let (mut gpus, host) = simulated_node(config(&name, p.id, 1, None)).unwrap();
            let info = host.info(T0);
            let mut last_energy = [0u64; 8];
            for t in (0..3_600).step_by(9) {
                let what = format!("{} {name} t={t}s", p.id);
                for s in gpus.sample(at(t)) {
                    check_healthy_gpu(&s, p, &format!("{what} gpu {}", s.index));
                    let e = s.total_energy_millijoules.unwrap();
                    assert!(
                        e > last_energy[s.index as usize],
                        "{what}: energy must grow"
                    );
                    last_energy[s.index as usize] = e;
                }
                check_healthy_host(&host.sample(at(t)), &info, &what);
            }
            assert!(gpus.events(at(3_600)).is_empty());
        }
    }
}

#[test]
fn healthy_readings_vary() {
    let (gpus, _) = node("h100", None);
    let temps: BTreeSet<i32> = (0..600)
        .map(|t| gpus.sample(at(t))[0].temperature_gpu_celsius.unwrap())
        .collect();
    let powers: BTreeSet<u32> = (0..600)
        .map(|t| gpus.sample(at(t))[0].power_usage_milliwatts.unwrap() / 1000)
        .collect();
    let clocks: BTreeSet<u32> = (0..600)
        .map(|t| gpus.sample(at(t))[0].sm_clock_mhz.unwrap())
        .collect();
    assert!(
        temps.len() >= 3 && powers.len() >= 10 && clocks.len() >= 2,
        "{temps:?} {powers:?} {clocks:?}"
    );
}

#[test]
fn idle_workload() {
    let s = scenario("name = \"idle\"\n[fleet]\nworkload = \"idle\"\n");
    let (gpus, _) = node("a100", Some(s));
    for g in gpus.sample(at(100)) {
        assert_eq!(g.utilization_gpu_percent, Some(0));
        assert_eq!(g.clock_event_reasons, Some(ce::GPU_IDLE));
        assert_eq!(g.sm_clock_mhz, Some(210));
        assert!(g.processes.is_empty());
        assert!(g.power_usage_milliwatts.unwrap() < 80_000);
        assert!(g.temperature_gpu_celsius.unwrap() < 45);
        assert!(g.violation_low_utilization_ns.unwrap() > 0);
    }
}

/// What a fault check sees: the node now and ten seconds earlier.
struct Obs {
    gpu: GpuSample,
    prev: GpuSample,
    gpus: Vec<GpuSample>,
    inventory: GpuInventory,
    host: HostSample,
    host_prev: HostSample,
    info: HostInfo,
    /// Xids of the last ten minutes.
    xids: Vec<u32>,
    /// Codes of the host's kernel-log events of the last minute.
    kernel: Vec<String>,
    t: i64,
}

const TARGET: usize = 2;

fn observe(gpus: &mut SimulatedGpus, host: &mut SimulatedHost, t: i64) -> Obs {
    let now = gpus.sample(at(t));
    Obs {
        gpu: now[TARGET].clone(),
        prev: gpus.sample(at(t - 10))[TARGET].clone(),
        gpus: now,
        inventory: gpus.inventory(at(t)),
        host: host.sample(at(t)),
        host_prev: host.sample(at(t - 10)),
        info: host.info(at(t)),
        xids: gpus
            .events_between(at(t - 600), at(t))
            .iter()
            .filter_map(|e| e.xid)
            .collect(),
        kernel: host
            .events_between(at(t - 60), at(t))
            .into_iter()
            .map(|e| e.code)
            .collect(),
        t,
    }
}

fn rising(now: Option<u64>, prev: Option<u64>, by: u64) -> bool {
    now.unwrap_or(0) >= prev.unwrap_or(0) + by
}

fn reasons(o: &Obs) -> u64 {
    o.gpu.clock_event_reasons.unwrap_or(0)
}

fn sm_ratio(o: &Obs, p: &GpuModelProfile) -> f64 {
    f64::from(o.gpu.sm_clock_mhz.unwrap_or(0)) / f64::from(p.sm_clock_max_mhz)
}

type Check = fn(&Obs, &GpuModelProfile) -> bool;

/// One row per fault kind: the fault's TOML (on GPU 2 of gpu-node-01, from 60 s to 600 s),
/// the model, and the symptom that must show only while the fault is on.
fn fault_table() -> Vec<(&'static str, &'static str, &'static str, Check)> {
    vec![
        ("thermal_throttle", "h100", "", |o, p| {
            o.gpu.temperature_gpu_celsius.unwrap() >= p.temperature_slowdown_celsius
                && reasons(o) & ce::HW_THERMAL_SLOWDOWN != 0
                && reasons(o) & ce::SW_THERMAL_SLOWDOWN != 0
                && sm_ratio(o, p) < 0.65
                && rising(
                    o.gpu.violation_thermal_ns,
                    o.prev.violation_thermal_ns,
                    9_000_000_000,
                )
        }),
        ("power_cap", "h100", "limit_watts = 400", |o, p| {
            reasons(o) == ce::SW_POWER_CAP
                && o.gpu.power_limit_enforced_milliwatts == Some(400_000)
                && o.gpu.power_usage_milliwatts.unwrap() >= 390_000
                && sm_ratio(o, p) < 0.95
                && rising(
                    o.gpu.violation_power_ns,
                    o.prev.violation_power_ns,
                    9_000_000_000,
                )
        }),
        ("power_brake", "h100", "", |o, p| {
            reasons(o) == ce::HW_POWER_BRAKE_SLOWDOWN | ce::HW_SLOWDOWN && sm_ratio(o, p) < 0.35
        }),
        ("hw_slowdown", "h100", "", |o, p| {
            reasons(o) == ce::HW_SLOWDOWN && sm_ratio(o, p) < 0.6
        }),
        ("clocks_locked", "h100", "", |o, p| {
            reasons(o) == ce::APPLICATIONS_CLOCKS_SETTING
                && o.gpu.sm_clock_applications_mhz.unwrap() < p.sm_clock_max_mhz
                && o.gpu.sm_clock_mhz == o.gpu.sm_clock_applications_mhz
        }),
        ("pcie_downtrain", "h100", "gen = 3\nwidth = 8", |o, _| {
            (o.gpu.pcie_link_gen, o.gpu.pcie_link_width) == (Some(3), Some(8))
                && rising(o.gpu.pcie_replay_count, o.prev.pcie_replay_count, 1)
        }),
        ("pcie_replays", "h100", "", |o, p| {
            o.gpu.pcie_link_gen == Some(p.pcie_gen_max)
                && rising(o.gpu.pcie_replay_count, o.prev.pcie_replay_count, 50)
        }),
        ("ecc_uncorrectable", "h100", "", |o, _| {
            o.gpu.ecc_uncorrected_volatile == Some(1)
                && o.gpu.remapped_rows_pending == Some(true)
                && o.xids.contains(&48)
        }),
        ("row_remap_failure", "a100", "", |o, _| {
            o.gpu.remapped_rows_failure == Some(true) && o.xids.contains(&64)
        }),
        (
            "xid",
            "h100",
            "xid = 31\nrepeat = 3\ninterval = \"30s\"",
            |o, _| o.xids == [31, 31, 31],
        ),
        ("fallen_off_bus", "h100", "", |o, _| {
            o.gpu.status == GpuStatus::Lost
                && o.gpu.error == "GPU is lost"
                && o.inventory.gpus.len() == 7
                && !o.inventory.gpus.iter().any(|g| g.index == TARGET as u32)
                && o.xids == [79]
        }),
        ("nvlink_down", "h100", "link = 5", |o, _| {
            o.gpu.nvlinks[5].active == Some(false)
                && o.gpu.nvlinks[4].active == Some(true)
                && o.xids == [74]
        }),
        ("nvlink_errors", "a100", "link = 3", |o, _| {
            rising(
                o.gpu.nvlinks[3].crc_flit_errors,
                o.prev.nvlinks[3].crc_flit_errors,
                10,
            ) && o.gpu.nvlinks[2].crc_flit_errors == Some(0)
        }),
        ("driver_change", "h100", "", |o, _| {
            o.inventory.driver.driver_version == "550.90.07"
                && o.inventory.gpus[0].gsp_firmware_version == "550.90.07"
        }),
        ("persistence_off", "h100", "", |o, _| {
            o.inventory.gpus[TARGET].persistence_mode == Some(false)
                && o.inventory.gpus[0].persistence_mode == Some(true)
        }),
        ("fan_failure", "rtx-6000-ada", "", |o, p| {
            o.gpu.fan_speed_percent == Some(0)
                && o.gpu.temperature_gpu_celsius.unwrap() >= p.temperature_slowdown_celsius
                && reasons(o) & ce::HW_THERMAL_SLOWDOWN != 0
        }),
        ("memory_full", "l40s", "", |o, _| {
            o.gpu.memory_used_bytes.unwrap() as f64
                >= 0.995 * o.gpu.memory_total_bytes.unwrap() as f64
        }),
        ("gpu_hung", "h100", "", |o, _| {
            o.gpu.utilization_gpu_percent == Some(100) && o.gpu.processes.is_empty()
        }),
        ("tensor_cores_idle", "h100", "", |o, _| {
            o.gpu.utilization_gpu_percent.unwrap() >= 95
                && o.gpu.gpm_tensor_active_percent.unwrap() < 2.0
                && o.gpu.gpm_fp32_active_percent.unwrap() > 40.0
                && o.gpu.gpm_sm_active_percent.unwrap() > 75.0
                && !o.gpu.processes.is_empty()
        }),
        ("idle_with_process", "h100", "", |o, _| {
            o.gpu.utilization_gpu_percent == Some(0)
                && !o.gpu.processes.is_empty()
                && reasons(o) == ce::GPU_IDLE
        }),
        ("gpu_straggler", "h100", "", |o, p| {
            let peers_min = o
                .gpus
                .iter()
                .filter(|g| g.index as usize != TARGET)
                .filter_map(|g| g.power_usage_milliwatts)
                .min();
            reasons(o) == 0
                && f64::from(o.gpu.power_usage_milliwatts.unwrap())
                    < 0.9 * f64::from(peers_min.unwrap())
                && (0.90..0.96).contains(&sm_ratio(o, p))
                && o.gpu.utilization_gpu_percent.unwrap() >= 95
        }),
        ("host_cpu_saturated", "h100", "", |o, _| {
            o.host.cpu_percent.unwrap() >= 98.0
                && o.host.load_average_1m.unwrap() > f64::from(o.info.cpu_logical_cores)
                && o.gpus
                    .iter()
                    .all(|g| (19..=41).contains(&g.utilization_gpu_percent.unwrap()))
        }),
        ("host_ram_pressure", "h100", "", |o, _| {
            (o.host.memory_available_bytes as f64) < 0.03 * o.host.memory_total_bytes as f64
                && o.host.swap_total_bytes == 64 << 30
                && o.host.swap_used_bytes > o.host_prev.swap_used_bytes
        }),
        ("disk_full", "h100", "mount = \"/raid\"", |o, _| {
            let d = o
                .host
                .disks
                .iter()
                .find(|d| d.mount_point == "/raid")
                .unwrap();
            (d.available_bytes as f64) < 0.02 * d.total_bytes as f64
        }),
        ("nic_saturated", "h100", "", |o, _| {
            let n = o.host.nics.iter().find(|n| n.name == "ibp24s0").unwrap();
            n.rx_bytes_per_second as f64 >= 0.97 * 400e9 / 8.0
        }),
        ("nic_errors", "h100", "nic = \"ibp64s0\"", |o, _| {
            let now = o.host.nics.iter().find(|n| n.name == "ibp64s0").unwrap();
            let prev = o
                .host_prev
                .nics
                .iter()
                .find(|n| n.name == "ibp64s0")
                .unwrap();
            rising(now.rx_errors, prev.rx_errors, 10) && rising(now.rx_dropped, prev.rx_dropped, 1)
        }),
        ("ib_port_down", "h100", "hca = \"mlx5_3\"", |o, _| {
            let p = o
                .host
                .ib_ports
                .iter()
                .find(|p| p.device == "mlx5_3")
                .unwrap();
            p.state == "DOWN" && p.phys_state == "Disabled" && o.host.ib_ports.len() == 8
        }),
        ("ib_rate_degraded", "h100", "hca = \"mlx5_5\"", |o, _| {
            let p = o
                .host
                .ib_ports
                .iter()
                .find(|p| p.device == "mlx5_5")
                .unwrap();
            p.is_up() && p.rate_gbps == Some(200.0)
        }),
        ("ib_link_errors", "h100", "hca = \"mlx5_1\"", |o, _| {
            let now = o
                .host
                .ib_ports
                .iter()
                .find(|p| p.device == "mlx5_1")
                .unwrap();
            let prev = o
                .host_prev
                .ib_ports
                .iter()
                .find(|p| p.device == "mlx5_1")
                .unwrap();
            rising(now.symbol_errors, prev.symbol_errors, 1)
        }),
        ("ib_hca_missing", "h100", "hca = \"mlx5_7\"", |o, _| {
            o.host.ib_ports.len() == 7 && o.host.ib_ports.iter().all(|p| p.device != "mlx5_7")
        }),
        ("ib_hca_missing", "h100", "hca = \"all\"", |o, _| {
            let nics = o
                .info
                .pcie_devices
                .iter()
                .filter(|d| d.kind == gpufleet_model::PcieDeviceKind::Nic && d.vendor_id == 0x15b3)
                .count();
            o.host.ib_ports.is_empty() && o.info.ib_devices.is_empty() && nics >= 8
        }),
        ("cpu_governor_powersave", "h100", "", |o, _| {
            let c = o.host.cpu_config.as_ref().unwrap();
            c.main_governor() == Some(("powersave", 224))
        }),
        (
            "cpu_frequency_capped",
            "h100",
            "max_percent = 50",
            |o, _| {
                let c = o.host.cpu_config.as_ref().unwrap();
                c.scaling_max_khz == Some(1_900_000) && c.capped_cpus == 224
            },
        ),
        ("memory_edac_errors", "h100", "", |o, _| {
            let now = o.host.cpu_config.as_ref().unwrap();
            let prev = o.host_prev.cpu_config.as_ref().unwrap();
            rising(now.edac_corrected_errors, prev.edac_corrected_errors, 1)
        }),
        ("module_missing", "h100", "", |o, _| {
            let d = o.info.driver_stack.as_ref().unwrap();
            d.module("nvidia_peermem").is_none() && d.module("nvidia_uvm").is_some()
        }),
        ("driver_version_mismatch", "h100", "", |o, _| {
            let d = o.info.driver_stack.as_ref().unwrap();
            d.libcuda_version == "550.90.07"
                && d.kernel_version() == o.inventory.driver.driver_version
        }),
        ("mount_read_only", "h100", "", |o, _| {
            let m = &o.host.storage.as_ref().unwrap().mounts;
            m[2].mount_point == "/checkpoints"
                && m[2].read_only
                && m[2].was_writable
                && !m[1].read_only
                && !m[0].read_only
        }),
        (
            "mount_unresponsive",
            "h100",
            "mount = \"/checkpoints\"",
            |o, _| {
                let m = &o.host.storage.as_ref().unwrap().mounts;
                m[2].unresponsive && m[2].statfs_latency_ms.is_none() && !m[1].unresponsive
            },
        ),
        ("mount_missing", "h100", "", |o, _| {
            let m = &o.host.storage.as_ref().unwrap().mounts;
            !m[1].mounted && m[1].fstype.is_empty() && m[2].mounted
        }),
        ("mount_full", "h100", "", |o, _| {
            let m = &o.host.storage.as_ref().unwrap().mounts;
            m[2].available_fraction().unwrap() < 0.02 && m[1].available_fraction().unwrap() > 0.2
        }),
        (
            "nvme_unhealthy",
            "h100",
            "controller = \"nvme0\"\nstate = \"live\"\ntemperature_alarm = true",
            |o, _| {
                let n = &o.host.storage.as_ref().unwrap().nvme;
                n[0].temperature_alarm == Some(true)
                    && n[0].temperature_millicelsius > n[0].temperature_crit_millicelsius
                    && n[0].is_live()
                    && n[1].temperature_alarm == Some(false)
            },
        ),
        ("persistenced_down", "h100", "", |o, _| {
            !o.host.driver_daemons.unwrap().persistenced
                && o.inventory
                    .gpus
                    .iter()
                    .all(|g| g.persistence_mode == Some(false))
        }),
        ("fabricmanager_down", "h100", "", |o, _| {
            !o.host.driver_daemons.unwrap().fabricmanager
        }),
        ("fabricmanager_version_mismatch", "a100", "", |o, _| {
            let d = o.info.driver_stack.as_ref().unwrap();
            d.fabricmanager_version == "550.90.07"
                && d.nvswitch_count == 6
                && !o.host.driver_daemons.unwrap().fabricmanager
        }),
        ("nic_link_down", "h100", "", |o, _| {
            let e = &o.host.ethernet[0];
            let nic = o.host.nics.iter().find(|n| n.name == "eth0").unwrap();
            !e.is_up() && e.speed_mbps.is_none() && nic.rx_bytes_per_second == 0
        }),
        (
            "nic_speed_degraded",
            "l40s",
            "nic = \"ens1f1np1\"\nspeed_mbps = 100000\nhalf_duplex = true",
            |o, _| {
                let e = o
                    .host
                    .ethernet
                    .iter()
                    .find(|e| e.name == "ens1f1np1")
                    .unwrap();
                let other = o
                    .host
                    .ethernet
                    .iter()
                    .find(|e| e.name == "ens1f0np0")
                    .unwrap();
                e.is_up()
                    && e.speed_mbps == Some(100_000)
                    && e.duplex == "half"
                    && other.speed_mbps == Some(200_000)
            },
        ),
        ("nic_flapping", "h100", "per_minute = 6", |o, _| {
            rising(
                o.host.ethernet[0].carrier_changes,
                o.host_prev.ethernet[0].carrier_changes,
                1,
            )
        }),
        ("file_handles_exhausted", "h100", "percent = 99", |o, _| {
            let os = o.host.os.as_ref().unwrap();
            os.file_handles.unwrap() * 100 / os.file_handles_max.unwrap() >= 98
        }),
        ("processes_stuck", "h100", "count = 3", |o, _| {
            let os = o.host.os.as_ref().unwrap();
            os.uninterruptible == Some(3)
                && os.stuck.len() == 3
                && os.stuck[0].wchan == "nfs_wait_bit_killable"
                && os.stuck[0].blocked_seconds == (o.t - 60) as u64
        }),
        ("oom_kills", "h100", "per_minute = 60", |o, _| {
            let (now, prev) = (o.host.os.as_ref(), o.host_prev.os.as_ref());
            rising(now.unwrap().oom_kills, prev.unwrap().oom_kills, 1)
        }),
        ("swap_thrashing", "h100", "", |o, _| {
            let (now, prev) = (
                o.host.os.as_ref().unwrap(),
                o.host_prev.os.as_ref().unwrap(),
            );
            rising(now.pages_swapped_in, prev.pages_swapped_in, 1000)
                && o.host.swap_used_bytes == o.host_prev.swap_used_bytes
        }),
        ("nvswitch_sxid", "h100", "nvswitch = 2", |o, _| {
            o.kernel.iter().any(|c| c == "kernel.sxid.12028")
        }),
        (
            "kernel_pcie_errors",
            "h100",
            "severity = \"Uncorrected (Fatal)\"",
            |o, _| o.kernel.iter().any(|c| c == "kernel.pcie_aer"),
        ),
        (
            "kernel_storage_errors",
            "h100",
            "timeouts = true",
            |o, _| o.kernel.len() >= 5 && o.kernel.iter().all(|c| c == "kernel.storage"),
        ),
        ("nic_tx_timeout", "h100", "", |o, _| {
            o.kernel.iter().any(|c| c == "kernel.nic_tx_timeout")
        }),
        ("pcie_acs_enabled", "h100", "gpu_index = 2", |o, _| {
            let gpu = gpufleet_model::pcie::normalize_bdf(&o.inventory.gpus[2].pci_bus_id);
            let d = &o.info.pcie_devices;
            let port = d
                .iter()
                .find(|x| x.bdf == gpu)
                .and_then(|x| x.upstream.last())
                .unwrap();
            let acs = |b: &str| d.iter().find(|x| x.bdf == b).unwrap().acs;
            let redirected = d
                .iter()
                .filter(|x| matches!(x.acs, gpufleet_model::Acs::Control(c) if c & 0x000c != 0))
                .filter(|x| x.upstream.len() == 2)
                .count();
            acs(port) == gpufleet_model::Acs::Control(0x001d) && redirected == 1
        }),
        ("pcie_aer_fatal", "h100", "nic = \"mlx5_3\"", |o, _| {
            let bdf = &o
                .info
                .pcie_devices
                .iter()
                .find(|x| x.name == "mlx5_3")
                .unwrap()
                .bdf;
            let at = |s: &gpufleet_model::HostSample| {
                s.pcie_devices
                    .iter()
                    .find(|x| x.bdf == *bdf)
                    .unwrap()
                    .aer_fatal
            };
            rising(at(&o.host), at(&o.host_prev), 1)
        }),
        ("pcie_aer_nonfatal", "h100", "gpu_index = 5", |o, _| {
            let bdf = gpufleet_model::pcie::normalize_bdf(&o.inventory.gpus[5].pci_bus_id);
            let at = |s: &gpufleet_model::HostSample| {
                s.pcie_devices
                    .iter()
                    .find(|x| x.bdf == bdf)
                    .unwrap()
                    .aer_nonfatal
            };
            rising(at(&o.host), at(&o.host_prev), 1)
        }),
        ("pcie_aer_correctable", "h100", "", |o, _| {
            let bdf = gpufleet_model::pcie::normalize_bdf(&o.inventory.gpus[0].pci_bus_id);
            let at = |s: &gpufleet_model::HostSample| {
                s.pcie_devices
                    .iter()
                    .find(|x| x.bdf == bdf)
                    .unwrap()
                    .aer_correctable
            };
            rising(at(&o.host), at(&o.host_prev), 10)
                && o.host
                    .pcie_devices
                    .iter()
                    .filter(|x| x.aer_correctable > Some(0))
                    .count()
                    == 1
        }),
        ("pcie_link_downtrained", "h100", "", |o, _| {
            let inv = &o.info.pcie_devices;
            let narrow: Vec<&str> = o
                .host
                .pcie_devices
                .iter()
                .filter(|x| {
                    let i = inv.iter().find(|i| i.bdf == x.bdf).unwrap();
                    x.link_width < i.max_link_width || x.link_speed_mts < i.max_link_speed_mts
                })
                .map(|x| inv.iter().find(|i| i.bdf == x.bdf).unwrap().name.as_str())
                .collect();
            narrow == ["mlx5_0"]
        }),
        (
            "kernel_change",
            "h100",
            "kernel_version = \"6.8.0-40-generic\"",
            |o, _| {
                o.info.kernel_version == "6.8.0-40-generic"
                    && o.info.uptime_seconds <= (o.t - 60) as u64
            },
        ),
    ]
}

fn fault_scenario(kind: &str, model: &str, params: &str) -> Arc<Scenario> {
    let scope = fault_kind(kind).unwrap().scope;
    let gpu = if scope == Scope::Gpu {
        format!("gpu = {TARGET}\n")
    } else {
        String::new()
    };
    scenario(&format!(
        "name = \"{kind}\"\n[fleet]\nnodes = 2\nmodel = \"{model}\"\n[[fault]]\nkind = \"{kind}\"\nnode = \"gpu-node-01\"\n{gpu}start = \"60s\"\nend = \"600s\"\n{params}\n"
    ))
}

#[test]
fn every_fault_kind_shows_only_while_on() {
    let table = fault_table();
    let covered: BTreeSet<&str> = table.iter().map(|r| r.0).collect();
    let all: BTreeSet<&str> = fault_kinds().iter().map(|k| k.name).collect();
    assert_eq!(covered, all, "every fault kind needs a row");

    for (kind, model, params, check) in table {
        let s = fault_scenario(kind, model, params);
        let (mut gpus, mut host) = node(model, Some(s));
        let (healthy, _) = node(model, None);
        let p = model_by_name(model).unwrap();
        for (t, on) in [
            (30, false),
            (59, false),
            (120, true),
            (300, true),
            (599, true),
            (900, false),
            (1_500, false),
        ] {
            let o = observe(&mut gpus, &mut host, t);
            assert_eq!(
                check(&o, p),
                on,
                "{kind} at {t}s: expected the symptom {}",
                if on { "present" } else { "absent" }
            );
            // GPU-scoped faults leave the other GPUs alone.
            if fault_kind(kind).unwrap().scope == Scope::Gpu {
                assert_eq!(
                    o.gpus[0],
                    healthy.sample(at(t))[0],
                    "{kind} at {t}s touched GPU 0"
                );
            }
        }
    }
}

#[test]
fn driver_change_can_change_one_gpus_vbios() {
    let s = scenario(
        "name = \"v\"\n[[fault]]\nkind = \"driver_change\"\ngpu = 4\nvbios_version = \"96.00.A5.00.01\"\nstart = \"1m\"\n",
    );
    let (gpus, _) = node("h100", Some(s));
    let before = gpus.inventory(at(59));
    let after = gpus.inventory(at(60));
    assert!(
        before
            .gpus
            .iter()
            .all(|g| g.vbios_version == "96.00.89.00.01")
    );
    assert_eq!(after.gpus[4].vbios_version, "96.00.A5.00.01");
    assert_eq!(after.gpus[3].vbios_version, "96.00.89.00.01");
    assert_eq!(after.driver, before.driver);
}

#[test]
fn faults_without_node_reach_every_node_and_without_gpu_every_gpu() {
    let s = scenario(
        "name = \"all\"\n[fleet]\nnodes = 3\n[[fault]]\nkind = \"hw_slowdown\"\nstart = \"10s\"\n",
    );
    for cfg in s.sim_configs(T0) {
        let (gpus, _) = simulated_node(cfg).unwrap();
        assert!(
            gpus.sample(at(20))
                .iter()
                .all(|g| g.clock_event_reasons == Some(ce::HW_SLOWDOWN))
        );
    }
}

#[test]
fn counters_grow_monotonically_through_faults() {
    let s = scenario(
        "name = \"c\"\n\
         [[fault]]\nkind = \"thermal_throttle\"\ngpu = 0\nstart = \"30s\"\nend = \"5m\"\n\
         [[fault]]\nkind = \"power_cap\"\ngpu = 1\nstart = \"10s\"\n\
         [[fault]]\nkind = \"idle_with_process\"\ngpu = 2\nstart = \"1m\"\nend = \"2m\"\n\
         [[fault]]\nkind = \"fallen_off_bus\"\ngpu = 3\nstart = \"1m\"\nend = \"2m\"\n\
         [[fault]]\nkind = \"pcie_replays\"\ngpu = 4\nstart = \"1m\"\nend = \"2m\"\n",
    );
    let (gpus, _) = node("h100", Some(s));
    let mut last: Vec<[u64; 5]> = vec![[0; 5]; 8];
    for t in (0..900).step_by(7) {
        for g in gpus.sample(at(t)) {
            if g.status != GpuStatus::Ok {
                continue;
            }
            let now = [
                g.total_energy_millijoules.unwrap(),
                g.violation_power_ns.unwrap(),
                g.violation_thermal_ns.unwrap(),
                g.violation_low_utilization_ns.unwrap(),
                g.pcie_replay_count.unwrap(),
            ];
            let prev = last[g.index as usize];
            assert!(
                now.iter().zip(prev).all(|(n, p)| *n >= p),
                "gpu {} at {t}s: {now:?} < {prev:?}",
                g.index
            );
            assert!(
                now[0] > prev[0],
                "energy must grow: gpu {} at {t}s",
                g.index
            );
            last[g.index as usize] = now;
        }
    }
    // The thermal fault was on for 4.5 min, throttling from ~20 s after its start.
    let thermal_s = last[0][2] / 1_000_000_000;
    assert!((230..=260).contains(&thermal_s), "{thermal_s}");
    assert!(last[1][1] / 1_000_000_000 >= 880, "{:?}", last[1]);
    assert_eq!(last[2][3] / 1_000_000_000, 60);
    assert_eq!(last[4][4], 600);
}

#[test]
fn events_are_delivered_once_in_order() {
    let s = scenario(
        "name = \"e\"\n\
         [[fault]]\nkind = \"xid\"\ngpu = 1\nxid = 13\nrepeat = 5\ninterval = \"10s\"\nstart = \"0s\"\nend = \"35s\"\n\
         [[fault]]\nkind = \"fallen_off_bus\"\ngpu = 6\nstart = \"12s\"\n\
         [[fault]]\nkind = \"xid\"\ngpu = 6\nxid = 31\nstart = \"20s\"\n",
    );
    let (mut gpus, _) = node("h100", Some(s));
    let mut seen = Vec::new();
    for t in [0, 5, 12, 12, 25, 60, 61] {
        for e in gpus.events(at(t)) {
            assert_eq!((e.kind, e.source.as_str()), (EventKind::Xid, "simulated"));
            assert_eq!(e.code, format!("xid.{}", e.xid.unwrap()));
            assert!(!e.gpu_uuid.is_empty() && e.details.contains_key("pci_bus_id"));
            seen.push((
                (e.timestamp.0 - T0.0) / 1000,
                e.gpu_index.unwrap(),
                e.xid.unwrap(),
            ));
        }
    }
    // Xid 13 at 0/10/20/30 s (the fifth would be at 40 s, after the end); the lost GPU's
    // Xid 79 once, and nothing from it afterwards.
    assert_eq!(
        seen,
        [
            (0, 1, 13),
            (10, 1, 13),
            (12, 6, 79),
            (20, 1, 13),
            (30, 1, 13)
        ]
    );
    let lost = gpus.events_between(at(11), at(13));
    assert_eq!(lost[0].severity, gpufleet_model::Severity::Critical);
    assert!(
        lost[0].message.contains("fallen off the bus"),
        "{}",
        lost[0].message
    );
}

#[test]
fn before_the_origin_and_far_later() {
    let s =
        scenario("name = \"x\"\n[[fault]]\nkind = \"thermal_throttle\"\ngpu = 0\nstart = \"0s\"\n");
    let (mut gpus, host) = node("t4", Some(s));
    let early = gpus.sample(T0.plus_ms(-5_000));
    assert_eq!(early[0].clock_event_reasons, Some(0));
    assert!(gpus.events(T0.plus_ms(-5_000)).is_empty());
    let late = gpus.sample(at(30 * 86_400));
    assert!(late[0].clock_event_reasons.unwrap() & ce::HW_THERMAL_SLOWDOWN != 0);
    assert!(host.sample(at(30 * 86_400)).uptime_seconds > 30 * 86_400);
}

#[test]
fn node_construction_errors_are_clear() {
    let named = scenario(
        "name = \"n\"\n[fleet]\nnodes = 2\n[[fault]]\nkind = \"gpu_hung\"\nnode = \"gpu-node-02\"\ngpu = 7\n",
    );
    let cases: Vec<(SimConfig, &str)> = vec![
        (
            config("gpu-node-01", "h200", 0, None),
            "unknown GPU model `h200`; known models: h100-sxm-80gb",
        ),
        (
            SimConfig {
                gpu_count: 17,
                ..config("gpu-node-01", "h100", 0, None)
            },
            "at most 16",
        ),
        (
            config("laptop", "h100", 0, Some(named.clone())),
            "this node (`laptop`) is not one of them",
        ),
        (
            SimConfig {
                gpu_count: 4,
                ..config("gpu-node-02", "h100", 0, Some(named))
            },
            "gpu = 7, but the node has 4 GPUs",
        ),
        (
            config(
                "gpu-node-01",
                "l40s",
                0,
                Some(scenario(
                    "name = \"x\"\n[[fault]]\nkind = \"nvlink_down\"\n",
                )),
            ),
            "l40s has no NVLink",
        ),
    ];
    for (cfg, want) in cases {
        let err = simulated_node(cfg).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in {err}");
    }
}

fn headings(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_name_every_fault_kind_and_model() {
    let path = repo_root().join("docs/scenarios.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let documented = headings(&doc);
    let kinds: BTreeSet<String> = fault_kinds().iter().map(|k| k.name.to_string()).collect();
    assert_eq!(
        documented, kinds,
        "docs/scenarios.md needs one `### `kind`` heading per fault kind, and no others"
    );
    for k in fault_kinds() {
        for p in k.params() {
            let section = doc
                .split(&format!("### `{}`", k.name))
                .nth(1)
                .unwrap()
                .split("\n### ")
                .next()
                .unwrap();
            assert!(
                section.contains(&format!("`{p}`")),
                "docs for {} do not mention parameter {p}",
                k.name
            );
        }
    }
    for m in models() {
        assert!(
            doc.contains(&format!("`{}`", m.id)),
            "docs/scenarios.md does not list model {}",
            m.id
        );
    }
}

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scenario_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_scenario_file_parses() {
    let mut files = Vec::new();
    scenario_files(&repo_root().join("scenarios"), &mut files);
    assert!(files.len() > fault_kinds().len(), "{files:?}");
    for f in &files {
        let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s.healthy || !s.expect.is_empty(),
            "{}: say what a diagnosis should find ([[expect]] or healthy = true)",
            f.display()
        );
        let arc = Arc::new(s);
        // Every node of small scenarios builds.
        if arc.fleet.nodes <= 16 {
            for cfg in arc.sim_configs(T0) {
                simulated_node(cfg).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            }
        }
    }
    for k in fault_kinds() {
        let path = repo_root().join(format!("scenarios/faults/{}.toml", k.name));
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s.faults.iter().any(|f| f.name() == k.name),
            "{} injects no {}",
            path.display(),
            k.name
        );
        assert!(
            s.expect.iter().any(|e| e.cause == k.cause),
            "{} should expect cause {}",
            path.display(),
            k.cause
        );
    }
}

/// Prints what sampling one 8-GPU node and its host costs (no assertion: timings vary).
/// The whole 1,000 × 8 fleet over a virtual hour, every second (run with `--release --ignored`).
#[test]
#[ignore = "slow: 1,000 nodes × 3,600 samples"]
fn healthy_large_fleet_stays_healthy() {
    let s = Arc::new(Scenario::load(&repo_root().join("scenarios/healthy-large.toml")).unwrap());
    let p = model_by_name(&s.fleet.model).unwrap();
    let began = std::time::Instant::now();
    for cfg in s.sim_configs(T0) {
        let name = cfg.node_name.clone();
        let (gpus, host) = simulated_node(cfg).unwrap();
        let info = host.info(T0);
        for t in 0..3_600 {
            for g in gpus.sample(at(t)) {
                check_healthy_gpu(&g, p, &format!("{name} t={t}s gpu {}", g.index));
            }
            check_healthy_host(&host.sample(at(t)), &info, &name);
        }
    }
    println!("1,000 nodes × 3,600 samples in {:?}", began.elapsed());
}
