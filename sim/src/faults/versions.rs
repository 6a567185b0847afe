//! What the inventory reports: `driver_change` (another driver on the node, or another VBIOS
//! on one GPU), `kernel_change` (the node reboots into another kernel) and `persistence_off`.
//! Each makes the agent re-read the inventory at its start and end.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, non_empty};
use crate::state::{At, GpuInfoEdit, HostLive, NodeInfoEdit};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<DriverChange>(
        "driver_change",
        &[],
        Scope::Gpu,
        "drift",
        "inventory reports another driver (node) or VBIOS (GPU)",
    ),
    kind::<PersistenceOff>(
        "persistence_off",
        &[],
        Scope::Gpu,
        "gpu.persistence",
        "persistence mode reported off",
    ),
    kind::<KernelChange>(
        "kernel_change",
        &[],
        Scope::Node,
        "drift",
        "the node reboots into another kernel",
    ),
];

/// The driver `driver_change` installs when it names neither a driver nor a VBIOS.
const DEFAULT_NEW_DRIVER: &str = "550.90.07";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverChange {
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
}

impl DriverChange {
    /// The node's driver while on.
    pub fn driver(&self) -> Option<&str> {
        match (&self.driver_version, &self.vbios_version) {
            (None, None) => Some(DEFAULT_NEW_DRIVER),
            (d, _) => d.as_deref(),
        }
    }
}

impl Params for DriverChange {
    fn check(&self, gpu: Option<u32>) -> Result<(), String> {
        non_empty("driver_version", self.driver_version.as_deref())?;
        non_empty("vbios_version", self.vbios_version.as_deref())?;
        if self.driver_version.is_some() && gpu.is_some() {
            return Err(
                "the driver is per node: remove `gpu`, or change `vbios_version` instead".into(),
            );
        }
        Ok(())
    }
}

impl FaultKind for DriverChange {
    fn gpu_info<'a>(&'a self, g: &mut GpuInfoEdit<'a>) {
        if let Some(v) = &self.vbios_version {
            g.vbios_version = Some(v);
        }
    }

    fn node_info<'a>(&'a self, n: &mut NodeInfoEdit<'a>) {
        if let Some(d) = self.driver() {
            n.driver_version = Some(d);
        }
    }

    fn changes_inventory(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceOff {}

impl Params for PersistenceOff {}

impl FaultKind for PersistenceOff {
    fn gpu_info<'a>(&'a self, g: &mut GpuInfoEdit<'a>) {
        g.persistence_off = true;
    }

    fn changes_inventory(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelChange {
    pub kernel_version: String,
}

impl Default for KernelChange {
    fn default() -> Self {
        KernelChange {
            kernel_version: "5.15.0-113-generic".into(),
        }
    }
}

impl Params for KernelChange {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("kernel_version", Some(&self.kernel_version))
    }
}

impl FaultKind for KernelChange {
    fn node_info<'a>(&'a self, n: &mut NodeInfoEdit<'a>) {
        n.kernel_version = Some(&self.kernel_version);
    }

    fn changes_inventory(&self) -> bool {
        true
    }

    /// The node reboots at the fault's start, and again (into the old kernel) at its end.
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        let boots = [Some(at.start), at.end];
        if let Some(b) = boots.into_iter().flatten().filter(|b| *b <= at.t).max() {
            h.last_boot = h.last_boot.max(Some(b));
        }
    }
}
