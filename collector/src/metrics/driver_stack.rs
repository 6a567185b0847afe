//! Per node, the NVIDIA driver stack beyond NVML — which kernel modules are loaded at which
//! version, the user-space libraries' and Fabric Manager's versions, NVSwitches, and whether
//! the driver's daemons run: the readings behind the `driver.*` findings, for dashboards and
//! alerts (`gpufleet_node_kernel_module_loaded == 0`). Labels: `Hostname` (as the DCGM series).

use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

/// Modules reported even when not loaded (as 0), so their absence is a series.
const WELL_KNOWN: &[&str] = &[
    "nvidia",
    "nvidia_uvm",
    "nvidia_modeset",
    "nvidia_drm",
    "nvidia_peermem",
];

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let stacks: Vec<(&str, &gpufleet_model::DriverStackInfo)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.inventory.host.driver_stack.as_ref()?)))
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_node_kernel_module_loaded",
        "Whether the NVIDIA kernel module is loaded (1) or not (0), with its version (/sys/module/NAME/version).",
        None,
        MetricType::Gauge,
    )?;
    for (node, d) in &stacks {
        let mut names: Vec<&str> = WELL_KNOWN.to_vec();
        names.extend(
            d.modules
                .iter()
                .map(|m| m.name.as_str())
                .filter(|m| !WELL_KNOWN.contains(m)),
        );
        for name in names {
            let m = d.module(name);
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("module", name),
                ("version", m.map_or("", |m| m.version.as_str())),
            ]))?
            .encode_gauge(&i64::from(m.is_some()))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_driver_component_info",
        "Version of each part of the NVIDIA driver stack (kernel driver, libcuda, libnvidia-ml, Fabric Manager); always 1, absent where not installed.",
        None,
        MetricType::Gauge,
    )?;
    for (node, d) in &stacks {
        for (component, version) in [
            ("kernel_driver", d.kernel_version()),
            ("libcuda", d.libcuda_version.as_str()),
            ("libnvidia_ml", d.libnvidia_ml_version.as_str()),
            ("fabricmanager", d.fabricmanager_version.as_str()),
        ] {
            if version.is_empty() {
                continue;
            }
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("component", component),
                ("version", version),
            ]))?
            .encode_gauge(&1_i64)?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_nvswitches",
        "NVSwitch devices on the node's PCI bus (Fabric Manager must run where this is above 0).",
        None,
        MetricType::Gauge,
    )?;
    for (node, d) in &stacks {
        f.encode_family(&LabelSet([("Hostname", *node)]))?
            .encode_gauge(&i64::from(d.nvswitch_count))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_node_driver_daemon_running",
        "Whether the NVIDIA daemon runs (1) or not (0): nvidia-persistenced everywhere, nv-fabricmanager on nodes with NVSwitches.",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        let Some(d) = n.latest().and_then(|s| s.host.driver_daemons) else {
            continue;
        };
        let nvswitch = n
            .inventory
            .host
            .driver_stack
            .as_ref()
            .is_some_and(|s| s.nvswitch_count > 0);
        let mut daemons = vec![("nvidia-persistenced", d.persistenced)];
        if nvswitch {
            daemons.push(("nv-fabricmanager", d.fabricmanager));
        }
        for (daemon, up) in daemons {
            f.encode_family(&LabelSet([("Hostname", n.name()), ("daemon", daemon)]))?
                .encode_gauge(&i64::from(up))?;
        }
    }
    Ok(())
}
