//! The NVIDIA driver stack around the GPUs: `module_missing` (a kernel module not loaded),
//! `driver_version_mismatch` (user-space libraries or one module at another version than the
//! loaded driver: an upgrade without a reboot), `persistenced_down`, and on NVSwitch systems
//! `fabricmanager_down` and `fabricmanager_version_mismatch`. The simulated host loads
//! [`MODULES`] at the node's driver version and runs both daemons.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, non_empty};
use crate::models::GpuModelProfile;
use crate::state::{At, GpuInfoEdit, HostLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<ModuleMissing>(
        "module_missing",
        &[],
        Scope::Node,
        "driver.module_missing",
        "an NVIDIA kernel module is not loaded (default nvidia_peermem: no GPUDirect RDMA)",
    ),
    kind::<DriverVersionMismatch>(
        "driver_version_mismatch",
        &[],
        Scope::Node,
        "driver.version_mismatch",
        "the user-space driver libraries (or one module) at another version than the loaded kernel driver",
    ),
    kind::<PersistencedDown>(
        "persistenced_down",
        &[],
        Scope::Node,
        "driver.persistenced_down",
        "nvidia-persistenced is not running, so the GPUs report persistence mode off",
    ),
    kind::<FabricManagerDown>(
        "fabricmanager_down",
        &[],
        Scope::Node,
        "driver.fabricmanager_down",
        "NVIDIA Fabric Manager is not running on an NVSwitch system",
    ),
    kind::<FabricManagerVersionMismatch>(
        "fabricmanager_version_mismatch",
        &[],
        Scope::Node,
        "driver.fabricmanager_version",
        "the installed Fabric Manager's version differs from the driver's, so it does not start",
    ),
];

/// The NVIDIA modules the simulated host loads, in name order.
pub const MODULES: &[&str] = &[
    "nvidia",
    "nvidia_drm",
    "nvidia_modeset",
    "nvidia_peermem",
    "nvidia_uvm",
];

/// The version a mismatch installs unless told.
const OTHER_VERSION: &str = "550.90.07";

fn check_module(module: &str) -> Result<(), String> {
    if module == "nvidia" {
        return Err(
            "module = \"nvidia\": without it there are no GPUs to read; name nvidia_uvm, nvidia_modeset, nvidia_drm or nvidia_peermem"
                .into(),
        );
    }
    if !MODULES.contains(&module) {
        return Err(format!(
            "module = \"{module}\" is not an NVIDIA module of the simulated host ({})",
            MODULES.join(", ")
        ));
    }
    Ok(())
}

fn check_nvswitch(p: &GpuModelProfile) -> Result<(), String> {
    if p.host.nvswitch_count() == 0 {
        return Err(format!(
            "{} sits in a host without NVSwitches: Fabric Manager does not run there",
            p.id
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleMissing {
    /// The module not loaded.
    pub module: String,
}

impl Default for ModuleMissing {
    fn default() -> Self {
        ModuleMissing {
            module: "nvidia_peermem".into(),
        }
    }
}

impl Params for ModuleMissing {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        check_module(&self.module)
    }
}

impl FaultKind for ModuleMissing {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.modules_missing.push(&self.module);
        }
    }

    fn changes_inventory(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverVersionMismatch {
    /// The version the libraries (or `module`) report.
    pub version: String,
    /// One module at `version` instead of the libraries (default: the libraries).
    pub module: Option<String>,
}

impl Default for DriverVersionMismatch {
    fn default() -> Self {
        DriverVersionMismatch {
            version: OTHER_VERSION.into(),
            module: None,
        }
    }
}

impl Params for DriverVersionMismatch {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("version", Some(&self.version))?;
        match &self.module {
            Some(m) => check_module(m),
            None => Ok(()),
        }
    }
}

impl FaultKind for DriverVersionMismatch {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.driver_versions
                .push((self.module.as_deref(), &self.version));
        }
    }

    fn changes_inventory(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistencedDown {}

impl Params for PersistencedDown {}

impl FaultKind for PersistencedDown {
    fn edits_gpus(&self) -> bool {
        true
    }

    fn gpu_info<'a>(&'a self, g: &mut GpuInfoEdit<'a>) {
        g.persistence_off = true;
    }

    fn changes_inventory(&self) -> bool {
        true
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.persistenced_down = true;
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricManagerDown {}

impl Params for FabricManagerDown {}

impl FaultKind for FabricManagerDown {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nvswitch(p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.fabricmanager_down = true;
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabricManagerVersionMismatch {
    /// The installed Fabric Manager's version.
    pub version: String,
}

impl Default for FabricManagerVersionMismatch {
    fn default() -> Self {
        FabricManagerVersionMismatch {
            version: "550.90.07".into(),
        }
    }
}

impl Params for FabricManagerVersionMismatch {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("version", Some(&self.version))
    }
}

impl FaultKind for FabricManagerVersionMismatch {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nvswitch(p)
    }

    fn changes_inventory(&self) -> bool {
        true
    }

    /// Fabric Manager refuses to start against another driver version.
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.fabricmanager_down = true;
            h.fabricmanager_version = Some(&self.version);
        }
    }
}
