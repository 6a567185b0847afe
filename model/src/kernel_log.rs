//! Hardware and driver errors the kernel logs beyond Xids ([`crate::xid`]): NVSwitch SXids,
//! PCIe AER reports, block-device and filesystem errors, NIC transmit timeouts and hung tasks.
//! One line in, one classified [`KernelLine`] out — or `None` for every line that is not one of
//! these, which is nearly all of them. The formats are the kernel's and the NVIDIA driver's:
//!
//! ```text
//! nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt
//! nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)
//! nvidia 0000:18:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)
//! I/O error, dev nvme1n1, sector 2048 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2
//! blk_update_request: I/O error, dev sdb, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0
//! EXT4-fs error (device md0): ext4_find_entry:1463: inode #2: comm python3: reading directory lblock 0
//! EXT4-fs (md0): Remounting filesystem read-only
//! XFS (md0): metadata I/O error in "xfs_imap_to_bp+0x5c/0xa0" at daddr 0x80 len 32 error 5
//! nvme nvme0: I/O 123 QID 4 timeout, aborting
//! NETDEV WATCHDOG: enp170s0f0np0 (mlx5_core): transmit queue 7 timed out 5120 ms
//! INFO: task python3:4242 blocked for more than 120 seconds.
//! ```
//!
//! SXid lines come in groups (the classifying line, then `Data {…}` and `Severity … Engine
//! instance …` lines with the same code): only the one that says Fatal or Non-fatal counts.

use crate::{Event, EventKind, Severity, UnixMs};

/// What a kernel line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelLine {
    /// An NVSwitch error: which switch, its PCI address, the SXid, fatal or not, the text.
    Sxid {
        nvswitch: u32,
        pci: String,
        code: u32,
        fatal: bool,
        text: String,
    },
    /// A PCIe AER report on a device: `Corrected`, `Uncorrected (Non-Fatal)` or
    /// `Uncorrected (Fatal)`, and the error type (`Physical Layer`, `Transaction Layer`, …).
    PcieAer {
        device: String,
        severity: String,
        kind: String,
    },
    /// A block device or filesystem error: the device, what happened, and whether the
    /// filesystem went read-only.
    Storage {
        device: String,
        what: String,
        read_only: bool,
        timeout: bool,
    },
    /// A NIC whose transmit queue stalled (the netdev watchdog fired).
    NicTxTimeout { nic: String, driver: String },
    /// A task blocked in D state past the kernel's hung-task timeout.
    HungTask {
        comm: String,
        pid: u32,
        seconds: u64,
    },
}

/// Classifies one kernel log message (the part after the record header).
pub fn classify(line: &str) -> Option<KernelLine> {
    sxid(line)
        .or_else(|| aer(line))
        .or_else(|| storage(line))
        .or_else(|| tx_timeout(line))
        .or_else(|| hung_task(line))
}

fn sxid(line: &str) -> Option<KernelLine> {
    let at = line.find("nvidia-nvswitch")?;
    let rest = &line[at + "nvidia-nvswitch".len()..];
    let (num, rest) = rest.split_once(':')?;
    let nvswitch = num.trim().parse().ok()?;
    let rest = rest.trim_start().strip_prefix("SXid (")?;
    let (addr, rest) = rest.split_once(')')?;
    let pci = addr.trim_start_matches("PCI:").to_string();
    let rest = rest.trim_start_matches(':').trim_start();
    let (code, rest) = rest.split_once(',')?;
    let code = code.trim().parse().ok()?;
    let rest = rest.trim_start();
    let (fatal, text) = if let Some(t) = rest.strip_prefix("Non-fatal,") {
        (false, t)
    } else if let Some(t) = rest.strip_prefix("Fatal,") {
        (true, t)
    } else {
        return None;
    };
    Some(KernelLine::Sxid {
        nvswitch,
        pci,
        code,
        fatal,
        text: text.trim().to_string(),
    })
}

fn aer(line: &str) -> Option<KernelLine> {
    let (head, rest) = line.split_once(": PCIe Bus Error: severity=")?;
    // `nvidia 0000:18:00.0` or `pcieport 0000:00:01.0`: the device is the last word.
    let device = head.split_whitespace().last()?.to_string();
    let (severity, rest) = match rest.find(", type=") {
        Some(i) => (&rest[..i], &rest[i + ", type=".len()..]),
        None => (rest, ""),
    };
    let kind = rest.split(',').next().unwrap_or("").trim().to_string();
    Some(KernelLine::PcieAer {
        device,
        severity: severity.trim().to_string(),
        kind,
    })
}

fn storage(line: &str) -> Option<KernelLine> {
    let make = |device: &str, what: &str, read_only: bool, timeout: bool| {
        Some(KernelLine::Storage {
            device: device.to_string(),
            what: what.to_string(),
            read_only,
            timeout,
        })
    };
    if let Some(i) = line.find("I/O error, dev ") {
        let dev = line[i + "I/O error, dev ".len()..]
            .split(',')
            .next()?
            .trim();
        let what = if line[..i].contains("critical medium error") {
            "medium error"
        } else {
            "I/O error"
        };
        return make(dev, what, false, false);
    }
    if let Some(i) = line.find("critical medium error, dev ") {
        let dev = line[i + "critical medium error, dev ".len()..]
            .split(',')
            .next()?
            .trim();
        return make(dev, "medium error", false, false);
    }
    for fs in ["EXT4-fs", "XFS", "BTRFS"] {
        let Some(rest) = line.strip_prefix(fs).map(str::trim_start) else {
            continue;
        };
        // `EXT4-fs error (device md0): …`, `EXT4-fs (md0): Remounting …`, `XFS (md0): …`.
        let (is_error, rest) = match rest.strip_prefix("error ") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let rest = rest.strip_prefix('(')?;
        let (dev, msg) = rest.split_once("):")?;
        let dev = dev.trim_start_matches("device ").trim();
        let msg = msg.trim();
        if msg.contains("Remounting filesystem read-only") || msg.contains("read-only") {
            return make(dev, "remounted read-only", true, false);
        }
        if is_error || msg.contains("I/O error") || msg.contains("Corruption") {
            return make(
                dev,
                &format!("{} error", fs.trim_end_matches("-fs")),
                false,
                false,
            );
        }
        return None;
    }
    if let Some(rest) = line.strip_prefix("nvme nvme") {
        let (num, msg) = rest.split_once(':')?;
        let dev = format!("nvme{}", num.trim());
        if msg.contains("timeout") {
            return make(&dev, "command timeout", false, true);
        }
        if msg.contains("controller is down") || msg.contains("Removing after probe failure") {
            return make(&dev, "controller down", false, false);
        }
    }
    None
}

fn tx_timeout(line: &str) -> Option<KernelLine> {
    let rest = line.split_once("NETDEV WATCHDOG: ")?.1;
    if !rest.contains("timed out") {
        return None;
    }
    let (nic, rest) = rest.split_once(' ')?;
    let driver = rest
        .strip_prefix('(')
        .and_then(|r| r.split_once(')'))
        .map_or("", |(d, _)| d);
    Some(KernelLine::NicTxTimeout {
        nic: nic.trim_end_matches(':').to_string(),
        driver: driver.to_string(),
    })
}

fn hung_task(line: &str) -> Option<KernelLine> {
    let rest = line.split_once("INFO: task ")?.1;
    let (who, rest) = rest.split_once(" blocked for more than ")?;
    let (comm, pid) = who.rsplit_once(':')?;
    let seconds = rest.split_whitespace().next()?.parse().ok()?;
    Some(KernelLine::HungTask {
        comm: comm.to_string(),
        pid: pid.parse().ok()?,
        seconds,
    })
}

impl KernelLine {
    /// The event the line becomes, at `at`, seen by `source` (`kmsg`, `simulated`).
    pub fn event(&self, at: UnixMs, source: &str) -> Event {
        let e = match self {
            KernelLine::Sxid {
                nvswitch,
                pci,
                code,
                fatal,
                text,
            } => Event::new(
                at,
                EventKind::Kernel,
                if *fatal {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!("kernel.sxid.{code}"),
                format!(
                    "NVSwitch {nvswitch} ({pci}) SXid {code}, {}: {text}",
                    if *fatal { "fatal" } else { "non-fatal" }
                ),
            )
            .detail("nvswitch", nvswitch)
            .detail("pci", pci)
            .detail("sxid", code)
            .detail("fatal", fatal),
            KernelLine::PcieAer {
                device,
                severity,
                kind,
            } => Event::new(
                at,
                EventKind::Kernel,
                if severity.contains("Fatal)") && !severity.contains("Non-Fatal") {
                    Severity::Critical
                } else if severity.starts_with("Uncorrected") {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                "kernel.pcie_aer",
                format!("PCIe AER on {device}: {severity}, {kind}"),
            )
            .detail("device", device)
            .detail("severity", severity)
            .detail("type", kind),
            KernelLine::Storage {
                device,
                what,
                read_only,
                timeout,
            } => Event::new(
                at,
                EventKind::Kernel,
                if *timeout {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                "kernel.storage",
                format!("{device}: {what}"),
            )
            .detail("device", device)
            .detail("what", what)
            .detail("read_only", read_only),
            KernelLine::NicTxTimeout { nic, driver } => Event::new(
                at,
                EventKind::Kernel,
                Severity::Warning,
                "kernel.nic_tx_timeout",
                format!("{nic}: transmit queue timed out ({driver})"),
            )
            .detail("nic", nic)
            .detail("driver", driver),
            KernelLine::HungTask { comm, pid, seconds } => Event::new(
                at,
                EventKind::Kernel,
                Severity::Warning,
                "kernel.hung_task",
                format!("task {comm}:{pid} blocked for more than {seconds} seconds"),
            )
            .detail("comm", comm)
            .detail("pid", pid)
            .detail("seconds", seconds),
        };
        e.from_source(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_real_lines() {
        let cases: &[(&str, Option<KernelLine>)] = &[
            (
                "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt",
                Some(KernelLine::Sxid {
                    nvswitch: 3,
                    pci: "0000:04:00.0".into(),
                    code: 22013,
                    fatal: false,
                    text: "Link 44 Minion Link DLREQ interrupt".into(),
                }),
            ),
            (
                "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)",
                Some(KernelLine::Sxid {
                    nvswitch: 0,
                    pci: "0000:05:00.0".into(),
                    code: 12028,
                    fatal: true,
                    text: "Link 46 egress non-posted PRIV error (First)".into(),
                }),
            ),
            // The group's other lines carry no verdict.
            (
                "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Data {0x0000002b, 0x0000002b, 0x00000000}",
                None,
            ),
            (
                "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Severity 0 Engine instance 44 Sub-engine instance 00",
                None,
            ),
            (
                "nvidia 0000:18:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)",
                Some(KernelLine::PcieAer {
                    device: "0000:18:00.0".into(),
                    severity: "Uncorrected (Non-Fatal)".into(),
                    kind: "Transaction Layer".into(),
                }),
            ),
            (
                "pcieport 0000:00:01.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
                Some(KernelLine::PcieAer {
                    device: "0000:00:01.0".into(),
                    severity: "Corrected".into(),
                    kind: "Physical Layer".into(),
                }),
            ),
            (
                "I/O error, dev nvme1n1, sector 2048 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2",
                Some(KernelLine::Storage {
                    device: "nvme1n1".into(),
                    what: "I/O error".into(),
                    read_only: false,
                    timeout: false,
                }),
            ),
            (
                "blk_update_request: I/O error, dev sdb, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0",
                Some(KernelLine::Storage {
                    device: "sdb".into(),
                    what: "I/O error".into(),
                    read_only: false,
                    timeout: false,
                }),
            ),
            (
                "critical medium error, dev sdc, sector 1234 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0",
                Some(KernelLine::Storage {
                    device: "sdc".into(),
                    what: "medium error".into(),
                    read_only: false,
                    timeout: false,
                }),
            ),
            (
                "EXT4-fs (md0): Remounting filesystem read-only",
                Some(KernelLine::Storage {
                    device: "md0".into(),
                    what: "remounted read-only".into(),
                    read_only: true,
                    timeout: false,
                }),
            ),
            (
                "EXT4-fs error (device md0): ext4_find_entry:1463: inode #2: comm python3: reading directory lblock 0",
                Some(KernelLine::Storage {
                    device: "md0".into(),
                    what: "EXT4 error".into(),
                    read_only: false,
                    timeout: false,
                }),
            ),
            (
                "XFS (md0): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xa0\" at daddr 0x80 len 32 error 5",
                Some(KernelLine::Storage {
                    device: "md0".into(),
                    what: "XFS error".into(),
                    read_only: false,
                    timeout: false,
                }),
            ),
            (
                "EXT4-fs (md0): mounted filesystem with ordered data mode. Quota mode: none.",
                None,
            ),
            (
                "nvme nvme0: I/O 123 QID 4 timeout, aborting",
                Some(KernelLine::Storage {
                    device: "nvme0".into(),
                    what: "command timeout".into(),
                    read_only: false,
                    timeout: true,
                }),
            ),
            (
                "NETDEV WATCHDOG: enp170s0f0np0 (mlx5_core): transmit queue 7 timed out 5120 ms",
                Some(KernelLine::NicTxTimeout {
                    nic: "enp170s0f0np0".into(),
                    driver: "mlx5_core".into(),
                }),
            ),
            (
                "INFO: task python3:4242 blocked for more than 120 seconds.",
                Some(KernelLine::HungTask {
                    comm: "python3".into(),
                    pid: 4242,
                    seconds: 120,
                }),
            ),
            (
                "INFO: task kworker/u449:2:811 blocked for more than 241 seconds.",
                Some(KernelLine::HungTask {
                    comm: "kworker/u449:2".into(),
                    pid: 811,
                    seconds: 241,
                }),
            ),
            (
                "NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.",
                None,
            ),
            ("mlx5_core 0000:aa:00.0 enp170s0f0np0: Link up", None),
            ("", None),
            ("nvidia-nvswitch", None),
            ("nvidia-nvswitchX: SXid (PCI:0", None),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), *want, "{line}");
        }
    }

    #[test]
    fn events_carry_severity_and_details() {
        let at = UnixMs(1_700_000_000_000);
        let fatal = classify(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)",
        )
        .unwrap()
        .event(at, "kmsg");
        assert_eq!(fatal.kind, EventKind::Kernel);
        assert_eq!(fatal.severity, Severity::Critical);
        assert_eq!(fatal.code, "kernel.sxid.12028");
        assert_eq!(fatal.details["nvswitch"], "0");
        assert_eq!(fatal.source, "kmsg");
        for (severity, want) in [
            ("Corrected", Severity::Info),
            ("Uncorrected (Non-Fatal)", Severity::Warning),
            ("Uncorrected (Fatal)", Severity::Critical),
        ] {
            let e = KernelLine::PcieAer {
                device: "0000:18:00.0".into(),
                severity: severity.into(),
                kind: "Transaction Layer".into(),
            }
            .event(at, "kmsg");
            assert_eq!(e.severity, want, "{severity}");
        }
    }
}
