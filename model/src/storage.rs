//! Storage as the jobs see it: the watched dataset and checkpoint mounts (from mountinfo and a
//! statfs bounded by a time-out) and the node's NVMe controllers (sysfs and their hwmon
//! device). Absent readings are `None`; a mount that is gone is still listed, `mounted: false`.

use serde::{Deserialize, Serialize};

/// One reading of the node's storage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StorageSample {
    /// Every watched mount point, mounted or not.
    pub mounts: Vec<StorageMountSample>,
    /// Every controller of `/sys/class/nvme`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvme: Vec<StorageNvmeSample>,
}

/// One watched mount point.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StorageMountSample {
    /// The path as the host sees it, e.g. `/datasets`.
    pub mount_point: String,
    /// Listed in mountinfo now.
    pub mounted: bool,
    /// `nfs4`, `lustre`, `ext4`, … (`""` when not mounted).
    pub fstype: String,
    /// `storage01:/export/datasets`, `10.0.0.2@o2ib:/ckpt`, `/dev/nvme0n1p2`, …
    pub source: String,
    /// The filesystem is read-only: `ro` in its superblock options, for every process.
    pub read_only: bool,
    /// `ro` in the per-mount options of the agent's own view (a read-only bind mount, or a
    /// sandbox such as systemd's `ProtectSystem=strict` that makes every mount read-only for
    /// the agent alone).
    #[serde(default)]
    pub view_read_only: bool,
    /// Seen mounted read-write since the agent started: read-only now is a remount.
    pub was_writable: bool,
    /// How long statfs took (absent when it did not complete in time or failed).
    pub statfs_latency_ms: Option<f64>,
    /// statfs did not answer within the time-out, or the previous one still hangs.
    pub unresponsive: bool,
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    /// Why statfs failed (`""`: it answered, or timed out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub statfs_error: String,
}

impl StorageMountSample {
    /// Free space as a fraction of the size, when statfs answered with a size.
    pub fn available_fraction(&self) -> Option<f64> {
        let total = self.total_bytes.filter(|t| *t > 0)?;
        Some(self.available_bytes? as f64 / total as f64)
    }

    /// `nfs4 storage01:/export/datasets`, or `not mounted`.
    pub fn describe(&self) -> String {
        if self.mounted {
            format!("{} {}", self.fstype, self.source)
        } else {
            "not mounted".into()
        }
    }
}

/// One NVMe controller's health.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageNvmeSample {
    /// `nvme0`.
    pub name: String,
    /// `live`, `resetting`, `connecting`, `deleting`, `dead`, …
    pub state: String,
    /// Composite temperature (hwmon `temp1_input`).
    pub temperature_millicelsius: Option<i64>,
    /// The drive's warning and critical thresholds (`temp1_max`, `temp1_crit`).
    pub temperature_max_millicelsius: Option<i64>,
    pub temperature_crit_millicelsius: Option<i64>,
    /// The SMART critical warning's temperature bit (`temp1_alarm`).
    pub temperature_alarm: Option<bool>,
}

impl StorageNvmeSample {
    /// The controller can do I/O.
    pub fn is_live(&self) -> bool {
        self.state.eq_ignore_ascii_case("live")
    }
}

/// The node's storage hardware, in its inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageInfo {
    /// Every controller of `/sys/class/nvme`, in name order.
    pub nvme: Vec<StorageNvmeInfo>,
}

/// One NVMe controller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageNvmeInfo {
    pub name: String,
    pub model: String,
    pub serial: String,
    pub firmware_rev: String,
    /// `pcie`, `tcp`, `rdma`, `fc`, `loop`.
    pub transport: String,
    /// PCI address for a local drive.
    pub address: String,
}
