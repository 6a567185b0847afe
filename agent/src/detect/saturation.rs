//! Saturation: a resource at or near its limit right now. Pure checks over one sample (and the
//! inventory for limits); the [`super::Detector`] turns a condition that holds for several
//! samples into an event.

use gpufleet_model::{Inventory, Sample, Severity};
use serde::{Deserialize, Serialize};

/// Thresholds, as fractions of the limit. Defaults follow what ops consider "full".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// GPU memory used / total.
    pub gpu_memory: f64,
    /// Power draw / enforced power limit.
    pub gpu_power: f64,
    /// GPU utilization percent.
    pub gpu_utilization_percent: u32,
    /// PCIe throughput / link capacity (current gen and width).
    pub pcie: f64,
    /// NIC rate / link speed.
    pub nic: f64,
    /// Host CPU busy percent.
    pub cpu_percent: f32,
    /// Host memory available / total below this is pressure.
    pub ram_available: f64,
    /// Filesystem available / total below this is full.
    pub disk_available: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            gpu_memory: 0.95,
            gpu_power: 0.98,
            gpu_utilization_percent: 100,
            pcie: 0.90,
            nic: 0.90,
            cpu_percent: 95.0,
            ram_available: 0.05,
            disk_available: 0.05,
        }
    }
}

/// One resource at its limit in one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Saturated {
    /// Stable key, also the event code: `saturation.gpu_memory`, `saturation.nic`, ...
    pub code: &'static str,
    /// Which instance: GPU index, NIC name, mount point.
    pub gpu: Option<(u32, String)>,
    pub instance: String,
    pub value: String,
    pub limit: String,
    pub severity: Severity,
}

impl Saturated {
    /// Key that identifies this condition across samples.
    pub fn key(&self) -> String {
        format!("{}|{}", self.code, self.instance)
    }

    pub fn message(&self) -> String {
        let what = &self.code["saturation.".len()..];
        format!(
            "{what} {} at {} (limit {})",
            self.instance, self.value, self.limit
        )
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

pub fn check(sample: &Sample, inv: &Inventory, t: &Thresholds) -> Vec<Saturated> {
    let mut out = Vec::new();
    for g in &sample.gpus {
        let gpu = Some((g.index, g.uuid.clone()));
        let inst = format!("gpu{}", g.index);
        let mut push = |code, value: String, limit: String, severity| {
            out.push(Saturated {
                code,
                gpu: gpu.clone(),
                instance: inst.clone(),
                value,
                limit,
                severity,
            })
        };
        if let (Some(used), Some(total)) = (g.memory_used_bytes, g.memory_total_bytes)
            && total > 0
            && used as f64 / total as f64 >= t.gpu_memory
        {
            push(
                "saturation.gpu_memory",
                pct(used as f64 / total as f64),
                pct(t.gpu_memory),
                Severity::Warning,
            );
        }
        if let (Some(p), Some(l)) = (g.power_usage_milliwatts, g.power_limit_enforced_milliwatts)
            && l > 0
            && p as f64 / l as f64 >= t.gpu_power
        {
            push(
                "saturation.gpu_power",
                format!("{:.0} W", p as f64 / 1000.0),
                format!("{:.0} W", l as f64 / 1000.0),
                Severity::Info,
            );
        }
        if let Some(u) = g.utilization_gpu_percent
            && u >= t.gpu_utilization_percent
        {
            push(
                "saturation.gpu_utilization",
                format!("{u}%"),
                format!("{}%", t.gpu_utilization_percent),
                Severity::Info,
            );
        }
        if let (Some(gen_), Some(width)) = (g.pcie_link_gen, g.pcie_link_width)
            && let Some(cap) = gpufleet_model::pcie::link_kbps(gen_, width)
        {
            let peak = g.pcie_tx_kbps.max(g.pcie_rx_kbps).unwrap_or(0) as u64;
            if cap > 0 && peak as f64 / cap as f64 >= t.pcie {
                push(
                    "saturation.pcie",
                    format!("{:.1} GB/s", peak as f64 / 1e6),
                    format!("{:.1} GB/s (gen{gen_} x{width})", cap as f64 / 1e6),
                    Severity::Info,
                );
            }
        }
    }
    let h = &sample.host;
    let host = |code, instance: String, value, limit, severity| Saturated {
        code,
        gpu: None,
        instance,
        value,
        limit,
        severity,
    };
    if let Some(cpu) = h.cpu_percent
        && cpu >= t.cpu_percent
    {
        out.push(host(
            "saturation.cpu",
            "cpu".into(),
            format!("{cpu:.0}%"),
            format!("{:.0}%", t.cpu_percent),
            Severity::Warning,
        ));
    }
    if h.memory_total_bytes > 0 {
        let avail = h.memory_available_bytes as f64 / h.memory_total_bytes as f64;
        if avail < t.ram_available {
            out.push(host(
                "saturation.ram",
                "ram".into(),
                format!("{} available", pct(avail)),
                format!("{} available", pct(t.ram_available)),
                Severity::Warning,
            ));
        }
    }
    for d in &h.disks {
        if d.total_bytes > 0 {
            let avail = d.available_bytes as f64 / d.total_bytes as f64;
            if avail < t.disk_available {
                out.push(host(
                    "saturation.disk",
                    d.mount_point.clone(),
                    format!("{} free", pct(avail)),
                    format!("{} free", pct(t.disk_available)),
                    Severity::Warning,
                ));
            }
        }
    }
    for n in &h.nics {
        let speed = n
            .speed_mbps
            .or_else(|| inv.host.nics.iter().find(|i| i.name == n.name)?.speed_mbps);
        if let Some(mbps) = speed.filter(|s| *s > 0) {
            let cap = mbps as f64 * 1e6 / 8.0;
            let peak = n.rx_bytes_per_second.max(n.tx_bytes_per_second) as f64;
            if peak / cap >= t.nic {
                out.push(host(
                    "saturation.nic",
                    n.name.clone(),
                    format!("{:.1} Gb/s", peak * 8.0 / 1e9),
                    format!("{:.0} Gb/s link", mbps as f64 / 1000.0),
                    Severity::Warning,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{DiskSample, GpuSample, HostSample, NicSample};

    fn sample(g: GpuSample, h: HostSample) -> Sample {
        Sample {
            timestamp: gpufleet_model::UnixMs(1),
            gpus: vec![g],
            host: h,
        }
    }

    #[test]
    fn checks_each_resource() {
        let healthy_host = HostSample {
            cpu_percent: Some(20.0),
            memory_total_bytes: 100,
            memory_available_bytes: 60,
            ..Default::default()
        };
        let cases: Vec<(&str, GpuSample, HostSample, Vec<&str>)> = vec![
            (
                "healthy",
                GpuSample::default(),
                healthy_host.clone(),
                vec![],
            ),
            (
                "gpu memory full",
                GpuSample {
                    memory_used_bytes: Some(79),
                    memory_total_bytes: Some(80),
                    ..Default::default()
                },
                healthy_host.clone(),
                vec!["saturation.gpu_memory"],
            ),
            (
                "absent readings are not saturation",
                GpuSample {
                    memory_used_bytes: Some(79),
                    power_usage_milliwatts: Some(700_000),
                    ..Default::default()
                },
                healthy_host.clone(),
                vec![],
            ),
            (
                "power at limit",
                GpuSample {
                    power_usage_milliwatts: Some(699_000),
                    power_limit_enforced_milliwatts: Some(700_000),
                    ..Default::default()
                },
                healthy_host.clone(),
                vec!["saturation.gpu_power"],
            ),
            (
                "pcie gen3 x8 full",
                GpuSample {
                    pcie_link_gen: Some(3),
                    pcie_link_width: Some(8),
                    pcie_rx_kbps: Some(7_500_000),
                    ..Default::default()
                },
                healthy_host.clone(),
                vec!["saturation.pcie"],
            ),
            (
                "host cpu, ram, disk, nic",
                GpuSample::default(),
                HostSample {
                    cpu_percent: Some(99.0),
                    memory_total_bytes: 100,
                    memory_available_bytes: 2,
                    disks: vec![DiskSample {
                        mount_point: "/".into(),
                        total_bytes: 100,
                        available_bytes: 1,
                    }],
                    nics: vec![NicSample {
                        name: "eth0".into(),
                        rx_bytes_per_second: 12_000_000_000,
                        speed_mbps: Some(100_000),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                vec![
                    "saturation.cpu",
                    "saturation.ram",
                    "saturation.disk",
                    "saturation.nic",
                ],
            ),
        ];
        for (name, g, h, want) in cases {
            let got: Vec<&str> =
                check(&sample(g, h), &Inventory::default(), &Thresholds::default())
                    .into_iter()
                    .map(|s| s.code)
                    .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
