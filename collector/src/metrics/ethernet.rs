//! Per Ethernet port of each node: link up, negotiated speed, duplex and carrier changes — the
//! readings behind `host.nic.link_down`, `host.nic.speed_degraded` and `host.nic.flapping`.
//! Names follow node_exporter's netclass collector where it has one (`_speed_bytes`,
//! `_carrier_changes_total`), with the `Hostname` label of the other gpufleet series.

use gpufleet_model::EthernetPort;
use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let ports: Vec<(&str, &EthernetPort)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?)))
        .flat_map(|(name, s)| s.host.ethernet.iter().map(move |p| (name, p)))
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_ethernet_up",
        "1 when the Ethernet port's operstate is up, 0 otherwise.",
        None,
        MetricType::Gauge,
    )?;
    for (node, p) in &ports {
        f.encode_family(&LabelSet([
            ("Hostname", *node),
            ("device", p.name.as_str()),
            ("operstate", p.operstate.as_str()),
        ]))?
        .encode_gauge(&i64::from(p.is_up()))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_ethernet_speed_bytes",
        "The Ethernet port's negotiated speed, bytes per second (absent while the link is down).",
        None,
        MetricType::Gauge,
    )?;
    for (node, p) in &ports {
        if let Some(mbps) = p.speed_mbps {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("device", p.name.as_str()),
            ]))?
            .encode_gauge(&((mbps * 125_000) as f64))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_ethernet_full_duplex",
        "1 at full duplex, 0 at half duplex (absent when unknown).",
        None,
        MetricType::Gauge,
    )?;
    for (node, p) in &ports {
        if !p.duplex.is_empty() {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("device", p.name.as_str()),
            ]))?
            .encode_gauge(&i64::from(p.duplex == "full"))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_ethernet_carrier_changes",
        "Times the Ethernet port's carrier went up or down since its driver loaded.",
        None,
        MetricType::Counter,
    )?;
    for (node, p) in &ports {
        if let Some(v) = p.carrier_changes {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("device", p.name.as_str()),
            ]))?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
    }
    Ok(())
}
