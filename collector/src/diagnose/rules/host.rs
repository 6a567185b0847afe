//! `host.cpu_starved`, `host.memory.pressure`, `host.disk_full`, `host.nic_saturated`: the SCORN
//! side of a GPU server (Storage, CPUs, OS, RAM, NICs) holding the GPUs back.

use gpufleet_model::{Evidence, Finding, Sample, Severity, UnixMs};

use crate::diagnose::{FleetContext, MIN_SAMPLES, Rule, finding, held};
use crate::fleet::NodeState;

pub struct HostSaturation;

const CPU_BUSY: f32 = 95.0;
/// GPUs below this mean utilization while the CPU is pegged are starving.
const GPU_STARVED: f64 = 60.0;
const RAM_AVAILABLE: f64 = 0.05;
const DISK_FREE: f64 = 0.05;
const NIC_FULL: f64 = 0.90;

fn mean_gpu_util(s: &Sample) -> Option<f64> {
    let u: Vec<f64> = s
        .gpus
        .iter()
        .filter_map(|g| g.utilization_gpu_percent.map(f64::from))
        .collect();
    (!u.is_empty()).then(|| u.iter().sum::<f64>() / u.len() as f64)
}

fn ram_avail(s: &Sample) -> Option<f64> {
    (s.host.memory_total_bytes > 0)
        .then(|| s.host.memory_available_bytes as f64 / s.host.memory_total_bytes as f64)
}

impl Rule for HostSaturation {
    fn id(&self) -> &'static str {
        "host"
    }

    fn title(&self) -> &'static str {
        "Host saturation"
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let h = node.history.iter();
        let mut out = Vec::new();
        let mut emit = |id: &str,
                        title: &str,
                        sev: Severity,
                        run: (UnixMs, u64, usize),
                        ev: Vec<Evidence>,
                        summary: String,
                        action: &str,
                        ratio: Option<f64>| {
            if run.2 < MIN_SAMPLES {
                return;
            }
            let mut f = finding(self, node, sev, run.0);
            f.rule_id = id.into();
            f.title = title.into();
            f.evidence = ev;
            if let Some(first) = f.evidence.first_mut() {
                first.duration_ms = run.1;
            }
            f.summary = summary;
            f.action = action.into();
            f.performance_ratio = ratio;
            out.push(f);
        };

        let starved = |s: &Sample| {
            s.host.cpu_percent.is_some_and(|c| c >= CPU_BUSY)
                && mean_gpu_util(s).is_some_and(|u| u < GPU_STARVED)
        };
        if let Some(run) = held(h.clone(), starved) {
            let cpu = latest.host.cpu_percent.unwrap_or(0.0);
            let util = mean_gpu_util(latest).unwrap_or(0.0);
            let mut ev = vec![Evidence::new(
                "host.cpu_percent",
                format!("{cpu:.0}%"),
                format!("{CPU_BUSY:.0}%"),
            )];
            if let Some(l) = latest.host.load_average_1m {
                ev.push(Evidence::new(
                    "host.load_average_1m",
                    format!("{l:.1}"),
                    format!("{} cores", node.inventory.host.cpu_logical_cores),
                ));
            }
            ev.push(Evidence::new(
                "utilization_gpu_percent (mean)",
                format!("{util:.0}%"),
                format!("< {GPU_STARVED:.0}%"),
            ));
            emit(
                "host.cpu_starved",
                "CPU saturated while GPUs starve",
                Severity::Warning,
                run,
                ev,
                format!(
                    "host CPU at {cpu:.0}% while its GPUs average {util:.0}% utilization: the GPUs wait for the CPU"
                ),
                "Find what uses the CPU (top, pidstat): data loading workers, a runaway process or a \
                 mis-set CPU affinity/cgroup limit; raise dataloader workers or move preprocessing off the node.",
                Some(util / 100.0),
            );
        }

        if let Some(run) = held(h.clone(), |s| {
            ram_avail(s).is_some_and(|a| a < RAM_AVAILABLE)
        }) {
            let a = ram_avail(latest).unwrap_or(0.0);
            let mut ev = vec![Evidence::new(
                "host.memory_available",
                format!("{:.1}%", a * 100.0),
                format!("{:.0}%", RAM_AVAILABLE * 100.0),
            )];
            if latest.host.swap_used_bytes > 0 {
                ev.push(Evidence::new(
                    "host.swap_used_bytes",
                    format!(
                        "{:.1} GiB",
                        latest.host.swap_used_bytes as f64 / (1u64 << 30) as f64
                    ),
                    "",
                ));
            }
            emit(
                "host.memory.pressure",
                "Host RAM pressure",
                Severity::Warning,
                run,
                ev,
                format!(
                    "only {:.1}% of host RAM is available{}",
                    a * 100.0,
                    if latest.host.swap_used_bytes > 0 {
                        " and the host is swapping"
                    } else {
                        ""
                    }
                ),
                "Find the process using the memory (pinned host buffers, dataloader caches, a leak); \
                 the OOM killer or swapping will stall the GPUs next.",
                None,
            );
        }

        for d in &latest.host.disks {
            let mount = d.mount_point.clone();
            let free = |s: &Sample| {
                s.host
                    .disks
                    .iter()
                    .find(|x| x.mount_point == mount)
                    .and_then(|x| {
                        (x.total_bytes > 0).then(|| x.available_bytes as f64 / x.total_bytes as f64)
                    })
            };
            if let Some(run) = held(h.clone(), |s| free(s).is_some_and(|f| f < DISK_FREE)) {
                let f = free(latest).unwrap_or(0.0);
                emit(
                    "host.disk_full",
                    "Filesystem nearly full",
                    Severity::Warning,
                    run,
                    vec![Evidence::new(
                        &format!("host.disk[{mount}].available"),
                        format!("{:.1}%", f * 100.0),
                        format!("{:.0}%", DISK_FREE * 100.0),
                    )],
                    format!("{mount} has {:.1}% free", f * 100.0),
                    "Free space (old checkpoints, logs, container images) before jobs fail to write checkpoints.",
                    None,
                );
            }
        }

        for n in &latest.host.nics {
            let name = n.name.clone();
            let speed = n.speed_mbps.or_else(|| {
                node.inventory
                    .host
                    .nics
                    .iter()
                    .find(|i| i.name == name)?
                    .speed_mbps
            });
            let Some(mbps) = speed.filter(|s| *s > 0) else {
                continue;
            };
            let cap = mbps as f64 * 1e6 / 8.0;
            let use_of = |s: &Sample| {
                s.host
                    .nics
                    .iter()
                    .find(|x| x.name == name)
                    .map(|x| x.rx_bytes_per_second.max(x.tx_bytes_per_second) as f64 / cap)
            };
            if let Some(run) = held(h.clone(), |s| use_of(s).is_some_and(|u| u >= NIC_FULL)) {
                let u = use_of(latest).unwrap_or(0.0);
                emit(
                    "host.nic_saturated",
                    "NIC saturated",
                    Severity::Warning,
                    run,
                    vec![Evidence::new(
                        &format!("host.nic[{name}].throughput"),
                        format!("{:.0}% of {:.0} Gb/s", u * 100.0, mbps as f64 / 1000.0),
                        format!("{:.0}%", NIC_FULL * 100.0),
                    )],
                    format!(
                        "{name} runs at {:.0}% of its {:.0} Gb/s link",
                        u * 100.0,
                        mbps as f64 / 1000.0
                    ),
                    "The network is the bottleneck: check that traffic uses the intended (RDMA) \
                     interfaces, that all NICs are up, and the job's communication pattern.",
                    None,
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};
    use gpufleet_model::{DiskSample, NicSample};

    #[test]
    fn cases() {
        type Bend = fn(&mut Sample);
        let cases: &[(&str, Bend, &[&str])] = &[
            ("healthy", |_| {}, &[]),
            (
                "cpu busy but gpus fed",
                |s| s.host.cpu_percent = Some(99.0),
                &[],
            ),
            (
                "cpu starving gpus",
                |s| {
                    s.host.cpu_percent = Some(99.0);
                    for g in &mut s.gpus {
                        g.utilization_gpu_percent = Some(30);
                    }
                },
                &["host.cpu_starved"],
            ),
            (
                "ram",
                |s| s.host.memory_available_bytes = s.host.memory_total_bytes / 100,
                &["host.memory.pressure"],
            ),
            (
                "disk",
                |s| {
                    s.host.disks = vec![DiskSample {
                        mount_point: "/".into(),
                        total_bytes: 100,
                        available_bytes: 1,
                    }]
                },
                &["host.disk_full"],
            ),
            (
                "nic",
                |s| {
                    s.host.nics = vec![NicSample {
                        name: "eth0".into(),
                        tx_bytes_per_second: 12_000_000_000,
                        speed_mbps: Some(100_000),
                        ..Default::default()
                    }]
                },
                &["host.nic_saturated"],
            ),
        ];
        for (name, bend, want) in cases {
            let n = node(2, 5, |_, s| bend(s));
            let got = HostSaturation.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
        }
    }
}
