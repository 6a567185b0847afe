//! Per node, the watched dataset and checkpoint mounts — mounted, read-only, responding, how
//! long statfs takes, size and free space — and the local NVMe controllers' state and
//! temperature: the readings behind the `storage.*` findings, for dashboards and alerts
//! (`gpufleet_storage_mount_unresponsive == 1`). Labels: `Hostname` (as the DCGM series),
//! `mount_point` (and `fstype` on the state series) or `controller`.

use gpufleet_model::exposition::LabelSet;
use gpufleet_model::{StorageMountSample, StorageNvmeSample};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

type Flag = fn(&StorageMountSample) -> bool;

const FLAGS: &[(&str, &str, Flag)] = &[
    (
        "gpufleet_storage_mount_mounted",
        "Whether the watched mount point is mounted (1) or not (0).",
        |m| m.mounted,
    ),
    (
        "gpufleet_storage_mount_read_only",
        "Whether the watched mount is mounted read-only (1) or read-write (0).",
        |m| m.read_only,
    ),
    (
        "gpufleet_storage_mount_unresponsive",
        "Whether the mount's statfs did not answer within the agent's time-out (1) or did (0).",
        |m| m.unresponsive,
    ),
];

type Bytes = fn(&StorageMountSample) -> Option<u64>;

const BYTES: &[(&str, &str, Bytes)] = &[
    (
        "gpufleet_storage_mount_size_bytes",
        "Size of the watched mount's filesystem (in bytes), from statfs.",
        |m| m.total_bytes,
    ),
    (
        "gpufleet_storage_mount_available_bytes",
        "Space available to unprivileged users on the watched mount (in bytes), from statfs.",
        |m| m.available_bytes,
    ),
];

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let storage: Vec<(&str, &gpufleet_model::StorageSample)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?.host.storage.as_ref()?)))
        .collect();
    let mounts: Vec<(&str, &StorageMountSample)> = storage
        .iter()
        .flat_map(|(node, s)| s.mounts.iter().map(move |m| (*node, m)))
        .collect();
    let nvme: Vec<(&str, &StorageNvmeSample)> = storage
        .iter()
        .flat_map(|(node, s)| s.nvme.iter().map(move |c| (*node, c)))
        .collect();

    for (name, help, read) in FLAGS {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (node, m) in &mounts {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("mount_point", m.mount_point.as_str()),
                ("fstype", m.fstype.as_str()),
            ]))?
            .encode_gauge(&i64::from(read(m)))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_storage_mount_statfs_seconds",
        "How long the agent's statfs of the watched mount took (in seconds); absent when it timed out or failed.",
        None,
        MetricType::Gauge,
    )?;
    for (node, m) in &mounts {
        if let Some(ms) = m.statfs_latency_ms {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("mount_point", m.mount_point.as_str()),
            ]))?
            .encode_gauge(&(ms / 1000.0))?;
        }
    }

    for (name, help, read) in BYTES {
        let mut f = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (node, m) in &mounts {
            if let Some(v) = read(m) {
                f.encode_family(&LabelSet([
                    ("Hostname", *node),
                    ("mount_point", m.mount_point.as_str()),
                ]))?
                .encode_gauge(&(v as f64))?;
            }
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_storage_nvme_info",
        "A local NVMe controller's identity (model, serial, firmware); always 1.",
        None,
        MetricType::Gauge,
    )?;
    for n in nodes {
        for c in n.inventory.host.storage.iter().flat_map(|s| &s.nvme) {
            f.encode_family(&LabelSet([
                ("Hostname", n.name()),
                ("controller", c.name.as_str()),
                ("model", c.model.as_str()),
                ("serial", c.serial.as_str()),
                ("firmware_rev", c.firmware_rev.as_str()),
            ]))?
            .encode_gauge(&1_i64)?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_storage_nvme_live",
        "Whether the NVMe controller is live (1) or not (0); state says which (resetting, dead, ...).",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &nvme {
        f.encode_family(&LabelSet([
            ("Hostname", *node),
            ("controller", c.name.as_str()),
            ("state", c.state.as_str()),
        ]))?
        .encode_gauge(&i64::from(c.is_live()))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_storage_nvme_temperature_celsius",
        "The NVMe controller's composite temperature (in degrees Celsius), from hwmon temp1_input.",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &nvme {
        if let Some(t) = c.temperature_millicelsius {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("controller", c.name.as_str()),
            ]))?
            .encode_gauge(&(t as f64 / 1000.0))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_storage_nvme_temperature_alarm",
        "Whether the NVMe controller's temperature warning (SMART critical warning bit, hwmon temp1_alarm) is set (1) or not (0).",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &nvme {
        if let Some(a) = c.temperature_alarm {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("controller", c.name.as_str()),
            ]))?
            .encode_gauge(&i64::from(a))?;
        }
    }
    Ok(())
}
