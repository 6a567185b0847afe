//! GPU memory: `ecc_uncorrectable` (uncorrectable ECC errors with a pending row remap or page
//! retirement, and an Xid), `row_remap_failure` (no spare row left; Ampere and later) and
//! `memory_full` (framebuffer used up).

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, xid_number};
use crate::models::GpuModelProfile;
use crate::state::{At, GpuCounters, GpuCtx, GpuLive, XidSchedule};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<EccUncorrectable>(
        "ecc_uncorrectable",
        &[],
        Scope::Gpu,
        "gpu.ecc",
        "uncorrectable ECC errors; row remap pending; an Xid (48 by default)",
    ),
    kind::<RowRemapFailure>(
        "row_remap_failure",
        &[],
        Scope::Gpu,
        "gpu.row_remap",
        "row remapping failed; Xid 64",
    ),
    kind::<MemoryFull>(
        "memory_full",
        &[],
        Scope::Gpu,
        "gpu.memory",
        "framebuffer memory used ≈ total",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EccUncorrectable {
    /// Errors counted at the fault's start.
    pub count: u32,
    /// The Xid the driver reports with them; 0 = none.
    pub xid: u32,
}

impl Default for EccUncorrectable {
    fn default() -> Self {
        EccUncorrectable { count: 1, xid: 48 }
    }
}

impl Params for EccUncorrectable {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("count", self.count, 1, 100_000)?;
        if self.xid != 0 {
            xid_number(self.xid)?;
        }
        Ok(())
    }
}

impl FaultKind for EccUncorrectable {
    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        if at.started() {
            c.ecc_aggregate += u64::from(self.count);
            if at.active() {
                c.ecc_volatile += u64::from(self.count);
                c.remap_pending = true;
            }
        }
    }

    fn xid(&self) -> Option<XidSchedule> {
        (self.xid != 0).then(|| XidSchedule::once(self.xid))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowRemapFailure {}

impl Params for RowRemapFailure {}

impl FaultKind for RowRemapFailure {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        if p.row_remapping {
            Ok(())
        } else {
            Err(format!(
                "{} retires pages instead of remapping rows; row_remap_failure needs Ampere or later",
                p.id
            ))
        }
    }

    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        c.remap_failure |= at.active();
    }

    fn xid(&self) -> Option<XidSchedule> {
        Some(XidSchedule::once(64))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFull {}

impl Params for MemoryFull {}

impl FaultKind for MemoryFull {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.memory_full = true;
    }
}
