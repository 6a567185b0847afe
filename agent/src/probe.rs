//! `gpufleet-agent probe`: one full local reading, printed as tables (a richer `nvidia-smi`)
//! or JSON, with what local detection sees. Needs no collector.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use gpufleet_model::labels::format_labels;
use gpufleet_model::{
    Event, GpuSample, GpuStatus, Inventory, Labels, NodeIdentity, Sample, clock_events,
};
use serde::Serialize;

use crate::detect::LocalFinding;

/// Everything `probe` read. This is also the `--json` document.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub schema: &'static str,
    pub node: NodeIdentity,
    /// What `run` with the same `--label` flags and `GPUFLEET_LABELS` would send.
    pub labels: Labels,
    pub gpu_source: String,
    pub inventory: Inventory,
    pub sample: Sample,
    pub events: Vec<Event>,
    pub findings: Vec<LocalFinding>,
    /// Wall time one full read of all GPUs and the host took, in milliseconds.
    pub read_ms: f64,
    /// Parts of the host this machine does not offer (no InfiniBand device, …), and why.
    pub unavailable: Vec<Unavailable>,
}

#[derive(Debug, Serialize)]
pub struct Unavailable {
    pub source: &'static str,
    pub reason: String,
}

pub const SCHEMA: &str = "gpufleet.probe/v1";

fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map(|v| format!("{v}{unit}"))
        .unwrap_or_else(|| "n/a".into())
}

fn mib(b: Option<u64>) -> Option<u64> {
    b.map(|b| b / (1 << 20))
}

fn watts(mw: Option<u32>) -> Option<String> {
    mw.map(|m| format!("{:.0}", m as f64 / 1000.0))
}

fn ratio<T: std::fmt::Display>(a: Option<T>, b: Option<T>, unit: &str) -> String {
    format!("{} / {}", opt(a, ""), opt(b, unit))
}

pub fn render_text(r: &ProbeReport) -> String {
    let inv = &r.inventory;
    let mut out = String::new();
    out += &format!(
        "Node {}  (source: {}, read in {:.1} ms)\nDriver {}  CUDA {}  NVML {}\nHost {} | kernel {} | {} × {} | RAM {:.0} GiB | up {} h\n",
        r.node.hostname,
        r.gpu_source,
        r.read_ms,
        dash(&inv.driver.driver_version),
        dash(&inv.driver.cuda_driver_version),
        dash(&inv.driver.nvml_version),
        dash(&inv.host.os_name),
        dash(&inv.host.kernel_version),
        inv.host.cpu_logical_cores,
        dash(&inv.host.cpu_model),
        inv.host.memory_total_bytes as f64 / (1u64 << 30) as f64,
        inv.host.uptime_seconds / 3600,
    );
    if !r.labels.is_empty() {
        out += &format!("Labels {}\n", format_labels(&r.labels));
    }
    out += "\n";

    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "GPU", "Name", "Bus id", "UUID", "Serial", "VBIOS", "InfoROM", "GSP fw", "Persist", "ECC",
        "MIG",
    ]);
    for g in &inv.gpus {
        t.add_row([
            g.index.to_string(),
            g.name.clone(),
            g.pci_bus_id.clone(),
            g.uuid.clone(),
            dash(&g.serial).to_string(),
            dash(&g.vbios_version).to_string(),
            dash(&g.inforom_image_version).to_string(),
            dash(&g.gsp_firmware_version).to_string(),
            opt(g.persistence_mode.map(on_off), ""),
            opt(g.ecc_enabled.map(on_off), ""),
            opt(g.mig_enabled.map(on_off), ""),
        ]);
    }
    out += &format!("Inventory\n{t}\n\n");

    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "GPU",
        "Status",
        "Temp °C",
        "Fan",
        "Power W",
        "Memory MiB",
        "Util",
        "SM MHz",
        "Mem MHz",
        "PCIe",
        "Clock events",
        "ECC unc",
        "Remap pend",
    ]);
    for g in &r.sample.gpus {
        let info = inv.gpu(g.index);
        t.add_row(gpu_row(g, info));
    }
    out += &format!("Readings\n{t}\n\n");

    let h = &r.sample.host;
    out += &format!(
        "Host: CPU {} (load {}), RAM {:.0}/{:.0} GiB used, swap {:.1} GiB used\n",
        opt(h.cpu_percent.map(|c| format!("{c:.0}")), "%"),
        opt(h.load_average_1m.map(|l| format!("{l:.2}")), ""),
        h.memory_used_bytes as f64 / (1u64 << 30) as f64,
        h.memory_total_bytes as f64 / (1u64 << 30) as f64,
        h.swap_used_bytes as f64 / (1u64 << 30) as f64,
    );
    for d in &h.disks {
        out += &format!(
            "  disk {}: {:.0}% free of {:.0} GiB\n",
            d.mount_point,
            100.0 * d.available_bytes as f64 / d.total_bytes.max(1) as f64,
            d.total_bytes as f64 / (1u64 << 30) as f64
        );
    }
    for n in &h.nics {
        out += &format!(
            "  nic {}: rx {:.1} MB/s tx {:.1} MB/s, speed {}, errors rx {} tx {}, drops rx {} tx {}\n",
            n.name,
            n.rx_bytes_per_second as f64 / 1e6,
            n.tx_bytes_per_second as f64 / 1e6,
            opt(n.speed_mbps, " Mb/s"),
            opt(n.rx_errors, ""),
            opt(n.tx_errors, ""),
            opt(n.rx_dropped, ""),
            opt(n.tx_dropped, ""),
        );
    }
    if let Some(c) = &h.cpu_config {
        let governors: Vec<String> = c
            .governors
            .iter()
            .map(|(g, n)| format!("{g}×{n}"))
            .collect();
        out += &format!(
            "  cpu governor {} ({}), frequency {} of max {}, capped CPUs {}, THP {}, EDAC errors corrected {} uncorrected {}\n",
            if governors.is_empty() {
                "n/a".to_string()
            } else {
                governors.join(", ")
            },
            dash(&c.scaling_driver),
            opt(c.freq_avg_khz.map(|k| k / 1000), " MHz"),
            opt(c.freq_max_khz.map(|k| k / 1000), " MHz"),
            c.capped_cpus,
            dash(&c.thp_enabled),
            opt(c.edac_corrected_errors, ""),
            opt(c.edac_uncorrected_errors, ""),
        );
    }
    for e in &h.ethernet {
        out += &format!(
            "  ethernet {}: {}, {}, duplex {}, carrier changes {}, MTU {}, PCI {}\n",
            e.name,
            dash(&e.operstate),
            opt(e.speed_mbps, " Mb/s"),
            dash(&e.duplex),
            opt(e.carrier_changes, ""),
            opt(e.mtu, ""),
            dash(&e.pci_address),
        );
    }
    if let Some(o) = &h.os {
        out += &format!(
            "  os: file handles {} of {}, pages swapped in {} out {}, OOM kills {}, processes in D state {}\n",
            opt(o.file_handles, ""),
            opt(o.file_handles_max, ""),
            opt(o.pages_swapped_in, ""),
            opt(o.pages_swapped_out, ""),
            opt(o.oom_kills, ""),
            opt(o.uninterruptible, ""),
        );
        for p in &o.stuck {
            out += &format!(
                "  stuck process {} ({}): blocked {} s in {}\n",
                p.pid,
                p.comm,
                p.blocked_seconds,
                dash(&p.wchan)
            );
        }
    }
    for p in &h.ib_ports {
        out += &format!(
            "  ib {}: {} / {}, {}, {}, symbol errors {}, link downed {}, rcv errors {}\n",
            p.id(),
            dash(&p.state),
            dash(&p.phys_state),
            dash(&p.link_layer),
            opt(p.rate_gbps, " Gb/s"),
            opt(p.symbol_errors, ""),
            opt(p.link_downed, ""),
            opt(p.rcv_errors, ""),
        );
    }
    for d in &r.inventory.host.ib_devices {
        out += &format!(
            "  hca {}: {} firmware {}, PCI {}, NUMA node {}\n",
            d.name,
            dash(&d.hca_type),
            dash(&d.fw_version),
            dash(&d.pci_address),
            opt(d.numa_node, ""),
        );
    }
    out += &driver_stack_lines(r);
    out += &pcie_lines(r);
    out += &storage_lines(r);
    if !r.unavailable.is_empty() {
        out += "\nNot available on this machine\n";
        for u in &r.unavailable {
            out += &format!("  {}: {}\n", u.source, u.reason);
        }
    }
    out += "\nLocal findings\n";
    if r.findings.is_empty() && r.events.is_empty() {
        out += "  none: no drift, no saturation, no events\n";
    }
    for f in &r.findings {
        let gpu = f
            .gpu_index
            .map(|i| format!("GPU {i}: "))
            .unwrap_or_default();
        out += &format!("  [{}] {} {gpu}{}\n", f.severity, f.code, f.message);
    }
    for e in &r.events {
        let gpu = e
            .gpu_index
            .map(|i| format!("GPU {i}: "))
            .unwrap_or_default();
        out += &format!("  [{}] event {} {gpu}{}\n", e.severity, e.code, e.message);
    }
    out
}

/// The driver stack beyond NVML: modules, libraries, Fabric Manager, daemons.
fn driver_stack_lines(r: &ProbeReport) -> String {
    let mut out = String::new();
    if let Some(d) = &r.inventory.host.driver_stack {
        out += &format!(
            "  driver stack: kernel module {}, libcuda {}, libnvidia-ml {}, {} NVSwitch{}, Fabric Manager {}\n",
            dash(d.kernel_version()),
            dash(&d.libcuda_version),
            dash(&d.libnvidia_ml_version),
            d.nvswitch_count,
            if d.nvswitch_count == 1 { "" } else { "es" },
            if d.fabricmanager_version.is_empty() {
                "not installed"
            } else {
                &d.fabricmanager_version
            },
        );
        for m in &d.modules {
            out += &format!(
                "  module {}: {} ({})\n",
                m.name,
                dash(&m.version),
                dash(&m.state)
            );
        }
    }
    if let Some(d) = &r.sample.host.driver_daemons {
        let run = |b: bool| if b { "running" } else { "not running" };
        out += &format!(
            "  daemons: nvidia-persistenced {}, nv-fabricmanager {}\n",
            run(d.persistenced),
            run(d.fabricmanager)
        );
    }
    out
}

/// PCIe devices (GPUs, NICs, NVSwitches, NVMe) with their link, NUMA node and AER counters,
/// then the bridges' ACS.
fn pcie_lines(r: &ProbeReport) -> String {
    use gpufleet_model::{Acs, PcieDeviceKind, pcie};
    let mut out = String::new();
    let gts = |m: Option<u32>| {
        m.map(|m| format!("{} GT/s", m as f64 / 1000.0))
            .unwrap_or_else(|| "n/a".into())
    };
    for d in &r.inventory.host.pcie_devices {
        let s = r.sample.host.pcie_devices.iter().find(|s| s.bdf == d.bdf);
        let what = match d.kind {
            PcieDeviceKind::Gpu => r
                .inventory
                .gpus
                .iter()
                .find(|g| pcie::normalize_bdf(&g.pci_bus_id) == d.bdf)
                .map_or("GPU".to_string(), |g| format!("GPU {}", g.index)),
            PcieDeviceKind::Bridge => "bridge".to_string(),
            k if d.name.is_empty() => k.label().to_string(),
            k => format!("{} {}", k.label(), d.name),
        };
        let aer = |f: fn(&gpufleet_model::PcieDeviceSample) -> Option<u64>| opt(s.and_then(f), "");
        out += &format!(
            "  pcie {} {what}: {} x{} of {} x{}, NUMA node {}, AER correctable {} nonfatal {} fatal {}",
            d.bdf,
            gts(s.and_then(|s| s.link_speed_mts)),
            opt(s.and_then(|s| s.link_width), ""),
            gts(d.max_link_speed_mts),
            opt(d.max_link_width, ""),
            opt(d.numa_node, ""),
            aer(|s| s.aer_correctable),
            aer(|s| s.aer_nonfatal),
            aer(|s| s.aer_fatal),
        );
        if d.kind == PcieDeviceKind::Bridge {
            out += &match d.acs {
                Acs::Control(c) => format!(", ACSCtl {}", pcie::acs(c)),
                Acs::NotCapable => ", no ACS".to_string(),
                Acs::Unknown => {
                    ", ACS unknown (the extended config space is readable only as root)".to_string()
                }
            };
        } else if let Some(up) = d.upstream.last() {
            out += &format!(", below {up}");
        }
        out += "\n";
    }
    out
}

/// Watched mounts (state, statfs latency, space) and NVMe controllers.
fn storage_lines(r: &ProbeReport) -> String {
    let mut out = String::new();
    let Some(s) = &r.sample.host.storage else {
        return out;
    };
    for m in &s.mounts {
        if !m.mounted {
            out += &format!("  mount {}: not mounted\n", m.mount_point);
            continue;
        }
        let statfs = if m.unresponsive {
            "statfs timed out".to_string()
        } else if !m.statfs_error.is_empty() {
            format!("statfs failed: {}", m.statfs_error)
        } else {
            format!(
                "statfs {}, {} of {} GiB free",
                opt(m.statfs_latency_ms.map(|l| format!("{l:.2}")), " ms"),
                opt(m.available_bytes.map(|b| b >> 30), ""),
                opt(m.total_bytes.map(|b| b >> 30), ""),
            )
        };
        out += &format!(
            "  mount {}: {} {}, {}, {statfs}\n",
            m.mount_point,
            dash(&m.fstype),
            dash(&m.source),
            match (m.read_only, m.view_read_only) {
                (true, _) => "read-only",
                (false, true) => "read-write (read-only in the agent's view)",
                (false, false) => "read-write",
            },
        );
    }
    let infos = r.inventory.host.storage.as_ref().map(|s| s.nvme.as_slice());
    for n in &s.nvme {
        let info = infos.and_then(|i| i.iter().find(|c| c.name == n.name));
        out += &format!(
            "  nvme {}: {} firmware {}, {}, temperature {} (critical {}), alarm {}\n",
            n.name,
            dash(info.map_or("", |i| i.model.as_str())),
            dash(info.map_or("", |i| i.firmware_rev.as_str())),
            dash(&n.state),
            opt(
                n.temperature_millicelsius
                    .map(|t| format!("{:.2}", t as f64 / 1000.0)),
                " °C"
            ),
            opt(
                n.temperature_crit_millicelsius
                    .map(|t| format!("{:.2}", t as f64 / 1000.0)),
                " °C"
            ),
            match n.temperature_alarm {
                Some(true) => "on",
                Some(false) => "off",
                None => "n/a",
            },
        );
    }
    out
}

fn gpu_row(g: &GpuSample, info: Option<&gpufleet_model::GpuInfo>) -> Vec<String> {
    let status = match g.status {
        GpuStatus::Ok => "ok".to_string(),
        GpuStatus::Lost => format!("LOST: {}", g.error),
        GpuStatus::Unreadable => format!("unreadable: {}", g.error),
    };
    let reasons = g
        .clock_event_reasons
        .map(|m| {
            let n = clock_events::names(m & !clock_events::GPU_IDLE);
            if n.is_empty() {
                "none".to_string()
            } else {
                n.join(",")
            }
        })
        .unwrap_or_else(|| "n/a".into());
    let pcie = format!(
        "gen{}/{} x{}/{}",
        opt(g.pcie_link_gen, ""),
        opt(info.and_then(|i| i.pcie_link_gen_max), ""),
        opt(g.pcie_link_width, ""),
        opt(info.and_then(|i| i.pcie_link_width_max), ""),
    );
    vec![
        g.index.to_string(),
        status,
        format!(
            "{} (mem {})",
            opt(g.temperature_gpu_celsius, ""),
            opt(g.temperature_memory_celsius, "")
        ),
        opt(g.fan_speed_percent, "%"),
        ratio(
            watts(g.power_usage_milliwatts),
            watts(g.power_limit_enforced_milliwatts),
            "",
        ),
        ratio(mib(g.memory_used_bytes), mib(g.memory_total_bytes), ""),
        opt(g.utilization_gpu_percent, "%"),
        ratio(g.sm_clock_mhz, info.and_then(|i| i.sm_clock_max_mhz), ""),
        ratio(
            g.memory_clock_mhz,
            info.and_then(|i| i.memory_clock_max_mhz),
            "",
        ),
        pcie,
        reasons,
        opt(g.ecc_uncorrected_volatile, ""),
        opt(
            g.remapped_rows_pending
                .map(|p| if p { "yes" } else { "no" }),
            "",
        ),
    ]
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "n/a" } else { s }
}
