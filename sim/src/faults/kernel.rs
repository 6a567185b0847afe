//! Errors the kernel logs outside NVML: `nvswitch_sxid`, `kernel_pcie_errors`,
//! `kernel_storage_errors` and `nic_tx_timeout`. Each writes real kernel log lines (the driver's
//! and the kernel's own formats, [`gpufleet_model::kernel_log`]) on a schedule while it is on;
//! the agent's kernel-log part turns them into events, as it would on a real host.

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, in_range, kind, non_empty};
use crate::models::GpuModelProfile;
use crate::state::KernelLogSchedule;

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<NvswitchSxid>(
        "nvswitch_sxid",
        &[],
        Scope::Node,
        "fabric.nvswitch.sxid_fatal",
        "an NVSwitch logging SXids (fatal by default) in the kernel log",
    ),
    kind::<KernelPcieErrors>(
        "kernel_pcie_errors",
        &[],
        Scope::Node,
        "host.kernel.pcie_errors",
        "PCIe AER errors reported for a device in the kernel log",
    ),
    kind::<KernelStorageErrors>(
        "kernel_storage_errors",
        &[],
        Scope::Node,
        "host.kernel.storage_errors",
        "I/O errors on a block device in the kernel log",
    ),
    kind::<NicTxTimeout>(
        "nic_tx_timeout",
        &[],
        Scope::Node,
        "host.kernel.nic_tx_timeout",
        "a NIC's transmit queue timing out (the netdev watchdog) in the kernel log",
    ),
];

fn interval(per_minute: u32) -> i64 {
    60_000 / i64::from(per_minute.max(1))
}

fn rate(per_minute: u32) -> Result<(), String> {
    in_range("per_minute", per_minute, 1, 600).map(|_| ())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvswitchSxid {
    /// Which NVSwitch (0-based, as `nvidia-nvswitchN`).
    pub nvswitch: u32,
    pub sxid: u32,
    pub fatal: bool,
    /// What the driver says after the verdict.
    pub text: String,
    pub per_minute: u32,
}

impl Default for NvswitchSxid {
    fn default() -> Self {
        NvswitchSxid {
            nvswitch: 1,
            sxid: 12028,
            fatal: true,
            text: "Link 46 egress non-posted PRIV error (First)".into(),
            per_minute: 1,
        }
    }
}

impl Params for NvswitchSxid {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        in_range("sxid", self.sxid, 1, 99_999)?;
        rate(self.per_minute)
    }
}

/// The PCI address of simulated NVSwitch `n` (the HGX baseboards' switches sit on buses 05…).
fn nvswitch_pci(n: u32) -> String {
    format!("0000:{:02x}:00.0", 5 + n)
}

impl FaultKind for NvswitchSxid {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        let n = p.host.nvswitch_count();
        if n == 0 {
            return Err(format!("the simulated host of {} has no NVSwitch", p.id));
        }
        in_range("nvswitch", self.nvswitch, 0, n - 1).map(|_| ())
    }

    fn kernel_log(&self) -> Option<KernelLogSchedule> {
        Some(KernelLogSchedule {
            line: format!(
                "nvidia-nvswitch{}: SXid (PCI:{}): {}, {}, {}",
                self.nvswitch,
                nvswitch_pci(self.nvswitch),
                self.sxid,
                if self.fatal { "Fatal" } else { "Non-fatal" },
                self.text
            ),
            interval_ms: interval(self.per_minute),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelPcieErrors {
    /// The device's PCI address.
    pub device: String,
    /// `Corrected`, `Uncorrected (Non-Fatal)` or `Uncorrected (Fatal)`.
    pub severity: String,
    /// `Physical Layer`, `Data Link Layer` or `Transaction Layer`.
    pub layer: String,
    pub per_minute: u32,
}

impl Default for KernelPcieErrors {
    fn default() -> Self {
        KernelPcieErrors {
            device: "0000:18:00.0".into(),
            severity: "Uncorrected (Non-Fatal)".into(),
            layer: "Transaction Layer".into(),
            per_minute: 2,
        }
    }
}

const AER_SEVERITIES: &[&str] = &[
    "Corrected",
    "Uncorrected (Non-Fatal)",
    "Uncorrected (Fatal)",
];

impl Params for KernelPcieErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("device", Some(&self.device))?;
        if !AER_SEVERITIES.contains(&self.severity.as_str()) {
            return Err(format!(
                "severity = \"{}\": one of {}",
                self.severity,
                AER_SEVERITIES.join(", ")
            ));
        }
        rate(self.per_minute)
    }
}

impl FaultKind for KernelPcieErrors {
    fn kernel_log(&self) -> Option<KernelLogSchedule> {
        Some(KernelLogSchedule {
            line: format!(
                "nvidia {}: PCIe Bus Error: severity={}, type={}, (Requester ID)",
                self.device, self.severity, self.layer
            ),
            interval_ms: interval(self.per_minute),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelStorageErrors {
    /// The block device.
    pub device: String,
    /// Command timeouts (`nvme nvmeN: I/O … timeout`) instead of I/O errors.
    pub timeouts: bool,
    pub per_minute: u32,
}

impl Default for KernelStorageErrors {
    fn default() -> Self {
        KernelStorageErrors {
            device: "nvme1n1".into(),
            timeouts: false,
            per_minute: 6,
        }
    }
}

impl Params for KernelStorageErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("device", Some(&self.device))?;
        if self.timeouts && !self.device.starts_with("nvme") {
            return Err(format!(
                "timeouts = true needs an NVMe device (device = \"{}\")",
                self.device
            ));
        }
        rate(self.per_minute)
    }
}

impl FaultKind for KernelStorageErrors {
    fn kernel_log(&self) -> Option<KernelLogSchedule> {
        let line = if self.timeouts {
            let ctrl: String = self
                .device
                .trim_start_matches("nvme")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("nvme nvme{ctrl}: I/O 417 QID 12 timeout, aborting")
        } else {
            format!(
                "I/O error, dev {}, sector 1953525168 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2",
                self.device
            )
        };
        Some(KernelLogSchedule {
            line,
            interval_ms: interval(self.per_minute),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NicTxTimeout {
    pub nic: String,
    pub driver: String,
    pub per_minute: u32,
}

impl Default for NicTxTimeout {
    fn default() -> Self {
        NicTxTimeout {
            nic: "eth0".into(),
            driver: "mlx5_core".into(),
            per_minute: 2,
        }
    }
}

impl Params for NicTxTimeout {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        non_empty("nic", Some(&self.nic))?;
        rate(self.per_minute)
    }
}

impl FaultKind for NicTxTimeout {
    fn kernel_log(&self) -> Option<KernelLogSchedule> {
        Some(KernelLogSchedule {
            line: format!(
                "NETDEV WATCHDOG: {} ({}): transmit queue 7 timed out 5120 ms",
                self.nic, self.driver
            ),
            interval_ms: interval(self.per_minute),
        })
    }
}
