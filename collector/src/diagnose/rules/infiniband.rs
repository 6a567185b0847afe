//! `fabric.ib.*`: the GPU fabric network. On a training cluster every GPU has its own
//! InfiniBand rail (one HCA per GPU on HGX systems); NCCL's collectives run at the pace of the
//! slowest rail, so one port down, retrained at half rate, or taking symbol errors slows every
//! job spanning the node — and no GPU counter shows it.

use gpufleet_model::{
    Evidence, Finding, IbPortSample, PcieDeviceKind, Sample, Severity, UnixMs,
};

use super::raise;
use super::window::{Recent, sustained_node};
use crate::diagnose::context::{gpu_model, ib_port_count};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct InfiniBand;

const PORT_DOWN: Cause = Cause {
    id: "fabric.ib.port_down",
    title: "InfiniBand port down",
    severity: Severity::Critical,
    detects: "An InfiniBand port of the node is not ACTIVE / LinkUp (e.g. DOWN / Disabled or \
              Polling) for 15 s and 3 samples. RoCE (Ethernet) ports count only once seen up.",
    action: "`ibstat DEVICE` and `iblinkinfo` on the node: Polling or Disabled is the cable, \
             transceiver or switch port — reseat or replace the cable and optic, check the switch \
             port (`ibportstate`). Until then the node's collectives run on fewer rails: drain \
             it from multi-node jobs.",
};

const RATE_DEGRADED: Cause = Cause {
    id: "fabric.ib.rate_degraded",
    title: "InfiniBand link at reduced rate",
    severity: Severity::Warning,
    detects: "An active InfiniBand port trained at a lower rate than the node's other \
              InfiniBand ports (e.g. 200 instead of 400 Gb/s: fewer lanes or an older speed), \
              for 15 s and 3 samples.",
    action: "`ibstat DEVICE` shows the rate and width; a downgraded link is a bad cable or \
             optic, a dirty connector or a switch port forced to a lower speed: reseat or \
             replace them, then check the port retrains at full rate. Every collective over \
             this rail runs at the reduced rate.",
};

const LINK_ERRORS: Cause = Cause {
    id: "fabric.ib.link_errors",
    title: "InfiniBand link errors rising",
    severity: Severity::Warning,
    detects: "An InfiniBand port's symbol errors, receive errors, local link integrity or \
              buffer overrun errors rising at 1 per minute or more over the last 5 minutes in \
              several separate intervals, or its link going down and back (link_downed rising).",
    action: "`perfquery -x` / `ibqueryerrors` on the port: symbol and integrity errors are the \
             physical link (cable, optic, connector) — replace it before it fails; buffer \
             overruns point at flow control. A flapping link (link_downed) stalls NCCL at each \
             flap.",
};

/// Mellanox (NVIDIA Networking) PCI vendor id: ConnectX HCAs and BlueField DPUs.
const MELLANOX: u32 = 0x15b3;

const HCA_MISSING: Cause = Cause {
    id: "fabric.ib.hca_missing",
    title: "Fewer InfiniBand ports than peers",
    severity: Severity::Warning,
    detects: "The node has fewer InfiniBand ports than most nodes with its GPU model (at least \
              2 of them, more than half), or its inventory lists RDMA devices its samples no \
              longer show: an HCA that fell off the bus, failed, or whose driver did not load. \
              A node with no InfiniBand port at all is judged only where the agent read its \
              PCIe bus (it lists the GPUs there), so an unreadable sysfs is not an empty one; \
              the finding says whether the bus still shows Mellanox NICs (the RDMA stack did \
              not come up) or none (the HCAs are gone from the bus).",
    action: "`ls /sys/class/infiniband`, `lspci -d 15b3:` and `dmesg | grep mlx5` on the node: \
             a missing HCA needs a reseat or replacement; a present one whose driver failed \
             needs the mlx5_core / mlx5_ib modules (`modprobe mlx5_ib`) and a look at why they \
             failed.",
};

static INFO: RuleInfo = RuleInfo {
    id: "fabric.ib",
    title: "InfiniBand fabric",
    catalog: &[PORT_DOWN, RATE_DEGRADED, LINK_ERRORS, HCA_MISSING],
};

/// A link state must hold this long before it is reported (a port retrains in seconds).
const HOLD_MS: u64 = 15_000;
/// Errors per minute that mean a marginal link: a healthy one counts none at all.
const ERRORS_PER_MINUTE: f64 = 1.0;

fn port<'a>(s: &'a Sample, pos: usize, device: &str, num: u32) -> Option<&'a IbPortSample> {
    match s.host.ib_ports.get(pos) {
        Some(p) if p.device == device && p.port == num => Some(p),
        _ => s
            .host
            .ib_ports
            .iter()
            .find(|p| p.device == device && p.port == num),
    }
}

fn state(p: &IbPortSample) -> String {
    format!("{} / {}", or_unknown(&p.state), or_unknown(&p.phys_state))
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}

impl InfiniBand {
    fn down(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        for (pos, p) in latest.host.ib_ports.iter().enumerate() {
            if p.is_up() {
                continue;
            }
            let (dev, num) = (p.device.as_str(), p.port);
            let Some(held) = sustained_node(node, HOLD_MS, |s| {
                port(s, pos, dev, num).is_some_and(|x| !x.is_up())
            }) else {
                continue;
            };
            // A RoCE port that was never up may simply be uncabled.
            if !p.is_infiniband()
                && !node
                    .history
                    .iter()
                    .any(|s| port(s, pos, dev, num).is_some_and(IbPortSample::is_up))
            {
                continue;
            }
            let f = f.get_or_insert_with(|| raise(self, &PORT_DOWN, node, held.since));
            f.since = f.since.min(held.since);
            f.evidence.push(
                Evidence::new(
                    &format!("host.ib[{}].state", p.id()),
                    state(p),
                    "ACTIVE / LinkUp",
                )
                .held_for(held.held_ms),
            );
            names.push(format!("{} ({})", p.id(), state(p)));
        }
        let mut f = f?;
        let ib = ib_port_count(node);
        f.summary = format!(
            "InfiniBand port{} down: {}; {} of {ib} fabric ports left",
            if names.len() > 1 { "s" } else { "" },
            names.join(", "),
            ib.saturating_sub(names.len()),
        );
        if ib > 0 {
            f.performance_ratio = Some((ib - names.len().min(ib)) as f64 / ib as f64);
        }
        Some(f)
    }

    fn rate(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        // The node's own full rate: the fastest of its active InfiniBand ports.
        let full = latest
            .host
            .ib_ports
            .iter()
            .filter(|p| p.is_infiniband() && p.is_up())
            .filter_map(|p| p.rate_gbps)
            .fold(0.0_f64, f64::max);
        if full <= 0.0 {
            return None;
        }
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        let mut worst = 1.0_f64;
        for (pos, p) in latest.host.ib_ports.iter().enumerate() {
            let Some(rate) = p.rate_gbps.filter(|r| p.is_infiniband() && p.is_up() && *r < full)
            else {
                continue;
            };
            let (dev, num) = (p.device.as_str(), p.port);
            let Some(held) = sustained_node(node, HOLD_MS, |s| {
                port(s, pos, dev, num)
                    .is_some_and(|x| x.is_up() && x.rate_gbps.is_some_and(|r| r < full))
            }) else {
                continue;
            };
            let f = f.get_or_insert_with(|| raise(self, &RATE_DEGRADED, node, held.since));
            f.since = f.since.min(held.since);
            f.evidence.push(
                Evidence::new(
                    &format!("host.ib[{}].rate_gbps", p.id()),
                    format!("{rate:.0} Gb/s"),
                    format!("{full:.0} Gb/s (the node's other ports)"),
                )
                .held_for(held.held_ms),
            );
            names.push(format!("{} at {rate:.0} Gb/s", p.id()));
            worst = worst.min(rate / full);
        }
        let mut f = f?;
        f.summary = format!(
            "InfiniBand link{} at reduced rate: {} (full rate {full:.0} Gb/s)",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        );
        f.performance_ratio = Some(worst);
        Some(f)
    }

    fn errors(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        type Read = fn(&IbPortSample) -> Option<u64>;
        let counters: [(&str, Read); 5] = [
            ("symbol_errors", |p| p.symbol_errors),
            ("rcv_errors", |p| p.rcv_errors),
            ("local_link_integrity_errors", |p| p.local_link_integrity_errors),
            ("excessive_buffer_overrun_errors", |p| {
                p.excessive_buffer_overrun_errors
            }),
            ("link_downed", |p| p.link_downed),
        ];
        let mut f: Option<Finding> = None;
        let mut parts = Vec::new();
        let recent = Recent::of(node);
        if recent.counters_still() {
            return None;
        }
        for (pos, p) in latest.host.ib_ports.iter().enumerate() {
            if !p.is_infiniband() {
                continue;
            }
            let (dev, num) = (p.device.as_str(), p.port);
            for (name, read) in counters {
                let Some(g) = recent.growth(|s| read(port(s, pos, dev, num)?)) else {
                    continue;
                };
                // A flap is news on its own; errors must be a trend.
                let bad = if name == "link_downed" {
                    g.delta > 0 && p.is_up()
                } else {
                    g.sustained(ERRORS_PER_MINUTE, MIN_SAMPLES)
                };
                if !bad {
                    continue;
                }
                let f = f.get_or_insert_with(|| raise(self, &LINK_ERRORS, node, g.first_rise));
                f.since = f.since.min(g.first_rise);
                f.evidence.push(
                    Evidence::new(
                        &format!("host.ib[{}].{name}", p.id()),
                        format!(
                            "+{} in {} s ({:.1}/min)",
                            g.delta,
                            g.span_ms / 1000,
                            g.per_minute()
                        ),
                        if name == "link_downed" {
                            "0".to_string()
                        } else {
                            format!("{ERRORS_PER_MINUTE:.0}/min")
                        },
                    )
                    .held_for(g.rising_for_ms(latest.timestamp)),
                );
                parts.push(format!("{} {name} +{}", p.id(), g.delta));
            }
        }
        let mut f = f?;
        f.summary = format!("InfiniBand link errors rising: {}", parts.join(", "));
        Some(f)
    }

    fn missing(&self, node: &NodeState, fleet: &FleetContext, latest: &Sample) -> Option<Finding> {
        let have = ib_port_count(node);

        let listed = node.inventory.host.ib_devices.len();
        let shown = latest
            .host
            .ib_ports
            .iter()
            .map(|p| p.device.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let usual = gpu_model(node)
            .and_then(|m| fleet.ib_ports.get(m))
            .filter(|m| m.count >= 2 && m.count * 2 > m.total)
            .and_then(|m| m.value.parse::<usize>().ok());
        let mut evidence = Vec::new();
        let mut why = Vec::new();
        if let Some(usual) = usual.filter(|u| have > 0 && have < *u) {
            evidence.push(Evidence::new(
                "host.ib.ports",
                have,
                format!("{usual} (most nodes with its GPUs)"),
            ));
            why.push(format!("{have} InfiniBand ports where its peers have {usual}"));
        }
        let pcie = &node.inventory.host.pcie_devices;
        // Zero ports is news only where the agent saw the bus: its GPUs are on it.
        let none_at_all =
            have == 0 && listed == 0 && pcie.iter().any(|d| d.kind == PcieDeviceKind::Gpu);
        if let Some(usual) = usual.filter(|_| none_at_all) {
            let nics_on_bus = pcie
                .iter()
                .filter(|d| d.kind == PcieDeviceKind::Nic && d.vendor_id == MELLANOX)
                .count();
            evidence.push(Evidence::new(
                "host.ib.ports",
                0,
                format!("{usual} (most nodes with its GPUs)"),
            ));
            evidence.push(Evidence::new(
                "host.pcie.mellanox_nics",
                nics_on_bus,
                "the HCAs, on the PCIe bus",
            ));
            why.push(if nics_on_bus > 0 {
                format!(
                    "no InfiniBand port where its peers have {usual}, yet {nics_on_bus} Mellanox \
                     NICs are on its PCIe bus: the RDMA stack did not come up (`lsmod | grep \
                     mlx5_ib`, `ibstat`)"
                )
            } else {
                format!(
                    "no InfiniBand port where its peers have {usual}, and no Mellanox NIC on \
                     its PCIe bus: the HCAs are gone from the bus (`lspci -d 15b3:`)"
                )
            });
        }
        if listed > shown {
            let gone: Vec<&str> = node
                .inventory
                .host
                .ib_devices
                .iter()
                .map(|d| d.name.as_str())
                .filter(|d| !latest.host.ib_ports.iter().any(|p| p.device == *d))
                .collect();
            evidence.push(Evidence::new(
                "host.ib.devices",
                format!("{shown} in samples"),
                format!("{listed} in the inventory"),
            ));
            why.push(format!("{} no longer read", gone.join(", ")));
        }
        if evidence.is_empty() {
            return None;
        }
        // Held: the count has been low for the whole hold.
        let held = sustained_node(node, HOLD_MS, |s| {
            let c = s.host.ib_ports.iter().filter(|p| p.is_infiniband()).count();
            usual.is_some_and(|u| (c > 0 || none_at_all) && c < u) || c < listed
        })?;
        let mut f = raise(self, &HCA_MISSING, node, held.since);
        for e in evidence {
            f.evidence.push(e.held_for(held.held_ms));
        }
        f.summary = format!("missing InfiniBand HCA: {}", why.join("; "));
        Some(f)
    }
}

impl Rule for InfiniBand {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        if latest.host.ib_ports.is_empty() && node.inventory.host.ib_devices.is_empty() {
            // Nothing to judge but a node with no HCA at all among peers that have them.
            return self.missing(node, fleet, latest).into_iter().collect();
        }
        [
            self.down(node, latest),
            self.rate(node, latest),
            self.errors(node, latest),
            self.missing(node, fleet, latest),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Eight NDR ports, as on an HGX H100 node.
#[cfg(test)]
fn hgx_ports() -> Vec<IbPortSample> {
    (0..8)
        .map(|i| IbPortSample {
            device: format!("mlx5_{i}"),
            port: 1,
            state: "ACTIVE".into(),
            phys_state: "LinkUp".into(),
            link_layer: "InfiniBand".into(),
            rate_gbps: Some(400.0),
            symbol_errors: Some(0),
            link_downed: Some(0),
            rcv_errors: Some(0),
            local_link_integrity_errors: Some(0),
            excessive_buffer_overrun_errors: Some(0),
            ..Default::default()
        })
        .collect()
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    vec![
        trigger("ib port down", |_, s| {
            s.host.ib_ports = hgx_ports();
            s.host.ib_ports[3].state = "DOWN".into();
            s.host.ib_ports[3].phys_state = "Disabled".into();
        }),
        trigger("ib rate degraded", |_, s| {
            s.host.ib_ports = hgx_ports();
            s.host.ib_ports[5].rate_gbps = Some(200.0);
        }),
        trigger("ib link errors", |i, s| {
            s.host.ib_ports = hgx_ports();
            s.host.ib_ports[1].symbol_errors = Some(i as u64 * 3);
        }),
        trigger("ib hca missing", |_, s| {
            s.host.ib_ports = hgx_ports();
            s.host.ib_ports.pop();
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn ids(fs: &[Finding]) -> Vec<&str> {
        fs.iter().map(|f| f.rule_id.as_str()).collect()
    }

    /// The storage NIC beside the eight rails, in Ethernet mode (RoCE).
    fn roce() -> IbPortSample {
        IbPortSample {
            device: "mlx5_8".into(),
            link_layer: "Ethernet".into(),
            rate_gbps: Some(200.0),
            ..hgx_ports()[0].clone()
        }
    }

    /// A fleet whose H100 nodes have eight InfiniBand ports.
    fn peers() -> FleetContext {
        let healthy = node(8, 30, |_, s| s.host.ib_ports = hgx_ports());
        FleetContext::from_nodes(&[&healthy, &healthy.clone(), &healthy.clone()])
    }

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut Vec<IbPortSample>);
        // (name, edit of the eight ports in sample i of 60, causes wanted)
        let cases: &[(&str, Bend, &[&str])] = &[
            ("healthy", |_, _| {}, &[]),
            (
                "port down",
                |_, p| {
                    p[3].state = "DOWN".into();
                    p[3].phys_state = "Disabled".into();
                },
                &["fabric.ib.port_down"],
            ),
            (
                "down for 5 s only: retraining",
                |i, p| {
                    if i >= 55 {
                        p[3].state = "INIT".into();
                        p[3].phys_state = "Polling".into();
                    }
                },
                &[],
            ),
            (
                "an uncabled RoCE port is not news",
                |_, p| {
                    p.push(roce());
                    p[8].state = "DOWN".into();
                    p[8].phys_state = "Polling".into();
                },
                &[],
            ),
            (
                "a RoCE port that was up and went down",
                |i, p| {
                    p.push(roce());
                    if i >= 30 {
                        p[8].state = "DOWN".into();
                        p[8].phys_state = "Disabled".into();
                    }
                },
                &["fabric.ib.port_down"],
            ),
            (
                "half rate",
                |_, p| p[5].rate_gbps = Some(200.0),
                &["fabric.ib.rate_degraded"],
            ),
            (
                "symbol errors rising",
                |i, p| p[1].symbol_errors = Some(i as u64 * 3),
                &["fabric.ib.link_errors"],
            ),
            (
                "old errors, flat",
                |_, p| p[1].symbol_errors = Some(10_000),
                &[],
            ),
            (
                "one flap",
                |i, p| p[2].link_downed = Some(u64::from(i >= 40)),
                &["fabric.ib.link_errors"],
            ),
            (
                "an HCA gone",
                |_, p| {
                    p.pop();
                },
                &["fabric.ib.hca_missing"],
            ),
            (
                "the counters unreadable: absent, not zero",
                |_, p| {
                    for x in p.iter_mut() {
                        x.symbol_errors = None;
                        x.rate_gbps = None;
                    }
                },
                &[],
            ),
        ];
        let fleet = peers();
        for (name, bend, want) in cases {
            let n = node(8, 60, |i, s| {
                let mut p = hgx_ports();
                bend(i, &mut p);
                s.host.ib_ports = p;
            });
            let got = InfiniBand.check(&n, &fleet, NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn findings_name_the_port_and_the_numbers() {
        let n = node(8, 60, |_, s| {
            let mut p = hgx_ports();
            p[3].state = "DOWN".into();
            p[3].phys_state = "Disabled".into();
            p[5].rate_gbps = Some(200.0);
            s.host.ib_ports = p;
        });
        let got = InfiniBand.check(&n, &peers(), NOW);
        assert_eq!(
            got[0].summary,
            "InfiniBand port down: mlx5_3/1 (DOWN / Disabled); 7 of 8 fabric ports left"
        );
        assert_eq!(got[0].evidence[0].field, "host.ib[mlx5_3/1].state");
        assert_eq!(got[0].performance_ratio, Some(7.0 / 8.0));
        assert_eq!(
            got[1].summary,
            "InfiniBand link at reduced rate: mlx5_5/1 at 200 Gb/s (full rate 400 Gb/s)"
        );
        assert_eq!(got[1].performance_ratio, Some(0.5));
    }

    #[test]
    fn an_hca_the_inventory_lists_but_the_samples_lost_is_missing_without_peers() {
        let mut n = node(8, 60, |_, s| {
            let mut p = hgx_ports();
            p.remove(2);
            s.host.ib_ports = p;
        });
        n.inventory.host.ib_devices = (0..8)
            .map(|i| gpufleet_model::IbDeviceInfo {
                name: format!("mlx5_{i}"),
                ..Default::default()
            })
            .collect();
        let got = InfiniBand.check(&n, &FleetContext::default(), NOW);
        assert_eq!(ids(&got), ["fabric.ib.hca_missing"]);
        assert!(got[0].summary.contains("mlx5_2 no longer read"), "{}", got[0].summary);
    }

    #[test]
    fn a_node_with_no_infiniband_at_all_is_judged_by_its_pcie_bus() {
        use crate::diagnose::rules::pcie_host::hgx_tree;
        let mellanox = |mut t: Vec<gpufleet_model::PcieDeviceInfo>| {
            for d in &mut t {
                if d.kind == PcieDeviceKind::Nic {
                    d.vendor_id = MELLANOX;
                }
            }
            t
        };
        let bare = || node(8, 60, |_, s| s.host.ib_ports.clear());
        // (name, PCIe inventory, peers with eight ports, causes wanted, summary says)
        type Tree = fn() -> Vec<gpufleet_model::PcieDeviceInfo>;
        let cases: &[(&str, Tree, bool, &[&str], &str)] = &[
            ("sysfs unreadable: nothing seen is not nothing there", Vec::new, true, &[], ""),
            (
                "HCAs on the bus, no RDMA device",
                hgx_tree,
                true,
                &["fabric.ib.hca_missing"],
                "yet 8 Mellanox NICs are on its PCIe bus: the RDMA stack did not come up",
            ),
            (
                "HCAs gone from the bus",
                || {
                    hgx_tree()
                        .into_iter()
                        .filter(|d| d.kind != PcieDeviceKind::Nic)
                        .collect()
                },
                true,
                &["fabric.ib.hca_missing"],
                "and no Mellanox NIC on its PCIe bus: the HCAs are gone from the bus",
            ),
            (
                "no peer has InfiniBand either: an Ethernet-only fleet",
                hgx_tree,
                false,
                &[],
                "",
            ),
        ];
        for (name, tree, with_peers, want, says) in cases {
            let mut n = bare();
            n.inventory.host.pcie_devices = mellanox(tree());
            let fleet = if *with_peers {
                peers()
            } else {
                FleetContext::from_nodes(&[&bare(), &bare()])
            };
            let got = InfiniBand.check(&n, &fleet, NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
            if let Some(f) = got.first() {
                assert!(f.summary.contains(says), "{name}: {}", f.summary);
                assert_eq!(f.evidence[0].field, "host.ib.ports", "{name}");
                assert_eq!(f.evidence[0].value, "0", "{name}");
            }
        }
    }
}
