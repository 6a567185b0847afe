//! `gpu.pcie.downtrained`: the PCIe link trained below the GPU's maximum generation or width.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct PcieDowntrained;

const DOWNTRAINED: Cause = Cause {
    id: "gpu.pcie.downtrained",
    title: "PCIe link downtrained",
    severity: Severity::Warning,
    detects: "The PCIe link narrower than the GPU's maximum width, or (while the GPU is busy) at a \
              lower generation than its maximum, for several samples.",
    action: "Reseat the GPU or riser and check the slot/retimer; look for AER errors in the \
             kernel log (dmesg | grep -i aer) and check the BIOS PCIe settings. If it persists \
             after a reboot, open an RMA for the board or riser.",
};

static INFO: RuleInfo = RuleInfo {
    id: DOWNTRAINED.id,
    title: DOWNTRAINED.title,
    catalog: &[DOWNTRAINED],
};

/// GPUs drop the link generation when idle to save power; only a busy GPU's gen counts.
const BUSY_PERCENT: u32 = 20;

impl Rule for PcieDowntrained {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let Some(info) = node.inventory.gpu(g.index) else {
                continue;
            };
            let (Some(max_gen), Some(max_width)) =
                (info.pcie_link_gen_max, info.pcie_link_width_max)
            else {
                continue;
            };
            let down = |x: &GpuSample| {
                let busy = x.utilization_gpu_percent.is_some_and(|u| u >= BUSY_PERCENT);
                let width_low = x.pcie_link_width.is_some_and(|w| w < max_width);
                let gen_low = busy && x.pcie_link_gen.is_some_and(|v| v < max_gen);
                width_low || gen_low
            };
            let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, 0, down)
            else {
                continue;
            };
            let (cur_gen, cur_width) =
                (g.pcie_link_gen.unwrap_or(0), g.pcie_link_width.unwrap_or(0));
            let mut f = raise(self, &DOWNTRAINED, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.evidence.push(
                Evidence::new(
                    "pcie_link",
                    format!("gen{cur_gen} x{cur_width}"),
                    format!("max gen{max_gen} x{max_width}"),
                )
                .held_for(dur),
            );
            if let Some(r) = g.pcie_replay_count {
                f.evidence.push(Evidence::new("pcie_replay_count", r, ""));
            }
            let lane = |gen_: u32| gpufleet_model::pcie::lane_kbps(gen_).unwrap_or(0) as f64;
            let cap_now = lane(cur_gen) * cur_width as f64;
            let cap_max = lane(max_gen) * max_width as f64;
            if cap_max > 0.0 && cap_now > 0.0 {
                f.performance_ratio = Some((cap_now / cap_max).min(1.0));
            }
            f.summary = format!(
                "GPU {} ({}) PCIe link runs at gen{cur_gen} x{cur_width} instead of gen{max_gen} x{max_width}: {:.0}% of its host bandwidth",
                g.index,
                info.pci_bus_id,
                100.0 * f.performance_ratio.unwrap_or(0.0),
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("pcie", |_, s| {
        s.gpus[0].pcie_link_gen = Some(3);
        s.gpus[0].pcie_link_width = Some(8);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        // (name, gen, width, util, want)
        let cases: &[(&str, u32, u32, u32, bool)] = &[
            ("healthy", 5, 16, 98, false),
            ("gen3 x8 busy", 3, 8, 98, true),
            ("width low even idle", 5, 8, 0, true),
            ("idle gen drop is power saving", 1, 16, 0, false),
            ("busy gen drop", 4, 16, 90, true),
        ];
        for (name, gen_, width, util, want) in cases {
            let n = node(1, 5, |_, s| {
                s.gpus[0].pcie_link_gen = Some(*gen_);
                s.gpus[0].pcie_link_width = Some(*width);
                s.gpus[0].utilization_gpu_percent = Some(*util);
            });
            let got = PcieDowntrained.check(&n, &FleetContext::default(), NOW);
            assert_eq!(!got.is_empty(), *want, "{name}");
        }
        let n = node(1, 5, |_, s| {
            s.gpus[0].pcie_link_gen = Some(3);
            s.gpus[0].pcie_link_width = Some(8);
        });
        let f = &PcieDowntrained.check(&n, &FleetContext::default(), NOW)[0];
        let r = f.performance_ratio.unwrap();
        assert!(r > 0.12 && r < 0.13, "gen3 x8 is 1/8 of gen5 x16: {r}");
    }
}
