//! `gpu.idle.with_process`: a process holds the GPU (and its memory) but runs nothing on it —
//! a job stuck waiting (data, a collective, a lock), or an allocation nobody uses.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise_on_gpu;
use super::window::{Sustained, sustained};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct IdleWithProcess;

const IDLE: Cause = Cause {
    id: "gpu.idle.with_process",
    title: "GPU idle with a process",
    severity: Severity::Warning,
    detects: "A compute process listed on the GPU while utilization stays at 0 % for at least \
              30 s.",
    action: "Find the process (`nvidia-smi --query-compute-apps=pid,process_name --format=csv`) \
             and what it waits for: a stuck data loader, a hung collective on another GPU or \
             node (`py-spy dump --pid <pid>`), or an interactive session holding the GPU. \
             Restart the job or release the GPU.",
};

static INFO: RuleInfo = RuleInfo {
    id: IDLE.id,
    title: IDLE.title,
    catalog: &[IDLE],
};

/// Long enough that pauses of a working job (checkpointing, evaluation, data reloads of a few
/// seconds) do not count.
const HOLD_MS: u64 = 30_000;

fn idle_with_process(g: &GpuSample) -> bool {
    !g.processes.is_empty() && g.utilization_gpu_percent == Some(0)
}

impl Rule for IdleWithProcess {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out = Vec::new();
        for Sustained {
            gpu: g,
            since,
            held_ms: dur,
        } in sustained(node, HOLD_MS, idle_with_process)
        {
            let mut f = raise_on_gpu(self, &IDLE, node, g, since);
            f.performance_ratio = Some(0.0);
            f.evidence.push(
                Evidence::new(
                    "utilization_gpu_percent",
                    "0%",
                    format!("> 0% within {} s", HOLD_MS / 1000),
                )
                .held_for(dur),
            );
            let procs: Vec<String> = g
                .processes
                .iter()
                .map(|p| {
                    format!(
                        "pid {} {}{}",
                        p.pid,
                        p.name,
                        p.used_memory_bytes
                            .map(|b| format!(" ({} MiB)", b >> 20))
                            .unwrap_or_default()
                    )
                })
                .collect();
            f.evidence
                .push(Evidence::new("processes", procs.join(", "), "").held_for(dur));
            f.summary = format!(
                "GPU {} is held by {} but has done no work for {} s",
                g.index,
                procs.join(", "),
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
    vec![super::testutil::trigger("idle", |_, s| {
        let g = &mut s.gpus[1];
        g.utilization_gpu_percent = Some(0);
        g.processes = vec![gpufleet_model::GpuProcess {
            pid: 1001,
            name: "python3".into(),
            used_memory_bytes: Some(60 << 30),
        }];
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};
    use gpufleet_model::GpuProcess;

    #[test]
    fn cases() {
        // (name, utilization of GPU 1, process listed, bent samples at the end of 40, want)
        let cases: &[(&str, u32, bool, usize, bool)] = &[
            ("healthy", 98, true, 40, false),
            ("idle node, no process", 0, false, 40, false),
            ("idle with its process", 0, true, 40, true),
            ("a short pause", 0, true, 20, false),
            ("one noisy sample does not fire", 0, true, 1, false),
        ];
        for (name, util, process, last_n, want) in cases {
            let n = node(2, 40, |i, s| {
                for g in &mut s.gpus {
                    g.processes = vec![GpuProcess {
                        pid: 100 + g.index,
                        name: "python3".into(),
                        used_memory_bytes: Some(60 << 30),
                    }];
                }
                if i >= 40 - last_n {
                    s.gpus[1].utilization_gpu_percent = Some(*util);
                    if !process {
                        s.gpus[1].processes.clear();
                    }
                }
            });
            let got = IdleWithProcess.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(
                    (f.rule_id.as_str(), f.gpu_index),
                    ("gpu.idle.with_process", Some(1))
                );
                assert!(f.summary.contains("pid 101 python3"), "{}", f.summary);
            }
        }
    }
}
