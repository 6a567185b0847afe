//! `gpu.power.sw_cap` / `gpu.power.hw_brake`: clocks held down by the power limit or an
//! external power brake.

use gpufleet_model::clock_events::{HW_POWER_BRAKE_SLOWDOWN, SW_POWER_CAP};
use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct PowerLimited;

const HW_BRAKE: Cause = Cause {
    id: "gpu.power.hw_brake",
    title: "Hardware power brake",
    severity: Severity::Critical,
    detects: "The HW_POWER_BRAKE_SLOWDOWN clock-event bit (0x80) for several samples: an external \
              power-brake signal holds the clocks very low.",
    action: "The board's external power-brake signal is asserted: check the PSUs, power cables \
             and rack power capping (BMC/PDU) of this node.",
};

const SW_CAP: Cause = Cause {
    id: "gpu.power.sw_cap",
    title: "Software power cap",
    severity: Severity::Warning,
    detects: "The SW_POWER_CAP clock-event bit (0x4) with the SM clock below 90 % of max for \
              several samples: the power limit costs real performance.",
    action: "If the enforced limit is below the board default, find who lowered it (`nvidia-smi \
             -q -d POWER`) and restore the fleet's standard limit; otherwise the workload draws \
             the full limit — compare with peers of the same model and check this GPU's power \
             delivery and cooling.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.power",
    title: "Power-limited clocks",
    catalog: &[HW_BRAKE, SW_CAP],
};

/// A busy GPU at its power cap commonly runs a few percent under max clock; below this ratio
/// the cap costs real performance.
const CAP_CLOCK_RATIO: f64 = 0.90;

impl Rule for PowerLimited {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let info = node.inventory.gpu(g.index);
            let max_clock = info.and_then(|i| i.sm_clock_max_mhz);
            let ratio_of =
                |x: &GpuSample| -> Option<f64> { Some(x.sm_clock_mhz? as f64 / max_clock? as f64) };
            let reasons = |x: &GpuSample| x.clock_event_reasons.unwrap_or(0);
            let brake = |x: &GpuSample| reasons(x) & HW_POWER_BRAKE_SLOWDOWN != 0;
            let cap = |x: &GpuSample| {
                reasons(x) & SW_POWER_CAP != 0 && ratio_of(x).is_some_and(|r| r < CAP_CLOCK_RATIO)
            };
            // A brake on now is judged as a brake only, even while it has not held long enough.
            let (cause, run) = if brake(g) {
                (&HW_BRAKE, sustained_gpu(node, pos, g.index, 0, brake))
            } else if cap(g) {
                (&SW_CAP, sustained_gpu(node, pos, g.index, 0, cap))
            } else {
                continue;
            };
            let Some(Held {
                since,
                held_ms: dur,
            }) = run
            else {
                continue;
            };
            let mut f = raise(self, cause, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.evidence.push(
                Evidence::new(
                    "clock_event_reasons",
                    gpufleet_model::clock_events::names(reasons(g)).join(","),
                    "",
                )
                .held_for(dur),
            );
            if let (Some(p), Some(l)) =
                (g.power_usage_milliwatts, g.power_limit_enforced_milliwatts)
            {
                let default = info.and_then(|i| i.power_limit_default_milliwatts);
                f.evidence.push(Evidence::new(
                    "power_usage_milliwatts",
                    format!("{:.0} W", p as f64 / 1000.0),
                    format!(
                        "enforced limit {:.0} W{}",
                        l as f64 / 1000.0,
                        default
                            .map(|d| format!(", default {:.0} W", d as f64 / 1000.0))
                            .unwrap_or_default()
                    ),
                ));
            }
            if let (Some(c), Some(m)) = (g.sm_clock_mhz, max_clock) {
                f.evidence.push(Evidence::new(
                    "sm_clock_mhz",
                    format!("{c} MHz"),
                    format!("max {m} MHz"),
                ));
                f.performance_ratio = Some((c as f64 / m as f64).min(1.0));
            }
            let lowered = match (
                g.power_limit_enforced_milliwatts,
                info.and_then(|i| i.power_limit_default_milliwatts),
            ) {
                (Some(l), Some(d)) => l < d * 95 / 100,
                _ => false,
            };
            f.summary = format!(
                "GPU {} runs at {} instead of {}: {}{}",
                g.index,
                g.sm_clock_mhz
                    .map(|c| format!("{c} MHz"))
                    .unwrap_or("reduced clocks".into()),
                max_clock
                    .map(|c| format!("{c} MHz"))
                    .unwrap_or("its max".into()),
                cause.title.to_lowercase(),
                if lowered {
                    " (power limit set below the default)"
                } else {
                    ""
                }
            );
            if cause.id == SW_CAP.id {
                f.action = if lowered {
                    "The power limit was lowered below the board default: find who set it \
                     (nvidia-smi -q -d POWER) and restore the fleet's standard limit."
                } else {
                    "The workload draws the full power limit; if peers of the same model are not \
                     capped, check this GPU's power delivery and cooling."
                }
                .into();
            }
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("power", |_, s| {
        s.gpus[0].clock_event_reasons =
            Some(HW_POWER_BRAKE_SLOWDOWN | gpufleet_model::clock_events::HW_SLOWDOWN);
        s.gpus[0].sm_clock_mhz = Some(500);
        s.gpus[1].clock_event_reasons = Some(SW_POWER_CAP);
        s.gpus[1].sm_clock_mhz = Some(1400);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};
    use gpufleet_model::clock_events::HW_SLOWDOWN;

    #[test]
    fn cases() {
        // (name, reason bits, sm clock, enforced limit W, want)
        let cases: &[(&str, u64, u32, u32, &[&str])] = &[
            ("healthy", 0, 1980, 700, &[]),
            (
                "cap but full clocks is normal",
                SW_POWER_CAP,
                1950,
                700,
                &[],
            ),
            (
                "cap costing clocks",
                SW_POWER_CAP,
                1400,
                400,
                &["gpu.power.sw_cap"],
            ),
            (
                "brake",
                HW_POWER_BRAKE_SLOWDOWN | HW_SLOWDOWN,
                600,
                700,
                &["gpu.power.hw_brake"],
            ),
        ];
        for (name, bits, clock, limit, want) in cases {
            let n = node(1, 5, |_, s| {
                s.gpus[0].clock_event_reasons = Some(*bits);
                s.gpus[0].sm_clock_mhz = Some(*clock);
                s.gpus[0].power_limit_enforced_milliwatts = Some(limit * 1000);
            });
            let got = PowerLimited.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
        }
        let n = node(1, 5, |_, s| {
            s.gpus[0].clock_event_reasons = Some(SW_POWER_CAP);
            s.gpus[0].sm_clock_mhz = Some(1400);
            s.gpus[0].power_limit_enforced_milliwatts = Some(400_000);
        });
        let f = &PowerLimited.check(&n, &FleetContext::default(), NOW)[0];
        assert!(f.summary.contains("below the default"), "{}", f.summary);
    }
}
