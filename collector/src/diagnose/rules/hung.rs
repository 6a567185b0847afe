//! `gpu.hung`: the GPU reports full utilization but no process owns it — a kernel that never
//! finishes, left behind by a process that died or a context the driver did not clean up.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise_on_gpu;
use super::window::{Sustained, sustained};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct GpuHung;

const HUNG: Cause = Cause {
    id: "gpu.hung",
    title: "GPU hung",
    severity: Severity::Critical,
    detects: "Utilization at 95 % or more for at least 15 s while no compute process is listed \
              and almost no framebuffer memory is in use.",
    action: "Nothing useful runs on this GPU and no new job can use it. Look for Xids in the \
             kernel log, collect `nvidia-bug-report.sh`, then drain the GPU and reset it \
             (`nvidia-smi -r -i <gpu>`) or reboot the node; if it hangs again, run `dcgmi diag \
             -r 3` and open an RMA.",
};

static INFO: RuleInfo = RuleInfo {
    id: HUNG.id,
    title: HUNG.title,
    catalog: &[HUNG],
};

/// Utilization that means an engine is running.
const BUSY_PERCENT: u32 = 95;
/// Longer than a process takes to exit and free its GPU: utilization falls within seconds
/// of the last process going away.
const HOLD_MS: u64 = 15_000;
/// A GPU that lists no process but holds more memory than this probably has processes the
/// agent cannot see (another PID namespace, no permission), not a hang.
const MEMORY_USED_MAX_RATIO: f64 = 0.10;

fn hung(g: &GpuSample) -> bool {
    g.utilization_gpu_percent.is_some_and(|u| u >= BUSY_PERCENT)
        && g.processes.is_empty()
        && matches!(
            (g.memory_used_bytes, g.memory_total_bytes),
            (Some(used), Some(total)) if (used as f64) < total as f64 * MEMORY_USED_MAX_RATIO
        )
}

impl Rule for GpuHung {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out = Vec::new();
        for Sustained {
            gpu: g,
            since,
            held_ms: dur,
        } in sustained(node, HOLD_MS, hung)
        {
            let mut f = raise_on_gpu(self, &HUNG, node, g, since);
            f.performance_ratio = Some(0.0);
            f.evidence.push(
                Evidence::new(
                    "utilization_gpu_percent",
                    format!("{}%", g.utilization_gpu_percent.unwrap_or(0)),
                    format!("≥ {BUSY_PERCENT}% for {} s", HOLD_MS / 1000),
                )
                .held_for(dur),
            );
            f.evidence
                .push(Evidence::new("processes", 0, "≥ 1 while busy").held_for(dur));
            f.evidence.push(Evidence::new(
                "memory_used_bytes",
                format!("{} MiB", g.memory_used_bytes.unwrap_or(0) >> 20),
                format!("< {:.0}% of total", MEMORY_USED_MAX_RATIO * 100.0),
            ));
            f.summary = format!(
                "GPU {} has been {}% busy for {} s with no process on it: it is hung",
                g.index,
                g.utilization_gpu_percent.unwrap_or(0),
                dur / 1000
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("hung", |_, s| {
        let g = &mut s.gpus[0];
        g.utilization_gpu_percent = Some(100);
        g.memory_total_bytes = Some(80 << 30);
        g.memory_used_bytes = Some(4 << 20);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};
    use gpufleet_model::GpuProcess;

    const TOTAL: u64 = 80 << 30;

    #[test]
    fn cases() {
        // (name, utilization, process listed, memory used, bent samples at the end of 30, want)
        let cases: &[(&str, u32, bool, u64, usize, bool)] = &[
            ("healthy", 98, true, 60 << 30, 30, false),
            ("hung", 100, false, 4 << 20, 30, true),
            ("idle without process", 0, false, 4 << 20, 30, false),
            (
                "busy, processes not visible",
                100,
                false,
                60 << 30,
                30,
                false,
            ),
            ("not long enough", 100, false, 4 << 20, 10, false),
            (
                "one noisy sample does not fire",
                100,
                false,
                4 << 20,
                1,
                false,
            ),
        ];
        for (name, util, process, used, last_n, want) in cases {
            let n = node(2, 30, |i, s| {
                for g in &mut s.gpus {
                    g.memory_total_bytes = Some(TOTAL);
                    g.memory_used_bytes = Some(60 << 30);
                    g.processes = vec![GpuProcess {
                        pid: 100 + g.index,
                        name: "python3".into(),
                        used_memory_bytes: Some(60 << 30),
                    }];
                }
                if i >= 30 - last_n {
                    let g = &mut s.gpus[0];
                    g.utilization_gpu_percent = Some(*util);
                    g.memory_used_bytes = Some(*used);
                    if !process {
                        g.processes.clear();
                    }
                }
            });
            let got = GpuHung.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!((f.rule_id.as_str(), f.gpu_index), ("gpu.hung", Some(0)));
                assert_eq!(f.evidence[0].duration_ms, 29_000);
            }
        }
    }
}
