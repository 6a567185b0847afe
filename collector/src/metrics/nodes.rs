//! Per node: connected or not, age of its last sample, samples its agent dropped, and its
//! versions; and how many nodes are connected.

use gpufleet_model::UnixMs;
use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

pub fn encode(
    enc: &mut DescriptorEncoder,
    nodes: &[&NodeState],
    now: UnixMs,
) -> Result<(), std::fmt::Error> {
    let connected = nodes.iter().filter(|n| n.connected).count() as i64;
    let mut f = enc.encode_descriptor(
        "gpufleet_nodes",
        "Nodes the collector knows, by whether their agent is connected.",
        None,
        MetricType::Gauge,
    )?;
    f.encode_family(&LabelSet([("state", "connected")]))?
        .encode_gauge(&connected)?;
    f.encode_family(&LabelSet([("state", "disconnected")]))?
        .encode_gauge(&(nodes.len() as i64 - connected))?;

    let mut f = enc.encode_descriptor(
        "gpufleet_node_connected",
        "Whether the node's agent is connected (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        f.encode_family(&LabelSet([("Hostname", n.name())]))?
            .encode_gauge(&i64::from(n.connected))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_last_sample_age_seconds",
        "Seconds since the node's latest sample was taken (since it was last heard of, before any sample).",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        let at = n.latest().map_or(n.last_seen, |s| s.timestamp);
        let age = (now.0 - at.0).max(0) as f64 / 1000.0;
        f.encode_family(&LabelSet([("Hostname", n.name())]))?
            .encode_gauge(&age)?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_dropped_samples",
        "Samples the node's agent dropped because its buffer or spool was full while the collector was unreachable (over the node's life, kept in the database).",
        None,
        MetricType::Counter,
    )?;
    for n in nodes {
        f.encode_family(&LabelSet([("Hostname", n.name())]))?
            .encode_counter::<NoLabelSet, _, u64>(&n.dropped_samples, None)?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_info",
        "The node's kernel, OS release and agent version (always 1).",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        let h = &n.inventory.host;
        f.encode_family(&LabelSet([
            ("Hostname", n.name()),
            ("kernel_version", &h.kernel_version),
            ("os_release", &h.os_name),
            ("agent_version", &n.agent_version),
        ]))?
        .encode_gauge(&1i64)?;
    }
    Ok(())
}
