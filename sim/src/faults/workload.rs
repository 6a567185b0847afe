//! What the GPU is (not) doing: `gpu_hung` (100 % busy with no process left),
//! `idle_with_process` (a process holds the GPU and gives it nothing to do) and
//! `tensor_cores_idle` (a job keeps the GPU busy without its tensor cores: a workload hint).

use gpufleet_model::clock_events as ce;
use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind};
use crate::state::{GpuCtx, GpuLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<GpuHung>(
        "gpu_hung",
        &[],
        Scope::Gpu,
        "gpu.hung",
        "utilization 100 % with no process",
    ),
    kind::<IdleWithProcess>(
        "idle_with_process",
        &[],
        Scope::Gpu,
        "gpu.idle",
        "a process holds the GPU but utilization is 0 %",
    ),
    kind::<TensorCoresIdle>(
        "tensor_cores_idle",
        &[],
        Scope::Gpu,
        "gpu.tensor_cores_idle",
        "the job keeps the GPU busy with its math on the FP32 pipes, tensor cores idle",
    ),
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuHung {}

impl Params for GpuHung {}

impl FaultKind for GpuHung {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.util = 100.0;
        l.mem_util = 0.0;
        l.process = false;
        l.power_mult *= 0.45;
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleWithProcess {}

impl Params for IdleWithProcess {}

impl FaultKind for IdleWithProcess {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.util = 0.0;
        l.mem_util = 0.0;
        l.idle_clocks = true;
        l.reasons |= ce::GPU_IDLE;
        l.power_mult *= 1.25;
        l.traffic *= 0.01;
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorCoresIdle {}

impl Params for TensorCoresIdle {}

impl FaultKind for TensorCoresIdle {
    fn validate_for(&self, p: &crate::models::GpuModelProfile) -> Result<(), String> {
        if p.has_gpm() {
            Ok(())
        } else {
            Err(format!(
                "tensor_cores_idle shows only in GPM profiling metrics, which {} ({}) does not have; use a Hopper or later model",
                p.id, p.architecture
            ))
        }
    }

    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        // Same utilization and clocks: FP32 math keeps the SMs as busy at a little less power.
        l.tensor_share = 0.0;
        l.power_mult *= 0.9;
    }
}
