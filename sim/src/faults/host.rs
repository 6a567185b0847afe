//! The host around the GPUs (the SCORN list): `host_cpu_saturated` and `nic_saturated` (which
//! also starve the GPUs), `host_ram_pressure`, `disk_full` and `nic_errors`.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, Direction, GpuCtx, GpuLive, HostLive, HostSetup, LOAD_TAUS_S};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<HostCpuSaturated>(
        "host_cpu_saturated",
        &[],
        Scope::Node,
        "host.cpu",
        "CPU 98–100 %, load above the core count; GPUs starve (20–40 % utilization)",
    ),
    kind::<HostRamPressure>(
        "host_ram_pressure",
        &[],
        Scope::Node,
        "host.memory",
        "available RAM below 3 %, swap use growing",
    ),
    kind::<DiskFull>(
        "disk_full",
        &[],
        Scope::Node,
        "host.disk",
        "a filesystem has less than 2 % available",
    ),
    kind::<NicSaturated>(
        "nic_saturated",
        &[],
        Scope::Node,
        "host.nic",
        "a NIC at ≥ 97 % of its link speed; GPUs wait on communication",
    ),
    kind::<NicErrors>(
        "nic_errors",
        &[],
        Scope::Node,
        "host.nic",
        "a NIC's receive errors and drops rising",
    ),
];

/// Swap fills at this rate while RAM is under pressure, bytes per second.
const SWAP_FILL_BYTES_PER_S: u64 = 50 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCpuSaturated {}

impl Params for HostCpuSaturated {}

impl FaultKind for HostCpuSaturated {
    fn edits_gpus(&self) -> bool {
        true
    }

    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.util = l.util.min(30.0);
        l.mem_util *= 0.3;
        l.traffic *= 0.3;
    }

    /// The load average is pulled towards saturation while on and decays after the end.
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.cpu_saturated |= at.active();
        if !at.started() {
            return;
        }
        let on_s = at.on_for_ms() as f64 / 1000.0;
        let since_end_s = at.end.map_or(0.0, |e| (at.t - e).max(0) as f64 / 1000.0);
        for (pull, tau) in h.load_pull.iter_mut().zip(LOAD_TAUS_S) {
            *pull += (1.0 - (-on_s / tau).exp()) * (-since_end_s / tau).exp();
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRamPressure {}

impl Params for HostRamPressure {}

impl FaultKind for HostRamPressure {
    /// Swap fills while under pressure and stays used afterwards.
    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.ram_pressure |= at.active();
        h.swapped_bytes += at.on_for_ms() * SWAP_FILL_BYTES_PER_S / 1000;
    }

    fn host_setup(&self, s: &mut HostSetup) {
        s.swap = true;
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskFull {
    pub mount: String,
}

impl Default for DiskFull {
    fn default() -> Self {
        DiskFull { mount: "/".into() }
    }
}

impl Params for DiskFull {}

impl FaultKind for DiskFull {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        let disks = p.host.disks;
        if disks.iter().any(|d| d.mount_point == self.mount) {
            return Ok(());
        }
        let mounts: Vec<&str> = disks.iter().map(|d| d.mount_point).collect();
        Err(format!(
            "mount = \"{}\" is not a filesystem of the simulated host ({})",
            self.mount,
            mounts.join(", ")
        ))
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.full_mount = Some(&self.mount);
        }
    }
}

/// `nic` must be a NIC of the model's usual host.
fn check_nic(nic: &Option<String>, p: &GpuModelProfile) -> Result<(), String> {
    let nics = p.host.nics;
    match nic {
        Some(n) if !nics.iter().any(|x| x.name == n) => {
            let names: Vec<&str> = nics.iter().map(|x| x.name).collect();
            Err(format!(
                "nic = \"{n}\" is not a NIC of the simulated host ({})",
                names.join(", ")
            ))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicSaturated {
    /// The NIC (default: the host's first fabric NIC).
    pub nic: Option<String>,
    pub direction: Direction,
}

impl Default for NicSaturated {
    fn default() -> Self {
        NicSaturated {
            nic: None,
            direction: Direction::Rx,
        }
    }
}

impl Params for NicSaturated {}

impl FaultKind for NicSaturated {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nic(&self.nic, p)
    }

    fn edits_gpus(&self) -> bool {
        true
    }

    fn gpu(&self, l: &mut GpuLive, _c: &GpuCtx) {
        l.util = l.util.min(88.0);
        l.mem_util *= 0.9;
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        if at.active() {
            h.saturated_nic = Some((self.nic.as_deref(), self.direction));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicErrors {
    /// The NIC (default: the host's first fabric NIC).
    pub nic: Option<String>,
    /// Receive errors per minute.
    pub per_minute: u32,
}

impl Default for NicErrors {
    fn default() -> Self {
        NicErrors {
            nic: None,
            per_minute: 600,
        }
    }
}

impl Params for NicErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for NicErrors {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_nic(&self.nic, p)
    }

    fn host<'a>(&'a self, h: &mut HostLive<'a>, at: &At) {
        h.nic_errors
            .push((self.nic.as_deref(), at.per_minute(self.per_minute)));
    }
}
