//! Per InfiniBand / RoCE port of every node: up or not, its rate, its error and data
//! counters — the readings behind the `fabric.ib.*` findings, for dashboards. Labels:
//! `Hostname` (as the DCGM series), `device` (`mlx5_0`), `port`, and `link_layer` on the
//! state series.

use gpufleet_model::IbPortSample;
use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

type Counter = fn(&IbPortSample) -> Option<u64>;

const COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "gpufleet_ib_port_symbol_errors",
        "Symbol errors on the port's link (cumulative since the driver loaded).",
        |p| p.symbol_errors,
    ),
    (
        "gpufleet_ib_port_link_downed",
        "Times the port's link went down (cumulative since the driver loaded).",
        |p| p.link_downed,
    ),
    (
        "gpufleet_ib_port_rcv_errors",
        "Packets with errors the port received (cumulative since the driver loaded).",
        |p| p.rcv_errors,
    ),
    (
        "gpufleet_ib_port_local_link_integrity_errors",
        "Local link integrity errors (cumulative since the driver loaded).",
        |p| p.local_link_integrity_errors,
    ),
    (
        "gpufleet_ib_port_excessive_buffer_overrun_errors",
        "Excessive buffer overrun errors (cumulative since the driver loaded).",
        |p| p.excessive_buffer_overrun_errors,
    ),
    (
        "gpufleet_ib_port_xmit_discards",
        "Packets the port discarded on transmit (cumulative since the driver loaded).",
        |p| p.xmit_discards,
    ),
    (
        "gpufleet_ib_port_rcv_data_bytes",
        "Bytes the port received (cumulative since the driver loaded).",
        |p| p.rcv_data_bytes,
    ),
    (
        "gpufleet_ib_port_xmit_data_bytes",
        "Bytes the port transmitted (cumulative since the driver loaded).",
        |p| p.xmit_data_bytes,
    ),
];

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let ports: Vec<(&str, &IbPortSample, String)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?)))
        .flat_map(|(name, s)| {
            s.host
                .ib_ports
                .iter()
                .map(move |p| (name, p, p.port.to_string()))
        })
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_ib_port_up",
        "Whether the InfiniBand/RoCE port is ACTIVE and LinkUp (1) or not (0); state and phys_state say how.",
        None,
        MetricType::Gauge,
    )?;
    for (node, p, port) in &ports {
        f.encode_family(&LabelSet([
            ("Hostname", *node),
            ("device", p.device.as_str()),
            ("port", port.as_str()),
            ("link_layer", p.link_layer.as_str()),
            ("state", p.state.as_str()),
            ("phys_state", p.phys_state.as_str()),
        ]))?
        .encode_gauge(&i64::from(p.is_up()))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_ib_port_rate_gbps",
        "Rate the port's link trained at (in Gb/s).",
        None,
        MetricType::Gauge,
    )?;
    for (node, p, port) in &ports {
        if let Some(r) = p.rate_gbps {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("device", p.device.as_str()),
                ("port", port.as_str()),
            ]))?
            .encode_gauge(&r)?;
        }
    }

    for (name, help, read) in COUNTERS {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (node, p, port) in &ports {
            if let Some(v) = read(p) {
                f.encode_family(&LabelSet([
                    ("Hostname", *node),
                    ("device", p.device.as_str()),
                    ("port", port.as_str()),
                ]))?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
    }
    Ok(())
}
