//! Power: `power_cap` (the enforced limit lowered; the workload pins at it and the driver's
//! SW power cap holds clocks down) and `power_brake` (the board's external brake signal).

use gpufleet_model::clock_events as ce;
use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, sm_clock_percent};
use crate::models::GpuModelProfile;
use crate::state::{GpuCtx, GpuLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<PowerCap>(
        "power_cap",
        &[],
        Scope::Gpu,
        "gpu.power",
        "enforced power limit lowered; power pinned at it, SW power cap bit, clocks reduced",
    ),
    kind::<PowerBrake>(
        "power_brake",
        &[],
        Scope::Gpu,
        "gpu.power",
        "external power brake asserted: HW power brake + HW slowdown bits, clocks very low",
    ),
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerCap {
    /// Enforced limit, W (default: 60 % of the model's default limit, at least its minimum).
    pub limit_watts: Option<u32>,
}

impl PowerCap {
    pub fn watts(&self, p: &GpuModelProfile) -> u32 {
        self.limit_watts.unwrap_or_else(|| {
            (p.power_limit_default_mw / 1000 * 6 / 100 * 10).max(p.power_limit_min_mw / 1000)
        })
    }
}

impl Params for PowerCap {}

impl FaultKind for PowerCap {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        let Some(w) = self.limit_watts else {
            return Ok(());
        };
        let (lo, hi) = (p.power_limit_min_mw / 1000, p.power_limit_max_mw / 1000);
        in_range("limit_watts", w, lo, hi)
            .map(|_| ())
            .map_err(|e| format!("{e} for {}", p.id))
    }

    fn gpu(&self, l: &mut GpuLive, c: &GpuCtx) {
        l.limit_w = l.limit_w.min(f64::from(self.watts(c.profile)));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerBrake {
    /// Clock floor while braked, % of max.
    pub sm_clock_percent: u32,
}

impl Default for PowerBrake {
    fn default() -> Self {
        PowerBrake {
            sm_clock_percent: 25,
        }
    }
}

impl Params for PowerBrake {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        sm_clock_percent(self.sm_clock_percent).map(|_| ())
    }
}

impl FaultKind for PowerBrake {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.sm_ratio = l.sm_ratio.min(f64::from(self.sm_clock_percent) / 100.0);
        l.reasons |= ce::HW_POWER_BRAKE_SLOWDOWN | ce::HW_SLOWDOWN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::model_by_name;

    #[test]
    fn default_cap_is_sixty_percent_of_the_default_limit() {
        let cap = PowerCap::default();
        assert_eq!(cap.watts(model_by_name("h100").unwrap()), 420);
        assert_eq!(cap.watts(model_by_name("t4").unwrap()), 60);
    }
}
