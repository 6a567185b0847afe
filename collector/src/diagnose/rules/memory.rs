//! `gpu.memory.exhausted`: the GPU's framebuffer is (almost) full — the next allocation fails
//! with CUDA out-of-memory, and allocators that are near the limit spend time defragmenting.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise_on_gpu;
use super::window::{Sustained, sustained};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct MemoryExhausted;

const EXHAUSTED: Cause = Cause {
    id: "gpu.memory.exhausted",
    title: "GPU memory exhausted",
    severity: Severity::Warning,
    detects: "Framebuffer memory used at 98 % of total or more, for several samples.",
    action: "Find the process holding the memory (`nvidia-smi --query-compute-apps=pid,used_memory \
             --format=csv`). If it is the job, reduce its batch size or fix the leak before it \
             fails with out-of-memory; if it is a leftover process from an earlier job, kill it.",
};

static INFO: RuleInfo = RuleInfo {
    id: EXHAUSTED.id,
    title: EXHAUSTED.title,
    catalog: &[EXHAUSTED],
};

/// Used share of the framebuffer from which the GPU is out of memory: what is left (1.6 GiB on
/// an 80 GB board) is below what a training step's activations or a new context need.
const FULL_RATIO: f64 = 0.98;

fn used_ratio(g: &GpuSample) -> Option<f64> {
    let (used, total) = (g.memory_used_bytes?, g.memory_total_bytes?);
    (total > 0).then(|| used as f64 / total as f64)
}

fn full(g: &GpuSample) -> bool {
    used_ratio(g).is_some_and(|r| r >= FULL_RATIO)
}

impl Rule for MemoryExhausted {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out = Vec::new();
        for Sustained {
            gpu: g,
            since,
            held_ms: dur,
        } in sustained(node, 0, full)
        {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let (used, total) = (
                g.memory_used_bytes.unwrap_or(0),
                g.memory_total_bytes.unwrap_or(0),
            );
            let mut f = raise_on_gpu(self, &EXHAUSTED, node, g, since);
            f.evidence.push(
                Evidence::new(
                    "memory_used_bytes",
                    format!(
                        "{:.1} of {:.1} GiB ({:.1}%)",
                        gib(used),
                        gib(total),
                        used_ratio(g).unwrap_or(0.0) * 100.0
                    ),
                    format!("{:.0}%", FULL_RATIO * 100.0),
                )
                .held_for(dur),
            );
            if let Some(p) = g
                .processes
                .iter()
                .max_by_key(|p| p.used_memory_bytes.unwrap_or(0))
            {
                f.evidence.push(Evidence::new(
                    "largest process",
                    format!(
                        "pid {} {} ({})",
                        p.pid,
                        p.name,
                        p.used_memory_bytes
                            .map(|b| format!("{:.1} GiB", gib(b)))
                            .unwrap_or_else(|| "n/a".into())
                    ),
                    "",
                ));
            }
            f.summary = format!(
                "GPU {} memory is full: {:.1} of {:.1} GiB used by {} process(es)",
                g.index,
                gib(used),
                gib(total),
                g.processes.len()
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("memory", |_, s| {
        s.gpus[0].memory_total_bytes = Some(80 << 30);
        s.gpus[0].memory_used_bytes = Some((80 << 30) - (100 << 20));
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    const TOTAL: u64 = 80 << 30;

    #[test]
    fn cases() {
        // (name, used share of GPU 1, bent samples at the end, want)
        let cases: &[(&str, f64, usize, bool)] = &[
            ("healthy", 0.80, 10, false),
            ("just under", 0.975, 10, false),
            ("full", 0.995, 10, true),
            ("one noisy sample does not fire", 0.995, 1, false),
        ];
        for (name, share, last_n, want) in cases {
            let n = node(2, 10, |i, s| {
                for g in &mut s.gpus {
                    g.memory_total_bytes = Some(TOTAL);
                    g.memory_used_bytes = Some(TOTAL / 2);
                }
                if i >= 10 - last_n {
                    s.gpus[1].memory_used_bytes = Some((TOTAL as f64 * share) as u64);
                }
            });
            let got = MemoryExhausted.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(
                    (f.rule_id.as_str(), f.gpu_index),
                    ("gpu.memory.exhausted", Some(1))
                );
                assert!(f.summary.contains("79.6 of 80.0 GiB"), "{}", f.summary);
            }
        }
    }
}
