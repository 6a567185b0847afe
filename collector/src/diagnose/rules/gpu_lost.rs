//! `gpu.lost`, `gpu.unreadable`, `gpu.missing`: a GPU stopped answering (fallen off the bus),
//! cannot be read, or vanished from the node.

use gpufleet_model::{Evidence, Finding, GpuStatus, Severity, UnixMs};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo, held};
use crate::fleet::NodeState;

pub struct GpuLost;

const LOST: Cause = Cause {
    id: "gpu.lost",
    title: "GPU lost",
    severity: Severity::Critical,
    detects: "NVML reports the GPU lost: it fell off the bus and answers nothing.",
    action: "Drain the node and reboot it; if the GPU does not come back or falls off again, \
             check its power cables and seating, then open an RMA (Xid 79).",
};

const UNREADABLE: Cause = Cause {
    id: "gpu.unreadable",
    title: "GPU unreadable",
    severity: Severity::Warning,
    detects: "The agent's last read of a GPU in the inventory failed.",
    action: "Check the agent log and `nvidia-smi -i <gpu>` on the node; a GPU that stays \
             unreadable usually needs a GPU reset or reboot.",
};

const MISSING: Cause = Cause {
    id: "gpu.missing",
    title: "GPU missing",
    severity: Severity::Critical,
    detects: "A GPU in the node's inventory is absent from its latest sample, or a GPU the node \
              had before (any earlier inventory) is no longer enumerated at all; a new board at \
              the same PCI address counts as a replacement, not a loss.",
    action: "Check `nvidia-smi -L` and `lspci | grep -i nvidia` on the node; reboot, then RMA if \
             the GPU stays missing.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.lost",
    title: "GPU lost",
    catalog: &[LOST, UNREADABLE, MISSING],
};

impl Rule for GpuLost {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for g in latest.gpus.iter().filter(|g| g.status != GpuStatus::Ok) {
            let since = held(node.history.iter(), |s| {
                s.gpu(g.index).is_some_and(|x| x.status == g.status)
            })
            .map(|r| r.0)
            .unwrap_or(latest.timestamp);
            let lost = g.status == GpuStatus::Lost;
            let mut f = raise(self, if lost { &LOST } else { &UNREADABLE }, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.performance_ratio = Some(0.0);
            f.evidence.push(Evidence::new(
                "status",
                format!("{:?}", g.status).to_lowercase(),
                "ok",
            ));
            if !g.error.is_empty() {
                f.evidence.push(Evidence::new("error", &g.error, ""));
            }
            let bus = node
                .inventory
                .gpu(g.index)
                .map(|i| i.pci_bus_id.clone())
                .unwrap_or_default();
            f.summary = format!(
                "GPU {} {bus} {}: {}",
                g.index,
                if lost {
                    "is lost (fallen off the bus)"
                } else {
                    "cannot be read"
                },
                g.error
            );
            out.push(f);
        }
        // GPUs in the inventory that the latest sample does not mention at all.
        for info in &node.inventory.gpus {
            if latest.gpu(info.index).is_none() && !latest.gpus.is_empty() {
                let mut f = raise(self, &MISSING, node, latest.timestamp);
                f.gpu_index = Some(info.index);
                f.gpu_uuid = info.uuid.clone();
                f.performance_ratio = Some(0.0);
                f.evidence.push(Evidence::new(
                    "inventory",
                    format!("GPU {} {}", info.index, info.pci_bus_id),
                    "present in samples",
                ));
                f.summary = format!(
                    "GPU {} ({}) is in the inventory but no longer reported",
                    info.index, info.pci_bus_id
                );
                out.push(f);
            }
        }
        // GPUs this node had before that it no longer enumerates at all (e.g. dead after a
        // reboot): neither in the inventory nor in the samples.
        for (uuid, info) in &node.known_gpus {
            // Usually still in its place in the inventory: one comparison, not a search.
            let in_place = node
                .inventory
                .gpus
                .get(info.index as usize)
                .is_some_and(|g| &g.uuid == uuid);
            let enumerated = in_place
                || node.inventory.gpus.iter().any(|g| &g.uuid == uuid)
                || latest.gpus.iter().any(|g| &g.uuid == uuid);
            if enumerated {
                continue;
            }
            let mut f = raise(self, &MISSING, node, latest.timestamp);
            f.gpu_index = Some(info.index);
            f.gpu_uuid = uuid.clone();
            f.performance_ratio = Some(0.0);
            f.evidence.push(Evidence::new(
                "known_gpus",
                format!("{uuid} at {} (was GPU {})", info.pci_bus_id, info.index),
                "enumerated by NVML",
            ));
            f.evidence.push(Evidence::new(
                "gpu_count",
                node.inventory.gpus.len(),
                node.known_gpus.len(),
            ));
            f.summary = format!(
                "GPU {} ({}, {uuid}) was part of this node but is no longer enumerated: the node has {} of its {} GPUs",
                info.index,
                info.pci_bus_id,
                node.inventory.gpus.len(),
                node.known_gpus.len()
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    use gpufleet_model::GpuSample;
    vec![
        trigger("gpu lost", |_, s| {
            s.gpus[1] = GpuSample::failed(1, "GPU-1", GpuStatus::Lost, "GPU is lost")
        }),
        trigger("gpu unreadable", |_, s| {
            s.gpus[2] = GpuSample::failed(2, "GPU-2", GpuStatus::Unreadable, "Unknown Error")
        }),
        trigger("gpu missing", |_, s| {
            s.gpus.pop();
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        let n = node(2, 3, |_, _| {});
        assert!(GpuLost.check(&n, &FleetContext::default(), NOW).is_empty());
        let n = node(2, 3, |i, s| {
            if i == 2 {
                s.gpus[1] =
                    gpufleet_model::GpuSample::failed(1, "GPU-1", GpuStatus::Lost, "GPU is lost");
            }
        });
        let f = GpuLost.check(&n, &FleetContext::default(), NOW);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].rule_id.as_str(), f[0].gpu_index, f[0].severity),
            ("gpu.lost", Some(1), Severity::Critical)
        );
        let n = node(2, 3, |_, s| {
            s.gpus.pop();
        });
        let f = GpuLost.check(&n, &FleetContext::default(), NOW);
        assert_eq!(f[0].rule_id, "gpu.missing");
    }

    #[test]
    fn a_gpu_that_vanished_from_enumeration_is_missing_unless_replaced() {
        let mut n = node(2, 3, |_, s| {
            s.gpus.pop();
        });
        for g in &mut n.inventory.gpus {
            g.pci_bus_id = format!("00000000:{:02X}:00.0", 0x18 + g.index);
        }
        let before = n.inventory.clone();
        n.remember_gpus(&before);
        // After a reboot NVML lists one GPU: inventory and samples both lost GPU 1.
        n.inventory.gpus.pop();
        let f = GpuLost.check(&n, &FleetContext::default(), NOW);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            (f[0].rule_id.as_str(), f[0].gpu_index),
            ("gpu.missing", Some(1))
        );
        assert!(f[0].summary.contains("1 of its 2 GPUs"), "{}", f[0].summary);

        // An RMA swap: a new board at the same PCI address replaces the old one.
        let mut swapped = before.gpus[1].clone();
        swapped.uuid = "GPU-new".into();
        n.inventory.gpus.push(swapped);
        let current = n.inventory.clone();
        n.remember_gpus(&current);
        for s in &mut n.history {
            let mut g = s.gpus[0].clone();
            g.index = 1;
            g.uuid = "GPU-new".into();
            s.gpus.push(g);
        }
        assert!(GpuLost.check(&n, &FleetContext::default(), NOW).is_empty());
    }
}
