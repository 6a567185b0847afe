//! Per PCIe device of every node (GPUs, NVSwitches, NICs, NVMe drives and the bridges above
//! them): what it is and where (NUMA node, the port it hangs off), its link against its
//! maximum, its AER error counters, and the bridges' ACS — the readings behind the `pcie.*`
//! findings and the GPU↔NIC affinity a scheduler wants. Labels: `Hostname` (as the DCGM
//! series) and `bdf` (`0000:1a:00.0`) on every series; `gpu` (its index) on a GPU's info.

use gpufleet_model::exposition::LabelSet;
use gpufleet_model::pcie::{ACS_P2P_REDIRECT, normalize_bdf};
use gpufleet_model::{Acs, PcieDeviceInfo, PcieDeviceSample};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

type Counter = fn(&PcieDeviceSample) -> Option<u64>;

const COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "gpufleet_pcie_aer_correctable_errors",
        "Correctable AER errors the device reported (TOTAL_ERR_COR of aer_dev_correctable, since boot).",
        |d| d.aer_correctable,
    ),
    (
        "gpufleet_pcie_aer_nonfatal_errors",
        "Non-fatal uncorrectable AER errors the device reported (TOTAL_ERR_NONFATAL, since boot).",
        |d| d.aer_nonfatal,
    ),
    (
        "gpufleet_pcie_aer_fatal_errors",
        "Fatal uncorrectable AER errors the device reported (TOTAL_ERR_FATAL, since boot).",
        |d| d.aer_fatal,
    ),
];

fn gts(mts: u32) -> f64 {
    f64::from(mts) / 1000.0
}

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let infos: Vec<(&NodeState, &PcieDeviceInfo)> = nodes
        .iter()
        .flat_map(|n| n.inventory.host.pcie_devices.iter().map(move |d| (*n, d)))
        .collect();
    let samples: Vec<(&str, &PcieDeviceSample)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?)))
        .flat_map(|(name, s)| s.host.pcie_devices.iter().map(move |d| (name, d)))
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_pcie_device_info",
        "A PCIe device that matters to GPU work or a bridge above one (always 1): kind gpu, nvswitch, nic, nvme or bridge; its PCI ids, kernel name and the port it hangs off.",
        None,
        MetricType::Gauge,
    )?;
    for (n, d) in &infos {
        let gpu = n
            .inventory
            .gpus
            .iter()
            .find(|g| normalize_bdf(&g.pci_bus_id) == d.bdf)
            .map(|g| g.index.to_string())
            .unwrap_or_default();
        let vendor = format!("0x{:04x}", d.vendor_id);
        let device = format!("0x{:04x}", d.device_id);
        let class = format!("0x{:06x}", d.class_code);
        f.encode_family(&LabelSet([
            ("Hostname", n.name()),
            ("bdf", d.bdf.as_str()),
            ("kind", d.kind.label()),
            ("name", d.name.as_str()),
            ("gpu", gpu.as_str()),
            ("vendor", vendor.as_str()),
            ("device", device.as_str()),
            ("class", class.as_str()),
            ("parent", d.upstream.last().map_or("", String::as_str)),
        ]))?
        .encode_gauge(&1)?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_pcie_numa_node",
        "NUMA node the device is attached to (absent where the platform does not say).",
        None,
        MetricType::Gauge,
    )?;
    for (n, d) in &infos {
        if let Some(numa) = d.numa_node {
            f.encode_family(&LabelSet([("Hostname", n.name()), ("bdf", d.bdf.as_str())]))?
                .encode_gauge(&i64::from(numa))?;
        }
    }

    type Max = fn(&PcieDeviceInfo) -> Option<f64>;
    let maxima: [(&str, &str, Max); 2] = [
        (
            "gpufleet_pcie_link_max_speed_gts",
            "Fastest rate the device's link can train at (max_link_speed, in GT/s).",
            |d| d.max_link_speed_mts.map(gts),
        ),
        (
            "gpufleet_pcie_link_max_width",
            "Widest the device's link can train (max_link_width, lanes).",
            |d| d.max_link_width.map(f64::from),
        ),
    ];
    for (name, help, read) in maxima {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (n, d) in &infos {
            if let Some(v) = read(d) {
                f.encode_family(&LabelSet([("Hostname", n.name()), ("bdf", d.bdf.as_str())]))?
                    .encode_gauge(&v)?;
            }
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_pcie_acs_control",
        "A bridge's ACS Control register (bit 0 SrcValid, 1 TransBlk, 2 ReqRedir, 3 CmpltRedir, 4 UpstreamFwd, 5 EgressCtrl, 6 DirectTrans; absent where unknown or without ACS).",
        None,
        MetricType::Gauge,
    )?;
    for (n, d) in &infos {
        if let Acs::Control(c) = d.acs {
            f.encode_family(&LabelSet([("Hostname", n.name()), ("bdf", d.bdf.as_str())]))?
                .encode_gauge(&i64::from(c))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_pcie_acs_p2p_redirect",
        "Whether the bridge's ACS redirects peer-to-peer requests or completions to the root complex (1) or not (0); absent where unknown.",
        None,
        MetricType::Gauge,
    )?;
    for (n, d) in &infos {
        let v = match d.acs {
            Acs::Control(c) => i64::from(c & ACS_P2P_REDIRECT != 0),
            Acs::NotCapable => 0,
            Acs::Unknown => continue,
        };
        f.encode_family(&LabelSet([("Hostname", n.name()), ("bdf", d.bdf.as_str())]))?
            .encode_gauge(&v)?;
    }

    type Link = fn(&PcieDeviceSample) -> Option<f64>;
    let links: [(&str, &str, Link); 2] = [
        (
            "gpufleet_pcie_link_speed_gts",
            "Rate the device's link trained at (current_link_speed, in GT/s).",
            |d| d.link_speed_mts.map(gts),
        ),
        (
            "gpufleet_pcie_link_width",
            "Lanes the device's link trained at (current_link_width).",
            |d| d.link_width.map(f64::from),
        ),
    ];
    for (name, help, read) in links {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (node, d) in &samples {
            if let Some(v) = read(d) {
                f.encode_family(&LabelSet([("Hostname", *node), ("bdf", d.bdf.as_str())]))?
                    .encode_gauge(&v)?;
            }
        }
    }

    for (name, help, read) in COUNTERS {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (node, d) in &samples {
            if let Some(v) = read(d) {
                f.encode_family(&LabelSet([("Hostname", *node), ("bdf", d.bdf.as_str())]))?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
    }
    Ok(())
}
