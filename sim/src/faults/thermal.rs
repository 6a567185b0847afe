//! Heat: `thermal_throttle` (the GPU climbs above its slowdown temperature) and `fan_failure`
//! (a stuck fan lets it). Both ramp the temperature linearly; crossing the model's max
//! operating temperature sets the SW thermal bit, crossing slowdown the HW bit too.

use gpufleet_model::clock_events as ce;
use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Ms, Params, Scope, in_range, kind, sm_clock_percent};
use crate::models::GpuModelProfile;
use crate::state::{GpuCtx, GpuLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<ThermalThrottle>(
        "thermal_throttle",
        &[],
        Scope::Gpu,
        "gpu.thermal",
        "temperature climbs to above the slowdown threshold; thermal clock-event bits, clocks drop",
    ),
    kind::<FanFailure>(
        "fan_failure",
        &[],
        Scope::Gpu,
        "gpu.fan",
        "fan stuck (0 % by default) while the GPU heats up to thermal slowdown; models with fans only",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThermalThrottle {
    /// Temperature reached at the end of the ramp (default: 2 °C above slowdown).
    pub target_celsius: Option<i32>,
    pub ramp: Ms,
    /// Clock floor at slowdown, % of max.
    pub sm_clock_percent: u32,
}

impl Default for ThermalThrottle {
    fn default() -> Self {
        ThermalThrottle {
            target_celsius: None,
            ramp: Ms(30_000),
            sm_clock_percent: 60,
        }
    }
}

impl ThermalThrottle {
    fn target(&self, p: &GpuModelProfile) -> f64 {
        f64::from(
            self.target_celsius
                .unwrap_or(p.temperature_slowdown_celsius + 2),
        )
    }
}

impl Params for ThermalThrottle {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        if let Some(t) = self.target_celsius {
            in_range("target_celsius", t, 30, 150)?;
        }
        sm_clock_percent(self.sm_clock_percent).map(|_| ())
    }
}

impl FaultKind for ThermalThrottle {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        match self.target_celsius {
            Some(t) if t >= p.temperature_shutdown_celsius => Err(format!(
                "target_celsius = {t} is at or above the {} shutdown temperature ({} °C)",
                p.id, p.temperature_shutdown_celsius
            )),
            _ => Ok(()),
        }
    }

    fn gpu(&self, l: &mut GpuLive, c: &GpuCtx) {
        heat(
            l,
            c,
            self.target(c.profile),
            self.ramp.0,
            self.sm_clock_percent,
        );
    }

    fn gpu_breakpoints(&self, c: &GpuCtx) -> [Option<i64>; 2] {
        breakpoints(c, self.target(c.profile), self.ramp.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanFailure {
    /// Speed the fan is stuck at, %.
    pub fan_percent: u32,
    pub ramp: Ms,
}

impl Default for FanFailure {
    fn default() -> Self {
        FanFailure {
            fan_percent: 0,
            ramp: Ms(60_000),
        }
    }
}

impl Params for FanFailure {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("fan_percent", self.fan_percent, 0, 100).map(|_| ())
    }
}

/// Without airflow the GPU settles just above its slowdown temperature.
fn fan_target(p: &GpuModelProfile) -> f64 {
    f64::from(p.temperature_slowdown_celsius + 2)
}

impl FaultKind for FanFailure {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        if p.has_fans() {
            Ok(())
        } else {
            Err(format!(
                "{} has no fans; fan_failure needs an actively cooled model (e.g. rtx-6000-ada)",
                p.id
            ))
        }
    }

    fn gpu(&self, l: &mut GpuLive, c: &GpuCtx) {
        l.fan_pin = Some(f64::from(self.fan_percent));
        heat(l, c, fan_target(c.profile), self.ramp.0, 60);
    }

    fn gpu_breakpoints(&self, c: &GpuCtx) -> [Option<i64>; 2] {
        breakpoints(c, fan_target(c.profile), self.ramp.0)
    }
}

fn ramp_temp(c: &GpuCtx, target: f64, ramp_ms: u64) -> f64 {
    let progress = if ramp_ms == 0 {
        1.0
    } else {
        (c.elapsed_ms as f64 / ramp_ms as f64).clamp(0.0, 1.0)
    };
    c.temp_base + (target - c.temp_base) * progress
}

/// Milliseconds after the start at which a linear ramp from `base` to `target` reaches `thr`.
fn crossing_ms(base: f64, target: f64, ramp_ms: u64, thr: f64) -> i64 {
    if thr <= base || target <= base {
        0
    } else {
        (ramp_ms as f64 * (thr - base) / (target - base)).ceil() as i64
    }
}

/// Temperature ramps to `target`; above max operating the SW thermal bit is set and clocks
/// drop half-way to `pct`; above slowdown the HW thermal bit too and clocks drop to `pct`.
fn heat(l: &mut GpuLive, c: &GpuCtx, target: f64, ramp_ms: u64, pct: u32) {
    let p = c.profile;
    let temp = ramp_temp(c, target, ramp_ms);
    l.temp_pin = Some(temp);
    let floor = f64::from(pct) / 100.0;
    let cross = |thr: i32| {
        c.elapsed_ms >= crossing_ms(c.temp_base, target, ramp_ms, f64::from(thr))
            && target >= f64::from(thr)
    };
    if cross(p.temperature_slowdown_celsius) {
        l.reasons |= ce::SW_THERMAL_SLOWDOWN | ce::HW_THERMAL_SLOWDOWN;
        l.sm_ratio = l.sm_ratio.min(floor);
    } else if cross(p.temperature_max_operating_celsius) {
        l.reasons |= ce::SW_THERMAL_SLOWDOWN;
        l.sm_ratio = l.sm_ratio.min(1.0 - (1.0 - floor) * 0.5);
    }
}

/// When the ramp crosses max operating and slowdown, ms after the start.
fn breakpoints(c: &GpuCtx, target: f64, ramp_ms: u64) -> [Option<i64>; 2] {
    let p = c.profile;
    let cross = |thr: i32| {
        let thr = f64::from(thr);
        (target >= thr).then(|| crossing_ms(c.temp_base, target, ramp_ms, thr))
    };
    [
        cross(p.temperature_max_operating_celsius),
        cross(p.temperature_slowdown_celsius),
    ]
}
