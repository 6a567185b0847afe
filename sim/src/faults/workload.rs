//! What the GPU is (not) doing: `gpu_hung` (100 % busy with no process left) and
//! `idle_with_process` (a process holds the GPU and gives it nothing to do).

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
