//! `driver.*`: the NVIDIA driver stack around NVML — kernel modules, user-space libraries,
//! `nvidia-persistenced` and, on NVSwitch systems, Fabric Manager. Each cause is one of the
//! classic "the GPUs look fine but jobs are slow or fail" tickets: `nvidia_peermem` not loaded
//! (NCCL silently stages RDMA through host memory), a driver upgraded without a reboot
//! ("Failed to initialize NVML: Driver/library version mismatch"), the persistence daemon
//! gone, Fabric Manager down so CUDA cannot start on an HGX board.
//!
//! Relation to `gpu.persistence.off`: when the node's samples say `nvidia-persistenced` is not
//! running, that rule stays silent and `driver.persistenced_down` names the daemon once for
//! the node (with the GPUs whose persistence is off as evidence) instead of once per GPU.

use gpufleet_model::{DriverStackInfo, Evidence, Finding, Severity, UnixMs};

use super::raise;
use super::window::sustained_node;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct DriverStack;

const MODULE_MISSING: Cause = Cause {
    id: "driver.module_missing",
    title: "NVIDIA kernel module not loaded",
    severity: Severity::Warning,
    detects: "A kernel module the node needs is not in /proc/modules: `nvidia_peermem` (or the \
              legacy `nv_peer_mem`) on a node with InfiniBand or RoCE devices, or `nvidia_uvm` \
              on any GPU node.",
    action: "`modprobe nvidia_peermem` (GPUDirect RDMA; without it NCCL stages every \
             inter-node transfer through host memory: check `NCCL_DEBUG=INFO` for `GDR 0`) or \
             `modprobe nvidia_uvm` (CUDA's memory manager; inside containers it cannot be \
             loaded on demand), then add it to /etc/modules-load.d so the node image loads it \
             at boot.",
};

const VERSION_MISMATCH: Cause = Cause {
    id: "driver.version_mismatch",
    title: "Driver/library version mismatch",
    severity: Severity::Critical,
    detects: "A loaded NVIDIA kernel module, /proc/driver/nvidia/version, or the user-space \
              libcuda / libnvidia-ml library reports another version than the kernel driver \
              NVML reports (or, when NVML cannot say, the `nvidia` module): typically a driver \
              upgraded without a reboot.",
    action: "Drain the node and reboot it (or unload and reload every nvidia module) so the \
             kernel driver matches the installed libraries; CUDA and NVML refuse to start on \
             a mismatch (\"Failed to initialize NVML: Driver/library version mismatch\"). If \
             one module alone differs, a stale DKMS build is loaded: rebuild it for the \
             installed driver.",
};

const PERSISTENCED_DOWN: Cause = Cause {
    id: "driver.persistenced_down",
    title: "nvidia-persistenced not running",
    severity: Severity::Warning,
    detects: "No `nvidia-persistenced` process on a GPU node for 15 s and 3 samples. Reported \
              as info when every GPU still has persistence mode on (the legacy \
              `nvidia-smi -pm 1`).",
    action: "`systemctl enable --now nvidia-persistenced` and check its log \
             (`journalctl -u nvidia-persistenced`). Without it the driver tears each idle GPU \
             down and re-initialises it for the next process (seconds per GPU, per job start \
             and per NVML query).",
};

const FABRICMANAGER_DOWN: Cause = Cause {
    id: "driver.fabricmanager_down",
    title: "Fabric Manager not running",
    severity: Severity::Critical,
    detects: "A node with NVSwitches on its PCI bus runs no `nv-fabricmanager` process for 15 s \
              and 3 samples, while the installed Fabric Manager matches the driver (or is not \
              installed).",
    action: "`systemctl enable --now nvidia-fabricmanager` and read \
             /var/log/fabricmanager.log; install the `nvidia-fabricmanager` package of the \
             driver's exact version if it is missing. Without it the NVSwitch fabric is not \
             set up: CUDA fails with \"system not yet initialized\" and multi-GPU jobs cannot \
             start.",
};

const FABRICMANAGER_VERSION: Cause = Cause {
    id: "driver.fabricmanager_version",
    title: "Fabric Manager version differs from the driver",
    severity: Severity::Critical,
    detects: "On a node with NVSwitches, the installed Fabric Manager package's version differs \
              from the kernel driver's: Fabric Manager refuses to start against another driver.",
    action: "Install the `nvidia-fabricmanager` package of exactly the driver's version (pin \
             both together in the node image), then `systemctl restart \
             nvidia-fabricmanager` and check that it runs.",
};

static INFO: RuleInfo = RuleInfo {
    id: "driver",
    title: "NVIDIA driver stack",
    catalog: &[
        MODULE_MISSING,
        VERSION_MISMATCH,
        PERSISTENCED_DOWN,
        FABRICMANAGER_DOWN,
        FABRICMANAGER_VERSION,
    ],
};

/// A daemon must be gone this long before it is reported (a restart takes a second).
const HOLD_MS: u64 = 15_000;

/// The kernel driver's version: NVML's when it answers, else the `nvidia` module's.
fn driver_version<'a>(node: &'a NodeState, d: &'a DriverStackInfo) -> &'a str {
    let nvml = node.inventory.driver.driver_version.as_str();
    if nvml.is_empty() {
        d.kernel_version()
    } else {
        nvml
    }
}

impl DriverStack {
    /// The inventory is read, not sampled: it has no noise to hold against.
    fn inventory_since(node: &NodeState) -> UnixMs {
        node.first_seen.max(node.inventory.read_at)
    }

    fn missing(&self, node: &NodeState, d: &DriverStackInfo) -> Option<Finding> {
        // Without the `nvidia` module the list says nothing about this driver (no GPU, or a
        // container that sees another kernel's modules).
        d.module("nvidia")?;
        let rdma = node.inventory.host.ib_devices.len();
        let mut gone: Vec<(&str, String)> = Vec::new();
        if rdma > 0 && d.module("nvidia_peermem").is_none() && d.module("nv_peer_mem").is_none()
        {
            gone.push((
                "nvidia_peermem",
                format!("loaded (the node has {rdma} RDMA devices)"),
            ));
        }
        if !node.inventory.gpus.is_empty() && d.module("nvidia_uvm").is_none() {
            gone.push(("nvidia_uvm", "loaded (CUDA needs it)".into()));
        }
        if gone.is_empty() {
            return None;
        }
        let mut f = raise(self, &MODULE_MISSING, node, Self::inventory_since(node));
        for (m, want) in &gone {
            f.evidence.push(Evidence::new(
                &format!("host.driver.modules.{m}"),
                "not loaded",
                want.as_str(),
            ));
        }
        let names: Vec<&str> = gone.iter().map(|(m, _)| *m).collect();
        let mut why = Vec::new();
        if names.contains(&"nvidia_peermem") {
            why.push(format!(
                "GPUDirect RDMA is off on a node with {rdma} RDMA devices: NCCL stages inter-node traffic through host memory"
            ));
        }
        if names.contains(&"nvidia_uvm") {
            why.push("CUDA cannot start where the module cannot be loaded on demand".into());
        }
        f.summary = format!("{} not loaded: {}", names.join(" and "), why.join("; "));
        Some(f)
    }

    fn mismatch(&self, node: &NodeState, d: &DriverStackInfo) -> Option<Finding> {
        let want = driver_version(node, d);
        if want.is_empty() {
            return None;
        }
        let mut parts: Vec<(String, &str)> = d
            .modules
            .iter()
            .filter(|m| !m.version.is_empty() && m.version != want)
            .map(|m| (format!("host.driver.modules.{}", m.name), m.version.as_str()))
            .collect();
        for (field, v) in [
            ("host.driver.proc_version", d.kernel_driver_version.as_str()),
            ("host.driver.libcuda", d.libcuda_version.as_str()),
            ("host.driver.libnvidia_ml", d.libnvidia_ml_version.as_str()),
        ] {
            if !v.is_empty() && v != want {
                parts.push((field.to_string(), v));
            }
        }
        if parts.is_empty() {
            return None;
        }
        let mut f = raise(self, &VERSION_MISMATCH, node, Self::inventory_since(node));
        let mut names = Vec::new();
        for (field, v) in &parts {
            f.evidence.push(Evidence::new(
                field,
                *v,
                format!("{want} (the kernel driver)"),
            ));
            let short = field
                .trim_start_matches("host.driver.modules.")
                .trim_start_matches("host.driver.");
            names.push(format!("{short} {v}"));
        }
        f.summary = format!(
            "driver/library version mismatch: kernel driver {want}, but {}; reboot the node (or reload the modules) so they match",
            names.join(", ")
        );
        Some(f)
    }

    fn persistenced(&self, node: &NodeState) -> Option<Finding> {
        if node.inventory.gpus.is_empty() {
            return None;
        }
        let held = sustained_node(node, HOLD_MS, |s| {
            s.host.driver_daemons.is_some_and(|d| !d.persistenced)
        })?;
        let mut f = raise(self, &PERSISTENCED_DOWN, node, held.since);
        let gpus = &node.inventory.gpus;
        let off: Vec<String> = gpus
            .iter()
            .filter(|g| g.persistence_mode == Some(false))
            .map(|g| g.index.to_string())
            .collect();
        f.evidence
            .push(Evidence::new("host.driver.persistenced", "not running", "running").held_for(held.held_ms));
        if !off.is_empty() {
            f.evidence.push(Evidence::new(
                "gpu.persistence_mode",
                format!("off on GPU {}", off.join(", ")),
                "on",
            ));
        }
        let all_on = gpus.iter().all(|g| g.persistence_mode == Some(true));
        f.summary = if all_on {
            f.severity = Severity::Info;
            "nvidia-persistenced is not running; persistence mode is still on (legacy mode, lost at the next reboot)".into()
        } else if off.is_empty() {
            "nvidia-persistenced is not running".into()
        } else {
            format!(
                "nvidia-persistenced is not running: {} of {} GPUs have persistence mode off and are re-initialised for every new process",
                off.len(),
                gpus.len()
            )
        };
        Some(f)
    }

    fn fabric_manager(&self, node: &NodeState, d: &DriverStackInfo) -> Option<Finding> {
        if d.nvswitch_count == 0 {
            return None;
        }
        let want = driver_version(node, d);
        let installed = d.fabricmanager_version.as_str();
        let running = node
            .latest()
            .and_then(|s| s.host.driver_daemons)
            .map(|d| d.fabricmanager);
        if !installed.is_empty() && !want.is_empty() && installed != want {
            let mut f = raise(self, &FABRICMANAGER_VERSION, node, Self::inventory_since(node));
            f.evidence.push(Evidence::new(
                "host.driver.fabricmanager_version",
                installed,
                format!("{want} (the kernel driver)"),
            ));
            if running == Some(false) {
                f.evidence
                    .push(Evidence::new("host.driver.fabricmanager", "not running", "running"));
            }
            f.summary = format!(
                "Fabric Manager {installed} installed against driver {want} on a node with {} NVSwitches{}",
                d.nvswitch_count,
                if running == Some(false) {
                    ": it is not running, so the NVSwitch fabric is not set up"
                } else {
                    ""
                }
            );
            return Some(f);
        }
        let held = sustained_node(node, HOLD_MS, |s| {
            s.host.driver_daemons.is_some_and(|d| !d.fabricmanager)
        })?;
        let mut f = raise(self, &FABRICMANAGER_DOWN, node, held.since);
        f.evidence.push(
            Evidence::new("host.driver.fabricmanager", "not running", "running")
                .held_for(held.held_ms),
        );
        f.summary = format!(
            "Fabric Manager is not running on a node with {} NVSwitches{}: CUDA cannot use the NVSwitch fabric",
            d.nvswitch_count,
            if installed.is_empty() {
                " (not installed)"
            } else {
                ""
            }
        );
        Some(f)
    }
}

impl Rule for DriverStack {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let stack = node.inventory.host.driver_stack.as_ref();
        [
            stack.and_then(|d| self.missing(node, d)),
            stack.and_then(|d| self.mismatch(node, d)),
            self.persistenced(node),
            stack.and_then(|d| self.fabric_manager(node, d)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// An HGX H100 node's driver stack on 550.54.15, every part in place.
#[cfg(test)]
pub(super) fn hgx_stack() -> DriverStackInfo {
    use gpufleet_model::KernelModuleInfo;
    let v = "550.54.15";
    DriverStackInfo {
        modules: [
            "nvidia",
            "nvidia_drm",
            "nvidia_modeset",
            "nvidia_peermem",
            "nvidia_uvm",
        ]
        .iter()
        .map(|m| KernelModuleInfo {
            name: m.to_string(),
            version: v.into(),
            state: "Live".into(),
        })
        .collect(),
        kernel_driver_version: v.into(),
        libcuda_version: v.into(),
        libnvidia_ml_version: v.into(),
        fabricmanager_version: v.into(),
        nvswitch_count: 4,
    }
}

#[cfg(test)]
fn hgx_node(edit: impl Fn(&mut DriverStackInfo), daemons: gpufleet_model::DriverDaemons) -> NodeState {
    let mut n = super::testutil::node(8, 40, |_, s| s.host.driver_daemons = Some(daemons));
    n.inventory.host.ib_devices = (0..8)
        .map(|i| gpufleet_model::IbDeviceInfo {
            name: format!("mlx5_{i}"),
            ..Default::default()
        })
        .collect();
    let mut d = hgx_stack();
    edit(&mut d);
    n.inventory.host.driver_stack = Some(d);
    n
}

#[cfg(test)]
const UP: gpufleet_model::DriverDaemons = gpufleet_model::DriverDaemons {
    persistenced: true,
    fabricmanager: true,
};

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let named = |name: &'static str, mut n: NodeState| {
        n.identity.hostname = format!("trigger-{}", name.replace(' ', "-"));
        (name, n)
    };
    vec![
        named(
            "peermem missing",
            hgx_node(|d| d.modules.retain(|m| m.name != "nvidia_peermem"), UP),
        ),
        named(
            "driver library mismatch",
            hgx_node(|d| d.libcuda_version = "550.90.07".into(), UP),
        ),
        named(
            "persistenced down",
            hgx_node(
                |_| {},
                gpufleet_model::DriverDaemons {
                    persistenced: false,
                    ..UP
                },
            ),
        ),
        named(
            "fabricmanager down",
            hgx_node(
                |_| {},
                gpufleet_model::DriverDaemons {
                    fabricmanager: false,
                    ..UP
                },
            ),
        ),
        named(
            "fabricmanager version",
            hgx_node(|d| d.fabricmanager_version = "550.90.07".into(), UP),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::NOW;
    use gpufleet_model::DriverDaemons;

    fn set_module(d: &mut DriverStackInfo, name: &str, version: &str) {
        d.modules
            .iter_mut()
            .filter(|m| m.name == name)
            .for_each(|m| m.version = version.into());
    }

    #[test]
    fn cases() {
        type Edit = fn(&mut DriverStackInfo);
        const DOWN_P: DriverDaemons = DriverDaemons {
            persistenced: false,
            fabricmanager: true,
        };
        const DOWN_FM: DriverDaemons = DriverDaemons {
            persistenced: true,
            fabricmanager: false,
        };
        // (name, edit of the HGX stack, daemons in every sample, causes wanted)
        let cases: &[(&str, Edit, DriverDaemons, &[&str])] = &[
            ("healthy", |_| {}, UP, &[]),
            (
                "peermem missing",
                |d| d.modules.retain(|m| m.name != "nvidia_peermem"),
                UP,
                &["driver.module_missing"],
            ),
            (
                "legacy nv_peer_mem instead is fine",
                |d| {
                    let m = d.modules.iter_mut().find(|m| m.name == "nvidia_peermem");
                    m.unwrap().name = "nv_peer_mem".into();
                },
                UP,
                &[],
            ),
            (
                "uvm missing",
                |d| d.modules.retain(|m| m.name != "nvidia_uvm"),
                UP,
                &["driver.module_missing"],
            ),
            (
                "modeset and drm are optional on a compute node",
                |d| d.modules.retain(|m| !m.name.ends_with("drm") && m.name != "nvidia_modeset"),
                UP,
                &[],
            ),
            (
                "no nvidia module: nothing to judge",
                |d| d.modules.clear(),
                UP,
                &[],
            ),
            (
                "libraries upgraded without a reboot",
                |d| {
                    d.libcuda_version = "550.90.07".into();
                    d.libnvidia_ml_version = "550.90.07".into();
                },
                UP,
                &["driver.version_mismatch"],
            ),
            (
                "one stale module",
                |d| set_module(d, "nvidia_peermem", "535.161.08"),
                UP,
                &["driver.version_mismatch"],
            ),
            (
                "a module without a version is not a mismatch",
                |d| set_module(d, "nvidia_peermem", ""),
                UP,
                &[],
            ),
            (
                "unreadable libraries are not a mismatch",
                |d| {
                    d.libcuda_version.clear();
                    d.libnvidia_ml_version.clear();
                },
                UP,
                &[],
            ),
            ("persistenced down", |_| {}, DOWN_P, &["driver.persistenced_down"]),
            ("fabric manager down", |_| {}, DOWN_FM, &["driver.fabricmanager_down"]),
            (
                "fabric manager not installed and down",
                |d| d.fabricmanager_version.clear(),
                DOWN_FM,
                &["driver.fabricmanager_down"],
            ),
            (
                "fabric manager at another version names the version, not the daemon",
                |d| d.fabricmanager_version = "550.90.07".into(),
                DOWN_FM,
                &["driver.fabricmanager_version"],
            ),
            (
                "no NVSwitch: Fabric Manager is not needed",
                |d| {
                    d.nvswitch_count = 0;
                    d.fabricmanager_version.clear();
                },
                DOWN_FM,
                &[],
            ),
        ];
        for (name, edit, daemons, want) in cases {
            let n = hgx_node(edit, *daemons);
            let got = DriverStack.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}: {got:#?}");
            assert!(got.iter().all(|f| !f.evidence.is_empty()), "{name}");
        }
    }

    #[test]
    fn summaries_name_what_differs_and_persistence_sharpens_the_severity() {
        let n = hgx_node(|d| d.libcuda_version = "550.90.07".into(), UP);
        let f = &DriverStack.check(&n, &FleetContext::default(), NOW)[0];
        assert!(
            f.summary.contains("kernel driver 550.54.15, but libcuda 550.90.07"),
            "{}",
            f.summary
        );
        assert_eq!(f.evidence[0].field, "host.driver.libcuda");

        // Peermem is only needed beside RDMA devices.
        let mut n = hgx_node(|d| d.modules.retain(|m| m.name != "nvidia_peermem"), UP);
        n.inventory.host.ib_devices.clear();
        assert!(DriverStack.check(&n, &FleetContext::default(), NOW).is_empty());

        // NVML silent (the mismatch itself stops it): the nvidia module is the reference.
        let mut n = hgx_node(|d| d.libnvidia_ml_version = "550.90.07".into(), UP);
        n.inventory.driver.driver_version.clear();
        let f = &DriverStack.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(f.rule_id, "driver.version_mismatch");

        let down = DriverDaemons {
            persistenced: false,
            fabricmanager: true,
        };
        let mut n = hgx_node(|_| {}, down);
        for g in &mut n.inventory.gpus {
            g.persistence_mode = Some(true);
        }
        let f = &DriverStack.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(f.severity, Severity::Info, "{}", f.summary);
        n.inventory.gpus[3].persistence_mode = Some(false);
        let f = &DriverStack.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.summary.contains("1 of 8 GPUs"), "{}", f.summary);

        // A daemon gone for one sample is a restart, not a finding.
        let mut n = hgx_node(|_| {}, UP);
        n.history.back_mut().unwrap().host.driver_daemons = Some(down);
        assert!(DriverStack.check(&n, &FleetContext::default(), NOW).is_empty());
    }
}
