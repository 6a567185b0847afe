//! `gpu.clocks.*`: clocks held below their maximum for a reason that is neither heat nor the
//! power limit — a hardware slowdown signal, clocks someone set or locked, or a memory clock
//! that stays low while the GPU works.

use gpufleet_model::clock_events::{
    APPLICATIONS_CLOCKS_SETTING, HW_POWER_BRAKE_SLOWDOWN, HW_SLOWDOWN, HW_THERMAL_SLOWDOWN,
    SW_POWER_CAP, SW_THERMAL_SLOWDOWN, names,
};
use gpufleet_model::{Evidence, Finding, GpuInfo, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct ClocksHeldDown;

const HW_SLOWDOWN_CAUSE: Cause = Cause {
    id: "gpu.clocks.hw_slowdown",
    title: "Hardware slowdown",
    severity: Severity::Critical,
    detects: "The HW_SLOWDOWN clock-event bit (0x8) without the power-brake or thermal bits that \
              would explain it, for several samples.",
    action: "The board itself asks for slow clocks (power-supply fault, over-current, or an \
             external slowdown signal): drain the GPU, check the node's PSUs and the GPU's power \
             cables, look at `nvidia-smi -q -d PERFORMANCE`, then reset the GPU or reboot. If it \
             comes back, open an RMA for the board.",
};

const APPLICATIONS: Cause = Cause {
    id: "gpu.clocks.applications",
    title: "Clocks set or locked below max",
    severity: Severity::Warning,
    detects: "The APPLICATIONS_CLOCKS_SETTING bit (0x2) with application clocks or the SM clock \
              below max, or a busy GPU whose SM clock sits at application clocks set below max.",
    action: "Someone set application clocks or locked clocks (`nvidia-smi -ac` / `-lgc`): restore \
             the defaults (`nvidia-smi -rac` and `-rgc`) and find what sets them (a job prolog, an \
             energy-saving policy, a benchmark left behind).",
};

const MEMORY_LOW: Cause = Cause {
    id: "gpu.clocks.memory_low",
    title: "Memory clock below max",
    severity: Severity::Warning,
    detects: "The memory clock more than 5 % below its maximum on a busy GPU, with no thermal or \
              power reason, for several samples.",
    action: "Check for locked memory clocks or application memory clocks (`nvidia-smi -q -d \
             CLOCK`; restore with `nvidia-smi -rmc` / `-rac`) and for a performance state stuck \
             above P0; if neither, reset the GPU and compare with its peers.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.clocks",
    title: "Clocks held below max",
    catalog: &[HW_SLOWDOWN_CAUSE, APPLICATIONS, MEMORY_LOW],
};

/// A GPU counts as busy from this utilization: an idle GPU lowers its clocks on purpose.
const BUSY_PERCENT: u32 = 50;
/// Memory clocks do not boost; a reading this far below max is a lowered clock, not noise.
const MEMORY_CLOCK_RATIO: f64 = 0.95;
/// Bits that the thermal and power rules already explain.
const EXPLAINED: u64 =
    HW_POWER_BRAKE_SLOWDOWN | HW_THERMAL_SLOWDOWN | SW_THERMAL_SLOWDOWN | SW_POWER_CAP;

/// A cause and the per-sample condition behind it.
type Check<'a> = (&'a Cause, &'a dyn Fn(&GpuSample) -> bool);

fn reasons(g: &GpuSample) -> u64 {
    g.clock_event_reasons.unwrap_or(0)
}

fn busy(g: &GpuSample) -> bool {
    g.utilization_gpu_percent.is_some_and(|u| u >= BUSY_PERCENT)
}

fn hw_slowdown(g: &GpuSample) -> bool {
    let r = reasons(g);
    r & HW_SLOWDOWN != 0 && r & EXPLAINED == 0
}

fn applications(g: &GpuSample, max: Option<u32>) -> bool {
    let Some(max) = max else {
        return false;
    };
    let app_low = g.sm_clock_applications_mhz.is_some_and(|a| a < max);
    let sm_low = g.sm_clock_mhz.is_some_and(|c| c < max);
    if reasons(g) & APPLICATIONS_CLOCKS_SETTING != 0 {
        return app_low || sm_low;
    }
    // Some drivers lock clocks without raising the bit; a busy GPU pinned at application
    // clocks below max, with nothing else holding it, is the same thing.
    busy(g)
        && reasons(g) & !APPLICATIONS_CLOCKS_SETTING == 0
        && app_low
        && matches!((g.sm_clock_mhz, g.sm_clock_applications_mhz), (Some(c), Some(a)) if c <= a)
}

fn memory_low(g: &GpuSample, max: Option<u32>) -> bool {
    let Some(max) = max else {
        return false;
    };
    busy(g)
        && reasons(g) & (EXPLAINED | HW_SLOWDOWN) == 0
        && g.memory_clock_mhz
            .is_some_and(|c| (c as f64) < max as f64 * MEMORY_CLOCK_RATIO)
}

impl Rule for ClocksHeldDown {
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
            let sm_max = info.and_then(|i| i.sm_clock_max_mhz);
            let mem_max = info.and_then(|i| i.memory_clock_max_mhz);
            let checks: [Check; 3] = [
                (&HW_SLOWDOWN_CAUSE, &hw_slowdown),
                (&APPLICATIONS, &|x| applications(x, sm_max)),
                (&MEMORY_LOW, &|x| memory_low(x, mem_max)),
            ];
            for (cause, cond) in checks {
                if let Some(Held { since, held_ms }) = sustained_gpu(node, pos, g.index, 0, cond) {
                    out.push(self.report(node, cause, g, info, since, held_ms));
                }
            }
        }
        out
    }
}

impl ClocksHeldDown {
    fn report(
        &self,
        node: &NodeState,
        cause: &Cause,
        g: &GpuSample,
        info: Option<&GpuInfo>,
        since: UnixMs,
        dur: u64,
    ) -> Finding {
        let mut f = raise(self, cause, node, since);
        f.gpu_index = Some(g.index);
        f.gpu_uuid = g.uuid.clone();
        f.evidence.push(
            Evidence::new(
                "clock_event_reasons",
                names(reasons(g)).join(","),
                if cause.id == MEMORY_LOW.id {
                    "no thermal or power reason"
                } else {
                    ""
                },
            )
            .held_for(dur),
        );
        let sm_max = info.and_then(|i| i.sm_clock_max_mhz);
        let mhz = |v: Option<u32>| {
            v.map(|c| format!("{c} MHz"))
                .unwrap_or_else(|| "n/a".into())
        };
        if cause.id == MEMORY_LOW.id {
            let max = info.and_then(|i| i.memory_clock_max_mhz);
            f.evidence.push(
                Evidence::new(
                    "memory_clock_mhz",
                    mhz(g.memory_clock_mhz),
                    format!("< {:.0}% of max {}", MEMORY_CLOCK_RATIO * 100.0, mhz(max)),
                )
                .held_for(dur),
            );
            if let Some(a) = g.memory_clock_applications_mhz {
                f.evidence.push(Evidence::new(
                    "memory_clock_applications_mhz",
                    format!("{a} MHz"),
                    "",
                ));
            }
            if let Some(p) = g.performance_state {
                f.evidence
                    .push(Evidence::new("performance_state", format!("P{p}"), "P0"));
            }
            if let (Some(c), Some(m)) = (g.memory_clock_mhz, max) {
                f.performance_ratio = Some((c as f64 / m as f64).min(1.0));
            }
            f.summary = format!(
                "GPU {} memory clock at {} instead of {} while {}% busy",
                g.index,
                mhz(g.memory_clock_mhz),
                mhz(max),
                g.utilization_gpu_percent.unwrap_or(0)
            );
            return f;
        }
        f.evidence.push(
            Evidence::new(
                "sm_clock_mhz",
                mhz(g.sm_clock_mhz),
                format!("max {}", mhz(sm_max)),
            )
            .held_for(dur),
        );
        if cause.id == APPLICATIONS.id {
            f.evidence.push(Evidence::new(
                "sm_clock_applications_mhz",
                mhz(g.sm_clock_applications_mhz),
                format!("max {}", mhz(sm_max)),
            ));
        }
        if let (Some(c), Some(m)) = (g.sm_clock_mhz, sm_max) {
            f.performance_ratio = Some((c as f64 / m as f64).min(1.0));
        }
        f.summary = format!(
            "GPU {} runs at {} instead of {}: {}",
            g.index,
            mhz(g.sm_clock_mhz),
            mhz(sm_max),
            if cause.id == APPLICATIONS.id {
                format!(
                    "clocks set to {} by application clocks or a clock lock",
                    mhz(g.sm_clock_applications_mhz)
                )
            } else {
                "the board asserts hardware slowdown with no thermal or power-brake reason".into()
            }
        );
        f
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("clocks", |_, s| {
        s.gpus[0].clock_event_reasons = Some(HW_SLOWDOWN);
        s.gpus[0].sm_clock_mhz = Some(990);
        s.gpus[1].clock_event_reasons = Some(APPLICATIONS_CLOCKS_SETTING);
        s.gpus[1].sm_clock_applications_mhz = Some(1380);
        s.gpus[1].sm_clock_mhz = Some(1380);
        s.gpus[2].memory_clock_mhz = Some(1593);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(&mut GpuSample);
        // (name, bend of GPU 1, how many of the last samples are bent, want)
        let cases: &[(&str, Bend, usize, &[&str])] = &[
            ("healthy", |_| {}, 10, &[]),
            (
                "hw slowdown alone",
                |g| {
                    g.clock_event_reasons = Some(HW_SLOWDOWN);
                    g.sm_clock_mhz = Some(990);
                },
                10,
                &["gpu.clocks.hw_slowdown"],
            ),
            (
                "hw slowdown from the power brake is the power rule's",
                |g| {
                    g.clock_event_reasons = Some(HW_SLOWDOWN | HW_POWER_BRAKE_SLOWDOWN);
                    g.sm_clock_mhz = Some(500);
                },
                10,
                &[],
            ),
            (
                "hw slowdown from heat is the thermal rule's",
                |g| g.clock_event_reasons = Some(HW_SLOWDOWN | HW_THERMAL_SLOWDOWN),
                10,
                &[],
            ),
            (
                "one noisy sample does not fire",
                |g| g.clock_event_reasons = Some(HW_SLOWDOWN),
                1,
                &[],
            ),
            (
                "application clocks bit",
                |g| {
                    g.clock_event_reasons = Some(APPLICATIONS_CLOCKS_SETTING);
                    g.sm_clock_applications_mhz = Some(1380);
                    g.sm_clock_mhz = Some(1380);
                },
                10,
                &["gpu.clocks.applications"],
            ),
            (
                "locked below max without the bit",
                |g| {
                    g.sm_clock_applications_mhz = Some(1500);
                    g.sm_clock_mhz = Some(1500);
                },
                10,
                &["gpu.clocks.applications"],
            ),
            (
                "low application clocks but boosting above them is fine",
                |g| g.sm_clock_applications_mhz = Some(1095),
                10,
                &[],
            ),
            (
                "memory clock low while busy",
                |g| g.memory_clock_mhz = Some(1593),
                10,
                &["gpu.clocks.memory_low"],
            ),
            (
                "memory clock low while idle is power saving",
                |g| {
                    g.memory_clock_mhz = Some(405);
                    g.utilization_gpu_percent = Some(0);
                },
                10,
                &[],
            ),
        ];
        for (name, bend, last_n, want) in cases {
            let n = node(2, 10, |i, s| {
                if i >= 10 - last_n {
                    bend(&mut s.gpus[1]);
                }
            });
            let got = ClocksHeldDown.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
            for f in &got {
                assert_eq!(f.gpu_index, Some(1), "{name}");
                assert!(f.performance_ratio.unwrap() < 1.0, "{name}");
                assert_eq!(f.evidence[0].duration_ms, 9_000, "{name}");
            }
        }
    }
}
