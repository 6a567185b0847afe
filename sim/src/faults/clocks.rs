//! Clocks held down without heat or power: `hw_slowdown` (the HW slowdown bit alone),
//! `clocks_locked` (application clocks set below max) and `gpu_straggler` (slower than its
//! peers with no clock-event bit at all, so only fleet statistics single it out).

use gpufleet_model::clock_events as ce;
use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, sm_clock_percent};
use crate::models::GpuModelProfile;
use crate::state::{GpuCtx, GpuLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<HwSlowdown>(
        "hw_slowdown",
        &[],
        Scope::Gpu,
        "gpu.clocks",
        "HW slowdown bit alone, clocks halved",
    ),
    kind::<ClocksLocked>(
        "clocks_locked",
        &["applications_clocks"],
        Scope::Gpu,
        "gpu.clocks",
        "application clocks set below max; applications-clocks bit",
    ),
    kind::<GpuStraggler>(
        "gpu_straggler",
        &[],
        Scope::Gpu,
        "gpu.straggler",
        "slower clocks and lower power than its peers, no clock-event bit",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HwSlowdown {
    pub sm_clock_percent: u32,
}

impl Default for HwSlowdown {
    fn default() -> Self {
        HwSlowdown {
            sm_clock_percent: 50,
        }
    }
}

impl Params for HwSlowdown {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        sm_clock_percent(self.sm_clock_percent).map(|_| ())
    }
}

impl FaultKind for HwSlowdown {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.sm_ratio = l.sm_ratio.min(f64::from(self.sm_clock_percent) / 100.0);
        l.reasons |= ce::HW_SLOWDOWN;
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClocksLocked {
    /// Locked SM application clock, MHz (default: 70 % of max, on the model's clock step).
    pub sm_clock_mhz: Option<u32>,
    /// Locked memory application clock, MHz (default: left at max).
    pub memory_clock_mhz: Option<u32>,
}

impl ClocksLocked {
    pub fn sm_mhz(&self, p: &GpuModelProfile) -> u32 {
        self.sm_clock_mhz
            .unwrap_or(p.sm_clock_max_mhz * 7 / 10 / p.clock_step_mhz * p.clock_step_mhz)
    }
}

impl Params for ClocksLocked {}

impl FaultKind for ClocksLocked {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        if let Some(m) = self.memory_clock_mhz
            && (m >= p.memory_clock_max_mhz || m < p.memory_clock_max_mhz / 4)
        {
            return Err(format!(
                "memory_clock_mhz = {m} must lie below the {} MHz max and above a quarter of it for {}",
                p.memory_clock_max_mhz, p.id
            ));
        }
        if let Some(m) = self.sm_clock_mhz {
            in_range(
                "sm_clock_mhz",
                m,
                p.sm_clock_idle_mhz,
                p.sm_clock_max_mhz - p.clock_step_mhz,
            )
            .map_err(|e| format!("{e} for {}", p.id))?;
        }
        Ok(())
    }

    fn gpu(&self, l: &mut GpuLive, c: &GpuCtx) {
        let p = c.profile;
        l.app_mem_mhz = self.memory_clock_mhz;
        // Only the memory clock given: the SM clock stays free, and (as with memory locked
        // clocks) no clock-event bit says so.
        if self.sm_clock_mhz.is_none() && self.memory_clock_mhz.is_some() {
            return;
        }
        let mhz = self.sm_mhz(p);
        l.app_sm_mhz = Some(mhz);
        l.sm_ratio = l
            .sm_ratio
            .min(f64::from(mhz) / f64::from(p.sm_clock_max_mhz));
        l.reasons |= ce::APPLICATIONS_CLOCKS_SETTING;
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuStraggler {
    /// How much less work the GPU gets done than its peers, %.
    pub slowdown_percent: u32,
}

impl Default for GpuStraggler {
    fn default() -> Self {
        GpuStraggler {
            slowdown_percent: 17,
        }
    }
}

impl Params for GpuStraggler {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("slowdown_percent", self.slowdown_percent, 1, 60).map(|_| ())
    }
}

impl FaultKind for GpuStraggler {
    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        let s = f64::from(self.slowdown_percent) / 100.0;
        // Clocks drop by 40 % of the slowdown (17 % → ~7 %, still above a "90 % of max"
        // threshold); power by the full slowdown. Only fleet statistics single it out.
        let r = 1.0 - 0.4 * s;
        l.sm_ratio = l.sm_ratio.min(r);
        l.power_mult *= (1.0 - s) / r.powf(1.5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::model_by_name;

    #[test]
    fn default_locked_clock_is_seventy_percent_on_the_clock_step() {
        let h100 = model_by_name("h100").unwrap();
        assert_eq!(ClocksLocked::default().sm_mhz(h100), 1380);
    }
}
