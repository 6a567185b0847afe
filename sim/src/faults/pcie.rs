//! PCIe: `pcie_downtrain` (the link trained below its max generation or width, with some
//! replays) and `pcie_replays` (a full-speed link retrying packets).

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, GpuCounters, GpuCtx, GpuLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<PcieDowntrain>(
        "pcie_downtrain",
        &[],
        Scope::Gpu,
        "gpu.pcie",
        "PCIe link trained below max generation/width; replay counter rising",
    ),
    kind::<PcieReplays>(
        "pcie_replays",
        &[],
        Scope::Gpu,
        "gpu.pcie",
        "PCIe replay counter rising fast at full link speed",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieDowntrain {
    /// Link generation trained at.
    #[serde(rename = "gen")]
    pub link_gen: u32,
    pub width: u32,
    /// Replays per minute on the degraded link.
    pub per_minute: u32,
}

impl Default for PcieDowntrain {
    fn default() -> Self {
        PcieDowntrain {
            link_gen: 3,
            width: 8,
            per_minute: 30,
        }
    }
}

impl Params for PcieDowntrain {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("gen", self.link_gen, 1, 6)?;
        if ![1, 2, 4, 8, 16, 32].contains(&self.width) {
            return Err(format!(
                "width = {} is not a PCIe link width (1, 2, 4, 8, 16, 32)",
                self.width
            ));
        }
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for PcieDowntrain {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        let (link_gen, width) = (self.link_gen, self.width);
        if link_gen > p.pcie_gen_max || width > p.pcie_width_max {
            Err(format!(
                "gen {link_gen} x{width} is above the {} link (gen {} x{})",
                p.id, p.pcie_gen_max, p.pcie_width_max
            ))
        } else if link_gen == p.pcie_gen_max && width == p.pcie_width_max {
            Err(format!(
                "gen {link_gen} x{width} is the {} full link; lower gen or width",
                p.id
            ))
        } else {
            Ok(())
        }
    }

    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.pcie_gen = l.pcie_gen.min(self.link_gen);
        l.pcie_width = l.pcie_width.min(self.width);
    }

    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        c.pcie_replays += at.per_minute(self.per_minute);
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieReplays {
    pub per_minute: u32,
}

impl Default for PcieReplays {
    fn default() -> Self {
        PcieReplays { per_minute: 600 }
    }
}

impl Params for PcieReplays {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for PcieReplays {
    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        c.pcie_replays += at.per_minute(self.per_minute);
    }
}
