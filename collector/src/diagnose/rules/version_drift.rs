//! `drift.fleet.driver_version`, `drift.fleet.kernel_version`, `drift.fleet.vbios_version`: a node (or GPU)
//! runs a version that differs from the rest of the fleet.

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use crate::diagnose::context::Majority;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct VersionDrift;

const DRIVER: Cause = Cause {
    id: "drift.fleet.driver_version",
    title: "Driver version differs from the fleet",
    severity: Severity::Warning,
    detects: "The node's driver version differs from the version more than half of the fleet's \
              nodes run.",
    action: "Drain the node and install the fleet's standard driver (or roll the fleet forward \
             deliberately); mixed drivers break NCCL jobs and make results hard to compare.",
};

const KERNEL: Cause = Cause {
    id: "drift.fleet.kernel_version",
    title: "Kernel version differs from the fleet",
    severity: Severity::Warning,
    detects: "The node's kernel differs from the kernel more than half of the fleet's nodes run.",
    action: "Reinstall the fleet's standard kernel (and rebuild the NVIDIA module for it), or \
             schedule the node for re-imaging.",
};

const VBIOS: Cause = Cause {
    id: "drift.fleet.vbios_version",
    title: "VBIOS differs from GPUs of the same model",
    severity: Severity::Warning,
    detects: "A GPU's VBIOS differs from the version more than half of the fleet's GPUs of the \
              same model run.",
    action: "Flash the fleet's standard VBIOS with the vendor's tool during maintenance, or \
             replace the board if it came back from RMA with different firmware.",
};

static INFO: RuleInfo = RuleInfo {
    id: "drift.fleet",
    title: "Version drift from the fleet",
    catalog: &[DRIVER, KERNEL, VBIOS],
};

fn off(m: &Option<Majority>, v: &str) -> Option<Majority> {
    let m = m.as_ref()?;
    // Only judge against a real majority: more than half of the fleet agrees.
    (m.total >= 2 && m.count * 2 > m.total && !v.is_empty() && v != m.value).then(|| m.clone())
}

impl Rule for VersionDrift {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out = Vec::new();
        let inv = &node.inventory;
        let since = node.first_seen.max(inv.read_at);
        let mut push =
            |cause: &Cause, field: &str, value: &str, m: &Majority, gpu: Option<(u32, &str)>| {
                let mut f = raise(self, cause, node, since);
                if let Some((i, uuid)) = gpu {
                    f.gpu_index = Some(i);
                    f.gpu_uuid = uuid.into();
                }
                f.evidence.push(Evidence::new(
                    field,
                    value,
                    format!("fleet majority {} ({} of {})", m.value, m.count, m.total),
                ));
                f.summary = format!(
                    "{}{field} is {value} while {} of {} {} run {}",
                    gpu.map(|(i, _)| format!("GPU {i} ")).unwrap_or_default(),
                    m.count,
                    m.total,
                    if gpu.is_some() {
                        "GPUs of this model"
                    } else {
                        "nodes"
                    },
                    m.value
                );
                out.push(f);
            };
        if let Some(m) = off(&fleet.driver, &inv.driver.driver_version) {
            push(
                &DRIVER,
                "driver_version",
                &inv.driver.driver_version,
                &m,
                None,
            );
        }
        if let Some(m) = off(&fleet.kernel, &inv.host.kernel_version) {
            push(
                &KERNEL,
                "kernel_version",
                &inv.host.kernel_version,
                &m,
                None,
            );
        }
        for g in &inv.gpus {
            if let Some(m) = off(&fleet.vbios.get(&g.name).cloned(), &g.vbios_version) {
                push(
                    &VBIOS,
                    "vbios_version",
                    &g.vbios_version,
                    &m,
                    Some((g.index, &g.uuid)),
                );
            }
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    // Off from the other triggers, which run the fleet's versions.
    let mut n = super::testutil::trigger("version drift", |_, _| {});
    let inv = &mut n.1.inventory;
    inv.gpus[1].vbios_version = "96.00.61.00.01".into();
    inv.driver.driver_version = "535.161.08".into();
    inv.host.kernel_version = "6.8.0-31-generic".into();
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        let fleet_of = |drivers: &[&str]| -> Vec<NodeState> {
            drivers
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut n = node(2, 1, |_, _| {});
                    n.identity.hostname = format!("n{i}");
                    n.inventory.driver.driver_version = d.to_string();
                    n
                })
                .collect()
        };
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("uniform", &["550", "550", "550"], &[]),
            ("one off", &["550", "550", "535"], &["n2"]),
            ("no majority", &["550", "535"], &[]),
        ];
        for (name, drivers, want) in cases {
            let nodes = fleet_of(drivers);
            let ctx = FleetContext::from_nodes(&nodes.iter().collect::<Vec<_>>());
            let got: Vec<String> = nodes
                .iter()
                .flat_map(|n| VersionDrift.check(n, &ctx, NOW))
                .map(|f| f.node)
                .collect();
            assert_eq!(got, *want, "{name}");
        }
        let mut nodes = fleet_of(&["550", "550", "550"]);
        nodes[1].inventory.gpus[1].vbios_version = "96.00.61.00.01".into();
        let ctx = FleetContext::from_nodes(&nodes.iter().collect::<Vec<_>>());
        let f = VersionDrift.check(&nodes[1], &ctx, NOW);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].rule_id.as_str(), f[0].gpu_index),
            ("drift.fleet.vbios_version", Some(1))
        );
    }
}
