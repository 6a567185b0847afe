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
    /// Per GPU product name, per Ethernet port name: how that port looks on the nodes that
    /// have it, against which one node's link down or slower link is judged.
    pub ethernet: HashMap<String, HashMap<String, EthernetPeers>>,
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
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    majority_counted(counts)
}

/// The most common of the counted values (the empty one, unknown, left out); ties go to the
/// larger (usually newer) version string.
fn majority_counted<S: AsRef<str>>(counts: BTreeMap<S, usize>) -> Option<Majority> {
    let counts: Vec<(S, usize)> = counts
        .into_iter()
        .filter(|(v, _)| !v.as_ref().is_empty())
        .collect();
    let total = counts.iter().map(|(_, c)| c).sum();
    let (value, count) = counts
        .into_iter()
        .max_by(|(a, ca), (b, cb)| ca.cmp(cb).then_with(|| a.as_ref().cmp(b.as_ref())))?;
    Some(Majority {
        value: value.as_ref().to_string(),
        count,
        total,
    })
}

impl FleetContext {
    pub fn from_nodes(nodes: &[&NodeState]) -> Self {
        // VBIOS versions counted per model as they are read (each string is read once).
        let mut by_model: Vec<(&str, BTreeMap<&str, usize>)> = Vec::new();
        for n in nodes {
            for g in &n.inventory.gpus {
                *model_slot(&mut by_model, g.name.as_str())
                    .entry(g.vbios_version.as_str())
                    .or_default() += 1;
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
                .filter_map(|(m, v)| Some((m.to_string(), majority_counted(v)?)))
                .collect(),
            peers: peers::by_model(nodes),
            ib_ports: ib_port_majorities(nodes),
            ethernet: ethernet_peers(nodes),
            nodes: nodes.len(),
            policy: None,
        }
    }
}

/// The entry of `model` in a short list of models (a fleet has a handful): found by
/// comparing names, cheaper than hashing one per GPU.
pub(crate) fn model_slot<'a, 'm, T: Default>(
    models: &'a mut Vec<(&'m str, T)>,
    model: &'m str,
) -> &'a mut T {
    let at = match models.iter().position(|(m, _)| *m == model) {
        Some(at) => at,
        None => {
            models.push((model, T::default()));
            models.len() - 1
        }
    };
    &mut models[at].1
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
    // Counted per model as numbers (no string per node); judged as `majority` judges strings.
    let mut counts: HashMap<&str, BTreeMap<usize, usize>> = HashMap::new();
    for n in nodes {
        let c = ib_port_count(n);
        if let (Some(model), true) = (gpu_model(n), c > 0) {
            *counts.entry(model).or_default().entry(c).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter_map(|(m, by_count)| {
            let by_text: BTreeMap<String, usize> = by_count
                .into_iter()
                .map(|(c, k)| (c.to_string(), k))
                .collect();
            Some((m.to_string(), majority_counted(by_text)?))
        })
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

fn ethernet_peers(nodes: &[&NodeState]) -> HashMap<String, HashMap<String, EthernetPeers>> {
    // Keyed by borrowed names while counting: no allocation per node and port.
    /// A port's peers so far, and how many nodes run it at each speed.
    type Seen = (EthernetPeers, BTreeMap<u64, usize>);
    let mut acc: HashMap<(&str, &str), Seen> = HashMap::new();
    for n in nodes {
        let (Some(model), Some(latest)) = (gpu_model(n), n.latest()) else {
            continue;
        };
        for e in &latest.host.ethernet {
            let entry = acc.entry((model, e.name.as_str())).or_default();
            entry.0.nodes += 1;
            if e.is_up() {
                entry.0.up += 1;
                if let Some(speed) = e.speed_mbps {
                    *entry.1.entry(speed).or_default() += 1;
                }
            }
        }
    }
    let mut out: HashMap<String, HashMap<String, EthernetPeers>> = HashMap::new();
    for ((model, name), (mut peers, speeds)) in acc {
        let total = speeds.values().sum();
        // Ties go to the faster speed.
        peers.speed = speeds
            .into_iter()
            .max_by_key(|(speed, count)| (*count, *speed))
            .map(|(speed, count)| Majority {
                value: if speed == 0 {
                    String::new()
                } else {
                    speed.to_string()
                },
                count,
                total,
            });
        out.entry(model.to_string())
            .or_default()
            .insert(name.to_string(), peers);
    }
    out
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
