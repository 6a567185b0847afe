//! `gpu.pcie.replays`: the PCIe replay counter keeps rising — the link retransmits packets it
//! received corrupted, which costs bandwidth and often precedes the link failing outright.

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use super::window::{Recent, gpu_at};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct PcieReplays;

const REPLAYS: Cause = Cause {
    id: "gpu.pcie.replays",
    title: "PCIe replays rising",
    severity: Severity::Warning,
    detects: "The PCIe replay counter rising faster than 8 per minute over the last 5 minutes, \
              in several separate sample intervals.",
    action: "Look for AER errors in the kernel log (`dmesg | grep -i aer`); reseat the GPU or \
             riser and check the slot, retimer and cabling at the next drain. If the rate stays \
             high after reseating, open an RMA for the board or riser.",
};

static INFO: RuleInfo = RuleInfo {
    id: REPLAYS.id,
    title: REPLAYS.title,
    catalog: &[REPLAYS],
};

/// Replays per minute above which a link is unhealthy: the limit NVIDIA's driver team
/// recommends, which DCGM's PCIe health watch also uses.
const REPLAYS_PER_MINUTE: f64 = 8.0;

impl Rule for PcieReplays {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let recent = Recent::of(node);
        if recent.counters_still() {
            return vec![];
        }
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let Some(rise) = recent.growth(|s| gpu_at(s, pos, g.index)?.pcie_replay_count) else {
                continue;
            };
            if !rise.sustained(REPLAYS_PER_MINUTE, MIN_SAMPLES) {
                continue;
            }
            let dur = rise.rising_for_ms(latest.timestamp);
            let mut f = raise(self, &REPLAYS, node, rise.first_rise);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.evidence.push(
                Evidence::new(
                    "pcie_replay_count rate",
                    format!("{:.0}/min", rise.per_minute()),
                    format!("{REPLAYS_PER_MINUTE:.0}/min"),
                )
                .held_for(dur),
            );
            f.evidence.push(Evidence::new(
                "pcie_replay_count increase",
                format!("+{} in {} s", rise.delta, rise.span_ms / 1000),
                "",
            ));
            f.evidence
                .push(Evidence::new("pcie_replay_count", rise.latest, ""));
            if let (Some(gen_), Some(width)) = (g.pcie_link_gen, g.pcie_link_width) {
                f.evidence.push(Evidence::new(
                    "pcie_link",
                    format!("gen{gen_} x{width}"),
                    "",
                ));
            }
            let bus = node
                .inventory
                .gpu(g.index)
                .map(|i| i.pci_bus_id.as_str())
                .unwrap_or("");
            f.summary = format!(
                "GPU {} {bus} PCIe link replayed {} packets in {} s ({:.0}/min, limit {REPLAYS_PER_MINUTE:.0}/min)",
                g.index,
                rise.delta,
                rise.span_ms / 1000,
                rise.per_minute()
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("pcie replays", |i, s| {
        s.gpus[1].pcie_replay_count = Some(i as u64 * 2);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        // (name, replay count of GPU 2 in sample i of 60, want)
        type Count = fn(usize) -> u64;
        let cases: &[(&str, Count, bool)] = &[
            ("healthy", |_| 0, false),
            ("old replays, not rising", |_| 4_000, false),
            ("steady 60/min", |i| i as u64, true),
            ("slow 4/min", |i| i as u64 / 15, false),
            (
                "one burst is one glitch",
                |i| if i >= 30 { 500 } else { 0 },
                false,
            ),
            (
                "a counter reset is not a rise",
                |i| if i >= 30 { 0 } else { 10_000 },
                false,
            ),
        ];
        for (name, count, want) in cases {
            let n = node(3, 60, |i, s| s.gpus[2].pcie_replay_count = Some(count(i)));
            let got = PcieReplays.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(
                    (f.rule_id.as_str(), f.gpu_index),
                    ("gpu.pcie.replays", Some(2))
                );
                assert_eq!(f.evidence[0].value, "60/min", "{name}");
                assert_eq!(f.evidence[1].value, "+59 in 59 s", "{name}");
            }
        }
    }
}
