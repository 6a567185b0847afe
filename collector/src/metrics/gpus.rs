//! Every GPU of every node under dcgm-exporter's names (`Hostname` is the node's name), and
//! `gpufleet_gpu_info` with each GPU's versions.

use gpufleet_model::exposition::dcgm::{self, GpuView};
use gpufleet_model::exposition::{Format, LabelSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

/// The GPUs of the nodes' current inventories, each with its latest sample.
pub fn views<'a>(nodes: &[&'a NodeState]) -> Vec<GpuView<'a>> {
    let mut out = Vec::with_capacity(nodes.iter().map(|n| n.inventory.gpus.len()).sum());
    for n in nodes {
        let latest = n.latest();
        for info in &n.inventory.gpus {
            out.push(GpuView {
                hostname: n.name(),
                info,
                driver_version: &n.inventory.driver.driver_version,
                sample: latest.and_then(|s| {
                    s.gpus
                        .iter()
                        .find(|g| g.uuid == info.uuid && g.index == info.index)
                        .or_else(|| s.gpu(info.index))
                }),
                last_xid: n.last_xid.get(&info.index).copied().unwrap_or(0),
                xid_events: n.xid_events.get(&info.index).copied().unwrap_or(0),
            });
        }
    }
    out
}

pub fn encode(
    enc: &mut DescriptorEncoder,
    nodes: &[&NodeState],
    format: Format,
) -> Result<(), std::fmt::Error> {
    let gpus = views(nodes);
    dcgm::encode(enc, &gpus, format)?;
    let mut info = enc.encode_descriptor(
        "gpufleet_gpu_info",
        "Versions of each GPU's driver, CUDA, VBIOS, InfoROM and GSP firmware (always 1).",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        let d = &n.inventory.driver;
        for g in &n.inventory.gpus {
            let index = g.index.to_string();
            let labels = LabelSet([
                ("Hostname", n.name()),
                ("gpu", &index),
                ("UUID", &g.uuid),
                ("modelName", &g.name),
                ("driver_version", &d.driver_version),
                ("cuda_driver_version", &d.cuda_driver_version),
                ("vbios_version", &g.vbios_version),
                ("inforom_version", &g.inforom_image_version),
                ("gsp_firmware_version", &g.gsp_firmware_version),
            ]);
            info.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
    }
    Ok(())
}
