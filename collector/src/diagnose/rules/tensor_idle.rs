//! `gpu.tensor_cores_idle`: the GPU is busy and a job holds it, but GPM shows its tensor cores
//! idle — the job does its math on the FP32 pipes (mixed precision or TF32 off, an FP32-only
//! kernel, a framework fallback). A workload hint, not a fault: nothing is broken and nothing
//! on the node needs fixing, but the job likely runs several times slower than it could.
//! Only GPUs with GPM (Hopper and later) can show it; elsewhere the reading is absent and the
//! rule stays silent.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise_on_gpu;
use super::window::{Sustained, sustained};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct TensorCoresIdle;

const TENSOR_IDLE: Cause = Cause {
    id: "gpu.tensor_cores_idle",
    title: "GPU busy, tensor cores idle (workload hint)",
    severity: Severity::Info,
    detects: "A workload hint, not a fault: utilization at 90 % or more with a process listed \
              for at least 60 s while GPM (Hopper and later) shows the tensor cores active \
              under 1 % of the time and the SMs busy.",
    action: "Nothing on the node needs fixing. Tell the job's owner: its math runs on the FP32 \
             pipes, usually several times slower than on tensor cores. Check that mixed \
             precision is on (`torch.autocast(\"cuda\", dtype=torch.bfloat16)`, or \
             `torch.backends.cuda.matmul.allow_tf32 = True`), and profile the job (`nsys \
             profile`) for kernels that fall back to FP32.",
};

static INFO: RuleInfo = RuleInfo {
    id: TENSOR_IDLE.id,
    title: TENSOR_IDLE.title,
    catalog: &[TENSOR_IDLE],
};

/// Utilization that means the GPU is kept busy.
const BUSY_PERCENT: u32 = 90;
/// Tensor activity below this is idle (mixed-precision training keeps it at 30-60 %).
const TENSOR_IDLE_PERCENT: f32 = 1.0;
/// SMs this busy are doing math, not waiting on copies or a stalled kernel.
const SM_ACTIVE_PERCENT: f32 = 50.0;
/// Longer than a phase that legitimately skips the tensor cores (a checkpoint, data
/// preprocessing on the GPU).
const HOLD_MS: u64 = 60_000;

fn tensor_idle(g: &GpuSample) -> bool {
    g.utilization_gpu_percent.is_some_and(|u| u >= BUSY_PERCENT)
        && !g.processes.is_empty()
        && g.gpm_tensor_active_percent
            .is_some_and(|t| t < TENSOR_IDLE_PERCENT)
        && g.gpm_sm_active_percent
            .is_some_and(|s| s >= SM_ACTIVE_PERCENT)
}

impl Rule for TensorCoresIdle {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out = Vec::new();
        for Sustained {
            gpu: g,
            since,
            held_ms: dur,
        } in sustained(node, HOLD_MS, tensor_idle)
        {
            let mut f = raise_on_gpu(self, &TENSOR_IDLE, node, g, since);
            let pct = |v: Option<f32>| v.map_or("n/a".to_string(), |v| format!("{v:.1}%"));
            f.evidence.push(
                Evidence::new(
                    "gpm_tensor_active_percent",
                    pct(g.gpm_tensor_active_percent),
                    format!("≥ {TENSOR_IDLE_PERCENT}% while busy"),
                )
                .held_for(dur),
            );
            f.evidence.push(
                Evidence::new(
                    "utilization_gpu_percent",
                    format!("{}%", g.utilization_gpu_percent.unwrap_or(0)),
                    format!("≥ {BUSY_PERCENT}%"),
                )
                .held_for(dur),
            );
            f.evidence.push(Evidence::new(
                "gpm_sm_active_percent",
                pct(g.gpm_sm_active_percent),
                format!("≥ {SM_ACTIVE_PERCENT}%"),
            ));
            if let Some(fp32) = g.gpm_fp32_active_percent {
                f.evidence
                    .push(Evidence::new("gpm_fp32_active_percent", format!("{fp32:.1}%"), ""));
            }
            f.summary = format!(
                "GPU {} has been {}% busy for {} s with its tensor cores idle: a workload hint \
                 (mixed precision off?), not a fault",
                g.index,
                g.utilization_gpu_percent.unwrap_or(0),
                dur / 1000
            );
            out.push(f);
        }
        out
    }
}

#[cfg(test)]
fn busy_without_tensor_cores(g: &mut GpuSample) {
    g.processes = vec![gpufleet_model::GpuProcess {
        pid: 4242,
        name: "python3".into(),
        used_memory_bytes: Some(60 << 30),
    }];
    g.gpm_sm_active_percent = Some(85.0);
    g.gpm_tensor_active_percent = Some(0.0);
    g.gpm_fp32_active_percent = Some(55.0);
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    // 100 samples: the hold is longer than the usual 40-sample trigger.
    let mut n = super::testutil::node(8, 100, |_, s| busy_without_tensor_cores(&mut s.gpus[2]));
    n.identity.hostname = "trigger-tensor-cores-idle".into();
    vec![("tensor cores idle", n)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(&mut GpuSample);
        // (name, bend of GPU 1 over the last `last_n` of 100 samples, last_n, want)
        let cases: &[(&str, Bend, usize, bool)] = &[
            ("busy, tensor cores idle", busy_without_tensor_cores, 100, true),
            ("training uses its tensor cores", |g| {
                busy_without_tensor_cores(g);
                g.gpm_tensor_active_percent = Some(47.0);
            }, 100, false),
            ("no GPM (pre-Hopper): absent is not idle", |g| {
                busy_without_tensor_cores(g);
                g.gpm_tensor_active_percent = None;
                g.gpm_sm_active_percent = None;
            }, 100, false),
            ("idle GPU", |g| {
                busy_without_tensor_cores(g);
                g.utilization_gpu_percent = Some(0);
                g.gpm_sm_active_percent = Some(0.0);
            }, 100, false),
            ("no process: a hang, not a workload", |g| {
                busy_without_tensor_cores(g);
                g.processes.clear();
            }, 100, false),
            ("SMs mostly waiting (copies, a stalled kernel)", |g| {
                busy_without_tensor_cores(g);
                g.gpm_sm_active_percent = Some(20.0);
            }, 100, false),
            ("a short FP32 phase", busy_without_tensor_cores, 45, false),
        ];
        for (name, bend, last_n, want) in cases {
            let n = node(2, 100, |i, s| {
                if i >= 100 - last_n {
                    bend(&mut s.gpus[1]);
                }
            });
            let got = TensorCoresIdle.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(
                    (f.rule_id.as_str(), f.gpu_index, f.severity),
                    ("gpu.tensor_cores_idle", Some(1), Severity::Info)
                );
                assert!(f.summary.contains("not a fault"), "{}", f.summary);
                assert_eq!(f.evidence[0].value, "0.0%");
            }
        }
    }
}
