//! Storage the jobs depend on: `mount_read_only` (a checkpoint mount remounted read-only),
//! `mount_unresponsive` (an NFS or Lustre mount whose statfs hangs), `mount_missing` (a watched
//! mount unmounted), `mount_full` (shared storage nearly full) and `nvme_unhealthy` (a local NVMe
//! controller not live, or its temperature alarm set). The simulated host watches `/` and the
//! [`NETWORK_MOUNTS`](crate::hosts::NETWORK_MOUNTS), and has the [`NVME`](crate::hosts::NVME)
//! controllers.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind};
use crate::hosts::{NETWORK_MOUNTS, NVME};
use crate::state::{At, HostLive};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<MountReadOnly>(
        "mount_read_only",
        &[],
        Scope::Node,
        "storage.mount.read_only",
        "a watched mount (default /checkpoints) is remounted read-only: checkpoints fail to write",
    ),
    kind::<MountUnresponsive>(
        "mount_unresponsive",
        &[],
        Scope::Node,
        "storage.mount.unresponsive",
        "a network mount (default /datasets) stops answering: statfs times out, readers hang",
    ),
    kind::<MountMissing>(
        "mount_missing",
        &[],
        Scope::Node,
        "storage.mount.missing",
        "a watched mount (default /datasets) is no longer mounted",
    ),
    kind::<MountFull>(
        "mount_full",
        &[],
        Scope::Node,
        "storage.mount.full",
        "a shared mount (default /checkpoints) has less than 2 % available",
    ),
    kind::<NvmeUnhealthy>(
        "nvme_unhealthy",
        &[],
        Scope::Node,
        "storage.nvme.unhealthy",
        "a local NVMe controller (default nvme1) leaves the live state (dead) or raises its temperature alarm",
    ),
];

/// The mount points a storage fault may name.
fn check_mount(mount: &str, network_only: bool) -> Result<(), String> {
    let mut known: Vec<&str> = NETWORK_MOUNTS.iter().map(|m| m.mount_point).collect();
    if !network_only {
        known.insert(0, "/");
    }
    if known.contains(&mount) {
        return Ok(());
    }
    Err(format!(
        "mount = \"{mount}\" is not a watched mount of the simulated host ({})",
        known.join(", ")
    ))
}

macro_rules! mount_kind {
    ($name:ident, $default:literal, $network_only:literal, $field:ident) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// The watched mount point.
            pub mount: String,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    mount: $default.into(),
                }
            }
        }

        impl Params for $name {
            fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
                check_mount(&self.mount, $network_only)
            }
        }

        impl FaultKind for $name {
            fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
                if at.active() {
                    h.$field.push(&self.mount);
                }
            }
        }
    };
}

mount_kind!(MountReadOnly, "/checkpoints", false, mounts_read_only);
mount_kind!(MountUnresponsive, "/datasets", true, mounts_unresponsive);
mount_kind!(MountMissing, "/datasets", true, mounts_missing);
// `/` is a host disk: `disk_full` fills it.
mount_kind!(MountFull, "/checkpoints", true, mounts_full);

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvmeUnhealthy {
    /// The controller, e.g. `nvme1`.
    pub controller: String,
    /// The state it reads (`dead`, `resetting`, …; `live` with `temperature_alarm`).
    pub state: String,
    /// The drive's temperature warning is set, its temperature past its critical threshold.
    pub temperature_alarm: bool,
}

impl Default for NvmeUnhealthy {
    fn default() -> Self {
        NvmeUnhealthy {
            controller: "nvme1".into(),
            state: "dead".into(),
            temperature_alarm: false,
        }
    }
}

impl Params for NvmeUnhealthy {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        let names: Vec<&str> = NVME.iter().map(|n| n.0).collect();
        if !names.contains(&self.controller.as_str()) {
            return Err(format!(
                "controller = \"{}\" is not an NVMe controller of the simulated host ({})",
                self.controller,
                names.join(", ")
            ));
        }
        if self.state.trim().is_empty() {
            return Err("state = \"\": give the state the controller reads, e.g. \"dead\"".into());
        }
        if self.state == "live" && !self.temperature_alarm {
            return Err(
                "state = \"live\" without temperature_alarm = true leaves the controller healthy"
                    .into(),
            );
        }
        Ok(())
    }
}

impl FaultKind for NvmeUnhealthy {
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.nvme_unhealthy
                .push((&self.controller, &self.state, self.temperature_alarm));
        }
    }
}
