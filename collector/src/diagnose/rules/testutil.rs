//! Builders for rule tests: a healthy H100 node whose samples a case then bends.

use gpufleet_model::{GpuInfo, GpuSample, HostSample, Inventory, NodeIdentity, Sample, UnixMs};

use crate::fleet::NodeState;

pub fn gpu_info(index: u32) -> GpuInfo {
    GpuInfo {
        index,
        uuid: format!("GPU-{index}"),
        name: "NVIDIA H100 80GB HBM3".into(),
        vbios_version: "96.00.89.00.01".into(),
        pcie_link_gen_max: Some(5),
        pcie_link_width_max: Some(16),
        sm_clock_max_mhz: Some(1980),
        memory_clock_max_mhz: Some(2619),
        temperature_slowdown_celsius: Some(87),
        temperature_shutdown_celsius: Some(92),
        temperature_max_operating_celsius: Some(83),
        power_limit_default_milliwatts: Some(700_000),
        ..Default::default()
    }
}

pub fn healthy_gpu(index: u32) -> GpuSample {
    GpuSample {
        index,
        uuid: format!("GPU-{index}"),
        temperature_gpu_celsius: Some(65),
        power_usage_milliwatts: Some(550_000),
        power_limit_enforced_milliwatts: Some(700_000),
        utilization_gpu_percent: Some(98),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        clock_event_reasons: Some(0),
        pcie_link_gen: Some(5),
        pcie_link_width: Some(16),
        ..Default::default()
    }
}

pub fn healthy_host() -> HostSample {
    HostSample {
        cpu_percent: Some(25.0),
        memory_total_bytes: 2 << 40,
        memory_available_bytes: 1 << 40,
        memory_used_bytes: 1 << 40,
        ..Default::default()
    }
}

/// A connected node with `gpus` GPUs and `samples` healthy samples 1 s apart, ending at t=100 s;
/// `bend` edits each sample (given its index).
pub fn node(gpus: u32, samples: usize, bend: impl Fn(usize, &mut Sample)) -> NodeState {
    let mut n = NodeState {
        identity: NodeIdentity {
            hostname: "gpu-node-01".into(),
            ..Default::default()
        },
        inventory: Inventory {
            gpus: (0..gpus).map(gpu_info).collect(),
            ..Default::default()
        },
        connected: true,
        last_seen: UnixMs(100_000),
        ..Default::default()
    };
    n.inventory.driver.driver_version = "550.54.15".into();
    n.inventory.host.kernel_version = "5.15.0-105-generic".into();
    for i in 0..samples {
        let mut s = Sample {
            timestamp: UnixMs(100_000 - (samples - 1 - i) as i64 * 1000),
            gpus: (0..gpus).map(healthy_gpu).collect(),
            host: healthy_host(),
        };
        bend(i, &mut s);
        n.history.push_back(s);
    }
    n
}

pub const NOW: UnixMs = UnixMs(100_500);

/// One node per way a cause can fire (each cause of every catalog has at least one), plus a
/// healthy node; all 8-GPU nodes, so that together they are a fleet with peers. Used by the
/// catalog tests in `rules/mod.rs`.
pub fn triggers() -> Vec<(&'static str, NodeState)> {
    use gpufleet_model::clock_events as ce;
    use gpufleet_model::{
        DiskSample, Event, EventKind, GpuProcess, GpuStatus, NicSample, NvLinkSample, Severity,
    };

    type Bend = fn(usize, &mut Sample);
    let sampled: &[(&'static str, Bend)] = &[
        ("healthy", |_, _| {}),
        ("gpu lost", |_, s| {
            s.gpus[1] = GpuSample::failed(1, "GPU-1", GpuStatus::Lost, "GPU is lost")
        }),
        ("gpu unreadable", |_, s| {
            s.gpus[2] = GpuSample::failed(2, "GPU-2", GpuStatus::Unreadable, "Unknown Error")
        }),
        ("gpu missing", |_, s| {
            s.gpus.pop();
        }),
        ("thermal", |_, s| {
            s.gpus[0].clock_event_reasons = Some(ce::HW_THERMAL_SLOWDOWN | ce::HW_SLOWDOWN);
            s.gpus[1].clock_event_reasons = Some(ce::SW_THERMAL_SLOWDOWN);
            for g in &mut s.gpus[..2] {
                g.temperature_gpu_celsius = Some(88);
                g.sm_clock_mhz = Some(1200);
            }
        }),
        ("power", |_, s| {
            s.gpus[0].clock_event_reasons = Some(ce::HW_POWER_BRAKE_SLOWDOWN | ce::HW_SLOWDOWN);
            s.gpus[0].sm_clock_mhz = Some(500);
            s.gpus[1].clock_event_reasons = Some(ce::SW_POWER_CAP);
            s.gpus[1].sm_clock_mhz = Some(1400);
        }),
        ("clocks", |_, s| {
            s.gpus[0].clock_event_reasons = Some(ce::HW_SLOWDOWN);
            s.gpus[0].sm_clock_mhz = Some(990);
            s.gpus[1].clock_event_reasons = Some(ce::APPLICATIONS_CLOCKS_SETTING);
            s.gpus[1].sm_clock_applications_mhz = Some(1380);
            s.gpus[1].sm_clock_mhz = Some(1380);
            s.gpus[2].memory_clock_mhz = Some(1593);
        }),
        ("straggler", |_, s| {
            s.gpus[3].sm_clock_mhz = Some(1800);
            s.gpus[3].power_usage_milliwatts = Some(420_000);
        }),
        ("pcie", |i, s| {
            s.gpus[0].pcie_link_gen = Some(3);
            s.gpus[0].pcie_link_width = Some(8);
            s.gpus[1].pcie_replay_count = Some(i as u64 * 2);
        }),
        ("ecc", |_, s| {
            s.gpus[0].ecc_uncorrected_volatile = Some(1);
            s.gpus[1].retired_pages_single_bit = Some(2);
            s.gpus[1].retired_pages_double_bit = Some(1);
            s.gpus[1].retired_pages_pending = Some(true);
        }),
        ("row remap", |_, s| {
            s.gpus[0].remapped_rows_pending = Some(true);
            s.gpus[1].remapped_rows_failure = Some(true);
        }),
        ("nvlink", |i, s| {
            for g in &mut s.gpus {
                g.nvlinks = (0..4)
                    .map(|link| NvLinkSample {
                        link,
                        active: Some(!(g.index == 0 && link == 2)),
                        replay_errors: Some(if g.index == 1 { i as u64 } else { 0 }),
                        recovery_errors: Some(0),
                        crc_flit_errors: Some(0),
                        crc_data_errors: Some(0),
                    })
                    .collect();
            }
        }),
        ("fan", |_, s| {
            s.gpus[0].fan_speed_percent = Some(0);
            s.gpus[0].temperature_gpu_celsius = Some(90);
        }),
        ("memory", |_, s| {
            s.gpus[0].memory_total_bytes = Some(80 << 30);
            s.gpus[0].memory_used_bytes = Some((80 << 30) - (100 << 20));
        }),
        ("hung and idle", |_, s| {
            for g in &mut s.gpus {
                g.memory_total_bytes = Some(80 << 30);
                g.memory_used_bytes = Some(60 << 30);
                g.processes = vec![GpuProcess {
                    pid: 1000 + g.index,
                    name: "python3".into(),
                    used_memory_bytes: Some(60 << 30),
                }];
            }
            let hung = &mut s.gpus[0];
            hung.utilization_gpu_percent = Some(100);
            hung.memory_used_bytes = Some(4 << 20);
            hung.processes.clear();
            s.gpus[1].utilization_gpu_percent = Some(0);
        }),
        ("host", |i, s| {
            s.host.cpu_percent = Some(99.0);
            for g in &mut s.gpus {
                g.utilization_gpu_percent = Some(30);
            }
            s.host.memory_available_bytes = s.host.memory_total_bytes / 100;
            s.host.swap_total_bytes = 64 << 30;
            s.host.swap_used_bytes = (1 << 30) + i as u64 * (50 << 20);
            s.host.disks = vec![DiskSample {
                mount_point: "/".into(),
                total_bytes: 100,
                available_bytes: 1,
            }];
            s.host.nics = vec![
                NicSample {
                    name: "eth0".into(),
                    tx_bytes_per_second: 12_000_000_000,
                    speed_mbps: Some(100_000),
                    ..Default::default()
                },
                NicSample {
                    name: "ibp24s0".into(),
                    rx_errors: Some(i as u64 * 10),
                    speed_mbps: Some(400_000),
                    ..Default::default()
                },
            ];
        }),
    ];
    let mut out: Vec<(&'static str, NodeState)> = sampled
        .iter()
        .map(|(name, bend)| {
            let mut n = node(8, 40, bend);
            n.identity.hostname = format!("trigger-{}", name.replace(' ', "-"));
            (*name, n)
        })
        .collect();
    let named = |out: &mut Vec<(&'static str, NodeState)>, name: &'static str| {
        let mut n = node(8, 40, |_, _| {});
        n.identity.hostname = format!("trigger-{}", name.replace(' ', "-"));
        out.push((name, n));
        out.len() - 1
    };

    let i = named(&mut out, "offline");
    out[i].1.connected = false;

    let i = named(&mut out, "inventory");
    let n = &mut out[i].1;
    n.inventory.gpus[0].persistence_mode = Some(false);
    n.inventory.gpus[0].fan_count = Some(1);
    n.inventory.gpus[1].vbios_version = "96.00.61.00.01".into();
    n.inventory.driver.driver_version = "535.161.08".into();
    n.inventory.host.kernel_version = "6.8.0-31-generic".into();
    for g in &mut n.inventory.gpus {
        g.nvlink_count = 4;
    }
    // The fan and NVLink triggers need boards with a fan and counted links.
    for (name, n) in &mut out {
        match *name {
            "fan" => n.inventory.gpus[0].fan_count = Some(1),
            "nvlink" => n.inventory.gpus.iter_mut().for_each(|g| g.nvlink_count = 4),
            _ => {}
        }
    }

    let i = named(&mut out, "xid");
    for (gpu, code) in [13, 48, 79, 74, 119, 46, 151, 54, 78, 45, 9999]
        .into_iter()
        .enumerate()
    {
        let mut e = Event::new(
            UnixMs(95_000),
            EventKind::Xid,
            Severity::Critical,
            format!("xid.{code}"),
            format!("Xid {code}"),
        )
        .on_gpu(gpu as u32 % 8, &format!("GPU-{}", gpu % 8));
        e.xid = Some(code);
        out[i].1.events.push_back(e);
    }

    let i = named(&mut out, "node drift");
    for (gpu, field) in [
        (None, "driver_version"),
        (None, "kernel_version"),
        (None, "os_name"),
        (Some(0), "vbios_version"),
        (Some(1), "ecc_enabled"),
        (Some(2), "intra_node.vbios_version"),
        (Some(3), "name"),
    ] {
        let mut e = Event::new(
            UnixMs(95_000),
            EventKind::Drift,
            Severity::Warning,
            format!("drift.{field}"),
            format!("{field} changed"),
        )
        .detail("field", field.rsplit('.').next().unwrap_or(field))
        .detail("baseline", "a")
        .detail("current", "b");
        if let Some(g) = gpu {
            e = e.on_gpu(g, &format!("GPU-{g}"));
        }
        out[i].1.events.push_back(e);
    }
    out
}
