//! `gpu.thermal.hw_slowdown` / `gpu.thermal.sw_slowdown`: clocks held down because the GPU is
//! too hot.

use gpufleet_model::clock_events::{HW_THERMAL_SLOWDOWN, SW_THERMAL_SLOWDOWN};
use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct ThermalSlowdown;

const ACTION: &str = "Check the chassis airflow and fans, inlet temperature and blocked filters; \
                      compare with neighbouring nodes in the rack. If only this GPU is hot, \
                      reseat it or check its heatsink/thermal paste.";

const HW: Cause = Cause {
    id: "gpu.thermal.hw_slowdown",
    title: "Hardware thermal slowdown",
    severity: Severity::Critical,
    detects: "The HW_THERMAL_SLOWDOWN clock-event bit (0x40) for several samples: the GPU reached \
              its slowdown temperature and the hardware cut its clocks hard.",
    action: ACTION,
};

const SW: Cause = Cause {
    id: "gpu.thermal.sw_slowdown",
    title: "Software thermal slowdown",
    severity: Severity::Warning,
    detects: "The SW_THERMAL_SLOWDOWN clock-event bit (0x20) for several samples: the GPU is above \
              its maximum operating temperature and the driver lowers its clocks.",
    action: ACTION,
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.thermal",
    title: "Thermal slowdown",
    catalog: &[HW, SW],
};

impl Rule for ThermalSlowdown {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let Some(reasons) = g.clock_event_reasons else {
                continue;
            };
            let (bit, cause) = if reasons & HW_THERMAL_SLOWDOWN != 0 {
                (HW_THERMAL_SLOWDOWN, &HW)
            } else if reasons & SW_THERMAL_SLOWDOWN != 0 {
                (SW_THERMAL_SLOWDOWN, &SW)
            } else {
                continue;
            };
            // The bit the GPU shows now must have held, not just some thermal bit.
            let on =
                |x: &gpufleet_model::GpuSample| x.clock_event_reasons.is_some_and(|r| r & bit != 0);
            let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, 0, on)
            else {
                continue;
            };
            let info = node.inventory.gpu(g.index);
            let max_clock = info.and_then(|i| i.sm_clock_max_mhz);
            let slowdown = info.and_then(|i| i.temperature_slowdown_celsius);
            let mut f = raise(self, cause, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.evidence.push(
                Evidence::new(
                    "clock_event_reasons",
                    gpufleet_model::clock_events::names(reasons).join(","),
                    "",
                )
                .held_for(dur),
            );
            if let Some(t) = g.temperature_gpu_celsius {
                f.evidence.push(Evidence::new(
                    "temperature_gpu_celsius",
                    format!("{t} °C"),
                    slowdown
                        .map(|s| format!("slowdown at {s} °C"))
                        .unwrap_or_default(),
                ));
            }
            if let Some(t) = g.temperature_memory_celsius {
                f.evidence.push(Evidence::new(
                    "temperature_memory_celsius",
                    format!("{t} °C"),
                    "",
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
            f.summary = format!(
                "GPU {} runs at {} instead of {} because of {}; GPU at {}",
                g.index,
                g.sm_clock_mhz
                    .map(|c| format!("{c} MHz"))
                    .unwrap_or("reduced clocks".into()),
                max_clock
                    .map(|c| format!("{c} MHz"))
                    .unwrap_or("its max".into()),
                cause.title.to_lowercase(),
                g.temperature_gpu_celsius
                    .map(|t| format!("{t} °C"))
                    .unwrap_or("unknown temperature".into()),
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("thermal", |_, s| {
        s.gpus[0].clock_event_reasons =
            Some(HW_THERMAL_SLOWDOWN | gpufleet_model::clock_events::HW_SLOWDOWN);
        s.gpus[1].clock_event_reasons = Some(SW_THERMAL_SLOWDOWN);
        for g in &mut s.gpus[..2] {
            g.temperature_gpu_celsius = Some(88);
            g.sm_clock_mhz = Some(1200);
        }
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        let cases: &[(&str, u64, usize, &[&str])] = &[
            ("healthy", 0, 10, &[]),
            (
                "hw thermal",
                HW_THERMAL_SLOWDOWN,
                10,
                &["gpu.thermal.hw_slowdown"],
            ),
            (
                "sw thermal",
                SW_THERMAL_SLOWDOWN,
                10,
                &["gpu.thermal.sw_slowdown"],
            ),
            (
                "one noisy sample does not fire",
                HW_THERMAL_SLOWDOWN,
                1,
                &[],
            ),
            ("idle bit is not thermal", 0x1, 10, &[]),
        ];
        for (name, bits, last_n, want) in cases {
            let n = node(2, 10, |i, s| {
                if i >= 10 - last_n {
                    s.gpus[1].clock_event_reasons = Some(*bits);
                    s.gpus[1].sm_clock_mhz = Some(1200);
                    s.gpus[1].temperature_gpu_celsius = Some(88);
                }
            });
            let got = ThermalSlowdown.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
            if let Some(f) = got.first() {
                assert_eq!(f.gpu_index, Some(1));
                assert!((f.performance_ratio.unwrap() - 1200.0 / 1980.0).abs() < 1e-9);
                assert!(f.summary.contains("1200 MHz"), "{}", f.summary);
            }
        }
    }
}
