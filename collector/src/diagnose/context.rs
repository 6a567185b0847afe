//! What the fleet looks like as a whole: the majority driver, kernel and VBIOS per GPU model,
//! against which one node's versions are judged, and how busy GPUs of each model perform
//! ([`peers`]), against which one GPU's clocks and power are judged.

pub mod peers;

use std::collections::{BTreeMap, HashMap};

use crate::fleet::NodeState;

#[derive(Debug, Default, Clone)]
pub struct FleetContext {
    /// Majority driver version among nodes, and how many nodes have it / have any.
    pub driver: Option<Majority>,
    pub kernel: Option<Majority>,
    /// Per GPU product name: majority VBIOS version over all GPUs of that product.
    pub vbios: HashMap<String, Majority>,
    /// Per GPU product name: clocks and power of its busy, unthrottled GPUs right now.
    pub peers: HashMap<String, peers::PeerStats>,
    /// Per GPU product name: the usual number of InfiniBand ports of its nodes (among nodes
    /// that have any), against which a node missing an HCA is judged.
    pub ib_ports: HashMap<String, Majority>,
    /// Per (GPU product name, Ethernet port name): how that port looks on the nodes that
    /// have it, against which one node's link down or slower link is judged.
    pub ethernet: HashMap<(String, String), EthernetPeers>,
    pub nodes: usize,
    /// The compliance policy in force (`serve --policy`), if any.
    pub policy: Option<std::sync::Arc<crate::compliance::policy::Policy>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Majority {
    pub value: String,
    pub count: usize,
    pub total: usize,
}

fn majority<'a>(values: impl Iterator<Item = &'a str>) -> Option<Majority> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for v in values.filter(|v| !v.is_empty()) {
        *counts.entry(v).or_default() += 1;
        total += 1;
    }
    // Ties go to the larger (usually newer) version string.
    let (value, count) = counts.into_iter().max_by_key(|(v, c)| (*c, *v))?;
    Some(Majority {
        value: value.to_string(),
        count,
        total,
    })
}

impl FleetContext {
    pub fn from_nodes(nodes: &[&NodeState]) -> Self {
        let mut by_model: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in nodes {
            for g in &n.inventory.gpus {
                by_model
                    .entry(g.name.as_str())
                    .or_default()
                    .push(g.vbios_version.as_str());
            }
        }
        FleetContext {
            driver: majority(
                nodes
                    .iter()
                    .map(|n| n.inventory.driver.driver_version.as_str()),
            ),
            kernel: majority(
                nodes
                    .iter()
                    .map(|n| n.inventory.host.kernel_version.as_str()),
            ),
            vbios: by_model
                .into_iter()
                .filter_map(|(m, v)| Some((m.to_string(), majority(v.into_iter())?)))
                .collect(),
            peers: peers::by_model(nodes),
            ib_ports: ib_port_majorities(nodes),
            ethernet: ethernet_peers(nodes),
            nodes: nodes.len(),
            policy: None,
        }
    }
}

/// The GPU product a node is grouped by (its first GPU's name).
pub fn gpu_model(n: &NodeState) -> Option<&str> {
    n.inventory.gpus.first().map(|g| g.name.as_str())
}

/// InfiniBand-layer ports in a node's latest sample.
pub fn ib_port_count(n: &NodeState) -> usize {
    n.latest()
        .map(|s| s.host.ib_ports.iter().filter(|p| p.is_infiniband()).count())
        .unwrap_or(0)
}

fn ib_port_majorities(nodes: &[&NodeState]) -> HashMap<String, Majority> {
    let mut counts: HashMap<&str, Vec<String>> = HashMap::new();
    for n in nodes {
        let c = ib_port_count(n);
        if let (Some(model), true) = (gpu_model(n), c > 0) {
            counts.entry(model).or_default().push(c.to_string());
        }
    }
    counts
        .into_iter()
        .filter_map(|(m, v)| Some((m.to_string(), majority(v.iter().map(String::as_str))?)))
        .collect()
}

/// One Ethernet port name across the nodes of one GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EthernetPeers {
    /// Nodes that have a port of this name.
    pub nodes: usize,
    /// Of them, nodes where it is up.
    pub up: usize,
    /// The usual speed (Mb/s) where it is up.
    pub speed: Option<Majority>,
}

fn ethernet_peers(nodes: &[&NodeState]) -> HashMap<(String, String), EthernetPeers> {
    let mut acc: HashMap<(String, String), (EthernetPeers, Vec<String>)> = HashMap::new();
    for n in nodes {
        let (Some(model), Some(latest)) = (gpu_model(n), n.latest()) else {
            continue;
        };
        for e in &latest.host.ethernet {
            let entry = acc.entry((model.to_string(), e.name.clone())).or_default();
            entry.0.nodes += 1;
            if e.is_up() {
                entry.0.up += 1;
                if let Some(speed) = e.speed_mbps {
                    entry.1.push(format!("{speed:012}"));
                }
            }
        }
    }
    acc.into_iter()
        .map(|(k, (mut peers, speeds))| {
            // Zero-padded so that ties go to the faster speed.
            peers.speed = majority(speeds.iter().map(String::as_str)).map(|m| Majority {
                value: m.value.trim_start_matches('0').to_string(),
                ..m
            });
            (k, peers)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_ignores_unknown_and_breaks_ties_upward() {
        assert_eq!(majority(["", ""].into_iter()), None);
        let m = majority(["550", "535", "550", ""].into_iter()).unwrap();
        assert_eq!((m.value.as_str(), m.count, m.total), ("550", 2, 3));
        assert_eq!(majority(["a", "b"].into_iter()).unwrap().value, "b");
    }
}
