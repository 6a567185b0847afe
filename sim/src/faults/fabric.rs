//! The GPU fabric network (InfiniBand HCAs): `ib_port_down`, `ib_rate_degraded`,
//! `ib_link_errors` and `ib_hca_missing`. The simulated host has one single-port HCA per
//! fabric NIC of its profile, `mlx5_0`, `mlx5_1`, … in the profile's order.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, HostLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<IbPortDown>(
        "ib_port_down",
        &[],
        Scope::Node,
        "fabric.ib.port_down",
        "an InfiniBand HCA's port goes DOWN / Disabled (cable, optic or switch port)",
    ),
    kind::<IbRateDegraded>(
        "ib_rate_degraded",
        &[],
        Scope::Node,
        "fabric.ib.rate_degraded",
        "an InfiniBand port retrains at a lower rate (e.g. 200 instead of 400 Gb/s)",
    ),
    kind::<IbLinkErrors>(
        "ib_link_errors",
        &[],
        Scope::Node,
        "fabric.ib.link_errors",
        "an InfiniBand port's symbol errors rising (a marginal cable or optic)",
    ),
    kind::<IbHcaMissing>(
        "ib_hca_missing",
        &[],
        Scope::Node,
        "fabric.ib.hca_missing",
        "an InfiniBand HCA is no longer enumerated: the node has fewer fabric ports than its peers",
    ),
];

/// The kernel name of the simulated HCA behind fabric NIC `i` of the profile.
pub fn hca_name(i: usize) -> String {
    format!("mlx5_{i}")
}

fn check_hca(hca: &Option<String>, p: &GpuModelProfile) -> Result<(), String> {
    let n = p.host.nics.iter().filter(|n| n.fabric).count();
    if n == 0 {
        return Err(format!(
            "the simulated host of {} has no InfiniBand HCA",
            p.id
        ));
    }
    match hca {
        Some(h) if !(0..n).any(|i| hca_name(i) == *h) => Err(format!(
            "hca = \"{h}\" is not an HCA of the simulated host (mlx5_0 … mlx5_{})",
            n - 1
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbPortDown {
    /// The HCA (default: `mlx5_0`).
    pub hca: Option<String>,
}

impl Params for IbPortDown {}

impl FaultKind for IbPortDown {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_hca(&self.hca, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.ib_down.push((self.hca.as_deref(), at.start));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbRateDegraded {
    /// The HCA (default: `mlx5_0`).
    pub hca: Option<String>,
    /// The rate it retrains at, Gb/s.
    pub rate_gbps: f64,
}

impl Default for IbRateDegraded {
    fn default() -> Self {
        IbRateDegraded {
            hca: None,
            rate_gbps: 200.0,
        }
    }
}

impl Params for IbRateDegraded {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        if !(self.rate_gbps.is_finite() && self.rate_gbps > 0.0 && self.rate_gbps <= 800.0) {
            return Err(format!(
                "rate_gbps = {}: give the degraded rate in Gb/s, e.g. 200",
                self.rate_gbps
            ));
        }
        Ok(())
    }
}

impl FaultKind for IbRateDegraded {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_hca(&self.hca, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.ib_rate_gbps.push((self.hca.as_deref(), self.rate_gbps));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbLinkErrors {
    /// The HCA (default: `mlx5_0`).
    pub hca: Option<String>,
    /// Symbol errors per minute.
    pub per_minute: u32,
}

impl Default for IbLinkErrors {
    fn default() -> Self {
        IbLinkErrors {
            hca: None,
            per_minute: 120,
        }
    }
}

impl Params for IbLinkErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for IbLinkErrors {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_hca(&self.hca, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.ib_symbol_errors
            .push((self.hca.as_deref(), at.per_minute(self.per_minute)));
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IbHcaMissing {
    /// The HCA (default: `mlx5_0`), or `all`: the RDMA stack shows none (mlx5_ib not
    /// loaded) while the NICs stay on the PCIe bus.
    pub hca: Option<String>,
}

/// `hca = "all"` of `ib_hca_missing`.
pub const ALL_HCAS: &str = "all";

impl Params for IbHcaMissing {}

impl FaultKind for IbHcaMissing {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        if self.hca.as_deref() == Some(ALL_HCAS) {
            return check_hca(&None, p);
        }
        check_hca(&self.hca, p)
    }

    /// Without any HCA the agent's inventory lists no RDMA device either (it re-reads it).
    fn changes_inventory(&self) -> bool {
        self.hca.as_deref() == Some(ALL_HCAS)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.ib_missing.push(self.hca.as_deref());
        }
    }
}
