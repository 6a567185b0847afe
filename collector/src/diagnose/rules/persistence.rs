//! `gpu.persistence.off`: persistence mode is off, so the driver tears the GPU down whenever no
//! process holds it and sets it up again (seconds per GPU) for the next one.
//!
//! When the node's latest sample says `nvidia-persistenced` is not running, this rule stays
//! silent: `driver.persistenced_down` (`driver_stack.rs`) names the daemon once for the node,
//! with these GPUs as its evidence.

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct PersistenceOff;

const OFF: Cause = Cause {
    id: "gpu.persistence.off",
    title: "Persistence mode off",
    severity: Severity::Warning,
    detects: "The inventory reports persistence mode off for a GPU.",
    action: "Enable persistence through the `nvidia-persistenced` service (the supported way; \
             `nvidia-smi -pm 1` does not survive a reboot) and fix the node image so it stays \
             on. Until then every job start and every NVML query on an idle GPU pays the \
             driver's re-initialisation (seconds per GPU).",
};

static INFO: RuleInfo = RuleInfo {
    id: OFF.id,
    title: OFF.title,
    catalog: &[OFF],
};

impl Rule for PersistenceOff {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let inv = &node.inventory;
        if node
            .latest()
            .and_then(|s| s.host.driver_daemons)
            .is_some_and(|d| !d.persistenced)
        {
            return vec![];
        }
        // The inventory is read, not sampled: it has no noise to hold against.
        let since = node.first_seen.max(inv.read_at);
        inv.gpus
            .iter()
            .filter(|g| g.persistence_mode == Some(false))
            .map(|g| {
                let mut f = raise(self, &OFF, node, since);
                f.gpu_index = Some(g.index);
                f.gpu_uuid = g.uuid.clone();
                f.evidence
                    .push(Evidence::new("persistence_mode", "off", "on"));
                f.summary = format!(
                    "GPU {} ({}) runs with persistence mode off: the driver re-initialises it for every new process",
                    g.index, g.pci_bus_id
                );
                f
            })
            .collect()
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("persistence off", |_, _| {});
    n.1.inventory.gpus[0].persistence_mode = Some(false);
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        // (name, persistence of GPU 0 and GPU 1, GPUs reported)
        type Case = (&'static str, [Option<bool>; 2], &'static [u32]);
        let cases: &[Case] = &[
            ("healthy", [Some(true), Some(true)], &[]),
            ("unknown is not off", [None, None], &[]),
            ("one off", [Some(true), Some(false)], &[1]),
        ];
        let daemon_down = gpufleet_model::DriverDaemons {
            persistenced: false,
            fabricmanager: false,
        };
        for (name, modes, want) in cases {
            let mut n = node(2, 1, |_, _| {});
            for (g, m) in n.inventory.gpus.iter_mut().zip(modes) {
                g.persistence_mode = *m;
            }
            let got = PersistenceOff.check(&n, &FleetContext::default(), NOW);
            let gpus: Vec<u32> = got.iter().filter_map(|f| f.gpu_index).collect();
            assert_eq!(gpus, *want, "{name}");
            assert!(got.iter().all(|f| f.rule_id == "gpu.persistence.off"));
            // The daemon down: driver.persistenced_down speaks for the node instead.
            for s in &mut n.history {
                s.host.driver_daemons = Some(daemon_down);
            }
            let got = PersistenceOff.check(&n, &FleetContext::default(), NOW);
            assert!(got.is_empty(), "{name}: {got:?}");
        }
    }
}
