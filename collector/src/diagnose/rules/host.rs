//! `host.cpu_starved`, `host.memory.pressure`, `host.disk_full`, `host.nic_saturated`: the SCORN
//! side of a GPU server (Storage, CPUs, OS, RAM, NICs) holding the GPUs back.

use gpufleet_model::{Evidence, Finding, Sample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_node};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct HostSaturation;

const CPU_STARVED: Cause = Cause {
    id: "host.cpu_starved",
    title: "CPU saturated while GPUs starve",
    severity: Severity::Warning,
    detects: "Host CPU at 95 % or more while the node's GPUs average under 60 % utilization, for \
              several samples.",
    action: "Find what uses the CPU (top, pidstat): data loading workers, a runaway process or a \
             mis-set CPU affinity/cgroup limit; raise dataloader workers or move preprocessing \
             off the node.",
};

const MEMORY_PRESSURE: Cause = Cause {
    id: "host.memory.pressure",
    title: "Host RAM pressure",
    severity: Severity::Warning,
    detects: "Less than 5 % of host RAM available for several samples.",
    action: "Find the process using the memory (pinned host buffers, dataloader caches, a leak); \
             the OOM killer or swapping will stall the GPUs next.",
};

const DISK_FULL: Cause = Cause {
    id: "host.disk_full",
    title: "Filesystem nearly full",
    severity: Severity::Warning,
    detects: "A filesystem with less than 5 % free space for several samples (one finding per \
              node, listing each such filesystem).",
    action: "Free space (old checkpoints, logs, container images) before jobs fail to write \
             checkpoints.",
};

const NIC_SATURATED: Cause = Cause {
    id: "host.nic_saturated",
    title: "NIC saturated",
    severity: Severity::Warning,
    detects: "A NIC moving 90 % or more of its link speed in one direction for several samples \
              (one finding per node, listing each such NIC).",
    action: "The network is the bottleneck: check that traffic uses the intended (RDMA) \
             interfaces, that all NICs are up, and the job's communication pattern.",
};

static INFO: RuleInfo = RuleInfo {
    id: "host",
    title: "Host saturation",
    catalog: &[CPU_STARVED, MEMORY_PRESSURE, DISK_FULL, NIC_SATURATED],
};

const CPU_BUSY: f32 = 95.0;
/// GPUs below this mean utilization while the CPU is pegged are starving.
const GPU_STARVED: f64 = 60.0;
const RAM_AVAILABLE: f64 = 0.05;
const DISK_FREE: f64 = 0.05;
const NIC_FULL: f64 = 0.90;

fn mean_gpu_util(s: &Sample) -> Option<f64> {
    let (sum, n) = s
        .gpus
        .iter()
        .filter_map(|g| g.utilization_gpu_percent)
        .fold((0u64, 0u64), |(sum, n), u| (sum + u64::from(u), n + 1));
    (n > 0).then(|| sum as f64 / n as f64)
}

fn ram_avail(s: &Sample) -> Option<f64> {
    (s.host.memory_total_bytes > 0)
        .then(|| s.host.memory_available_bytes as f64 / s.host.memory_total_bytes as f64)
}

impl Rule for HostSaturation {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut emit =
            |cause: &Cause, run: Held, ev: Vec<Evidence>, summary: String, ratio: Option<f64>| {
                let mut f = raise(self, cause, node, run.since);
                f.evidence = ev;
                if let Some(first) = f.evidence.first_mut().filter(|e| e.duration_ms == 0) {
                    first.duration_ms = run.held_ms;
                }
                f.summary = summary;
                f.performance_ratio = ratio;
                out.push(f);
            };

        let starved = |s: &Sample| {
            s.host.cpu_percent.is_some_and(|c| c >= CPU_BUSY)
                && mean_gpu_util(s).is_some_and(|u| u < GPU_STARVED)
        };
        if let Some(run) = sustained_node(node, 0, starved) {
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
                &CPU_STARVED,
                run,
                ev,
                format!(
                    "host CPU at {cpu:.0}% while its GPUs average {util:.0}% utilization: the GPUs wait for the CPU"
                ),
                Some(util / 100.0),
            );
        }

        if let Some(run) =
            sustained_node(node, 0, |s| ram_avail(s).is_some_and(|a| a < RAM_AVAILABLE))
        {
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
                &MEMORY_PRESSURE,
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
                None,
            );
        }

        // Filesystems and NICs: one finding per node (its identity is node + cause), with one
        // line of evidence per full filesystem or saturated NIC.
        let mut full: Vec<(Held, Evidence, String)> = Vec::new();
        for (pos, d) in latest.host.disks.iter().enumerate() {
            let mount = d.mount_point.as_str();
            let free = |s: &Sample| {
                let x = match s.host.disks.get(pos) {
                    Some(x) if x.mount_point == mount => x,
                    _ => s.host.disks.iter().find(|x| x.mount_point == mount)?,
                };
                (x.total_bytes > 0).then(|| x.available_bytes as f64 / x.total_bytes as f64)
            };
            if let Some(run) = sustained_node(node, 0, |s| free(s).is_some_and(|f| f < DISK_FREE)) {
                let f = free(latest).unwrap_or(0.0);
                full.push((
                    run,
                    Evidence::new(
                        &format!("host.disk[{mount}].available"),
                        format!("{:.1}%", f * 100.0),
                        format!("{:.0}%", DISK_FREE * 100.0),
                    )
                    .held_for(run.held_ms),
                    format!("{mount} has {:.1}% free", f * 100.0),
                ));
            }
        }
        if let Some(run) = full.iter().map(|x| x.0).min_by_key(|r| r.since) {
            let summary = full
                .iter()
                .map(|x| x.2.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            emit(
                &DISK_FULL,
                run,
                full.into_iter().map(|x| x.1).collect(),
                summary,
                None,
            );
        }

        let mut saturated: Vec<(Held, Evidence, String)> = Vec::new();
        for (pos, n) in latest.host.nics.iter().enumerate() {
            let name = n.name.as_str();
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
                let x = match s.host.nics.get(pos) {
                    Some(x) if x.name == name => x,
                    _ => s.host.nics.iter().find(|x| x.name == name)?,
                };
                Some(x.rx_bytes_per_second.max(x.tx_bytes_per_second) as f64 / cap)
            };
            if let Some(run) = sustained_node(node, 0, |s| use_of(s).is_some_and(|u| u >= NIC_FULL))
            {
                let u = use_of(latest).unwrap_or(0.0);
                saturated.push((
                    run,
                    Evidence::new(
                        &format!("host.nic[{name}].throughput"),
                        format!("{:.0}% of {:.0} Gb/s", u * 100.0, mbps as f64 / 1000.0),
                        format!("{:.0}%", NIC_FULL * 100.0),
                    )
                    .held_for(run.held_ms),
                    format!(
                        "{name} runs at {:.0}% of its {:.0} Gb/s link",
                        u * 100.0,
                        mbps as f64 / 1000.0
                    ),
                ));
            }
        }
        if let Some(run) = saturated.iter().map(|x| x.0).min_by_key(|r| r.since) {
            let summary = saturated
                .iter()
                .map(|x| x.2.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            emit(
                &NIC_SATURATED,
                run,
                saturated.into_iter().map(|x| x.1).collect(),
                summary,
                None,
            );
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use gpufleet_model::{DiskSample, NicSample};
    vec![super::testutil::trigger("host", |_, s| {
        s.host.cpu_percent = Some(99.0);
        for g in &mut s.gpus {
            g.utilization_gpu_percent = Some(30);
        }
        s.host.memory_available_bytes = s.host.memory_total_bytes / 100;
        s.host.disks = vec![DiskSample {
            mount_point: "/".into(),
            total_bytes: 100,
            available_bytes: 1,
        }];
        s.host.nics = vec![NicSample {
            name: "eth0".into(),
            tx_bytes_per_second: 12_000_000_000,
            speed_mbps: Some(100_000),
            ..Default::default()
        }];
    })]
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
        // Two full filesystems are one finding (its identity is node + cause) with both.
        let n = node(2, 5, |_, s| {
            s.host.disks = ["/", "/raid"]
                .map(|m| DiskSample {
                    mount_point: m.into(),
                    total_bytes: 100,
                    available_bytes: 1,
                })
                .to_vec()
        });
        let got = HostSaturation.check(&n, &FleetContext::default(), NOW);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].evidence.len(), 2);
        assert_eq!(got[0].summary, "/ has 1.0% free, /raid has 1.0% free");
        // One noisy sample does not fire.
        let n = node(2, 5, |i, s| {
            if i == 4 {
                s.host.memory_available_bytes = 0;
            }
        });
        assert!(
            HostSaturation
                .check(&n, &FleetContext::default(), NOW)
                .is_empty()
        );
    }
}
