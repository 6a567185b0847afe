//! `fabric.nvswitch.*` and `host.kernel.*`: hardware and driver errors the kernel logged
//! (the agent's kernel-log part turns the lines into [`EventKind::Kernel`] events,
//! `gpufleet_model::kernel_log`). NVSwitch SXids are the NVLink fabric's Xids: a fatal one
//! stalls every GPU's NVLink traffic through that switch until the switch and its GPUs are
//! reset. AER, block-device and NIC watchdog lines name hardware failing under the job.

use std::collections::BTreeMap;

use gpufleet_model::{Event, EventKind, Evidence, Finding, Severity, UnixMs, xid};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct KernelLog;

const SXID_FATAL: Cause = Cause {
    id: "fabric.nvswitch.sxid_fatal",
    title: "NVSwitch fatal error (SXid)",
    severity: Severity::Critical,
    detects: "A fatal SXid from an NVSwitch in the kernel log in the last 30 minutes \
              (`nvidia-nvswitchN: SXid (PCI:…): CODE, Fatal, …`): NVLink traffic through the \
              switch is stalled and CUDA jobs on its GPUs abort with Xid 45. Both SXid \
              findings say what NVML shows of the GPUs' NVLinks (which are down, or all \
              active), and `gpu.nvlink.down` names the SXid beside the links it sees down.",
    action: "Drain the node and stop its jobs; reset the NVSwitches and GPUs (stop \
             nvidia-fabricmanager, `nvidia-smi -r`, start it again) or reboot. Look the SXid up \
             in the Fabric Manager user guide's SXid table; if it returns on the same switch \
             and link, collect `nvidia-bug-report.sh` and open an RMA for the baseboard.",
};

const SXID_NONFATAL: Cause = Cause {
    id: "fabric.nvswitch.sxid_nonfatal",
    title: "NVSwitch errors recurring (SXid)",
    severity: Severity::Warning,
    detects: "Three or more non-fatal SXids from the node's NVSwitches in the last 10 minutes, \
              outside the first 5 minutes after boot (link training at boot logs some).",
    action: "Non-fatal SXids are corrected by the switch but point at a degrading NVLink: note \
             the switch and link in the message, check `nvidia-smi nvlink -e` on the GPUs \
             behind it, and schedule a reset or reboot; if they keep coming on the same link, \
             plan a baseboard RMA.",
};

const PCIE: Cause = Cause {
    id: "host.kernel.pcie_errors",
    title: "PCIe errors in the kernel log (AER)",
    severity: Severity::Warning,
    detects: "PCIe AER reports in the kernel log: an uncorrected error in the last 30 minutes \
              (critical when fatal), or 10 or more corrected errors in the last 10 minutes — for \
              devices whose sysfs AER counters the agent does not read (those are judged by \
              `pcie.aer.*`, so one error is one finding).",
    action: "`journalctl -k | grep -i aer` names the device and layer; `lspci -vvv -s BDF` shows \
             its error status. Physical or data-link layer errors are the slot, riser or \
             cable: reseat the device; uncorrected errors on a GPU or NIC need a drain and a \
             reboot, and an RMA if they return.",
};

const STORAGE: Cause = Cause {
    id: "host.kernel.storage_errors",
    title: "Storage errors in the kernel log",
    severity: Severity::Critical,
    detects: "Block-device I/O or medium errors, filesystem errors or a filesystem remounted \
              read-only in the kernel log in the last 30 minutes; NVMe command timeouts (2 or \
              more in 10 minutes) are a warning.",
    action: "`journalctl -k | grep -iE 'I/O error|EXT4-fs|XFS|nvme'` names the device; check it \
             with `smartctl -a /dev/DEV` or `nvme smart-log /dev/DEV`. Move checkpoints off \
             the failing disk, then replace it; a filesystem gone read-only needs `fsck` and a \
             remount before jobs can write again.",
};

const NIC_TX: Cause = Cause {
    id: "host.kernel.nic_tx_timeout",
    title: "NIC transmit timeouts",
    severity: Severity::Warning,
    detects: "The kernel's netdev watchdog reporting a NIC transmit queue timed out in the last \
              10 minutes: the NIC stopped sending and its driver reset it.",
    action: "`journalctl -k | grep -i 'NETDEV WATCHDOG'` names the NIC; check its firmware \
             (`ethtool -i NIC`, update to the fleet's version), the PCIe link and the switch \
             port. Each reset stalls traffic over the NIC for seconds.",
};

static INFO: RuleInfo = RuleInfo {
    id: "host.kernel",
    title: "Kernel-logged hardware errors",
    catalog: &[SXID_FATAL, SXID_NONFATAL, PCIE, STORAGE, NIC_TX],
};

const RECENT_MS: u64 = 30 * 60 * 1000;
const SHORT_MS: u64 = 10 * 60 * 1000;
const BOOT_GRACE_MS: i64 = 5 * 60 * 1000;
const NONFATAL_SXIDS: usize = 3;
const CORRECTED_AER: usize = 10;
const NVME_TIMEOUTS: usize = 2;

fn detail<'a>(e: &'a Event, key: &str) -> &'a str {
    e.details.get(key).map_or("", String::as_str)
}

/// Events of one class, grouped by what they are about (a switch, a device, a NIC).
#[derive(Default)]
struct Group<'a> {
    by: BTreeMap<String, Vec<&'a Event>>,
}

impl<'a> Group<'a> {
    fn add(&mut self, key: String, e: &'a Event) {
        self.by.entry(key).or_default().push(e);
    }

    fn count(&self) -> usize {
        self.by.values().map(Vec::len).sum()
    }

    fn first(&self) -> Option<UnixMs> {
        self.by.values().flatten().map(|e| e.timestamp).min()
    }
}

/// The node's newest NVSwitch SXid of the last 30 minutes before `now` (fatal ones first):
/// `gpu.nvlink.down` names it beside the links NVML shows down.
pub(super) fn latest_sxid(node: &NodeState, now: UnixMs) -> Option<&Event> {
    node.events
        .iter()
        .filter(|e| {
            e.kind == EventKind::Kernel
                && e.code.starts_with("kernel.sxid.")
                && now.since(e.timestamp) <= RECENT_MS
        })
        .max_by_key(|e| (detail(e, "fatal") == "true", e.timestamp))
}

/// An SXid finding with what NVML says of the NVLinks of the node's GPUs beside it: the links
/// down (the switch's errors seen from the GPUs), or all of them active (the switch corrected
/// them, or the GPUs behind it have not noticed yet). Unchanged without NVLink readings.
fn with_nvlink_view(node: &NodeState, mut f: Finding) -> Finding {
    if let Some((evidence, summary)) = nvlink_view(node) {
        f.evidence.push(evidence);
        f.summary = format!("{}; {summary}", f.summary);
    }
    f
}

fn nvlink_view(node: &NodeState) -> Option<(Evidence, String)> {
    let latest = node.latest()?;
    let (mut total, mut active) = (0usize, 0usize);
    let mut down = Vec::new();
    for g in &latest.gpus {
        let links = node.inventory.gpu(g.index).map_or(0, |i| i.nvlink_count);
        let mut off = Vec::new();
        for l in super::nvlink::counted(g, links) {
            match l.active {
                Some(true) => active += 1,
                Some(false) => off.push(l.link.to_string()),
                None => continue,
            }
            total += 1;
        }
        if !off.is_empty() {
            down.push(format!("GPU {} link {}", g.index, off.join(", ")));
        }
    }
    if total == 0 {
        return None;
    }
    let value = if down.is_empty() {
        format!("{active} of {total} active")
    } else {
        format!("{active} of {total} active; down: {}", down.join("; "))
    };
    let summary = if down.is_empty() {
        format!("NVML shows all {total} GPU NVLinks active")
    } else {
        format!("NVML shows {} down", down.join("; "))
    };
    Some((
        Evidence::new("gpus.nvlink.active", value, "all active"),
        summary,
    ))
}

impl KernelLog {
    fn finding(
        &self,
        cause: &Cause,
        node: &NodeState,
        group: &Group,
        what: &str,
        threshold: &str,
    ) -> Option<Finding> {
        let mut f = raise(self, cause, node, group.first()?);
        let mut parts = Vec::new();
        for (key, events) in &group.by {
            let last = events.iter().max_by_key(|e| e.timestamp)?;
            f.evidence.push(Evidence::new(
                &format!("kernel_log[{key}]"),
                format!("{}× in the kernel log, last: {}", events.len(), last.message),
                threshold,
            ));
            parts.push(format!("{key} ({}×)", events.len()));
        }
        f.summary = format!("{what}: {}", parts.join(", "));
        Some(f)
    }

    /// "GPU 3 (0000:18:00.0)" when a PCI address is one of the node's GPUs.
    fn device_name(node: &NodeState, device: &str) -> String {
        let want = xid::normalize_pci(device);
        match node
            .inventory
            .gpus
            .iter()
            .find(|g| want.is_some() && xid::normalize_pci(&g.pci_bus_id) == want)
        {
            Some(g) => format!("GPU {} ({device})", g.index),
            None => device.to_string(),
        }
    }
}

impl Rule for KernelLog {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        let booted = node
            .latest()
            .map(|s| s.timestamp.plus_ms(-((s.host.uptime_seconds * 1000) as i64)));
        let (mut fatal, mut nonfatal, mut aer_bad, mut aer_corrected) =
            (Group::default(), Group::default(), Group::default(), Group::default());
        let (mut storage_bad, mut nvme_timeouts, mut tx) =
            (Group::default(), Group::default(), Group::default());
        let mut aer_fatal = false;
        // Devices whose AER counters arrive in the samples: `pcie.aer.*` speaks for them.
        let counted = |device: &str| {
            node.latest().is_some_and(|s| {
                s.host.pcie_devices.iter().any(|d| {
                    d.bdf == device
                        && (d.aer_correctable.is_some()
                            || d.aer_nonfatal.is_some()
                            || d.aer_fatal.is_some())
                })
            })
        };
        for e in node.events.iter().filter(|e| e.kind == EventKind::Kernel) {
            let age = now.since(e.timestamp);
            if age > RECENT_MS {
                continue;
            }
            let short = age <= SHORT_MS;
            let code = e.code.as_str();
            if code.starts_with("kernel.sxid.") {
                let key = format!(
                    "NVSwitch {} ({}) SXid {}",
                    detail(e, "nvswitch"),
                    detail(e, "pci"),
                    detail(e, "sxid")
                );
                if detail(e, "fatal") == "true" {
                    fatal.add(key, e);
                } else if short && booted.is_none_or(|b| e.timestamp.0 - b.0 > BOOT_GRACE_MS) {
                    nonfatal.add(key, e);
                }
            } else if code == "kernel.pcie_aer" && !counted(detail(e, "device")) {
                let device = Self::device_name(node, detail(e, "device"));
                let severity = detail(e, "severity");
                if severity.starts_with("Uncorrected") {
                    aer_fatal |= !severity.contains("Non-Fatal");
                    aer_bad.add(format!("{device}: {severity}"), e);
                } else if short {
                    aer_corrected.add(format!("{device}: {severity}"), e);
                }
            } else if code == "kernel.storage" {
                let key = format!("{}: {}", detail(e, "device"), detail(e, "what"));
                if e.severity == Severity::Critical {
                    storage_bad.add(key, e);
                } else if short {
                    nvme_timeouts.add(key, e);
                }
            } else if code == "kernel.nic_tx_timeout" && short {
                tx.add(detail(e, "nic").to_string(), e);
            }
        }
        let mut out = Vec::new();
        if fatal.count() > 0 {
            out.extend(
                self.finding(&SXID_FATAL, node, &fatal, "fatal NVSwitch SXid", "0")
                    .map(|f| with_nvlink_view(node, f)),
            );
        }
        if nonfatal.count() >= NONFATAL_SXIDS {
            out.extend(self.finding(
                &SXID_NONFATAL,
                node,
                &nonfatal,
                "non-fatal NVSwitch SXids recurring",
                "< 3 per 10 min",
            )
            .map(|f| with_nvlink_view(node, f)));
        }
        if aer_bad.count() > 0 {
            if let Some(mut f) =
                self.finding(&PCIE, node, &aer_bad, "uncorrected PCIe errors", "0")
            {
                if aer_fatal {
                    f.severity = Severity::Critical;
                }
                out.push(f);
            }
        } else if aer_corrected.count() >= CORRECTED_AER {
            out.extend(self.finding(
                &PCIE,
                node,
                &aer_corrected,
                "corrected PCIe errors",
                "< 10 per 10 min",
            ));
        }
        if storage_bad.count() > 0 {
            out.extend(self.finding(&STORAGE, node, &storage_bad, "storage errors", "0"));
        } else if nvme_timeouts.count() >= NVME_TIMEOUTS {
            if let Some(mut f) = self.finding(
                &STORAGE,
                node,
                &nvme_timeouts,
                "NVMe command timeouts",
                "< 2 per 10 min",
            ) {
                f.severity = Severity::Warning;
                out.push(f);
            }
        }
        if tx.count() > 0 {
            out.extend(self.finding(&NIC_TX, node, &tx, "NIC transmit timeouts", "0"));
        }
        out
    }
}

#[cfg(test)]
fn event(line: &str, at: i64) -> Event {
    gpufleet_model::kernel_log::classify(line)
        .unwrap_or_else(|| panic!("not a kernel line: {line}"))
        .event(UnixMs(at), "kmsg")
}

#[cfg(test)]
const FATAL: &str =
    "nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)";
#[cfg(test)]
const NONFATAL: &str =
    "nvidia-nvswitch3: SXid (PCI:0000:08:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt";
#[cfg(test)]
const AER_NONFATAL: &str = "nvidia 0000:18:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)";
#[cfg(test)]
const AER_FATAL: &str = "nvidia 0000:18:00.0: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Requester ID)";
#[cfg(test)]
const AER_CORRECTED: &str = "pcieport 0000:15:01.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)";
#[cfg(test)]
const IO_ERROR: &str =
    "I/O error, dev nvme1n1, sector 2048 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2";
#[cfg(test)]
const NVME_TIMEOUT: &str = "nvme nvme0: I/O 123 QID 4 timeout, aborting";
#[cfg(test)]
const TX: &str = "NETDEV WATCHDOG: eth0 (mlx5_core): transmit queue 7 timed out 5120 ms";

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    let with = |name: &'static str, lines: &[(&str, i64)]| {
        let (name, mut n) = trigger(name, |_, s| s.host.uptime_seconds = 86_400);
        for (line, at) in lines {
            n.events.push_back(event(line, *at));
        }
        (name, n)
    };
    vec![
        with("sxid fatal", &[(FATAL, 90_000)]),
        with(
            "sxid nonfatal",
            &[(NONFATAL, 80_000), (NONFATAL, 85_000), (NONFATAL, 90_000)],
        ),
        with("kernel aer", &[(AER_NONFATAL, 90_000)]),
        with("kernel storage", &[(IO_ERROR, 90_000)]),
        with("kernel nic tx", &[(TX, 90_000)]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn check(lines: &[(&str, i64)], uptime_s: u64) -> Vec<Finding> {
        let mut n = node(8, 10, |_, s| s.host.uptime_seconds = uptime_s);
        for (line, at) in lines {
            n.events.push_back(event(line, *at));
        }
        KernelLog.check(&n, &FleetContext::default(), NOW)
    }

    #[test]
    fn cases() {
        const DAY: u64 = 86_400;
        let t = 90_000;
        let old = NOW.0 - RECENT_MS as i64 - 1;
        // (name, lines logged and when, uptime (s), causes and severities wanted)
        type Case<'a> = (&'a str, &'a [(&'a str, i64)], u64, &'a [(&'a str, Severity)]);
        let cases: &[Case] = &[
            ("nothing logged", &[], DAY, &[]),
            (
                "a fatal SXid",
                &[(FATAL, t)],
                DAY,
                &[("fabric.nvswitch.sxid_fatal", Severity::Critical)],
            ),
            ("a fatal SXid long ago", &[(FATAL, old)], DAY, &[]),
            ("two non-fatal SXids", &[(NONFATAL, t), (NONFATAL, t)], DAY, &[]),
            (
                "three non-fatal SXids",
                &[(NONFATAL, t), (NONFATAL, t), (NONFATAL, t)],
                DAY,
                &[("fabric.nvswitch.sxid_nonfatal", Severity::Warning)],
            ),
            (
                "three non-fatal SXids at boot (link training)",
                &[(NONFATAL, t), (NONFATAL, t), (NONFATAL, t)],
                60,
                &[],
            ),
            (
                "an uncorrected non-fatal AER",
                &[(AER_NONFATAL, t)],
                DAY,
                &[("host.kernel.pcie_errors", Severity::Warning)],
            ),
            (
                "an uncorrected fatal AER",
                &[(AER_NONFATAL, t), (AER_FATAL, t)],
                DAY,
                &[("host.kernel.pcie_errors", Severity::Critical)],
            ),
            ("a few corrected AERs", &[(AER_CORRECTED, t); 5], DAY, &[]),
            (
                "many corrected AERs",
                &[(AER_CORRECTED, t); 12],
                DAY,
                &[("host.kernel.pcie_errors", Severity::Warning)],
            ),
            (
                "an I/O error",
                &[(IO_ERROR, t)],
                DAY,
                &[("host.kernel.storage_errors", Severity::Critical)],
            ),
            ("one NVMe timeout", &[(NVME_TIMEOUT, t)], DAY, &[]),
            (
                "NVMe timeouts",
                &[(NVME_TIMEOUT, t), (NVME_TIMEOUT, t)],
                DAY,
                &[("host.kernel.storage_errors", Severity::Warning)],
            ),
            (
                "a transmit timeout",
                &[(TX, t)],
                DAY,
                &[("host.kernel.nic_tx_timeout", Severity::Warning)],
            ),
        ];
        for (name, lines, uptime, want) in cases {
            let got = check(lines, *uptime);
            let ids: Vec<(&str, Severity)> =
                got.iter().map(|f| (f.rule_id.as_str(), f.severity)).collect();
            assert_eq!(ids, *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn aer_lines_of_a_device_with_sysfs_counters_are_left_to_the_pcie_rule() {
        let mut n = node(8, 10, |_, s| {
            s.host.uptime_seconds = 86_400;
            s.host.pcie_devices = vec![gpufleet_model::PcieDeviceSample {
                bdf: "0000:18:00.0".into(),
                aer_nonfatal: Some(1),
                ..Default::default()
            }];
        });
        n.events.push_back(event(AER_NONFATAL, 90_000));
        assert!(KernelLog.check(&n, &FleetContext::default(), NOW).is_empty());
        // Another device's line still counts.
        n.events.push_back(event(
            "nvidia 0000:4b:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)",
            90_000,
        ));
        let got = KernelLog.check(&n, &FleetContext::default(), NOW);
        assert_eq!(got.len(), 1);
        assert!(got[0].summary.contains("0000:4b:00.0"), "{}", got[0].summary);
    }

    #[test]
    fn evidence_names_the_switch_and_a_gpu_by_its_index() {
        let f = &check(&[(FATAL, 80_000), (FATAL, 90_000)], 86_400)[0];
        assert_eq!(
            f.summary,
            "fatal NVSwitch SXid: NVSwitch 1 (0000:06:00.0) SXid 12028 (2×)"
        );
        assert!(f.evidence[0].value.starts_with("2× in the kernel log, last: NVSwitch 1"));
        assert_eq!(f.since, UnixMs(80_000));

        let mut n = node(8, 10, |_, s| s.host.uptime_seconds = 86_400);
        n.inventory.gpus[3].pci_bus_id = "00000000:18:00.0".into();
        n.events.push_back(event(AER_NONFATAL, 90_000));
        let f = &KernelLog.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(
            f.summary,
            "uncorrected PCIe errors: GPU 3 (0000:18:00.0): Uncorrected (Non-Fatal) (1×)"
        );
    }

    /// Eight GPUs with 18 NVLinks each; `down` the (GPU, link) pairs NVML shows inactive.
    fn with_nvlinks(down: &'static [(u32, u32)]) -> NodeState {
        let mut n = node(8, 10, |_, s| {
            s.host.uptime_seconds = 86_400;
            for g in &mut s.gpus {
                g.nvlinks = (0..18)
                    .map(|link| gpufleet_model::NvLinkSample {
                        link,
                        active: Some(!down.contains(&(g.index, link))),
                        ..Default::default()
                    })
                    .collect();
            }
        });
        for g in &mut n.inventory.gpus {
            g.nvlink_count = 18;
        }
        n
    }

    #[test]
    fn sxid_findings_say_what_nvml_shows_of_the_gpus_nvlinks() {
        let fleet = FleetContext::default();
        let mut n = with_nvlinks(&[(3, 4), (3, 5)]);
        n.events.push_back(event(FATAL, 90_000));
        let f = &KernelLog.check(&n, &fleet, NOW)[0];
        assert_eq!(
            f.summary,
            "fatal NVSwitch SXid: NVSwitch 1 (0000:06:00.0) SXid 12028 (1×); NVML shows GPU 3 \
             link 4, 5 down"
        );
        let e = f.evidence.last().unwrap();
        assert_eq!(e.field, "gpus.nvlink.active");
        assert_eq!(e.value, "142 of 144 active; down: GPU 3 link 4, 5");

        let mut n = with_nvlinks(&[]);
        n.events.push_back(event(FATAL, 90_000));
        let f = &KernelLog.check(&n, &fleet, NOW)[0];
        assert!(
            f.summary.ends_with("; NVML shows all 144 GPU NVLinks active"),
            "{}",
            f.summary
        );
        // The NVLink rule names the switch's SXid beside the links it sees down.
        let mut n = with_nvlinks(&[(3, 4), (3, 5)]);
        n.events.push_back(event(NONFATAL, 80_000));
        n.events.push_back(event(FATAL, 90_000));
        let got = super::super::nvlink::NvLink.check(&n, &fleet, NOW);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(
            got[0].summary,
            "GPU 3: NVLink 4, 5 of its 18 link(s) down; NVSwitch 1 logged SXid 12028 (fatal)"
        );
        assert_eq!(got[0].evidence.last().unwrap().field, "kernel_log.sxid");
        // Without SXids, just the links.
        let n = with_nvlinks(&[(3, 4)]);
        let got = super::super::nvlink::NvLink.check(&n, &fleet, NOW);
        assert_eq!(got[0].summary, "GPU 3: NVLink 4 of its 18 link(s) down");
    }
}
