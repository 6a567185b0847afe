//! The fleet's version matrix for one field: per GPU model and value, how many nodes and GPUs
//! report it, so a rollout's progress is visible at a glance.

use std::collections::BTreeMap;

use gpufleet_model::Selector;
use serde::{Deserialize, Serialize};

use super::fields::{self, Field};
use crate::fleet::NodeState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    pub gpu_model: String,
    /// The value (`n/a` when not reported).
    pub value: String,
    /// Nodes with at least one GPU of this model reporting the value.
    pub nodes: u32,
    /// GPUs of this model reporting it (node-wide fields: every GPU of the model on those
    /// nodes).
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMatrix {
    pub field: String,
    /// By GPU model, then most nodes first.
    pub rows: Vec<VersionRow>,
    /// Nodes looked at.
    pub nodes: u32,
}

/// The matrix of `field` over the nodes `selector` selects.
pub fn matrix(nodes: &[&NodeState], field: &Field, selector: &Selector) -> VersionMatrix {
    // (model, value) -> (nodes, gpus)
    let mut cells: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    let mut looked = 0;
    for n in nodes.iter().filter(|n| selector.matches(&n.labels)) {
        looked += 1;
        // Per (model, value) on this node: GPUs.
        let mut mine: BTreeMap<(String, String), u32> = BTreeMap::new();
        let readings = fields::read(field, &n.inventory, n.latest());
        if n.inventory.gpus.is_empty() {
            for (_, v) in &readings {
                mine.insert((String::new(), shown(v.as_ref())), 0);
            }
        }
        for g in &n.inventory.gpus {
            let v = if field.per_gpu() {
                readings
                    .iter()
                    .find(|(i, _)| *i == Some(g.index))
                    .and_then(|(_, v)| v.as_ref())
            } else {
                readings.first().and_then(|(_, v)| v.as_ref())
            };
            *mine.entry((g.name.clone(), shown(v))).or_default() += 1;
        }
        for (k, gpus) in mine {
            let c = cells.entry(k).or_default();
            c.0 += 1;
            c.1 += gpus;
        }
    }
    let mut rows: Vec<VersionRow> = cells
        .into_iter()
        .map(|((gpu_model, value), (nodes, gpus))| VersionRow {
            gpu_model,
            value,
            nodes,
            gpus,
        })
        .collect();
    rows.sort_by(|a, b| {
        a.gpu_model
            .cmp(&b.gpu_model)
            .then(b.nodes.cmp(&a.nodes))
            .then_with(|| super::version::compare(&b.value, &a.value))
    });
    VersionMatrix {
        field: field.name.to_string(),
        rows,
        nodes: looked,
    }
}

fn shown(v: Option<&fields::Value>) -> String {
    v.map_or_else(|| "n/a".to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fields::field;
    use crate::diagnose::rules::testutil::node;

    #[test]
    fn counts_nodes_and_gpus_per_model_and_value() {
        let mut nodes: Vec<NodeState> = (0..4)
            .map(|i| {
                let mut n = node(8, 1, |_, _| {});
                n.identity.hostname = format!("n{i}");
                n
            })
            .collect();
        nodes[0].inventory.driver.driver_version = "570.86.10".into();
        nodes[1].inventory.gpus[0].vbios_version = "96.00.A5.00.01".into();
        nodes[3].labels = [("pool".to_string(), "spare".to_string())].into();
        let refs: Vec<&NodeState> = nodes.iter().collect();
        let all = Selector::everything();
        let m = matrix(&refs, field("driver").unwrap(), &all);
        let h100 = "NVIDIA H100 80GB HBM3";
        assert_eq!(m.field, "driver_version");
        assert_eq!(
            m.rows,
            [
                VersionRow {
                    gpu_model: h100.into(),
                    value: "550.54.15".into(),
                    nodes: 3,
                    gpus: 24
                },
                VersionRow {
                    gpu_model: h100.into(),
                    value: "570.86.10".into(),
                    nodes: 1,
                    gpus: 8
                },
            ]
        );
        let m = matrix(&refs, field("vbios").unwrap(), &all);
        assert_eq!((m.rows[0].nodes, m.rows[0].gpus), (4, 31));
        assert_eq!(
            (m.rows[1].value.as_str(), m.rows[1].nodes, m.rows[1].gpus),
            ("96.00.A5.00.01", 1, 1)
        );
        let m = matrix(
            &refs,
            field("driver").unwrap(),
            &Selector::parse("pool=spare").unwrap(),
        );
        assert_eq!((m.nodes, m.rows.len()), (1, 1));
        let m = matrix(&refs, field("mig").unwrap(), &all);
        assert_eq!(m.rows[0].value, "n/a");
    }
}
