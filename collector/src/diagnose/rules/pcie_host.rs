//! `pcie.*`: the host's PCIe tree around the GPUs — what no GPU counter shows. Access Control
//! Services left on at a PCIe switch port between GPUs or NICs sends their peer-to-peer
//! traffic (GPUDirect P2P and RDMA) up to the root complex: NVIDIA's NCCL troubleshooting guide
//! ("PCI Access Control Services (ACS)",
//! <https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html#pci-access-control-services-acs>)
//! names it as a cause of "a significant performance reduction or even a hang" and says ACS
//! on PCI switches must be disabled. And the AER counters of a GPU's, NIC's or bridge's link
//! (Documentation/ABI/testing/sysfs-bus-pci-devices-aer): fatal and non-fatal uncorrectable
//! errors are news at once, correctable ones only as a steady trend (a marginal link retries,
//! and is slower, before it fails).
//!
//! NUMA affinity (`numa_node` per device) is exported, not judged: a `-1` is also what
//! single-socket and many virtual machines report, so it says nothing wrong on its own.

use std::collections::BTreeSet;

use gpufleet_model::pcie::{ACS_P2P_REDIRECT, acs_set, normalize_bdf};
use gpufleet_model::{
    Acs, Evidence, Finding, PcieDeviceInfo, PcieDeviceKind, PcieDeviceSample, Sample, Severity,
    UnixMs,
};

use super::raise;
use super::window::Recent;
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct PcieHost;

const ACS_ENABLED: Cause = Cause {
    id: "pcie.acs_enabled",
    title: "PCIe ACS redirects GPU peer-to-peer traffic",
    severity: Severity::Warning,
    detects: "A PCIe switch port between two GPUs or NICs (below the bridge they share) has \
              ACS P2P Request Redirect or Completion Redirect on (`ReqRedir+` / `CmpltRedir+` \
              in `lspci -vvv` ACSCtl): peer-to-peer traffic through the switch goes up to the \
              root complex instead. Root ports are not judged; ACS is unknown, not off, where \
              the agent could not read the extended config space (not root).",
    action: "Disable ACS on the PCIe switch ports, as NVIDIA's NCCL troubleshooting guide \
             describes: in the BIOS (IO virtualisation / VT-d / ACS settings), or at every boot \
             with `setpci -s BDF ECAP_ACS+0x6.w=0000` for each bridge listed; `lspci -vvv | \
             grep ACSCtl` shows the setting. Until then GPUDirect P2P and RDMA through that \
             switch run at a fraction of their speed or hang.",
};

const AER_FATAL: Cause = Cause {
    id: "pcie.aer.fatal",
    title: "PCIe fatal errors",
    severity: Severity::Critical,
    detects: "A GPU's, NIC's, NVSwitch's, NVMe drive's or PCIe bridge's fatal uncorrectable \
              AER counter (aer_dev_fatal) rose within the last 5 minutes.",
    action: "Drain the node: a fatal error resets the link and usually takes the device with \
             it (Xid 79 for a GPU). `dmesg | grep -i aer` names the error; reseat or replace \
             the device, its riser or cable, and check the slot; the same error on a bridge \
             points at the switch or the board.",
};

const AER_NONFATAL: Cause = Cause {
    id: "pcie.aer.nonfatal",
    title: "PCIe uncorrectable errors",
    severity: Severity::Warning,
    detects: "A GPU's, NIC's, NVSwitch's, NVMe drive's or PCIe bridge's non-fatal \
              uncorrectable AER counter (aer_dev_nonfatal) rose within the last 5 minutes.",
    action: "`dmesg | grep -i aer` names the error (completion timeout, poisoned TLP, \
             unsupported request): transactions were lost and the driver had to recover. \
             Watch for Xids on the GPU; if it repeats, drain the node and reseat or replace \
             the device or its riser.",
};

const AER_CORRECTABLE: Cause = Cause {
    id: "pcie.aer.correctable",
    title: "PCIe correctable errors rising",
    severity: Severity::Warning,
    detects: "A GPU's, NIC's, NVSwitch's, NVMe drive's or PCIe bridge's correctable AER \
              counter (aer_dev_correctable) rising at 1 per minute or more over the last 5 \
              minutes in several separate intervals.",
    action: "A marginal link: receiver errors and bad TLPs are retried, which costs \
             bandwidth, and often come before uncorrectable ones. `lspci -vvv -s BDF` shows \
             the link's speed and width; reseat the device, riser or cable, clean the \
             connector, and check that the slot runs at its rated generation.",
};

const LINK_DOWNTRAINED: Cause = Cause {
    id: "pcie.link_downtrained",
    title: "NIC, NVMe or NVSwitch PCIe link downtrained",
    severity: Severity::Warning,
    detects: "A NIC's, NVMe drive's or NVSwitch's PCIe link trained narrower or slower \
              (current_link_width, current_link_speed) than both the device and the port \
              above it support (the lesser of their max_link_*), for several samples. A \
              GPU's own link is gpu.pcie.downtrained (NVML); bridges are not judged.",
    action: "`lspci -vvv -s BDF` shows LnkCap against LnkSta (marked `downgraded`). Reseat \
             the card, riser or cable, and check the slot's bifurcation and PCIe generation \
             in the BIOS; if it persists after a reboot, replace the riser or card. Until \
             then the device moves data at the fraction shown: a 400 Gb/s NDR HCA needs \
             gen5 x16, and at x8 caps RDMA to its GPUs at half the line rate.",
};

static INFO: RuleInfo = RuleInfo {
    id: "pcie.host",
    title: "PCIe tree (ACS, AER, device links)",
    catalog: &[
        ACS_ENABLED,
        AER_FATAL,
        AER_NONFATAL,
        AER_CORRECTABLE,
        LINK_DOWNTRAINED,
    ],
};

/// Correctable errors per minute that mean a marginal link: a healthy one counts none.
const CORRECTABLE_PER_MINUTE: f64 = 1.0;

/// The device `bdf` in a sample, looked for at `pos` first (the agent keeps the order).
fn device<'a>(s: &'a Sample, pos: usize, bdf: &str) -> Option<&'a PcieDeviceSample> {
    match s.host.pcie_devices.get(pos) {
        Some(d) if d.bdf == bdf => Some(d),
        _ => s.host.pcie_devices.iter().find(|d| d.bdf == bdf),
    }
}

/// How findings name a device: `GPU 3 (0000:4b:00.0)`, `NIC mlx5_0 (0000:18:00.0)`, `bridge
/// 0000:17:01.0 (above GPU 0)`.
fn describe(node: &NodeState, bdf: &str) -> (String, Option<u32>) {
    let devices = &node.inventory.host.pcie_devices;
    let gpu = |bdf: &str| {
        node.inventory
            .gpus
            .iter()
            .find(|g| normalize_bdf(&g.pci_bus_id) == bdf)
            .map(|g| g.index)
    };
    let short = |d: &PcieDeviceInfo| match (d.kind, gpu(&d.bdf)) {
        (PcieDeviceKind::Gpu, Some(i)) => format!("GPU {i}"),
        (PcieDeviceKind::Gpu, None) => format!("GPU {}", d.bdf),
        (PcieDeviceKind::Nic, _) if !d.name.is_empty() => format!("NIC {}", d.name),
        (PcieDeviceKind::Nvme, _) if !d.name.is_empty() => format!("NVMe {}", d.name),
        (k, _) => format!("{} {}", k.label(), d.bdf),
    };
    let Some(d) = devices.iter().find(|d| d.bdf == bdf) else {
        return (format!("PCIe device {bdf}"), gpu(bdf));
    };
    if d.kind == PcieDeviceKind::Bridge {
        let below: Vec<String> = endpoints_below(devices, bdf).map(short).collect();
        let text = if below.is_empty() {
            format!("bridge {bdf}")
        } else {
            format!("bridge {bdf} (above {})", below.join(", "))
        };
        return (text, None);
    }
    let gpu_index = if d.kind == PcieDeviceKind::Gpu {
        gpu(bdf)
    } else {
        None
    };
    let s = short(d);
    if s.ends_with(bdf) {
        (s, gpu_index)
    } else {
        (format!("{s} ({bdf})"), gpu_index)
    }
}

/// GPUs and NICs: the devices peer-to-peer traffic flows between.
fn is_peer(d: &PcieDeviceInfo) -> bool {
    matches!(d.kind, PcieDeviceKind::Gpu | PcieDeviceKind::Nic)
}

fn endpoints_below<'a>(
    devices: &'a [PcieDeviceInfo],
    bridge: &'a str,
) -> impl Iterator<Item = &'a PcieDeviceInfo> + 'a {
    devices
        .iter()
        .filter(move |d| is_peer(d) && d.upstream.iter().any(|u| u == bridge))
}

/// Bridges on the PCIe path between two GPUs/NICs that share a bridge (a switch): those below
/// the deepest bridge both hang off. Two devices under different root ports meet only in the
/// root complex, where ACS does not reroute anything.
pub fn bridges_between_peers(devices: &[PcieDeviceInfo]) -> BTreeSet<&str> {
    let peers: Vec<&PcieDeviceInfo> = devices.iter().filter(|d| is_peer(d)).collect();
    let mut out = BTreeSet::new();
    for (i, a) in peers.iter().enumerate() {
        for b in &peers[i + 1..] {
            let shared = a
                .upstream
                .iter()
                .zip(&b.upstream)
                .take_while(|(x, y)| x == y)
                .count();
            if shared == 0 {
                continue;
            }
            out.extend(a.upstream[shared..].iter().map(String::as_str));
            out.extend(b.upstream[shared..].iter().map(String::as_str));
        }
    }
    out
}

impl PcieHost {
    /// The inventory is read, not sampled: it has no noise to hold against.
    fn inventory_since(node: &NodeState) -> UnixMs {
        node.first_seen.max(node.inventory.read_at)
    }

    fn acs(&self, node: &NodeState) -> Option<Finding> {
        let devices = &node.inventory.host.pcie_devices;
        // A bridge that is first on the path of every peer below it (a root port) is never
        // between two peers: when only such bridges redirect, the usual case, there is no
        // tree to search.
        let redirecting = |d: &&PcieDeviceInfo| {
            matches!(d.acs, Acs::Control(ctl) if ctl & ACS_P2P_REDIRECT != 0)
                && devices.iter().filter(|p| is_peer(p)).any(|p| {
                    p.upstream
                        .iter()
                        .skip(1)
                        .any(|u| u.as_str() == d.bdf.as_str())
                })
        };
        if !devices.iter().any(|d| redirecting(&d)) {
            return None;
        }
        let between = bridges_between_peers(devices);
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        let mut affected = BTreeSet::new();
        for d in devices {
            let Acs::Control(ctl) = d.acs else {
                continue;
            };
            if ctl & ACS_P2P_REDIRECT == 0 || !between.contains(d.bdf.as_str()) {
                continue;
            }
            let f = f.get_or_insert_with(|| {
                raise(self, &ACS_ENABLED, node, Self::inventory_since(node))
            });
            let (what, _) = describe(node, &d.bdf);
            f.evidence.push(Evidence::new(
                &format!("host.pcie[{}].acs_ctl", d.bdf),
                format!("{} ({what})", acs_set(ctl).join(" ")),
                "ReqRedir- CmpltRedir-",
            ));
            names.push(d.bdf.clone());
            affected.extend(endpoints_below(devices, &d.bdf).map(|e| describe(node, &e.bdf).0));
        }
        let mut f = f?;
        f.summary = format!(
            "ACS P2P redirect on PCIe switch port{} {}: peer-to-peer traffic of {} goes through \
             the root complex",
            if names.len() > 1 { "s" } else { "" },
            names.join(", "),
            affected.into_iter().collect::<Vec<_>>().join(", ")
        );
        Some(f)
    }

    /// One counter of every device: fatal/non-fatal on any rise, correctable on a trend.
    fn aer(
        &self,
        node: &NodeState,
        latest: &Sample,
        recent: &Recent,
        cause: &Cause,
        name: &str,
        read: fn(&PcieDeviceSample) -> Option<u64>,
    ) -> Option<Finding> {
        let trend = cause.id == AER_CORRECTABLE.id;
        let mut f: Option<Finding> = None;
        let mut parts = Vec::new();
        let mut gpus = BTreeSet::new();
        for (pos, d) in latest.host.pcie_devices.iter().enumerate() {
            let bdf = d.bdf.as_str();
            let Some(g) = recent.growth(|s| read(device(s, pos, bdf)?)) else {
                continue;
            };
            let bad = if trend {
                g.sustained(CORRECTABLE_PER_MINUTE, MIN_SAMPLES)
            } else {
                g.delta > 0
            };
            if !bad {
                continue;
            }
            let (what, gpu) = describe(node, bdf);
            let f = f.get_or_insert_with(|| raise(self, cause, node, g.first_rise));
            f.since = f.since.min(g.first_rise);
            f.evidence.push(
                Evidence::new(
                    &format!("host.pcie[{bdf}].{name}"),
                    format!(
                        "+{} in {} s ({:.1}/min), {} since boot ({what})",
                        g.delta,
                        g.span_ms / 1000,
                        g.per_minute(),
                        g.latest
                    ),
                    if trend {
                        format!("under {CORRECTABLE_PER_MINUTE:.0}/min")
                    } else {
                        "no new errors".to_string()
                    },
                )
                .held_for(g.rising_for_ms(latest.timestamp)),
            );
            parts.push(format!("{what} +{}", g.delta));
            gpus.insert(gpu);
        }
        let mut f = f?;
        // One GPU's device: the finding is that GPU's.
        if let [Some(index)] = gpus.iter().copied().collect::<Vec<_>>()[..]
            && let Some(g) = latest.gpus.iter().find(|g| g.index == index)
        {
            f.gpu_index = Some(index);
            f.gpu_uuid = g.uuid.clone();
        }
        f.summary = format!("{}: {}", cause.title, parts.join(", "));
        Some(f)
    }
}

/// Devices whose link this rule judges: the GPUs' is NVML's (`gpu.pcie.downtrained`, which
/// knows that an idle GPU lowers its rate on purpose); a bridge's link register describes a
/// different link depending on the port's type, which the agent does not read.
fn link_judged(kind: PcieDeviceKind) -> bool {
    matches!(
        kind,
        PcieDeviceKind::Nic | PcieDeviceKind::Nvme | PcieDeviceKind::NvSwitch
    )
}

/// Data rate of a link, relative: MT/s per lane after line encoding (8b/10b up to gen2,
/// 128b/130b since gen3) times lanes.
fn link_rate(mts: u32, width: u32) -> f64 {
    let encoding = if mts <= 5_000 { 0.8 } else { 128.0 / 130.0 };
    f64::from(mts) * encoding * f64::from(width)
}

impl PcieHost {
    /// One finding for the node's devices whose link trained below the lesser of the device's
    /// and its port's maximum, for several samples.
    fn downtrained(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let devices = &node.inventory.host.pcie_devices;
        let max_of = |bdf: &str| {
            devices
                .iter()
                .find(|d| d.bdf == bdf)
                .map(|d| (d.max_link_speed_mts, d.max_link_width))
        };
        let mut f: Option<Finding> = None;
        let mut parts = Vec::new();
        let mut worst = 1.0f64;
        for (pos, d) in latest.host.pcie_devices.iter().enumerate() {
            // The agent lists the inventory and the readings in the same order.
            let info = match devices.get(pos) {
                Some(i) if i.bdf == d.bdf => Some(i),
                _ => devices.iter().find(|i| i.bdf == d.bdf),
            };
            let Some(info) = info.filter(|i| link_judged(i.kind)) else {
                continue;
            };
            // At its own maximum now, it is at the lesser of its and its port's maximum too:
            // not downtrained, whatever the port (found without searching for it).
            let at_least = |now: Option<u32>, max: Option<u32>| match (now, max) {
                (Some(c), Some(m)) => c >= m,
                _ => true,
            };
            if at_least(d.link_speed_mts, info.max_link_speed_mts)
                && at_least(d.link_width, info.max_link_width)
            {
                continue;
            }
            let port = info.upstream.last().and_then(|u| max_of(u));
            let lesser = |own: Option<u32>, port: Option<u32>| match (own, port) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, _) => a,
            };
            let want_speed = lesser(info.max_link_speed_mts, port.and_then(|p| p.0));
            let want_width = lesser(info.max_link_width, port.and_then(|p| p.1));
            let bdf = d.bdf.as_str();
            let low = |x: &PcieDeviceSample| {
                let slow = matches!((x.link_speed_mts, want_speed), (Some(c), Some(w)) if c < w);
                let narrow = matches!((x.link_width, want_width), (Some(c), Some(w)) if c < w);
                slow || narrow
            };
            let Some(held) = super::window::sustained_node(node, 0, |s| {
                device(s, pos, bdf).is_some_and(low)
            }) else {
                continue;
            };
            let (speed, width) = (d.link_speed_mts.unwrap_or(0), d.link_width.unwrap_or(0));
            let (max_speed, max_width) = (want_speed.unwrap_or(speed), want_width.unwrap_or(width));
            let ratio = link_rate(speed, width) / link_rate(max_speed, max_width);
            let gts = |mts: u32| format!("{} GT/s", f64::from(mts) / 1000.0);
            let (what, _) = describe(node, bdf);
            let f = f.get_or_insert_with(|| raise(self, &LINK_DOWNTRAINED, node, held.since));
            f.since = f.since.min(held.since);
            f.evidence.push(
                Evidence::new(
                    &format!("host.pcie[{bdf}].link"),
                    format!("{} x{width} ({what})", gts(speed)),
                    format!("{} x{max_width}", gts(max_speed)),
                )
                .held_for(held.held_ms),
            );
            parts.push(format!(
                "{what} at {} x{width} instead of {} x{max_width} ({:.0}% of its bandwidth)",
                gts(speed),
                gts(max_speed),
                100.0 * ratio
            ));
            if ratio.is_finite() {
                worst = worst.min(ratio);
            }
        }
        let mut f = f?;
        f.performance_ratio = Some(worst.clamp(0.0, 1.0));
        f.summary = format!("PCIe link downtrained: {}", parts.join("; "));
        Some(f)
    }
}

impl Rule for PcieHost {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.acs(node).into_iter().collect();
        let Some(latest) = node.latest() else {
            return out;
        };
        if latest.host.pcie_devices.is_empty() {
            return out;
        }
        type Read = fn(&PcieDeviceSample) -> Option<u64>;
        let counters: [(&Cause, &str, Read); 3] = [
            (&AER_FATAL, "aer_fatal", |d| d.aer_fatal),
            (&AER_NONFATAL, "aer_nonfatal", |d| d.aer_nonfatal),
            (&AER_CORRECTABLE, "aer_correctable", |d| d.aer_correctable),
        ];
        // No AER counter moved in the window (every healthy node): none of them grew.
        let recent = Recent::of(node);
        if !recent.counters_still() {
            for (cause, name, read) in counters {
                out.extend(self.aer(node, latest, &recent, cause, name, read));
            }
        }
        out.extend(self.downtrained(node, latest));
        out
    }
}

/// The HGX H100 tree of the sysfs fixture, in short: four switches, each under its own root
/// port, with two GPUs and two NICs; GPU i at `pci_bus_id` of [`testutil::gpu_info`] order.
#[cfg(test)]
pub(super) fn hgx_tree() -> Vec<PcieDeviceInfo> {
    let switches: [(u8, [u8; 4]); 4] = [
        (0x15, [0x18, 0x1a, 0x1b, 0x40]),
        (0x47, [0x4a, 0x4b, 0x4f, 0x5e]),
        (0x87, [0x8a, 0x8b, 0x9a, 0xc0]),
        (0xc7, [0xca, 0xcb, 0xce, 0xdc]),
    ];
    let gpu_buses = [0x1a, 0x1b, 0x4a, 0x4b, 0x8a, 0x8b, 0xca, 0xcb];
    let mut ends = Vec::new();
    let mut bridges = Vec::new();
    let mut nic = 0;
    for (root, buses) in switches {
        let rp = format!("0000:{root:02x}:01.0");
        let usp = format!("0000:{:02x}:00.0", root + 1);
        bridges.push(PcieDeviceInfo {
            bdf: rp.clone(),
            kind: PcieDeviceKind::Bridge,
            acs: Acs::Control(0x001d),
            ..Default::default()
        });
        bridges.push(PcieDeviceInfo {
            bdf: usp.clone(),
            kind: PcieDeviceKind::Bridge,
            upstream: vec![rp.clone()],
            acs: Acs::NotCapable,
            ..Default::default()
        });
        for (n, bus) in buses.into_iter().enumerate() {
            let dsp = format!("0000:{:02x}:{n:02x}.0", root + 2);
            bridges.push(PcieDeviceInfo {
                bdf: dsp.clone(),
                kind: PcieDeviceKind::Bridge,
                upstream: vec![rp.clone(), usp.clone()],
                acs: Acs::Control(0),
                ..Default::default()
            });
            let is_gpu = gpu_buses.contains(&bus);
            ends.push(PcieDeviceInfo {
                bdf: format!("0000:{bus:02x}:00.0"),
                kind: if is_gpu {
                    PcieDeviceKind::Gpu
                } else {
                    PcieDeviceKind::Nic
                },
                name: if is_gpu {
                    String::new()
                } else {
                    nic += 1;
                    format!("mlx5_{}", nic - 1)
                },
                upstream: vec![rp.clone(), usp.clone(), dsp],
                ..Default::default()
            });
        }
    }
    ends.extend(bridges);
    ends
}

/// A node with the HGX tree in its inventory, its GPUs at the tree's addresses and `bend`
/// editing each sample's PCIe readings (index of sample, readings in inventory order).
#[cfg(test)]
fn hgx_node(
    samples: usize,
    bend: impl Fn(usize, &mut Vec<PcieDeviceSample>),
) -> NodeState {
    let tree = hgx_tree();
    let mut n = super::testutil::node(8, samples, |i, s| {
        let mut d: Vec<PcieDeviceSample> = tree
            .iter()
            .map(|t| PcieDeviceSample {
                bdf: t.bdf.clone(),
                link_speed_mts: Some(32_000),
                link_width: Some(16),
                aer_correctable: Some(0),
                aer_nonfatal: Some(0),
                aer_fatal: Some(0),
            })
            .collect();
        bend(i, &mut d);
        s.host.pcie_devices = d;
    });
    for (g, bus) in n.inventory.gpus.iter_mut().zip(["1A", "1B", "4A", "4B", "8A", "8B", "CA", "CB"]) {
        g.pci_bus_id = format!("00000000:{bus}:00.0");
    }
    n.inventory.host.pcie_devices = tree;
    n
}

#[cfg(test)]
fn at<'a>(d: &'a mut [PcieDeviceSample], bdf: &str) -> &'a mut PcieDeviceSample {
    d.iter_mut().find(|x| x.bdf == bdf).expect("in the tree")
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let named = |name: &'static str, mut n: NodeState| {
        n.identity.hostname = format!("trigger-{}", name.replace(' ', "-"));
        (name, n)
    };
    let mut acs = hgx_node(40, |_, _| {});
    for d in &mut acs.inventory.host.pcie_devices {
        if d.bdf == "0000:17:01.0" {
            d.acs = Acs::Control(0x001d);
        }
    }
    vec![
        named("pcie acs enabled", acs),
        named(
            "pcie aer fatal",
            hgx_node(40, |i, d| at(d, "0000:18:00.0").aer_fatal = Some(u64::from(i >= 30))),
        ),
        named(
            "pcie aer nonfatal",
            hgx_node(40, |i, d| at(d, "0000:4b:00.0").aer_nonfatal = Some(u64::from(i >= 30))),
        ),
        named(
            "pcie aer correctable",
            hgx_node(40, |i, d| at(d, "0000:8a:00.0").aer_correctable = Some(i as u64 * 3)),
        ),
        named(
            "pcie link downtrained",
            with_links(hgx_node(40, |_, d| at(d, "0000:18:00.0").link_width = Some(8))),
        ),
    ]
}

/// The tree's devices and bridges all rated gen5 x16, as on an HGX H100 board.
#[cfg(test)]
fn with_links(mut n: NodeState) -> NodeState {
    for d in &mut n.inventory.host.pcie_devices {
        (d.max_link_speed_mts, d.max_link_width) = (Some(32_000), Some(16));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::NOW;

    fn ids(fs: &[Finding]) -> Vec<&str> {
        fs.iter().map(|f| f.rule_id.as_str()).collect()
    }

    fn with_acs(mut n: NodeState, bdf: &str, acs: Acs) -> NodeState {
        for d in &mut n.inventory.host.pcie_devices {
            if d.bdf == bdf {
                d.acs = acs;
            }
        }
        n
    }

    #[test]
    fn acs_cases() {
        let fleet = FleetContext::default();
        // (name, bridge, ACS, causes wanted)
        let cases: &[(&str, &str, Acs, &[&str])] = &[
            ("healthy: root ports redirect, switch ports do not", "", Acs::Unknown, &[]),
            (
                "ReqRedir on the port above GPU 0",
                "0000:17:01.0",
                Acs::Control(0x0004),
                &["pcie.acs_enabled"],
            ),
            (
                "CmpltRedir alone",
                "0000:49:02.0",
                Acs::Control(0x0008),
                &["pcie.acs_enabled"],
            ),
            (
                "SrcValid and TransBlk do not reroute",
                "0000:17:01.0",
                Acs::Control(0x0003),
                &[],
            ),
            (
                "unknown (not root) is not off, and not a finding",
                "0000:17:01.0",
                Acs::Unknown,
                &[],
            ),
            (
                "the root port's own ACS is the root complex's business",
                "0000:15:01.0",
                Acs::Control(0x001d),
                &[],
            ),
        ];
        for (name, bdf, acs, want) in cases {
            let n = with_acs(hgx_node(20, |_, _| {}), bdf, *acs);
            let got = PcieHost.check(&n, &fleet, NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn the_acs_finding_names_the_port_and_the_devices_behind_the_switch() {
        let n = with_acs(hgx_node(20, |_, _| {}), "0000:17:01.0", Acs::Control(0x001d));
        let f = &PcieHost.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(f.evidence[0].field, "host.pcie[0000:17:01.0].acs_ctl");
        assert_eq!(
            f.evidence[0].value,
            "SrcValid ReqRedir CmpltRedir UpstreamFwd (bridge 0000:17:01.0 (above GPU 0))"
        );
        assert_eq!(
            f.summary,
            "ACS P2P redirect on PCIe switch port 0000:17:01.0: peer-to-peer traffic of GPU 0 \
             (0000:1a:00.0) goes through the root complex"
        );
    }

    #[test]
    fn only_bridges_between_peers_of_one_switch_count() {
        let tree = hgx_tree();
        let between = bridges_between_peers(&tree);
        // 16 downstream ports; no root port, no upstream port.
        assert_eq!(between.len(), 16);
        assert!(between.contains("0000:17:00.0") && !between.contains("0000:16:00.0"));
        assert!(!between.contains("0000:15:01.0"));
        // A lone GPU under its own root port shares no bridge with anything.
        let lone = vec![
            PcieDeviceInfo {
                bdf: "0000:03:00.0".into(),
                kind: PcieDeviceKind::Gpu,
                upstream: vec!["0000:00:02.0".into()],
                ..Default::default()
            },
            PcieDeviceInfo {
                bdf: "0000:83:00.0".into(),
                kind: PcieDeviceKind::Nic,
                upstream: vec!["0000:80:02.0".into()],
                ..Default::default()
            },
        ];
        assert!(bridges_between_peers(&lone).is_empty());
    }

    #[test]
    fn aer_cases() {
        type Bend = fn(usize, &mut Vec<PcieDeviceSample>);
        // (name, edit of sample i of 60, causes wanted)
        let cases: &[(&str, Bend, &[&str])] = &[
            ("healthy", |_, _| {}, &[]),
            (
                "one fatal error on a NIC",
                |i, d| at(d, "0000:18:00.0").aer_fatal = Some(u64::from(i >= 50)),
                &["pcie.aer.fatal"],
            ),
            (
                "an old fatal count, flat",
                |_, d| at(d, "0000:18:00.0").aer_fatal = Some(2),
                &[],
            ),
            (
                "non-fatal on a GPU",
                |i, d| at(d, "0000:4b:00.0").aer_nonfatal = Some(u64::from(i >= 50) * 3),
                &["pcie.aer.nonfatal"],
            ),
            (
                "correctable rising on the root port",
                |i, d| at(d, "0000:15:01.0").aer_correctable = Some(i as u64 * 2),
                &["pcie.aer.correctable"],
            ),
            (
                "one burst of correctable errors is not a trend",
                |i, d| at(d, "0000:1a:00.0").aer_correctable = Some(u64::from(i >= 50) * 40),
                &[],
            ),
            (
                "old correctable errors, flat",
                |_, d| at(d, "0000:4b:00.0").aer_correctable = Some(3),
                &[],
            ),
            (
                "no AER on this kernel: absent, not zero",
                |_, d| {
                    for x in d.iter_mut() {
                        (x.aer_correctable, x.aer_nonfatal, x.aer_fatal) = (None, None, None);
                    }
                },
                &[],
            ),
            (
                "a counter reset (driver reload) is not a rise",
                |i, d| at(d, "0000:18:00.0").aer_fatal = Some(if i < 30 { 4 } else { 0 }),
                &[],
            ),
        ];
        for (name, bend, want) in cases {
            let n = hgx_node(60, bend);
            let got = PcieHost.check(&n, &FleetContext::default(), NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn aer_findings_name_the_device_and_its_gpu() {
        let n = hgx_node(60, |i, d| {
            at(d, "0000:4b:00.0").aer_nonfatal = Some(u64::from(i >= 50) * 3);
            at(d, "0000:18:00.0").aer_fatal = Some(u64::from(i >= 55));
        });
        let got = PcieHost.check(&n, &FleetContext::default(), NOW);
        assert_eq!(ids(&got), ["pcie.aer.fatal", "pcie.aer.nonfatal"]);
        assert_eq!(got[0].severity, Severity::Critical);
        assert_eq!(got[0].summary, "PCIe fatal errors: NIC mlx5_0 (0000:18:00.0) +1");
        assert_eq!(got[0].gpu_index, None);
        assert_eq!(got[1].summary, "PCIe uncorrectable errors: GPU 3 (0000:4b:00.0) +3");
        assert_eq!(got[1].gpu_index, Some(3));
        assert_eq!(got[1].evidence[0].field, "host.pcie[0000:4b:00.0].aer_nonfatal");
        assert_eq!(got[1].since, UnixMs(91_000));
    }

    #[test]
    fn link_cases() {
        type Bend = fn(usize, &mut Vec<PcieDeviceSample>);
        type Rate = fn(&mut NodeState);
        let none: Rate = |_| {};
        // (name, edit of sample i of 20, edit of the inventory, causes wanted)
        let cases: &[(&str, Bend, Rate, &[&str])] = &[
            ("healthy: every link at gen5 x16", |_, _| {}, none, &[]),
            (
                "NIC mlx5_0 trained at x8",
                |_, d| at(d, "0000:18:00.0").link_width = Some(8),
                none,
                &["pcie.link_downtrained"],
            ),
            (
                "NIC at gen4 under a gen5 port",
                |_, d| at(d, "0000:40:00.0").link_speed_mts = Some(16_000),
                none,
                &["pcie.link_downtrained"],
            ),
            (
                "a gen5 NIC in a gen4 slot runs as fast as the slot can",
                |_, d| at(d, "0000:40:00.0").link_speed_mts = Some(16_000),
                |n| {
                    for d in &mut n.inventory.host.pcie_devices {
                        if d.bdf == "0000:17:03.0" {
                            d.max_link_speed_mts = Some(16_000);
                        }
                    }
                },
                &[],
            ),
            (
                "a GPU's link is NVML's rule, not this one",
                |_, d| at(d, "0000:1a:00.0").link_width = Some(8),
                none,
                &[],
            ),
            (
                "a bridge is not judged",
                |_, d| at(d, "0000:16:00.0").link_width = Some(8),
                none,
                &[],
            ),
            (
                "one sample at x8 (retraining) is not a state",
                |i, d| at(d, "0000:18:00.0").link_width = Some(if i == 19 { 8 } else { 16 }),
                none,
                &[],
            ),
            (
                "an unreadable link is not a slow one",
                |_, d| {
                    let x = at(d, "0000:18:00.0");
                    (x.link_speed_mts, x.link_width) = (None, None);
                },
                none,
                &[],
            ),
        ];
        for (name, bend, rate, want) in cases {
            let mut n = with_links(hgx_node(20, bend));
            rate(&mut n);
            let got = PcieHost.check(&n, &FleetContext::default(), NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
        // Without the inventory's rated links nothing is judged.
        let n = hgx_node(20, |_, d| at(d, "0000:18:00.0").link_width = Some(8));
        assert!(PcieHost.check(&n, &FleetContext::default(), NOW).is_empty());
    }

    #[test]
    fn a_downtrained_link_names_the_device_and_its_share_of_bandwidth() {
        let n = with_links(hgx_node(20, |_, d| {
            at(d, "0000:18:00.0").link_width = Some(8);
            let x = at(d, "0000:5e:00.0");
            (x.link_speed_mts, x.link_width) = (Some(8_000), Some(16));
        }));
        let got = PcieHost.check(&n, &FleetContext::default(), NOW);
        assert_eq!(ids(&got), ["pcie.link_downtrained"]);
        let f = &got[0];
        assert_eq!(
            f.summary,
            "PCIe link downtrained: NIC mlx5_0 (0000:18:00.0) at 32 GT/s x8 instead of 32 GT/s \
             x16 (50% of its bandwidth); NIC mlx5_3 (0000:5e:00.0) at 8 GT/s x16 instead of 32 \
             GT/s x16 (25% of its bandwidth)"
        );
        assert_eq!(f.evidence[0].field, "host.pcie[0000:18:00.0].link");
        assert_eq!(f.evidence[0].value, "32 GT/s x8 (NIC mlx5_0 (0000:18:00.0))");
        assert_eq!(f.evidence[0].threshold, "32 GT/s x16");
        assert!((f.performance_ratio.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(f.gpu_index, None);
    }
}
