//! `gpu.fan.failure`: on a board with its own fan, the fan is stopped, too slow or stuck while
//! the GPU is hotter than its maximum operating temperature.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct FanFailure;

const FAILURE: Cause = Cause {
    id: "gpu.fan.failure",
    title: "GPU fan failure",
    severity: Severity::Critical,
    detects: "On boards with fans: the GPU above its maximum operating temperature while its fan \
              is below 50 %, or stuck at one speed as the temperature keeps rising.",
    action: "Drain the GPU before it throttles further or shuts down. Check that nobody set a \
             manual fan speed, then the fan and its connector; a fan on the board itself means \
             replacing the board (RMA).",
};

static INFO: RuleInfo = RuleInfo {
    id: FAILURE.id,
    title: FAILURE.title,
    catalog: &[FAILURE],
};

/// A working fan controller runs well above this once the GPU passes its maximum operating
/// temperature (automatic fan curves approach 100 % there).
const FAN_HOT_MIN_PERCENT: u32 = 50;
/// A fan reading that does not move while the temperature climbs this much is stuck.
const STUCK_TEMP_RISE_C: i32 = 3;
/// A fan at full speed reads constant because it cannot go higher; that is not stuck.
const FAN_FULL_PERCENT: u32 = 95;

impl Rule for FanFailure {
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
            // Passively cooled boards (SXM, most datacenter PCIe cards) have no fan to fail.
            if info.fan_count == Some(0) {
                continue;
            }
            let (Some(max_op), Some(fan), Some(temp)) = (
                info.temperature_max_operating_celsius,
                g.fan_speed_percent,
                g.temperature_gpu_celsius,
            ) else {
                continue;
            };
            if temp < max_op {
                continue;
            }
            let hot = |x: &GpuSample| x.temperature_gpu_celsius.is_some_and(|t| t >= max_op);
            let low = sustained_gpu(node, pos, g.index, 0, |x| {
                hot(x) && x.fan_speed_percent.is_some_and(|f| f < FAN_HOT_MIN_PERCENT)
            });
            // Stuck: the same reading all through the hot run while the temperature climbed.
            let mut coolest = temp;
            let stuck = sustained_gpu(node, pos, g.index, 0, |x| {
                let same = hot(x) && x.fan_speed_percent == Some(fan);
                if same {
                    coolest = coolest.min(x.temperature_gpu_celsius.unwrap_or(temp));
                }
                same
            })
            .filter(|_| fan < FAN_FULL_PERCENT && temp - coolest >= STUCK_TEMP_RISE_C);
            let Some(Held {
                since,
                held_ms: dur,
            }) = low.or(stuck)
            else {
                continue;
            };
            let mut f = raise(self, &FAILURE, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            f.evidence.push(
                Evidence::new(
                    "fan_speed_percent",
                    format!("{fan}%"),
                    if low.is_some() {
                        format!("≥ {FAN_HOT_MIN_PERCENT}% when hot")
                    } else {
                        "changing with temperature".into()
                    },
                )
                .held_for(dur),
            );
            f.evidence.push(
                Evidence::new(
                    "temperature_gpu_celsius",
                    format!("{temp} °C"),
                    format!("max operating {max_op} °C"),
                )
                .held_for(dur),
            );
            if low.is_none() {
                f.evidence.push(Evidence::new(
                    "temperature rise with the fan unchanged",
                    format!("{} °C", temp - coolest),
                    format!("{STUCK_TEMP_RISE_C} °C"),
                ));
            }
            f.summary = format!(
                "GPU {} is at {temp} °C (max operating {max_op} °C) while its fan {}",
                g.index,
                if fan == 0 {
                    "is stopped".to_string()
                } else if low.is_some() {
                    format!("runs at only {fan}%")
                } else {
                    format!("stays stuck at {fan}%")
                }
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("fan", |_, s| {
        s.gpus[0].fan_speed_percent = Some(0);
        s.gpus[0].temperature_gpu_celsius = Some(90);
    });
    // Only a board with a fan can have a failed one.
    n.1.inventory.gpus[0].fan_count = Some(1);
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        // (name, fan count, (fan %, temperature °C) of GPU 0 in sample i of 10, want)
        type Reading = fn(usize) -> (u32, i32);
        let cases: &[(&str, Option<u32>, Reading, bool)] = &[
            ("healthy", Some(1), |_| (60, 70), false),
            (
                "hot with the fan at full speed",
                Some(1),
                |_| (100, 86),
                false,
            ),
            ("stopped fan, hot", Some(1), |_| (0, 90), true),
            ("stopped fan but cool", Some(1), |_| (0, 60), false),
            ("no fans on this board", Some(0), |_| (0, 90), false),
            (
                "stuck fan while heating",
                Some(1),
                |i| (60, 85 + i as i32),
                true,
            ),
            (
                "one noisy sample does not fire",
                Some(1),
                |i| if i == 9 { (0, 90) } else { (60, 70) },
                false,
            ),
        ];
        for (name, fans, reading, want) in cases {
            let mut n = node(1, 10, |i, s| {
                let (fan, t) = reading(i);
                s.gpus[0].fan_speed_percent = Some(fan);
                s.gpus[0].temperature_gpu_celsius = Some(t);
            });
            n.inventory.gpus[0].fan_count = *fans;
            let got = FanFailure.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(
                    (f.rule_id.as_str(), f.gpu_index),
                    ("gpu.fan.failure", Some(0))
                );
            }
        }
    }
}
