//! The host's PCIe tree (GPUs and NICs below PCIe switches): `pcie_acs_enabled` (ACS P2P
//! redirect set on the switch port above a GPU) and the AER error counters of a GPU's or
//! NIC's PCIe device, `pcie_aer_fatal`, `pcie_aer_nonfatal` and `pcie_aer_correctable`, and
//! an HCA's link trained below its rating, `pcie_link_downtrained`.
//! (`pcie.rs` is the GPU's own link as NVML reports it.)
//!
//! A device is named by `gpu_index` (the GPU's PCIe device, default GPU 0) or `nic` (an HCA's
//! kernel name, `mlx5_0`, …); not both.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, HostLive, PcieTarget};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<PcieAcsEnabled>(
        "pcie_acs_enabled",
        &[],
        Scope::Node,
        "pcie.acs_enabled",
        "ACS P2P request/completion redirect on the PCIe switch port above a GPU: GPUDirect \
         peer-to-peer goes through the root complex",
    ),
    kind::<PcieAerFatal>(
        "pcie_aer_fatal",
        &[],
        Scope::Node,
        "pcie.aer.fatal",
        "a GPU's or NIC's PCIe device reports fatal uncorrectable AER errors",
    ),
    kind::<PcieAerNonfatal>(
        "pcie_aer_nonfatal",
        &[],
        Scope::Node,
        "pcie.aer.nonfatal",
        "a GPU's or NIC's PCIe device reports non-fatal uncorrectable AER errors",
    ),
    kind::<PcieAerCorrectable>(
        "pcie_aer_correctable",
        &[],
        Scope::Node,
        "pcie.aer.correctable",
        "a GPU's or NIC's PCIe link reports correctable AER errors at a steady rate",
    ),
    kind::<PcieLinkDowntrained>(
        "pcie_link_downtrained",
        &[],
        Scope::Node,
        "pcie.link_downtrained",
        "an HCA's PCIe link trained narrower or slower than it and its switch port support \
         (a badly seated card or riser)",
    ),
];

/// Which device a fault names, checked against the model's host.
fn check_target(
    gpu_index: Option<u32>,
    nic: &Option<String>,
    p: &GpuModelProfile,
) -> Result<(), String> {
    if gpu_index.is_some() && nic.is_some() {
        return Err("give gpu_index or nic, not both".into());
    }
    let nics = p.host.nics.iter().filter(|n| n.fabric).count();
    match nic {
        Some(n) if !(0..nics).any(|i| super::hca_name(i) == *n) => Err(format!(
            "nic = \"{n}\" is not an HCA of the simulated host (mlx5_0 … mlx5_{})",
            nics.saturating_sub(1)
        )),
        _ => Ok(()),
    }
}

fn target<'a>(gpu_index: Option<u32>, nic: &'a Option<String>) -> PcieTarget<'a> {
    match nic {
        Some(n) => PcieTarget::Nic(n),
        None => PcieTarget::Gpu(gpu_index.unwrap_or(0)),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieAcsEnabled {
    /// The GPU whose switch port gets ACS redirect (default 0).
    pub gpu_index: Option<u32>,
}

impl Params for PcieAcsEnabled {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("gpu_index", self.gpu_index.unwrap_or(0), 0, 63).map(|_| ())
    }
}

impl FaultKind for PcieAcsEnabled {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.pcie_acs.push(self.gpu_index.unwrap_or(0));
        }
    }

    fn changes_inventory(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieAerFatal {
    pub gpu_index: Option<u32>,
    pub nic: Option<String>,
    /// Errors per minute while on.
    pub per_minute: u32,
}

impl Default for PcieAerFatal {
    fn default() -> Self {
        PcieAerFatal {
            gpu_index: None,
            nic: None,
            per_minute: 6,
        }
    }
}

impl Params for PcieAerFatal {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for PcieAerFatal {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_target(self.gpu_index, &self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.pcie_aer.push((
            target(self.gpu_index, &self.nic),
            [0, 0, at.per_minute(self.per_minute)],
        ));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieAerNonfatal {
    pub gpu_index: Option<u32>,
    pub nic: Option<String>,
    /// Errors per minute while on.
    pub per_minute: u32,
}

impl Default for PcieAerNonfatal {
    fn default() -> Self {
        PcieAerNonfatal {
            gpu_index: None,
            nic: None,
            per_minute: 6,
        }
    }
}

impl Params for PcieAerNonfatal {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for PcieAerNonfatal {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_target(self.gpu_index, &self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.pcie_aer.push((
            target(self.gpu_index, &self.nic),
            [0, at.per_minute(self.per_minute), 0],
        ));
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieAerCorrectable {
    pub gpu_index: Option<u32>,
    pub nic: Option<String>,
    /// Errors per minute while on.
    pub per_minute: u32,
}

impl Default for PcieAerCorrectable {
    fn default() -> Self {
        PcieAerCorrectable {
            gpu_index: None,
            nic: None,
            per_minute: 60,
        }
    }
}

impl Params for PcieAerCorrectable {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for PcieAerCorrectable {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_target(self.gpu_index, &self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.pcie_aer.push((
            target(self.gpu_index, &self.nic),
            [at.per_minute(self.per_minute), 0, 0],
        ));
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcieLinkDowntrained {
    /// The HCA (default `mlx5_0`).
    pub nic: Option<String>,
    /// Lanes it trained at (default 8 when `speed_mts` is not given either).
    pub width: Option<u32>,
    /// Rate it trained at, MT/s (2500, 5000, 8000, 16000, 32000, 64000; default: rated).
    pub speed_mts: Option<u32>,
}

impl PcieLinkDowntrained {
    fn width(&self) -> Option<u32> {
        match (self.width, self.speed_mts) {
            (None, None) => Some(8),
            (w, _) => w,
        }
    }
}

impl Params for PcieLinkDowntrained {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        if let Some(w) = self.width
            && ![1, 2, 4, 8, 16].contains(&w)
        {
            return Err(format!(
                "width = {w} is not a PCIe link width (1, 2, 4, 8 or 16)"
            ));
        }
        if let Some(s) = self.speed_mts
            && ![2_500, 5_000, 8_000, 16_000, 32_000, 64_000].contains(&s)
        {
            return Err(format!(
                "speed_mts = {s} is not a PCIe rate (2500, 5000, 8000, 16000, 32000 or 64000)"
            ));
        }
        Ok(())
    }
}

impl FaultKind for PcieLinkDowntrained {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        let nic = Some(self.nic.clone().unwrap_or_else(|| super::hca_name(0)));
        if p.host.nics.iter().all(|n| !n.fabric) {
            return Err("the simulated host has no HCA to downtrain".into());
        }
        check_target(None, &nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            let nic = self.nic.as_deref().unwrap_or("mlx5_0");
            h.pcie_link.push((nic, self.speed_mts, self.width()));
        }
    }
}
