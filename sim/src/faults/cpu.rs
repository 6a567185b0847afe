//! The host's CPU and memory configuration: `cpu_governor_powersave`,
//! `cpu_frequency_capped` and `memory_edac_errors`. They change what the host's sysfs shows
//! (governor, frequencies, EDAC counters); the GPUs keep their workload, so the diagnosis has
//! to find them from the host side.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, per_minute};
use crate::state::{At, HostLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<CpuGovernor>(
        "cpu_governor_powersave",
        &[],
        Scope::Node,
        "host.cpu.governor",
        "every CPU on the `powersave` (or another named) frequency governor",
    ),
    kind::<CpuFrequencyCapped>(
        "cpu_frequency_capped",
        &[],
        Scope::Node,
        "host.cpu.frequency_capped",
        "every CPU's scaling_max_freq capped below what the hardware can reach",
    ),
    kind::<MemoryEdacErrors>(
        "memory_edac_errors",
        &[],
        Scope::Node,
        "host.memory.edac",
        "the host's memory controllers counting corrected (or uncorrected) errors",
    ),
];

const GOVERNORS: &[&str] = &[
    "powersave",
    "conservative",
    "ondemand",
    "userspace",
    "schedutil",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuGovernor {
    /// The governor the CPUs are left on.
    pub governor: String,
}

impl Default for CpuGovernor {
    fn default() -> Self {
        CpuGovernor {
            governor: "powersave".into(),
        }
    }
}

impl Params for CpuGovernor {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        if GOVERNORS.contains(&self.governor.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "governor = \"{}\": one of {}",
                self.governor,
                GOVERNORS.join(", ")
            ))
        }
    }
}

impl FaultKind for CpuGovernor {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.cpu_governor = Some(&self.governor);
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuFrequencyCapped {
    /// The cap, as a percentage of the CPUs' highest frequency.
    pub max_percent: u32,
}

impl Default for CpuFrequencyCapped {
    fn default() -> Self {
        CpuFrequencyCapped { max_percent: 50 }
    }
}

impl Params for CpuFrequencyCapped {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        super::in_range("max_percent", self.max_percent, 10, 95).map(|_| ())
    }
}

impl FaultKind for CpuFrequencyCapped {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.cpu_freq_cap_percent = Some(self.max_percent);
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryEdacErrors {
    /// Errors per minute.
    pub per_minute: u32,
    /// Uncorrected errors instead of corrected ones.
    pub uncorrected: bool,
}

impl Default for MemoryEdacErrors {
    fn default() -> Self {
        MemoryEdacErrors {
            per_minute: 60,
            uncorrected: false,
        }
    }
}

impl Params for MemoryEdacErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for MemoryEdacErrors {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        let n = at.per_minute(self.per_minute);
        if self.uncorrected {
            h.edac_errors.1 += n;
        } else {
            h.edac_errors.0 += n;
        }
    }
}
