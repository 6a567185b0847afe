//! `host.nic.link_down`, `host.nic.speed_degraded`, `host.nic.flapping`: the Ethernet links
//! themselves (storage, RoCE, the management network). A data-loading or checkpoint network
//! that renegotiated at 25 instead of 100 Gb/s, or whose link drops every few seconds, slows
//! every step with no GPU counter showing it. A port is judged against itself (what it was
//! earlier in the node's recent samples) and against the same port on the nodes with the same
//! GPU model, so an unused, never-cabled port says nothing.

use gpufleet_model::{EthernetPort, Evidence, Finding, Sample, Severity, UnixMs};

use super::raise;
use super::window::{Recent, sustained_node};
use crate::diagnose::context::{EthernetPeers, gpu_model};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct Ethernet;

const LINK_DOWN: Cause = Cause {
    id: "host.nic.link_down",
    title: "Ethernet link down",
    severity: Severity::Warning,
    detects: "A physical Ethernet port not up (operstate down, lowerlayerdown, …) for 15 s and 3 \
              samples, where it was up earlier in the node's recent samples or is up on most \
              nodes with its GPU model (at least 2 of them).",
    action: "`ip link show NIC` and `ethtool NIC` on the node (\"Link detected: no\"): reseat or \
             replace the cable and transceiver, check the switch port (`show interface`) and \
             its error-disable state. On a bonded or multi-rail setup the node now runs on the \
             other links at reduced bandwidth.",
};

const SPEED_DEGRADED: Cause = Cause {
    id: "host.nic.speed_degraded",
    title: "Ethernet link at reduced speed",
    severity: Severity::Warning,
    detects: "An Ethernet port up at a lower speed than it had earlier in the node's recent \
              samples, or than the same port has on most nodes with its GPU model (at least 2 of \
              them), or at half duplex, for 15 s and 3 samples.",
    action: "`ethtool NIC` shows the speed, duplex and advertised modes: a lower speed is a bad \
             or wrong cable (a 25G DAC in a 100G port), a dirty optic, or a switch port forced \
             to a lower speed or autonegotiation mismatch. Replace the cable or optic, fix the \
             switch port's speed setting, then check that the link comes back at full speed.",
};

const FLAPPING: Cause = Cause {
    id: "host.nic.flapping",
    title: "Ethernet link flapping",
    severity: Severity::Warning,
    detects: "An Ethernet port's carrier changing (the link going down and up) 4 or more times \
              over the last 5 minutes, in at least 2 separate intervals.",
    action: "`ip -s link show NIC` (carrier changes) and `journalctl -k | grep NIC`: a flapping \
             link is a marginal cable, optic or switch port — replace them. Each flap stalls \
             the traffic over it (NCCL over RoCE, storage I/O) for seconds.",
};

static INFO: RuleInfo = RuleInfo {
    id: "host.nic.link",
    title: "Ethernet links",
    catalog: &[LINK_DOWN, SPEED_DEGRADED, FLAPPING],
};

const HOLD_MS: u64 = 15_000;
/// Carrier changes in the window that make a flapping link (two per down-and-up).
const FLAP_CHANGES: u64 = 4;

fn port<'a>(s: &'a Sample, pos: usize, name: &str) -> Option<&'a EthernetPort> {
    match s.host.ethernet.get(pos) {
        Some(p) if p.name == name => Some(p),
        _ => s.host.ethernet.iter().find(|p| p.name == name),
    }
}

fn peers<'a>(fleet: &'a FleetContext, node: &NodeState, name: &str) -> Option<&'a EthernetPeers> {
    let model = gpu_model(node)?;
    fleet.ethernet.get(model)?.get(name)
}

/// Most nodes (at least 2, more than half) with this port see it `up`.
fn up_on_peers(p: Option<&EthernetPeers>) -> bool {
    p.is_some_and(|p| p.up >= 2 && p.up * 2 > p.nodes)
}

/// The speed most nodes run this port at (at least 2 of them, more than half).
fn peer_speed(p: Option<&EthernetPeers>) -> Option<u64> {
    let m = p?.speed.as_ref()?;
    (m.count >= 2 && m.count * 2 > p?.nodes).then(|| m.value.parse().ok())?
}

fn mbps(v: u64) -> String {
    if v >= 1000 && v % 1000 == 0 {
        format!("{} Gb/s", v / 1000)
    } else {
        format!("{v} Mb/s")
    }
}

impl Ethernet {
    fn down(&self, node: &NodeState, fleet: &FleetContext, latest: &Sample) -> Option<Finding> {
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        for (pos, p) in latest.host.ethernet.iter().enumerate() {
            if p.is_up() {
                continue;
            }
            let name = p.name.as_str();
            let Some(held) =
                sustained_node(node, HOLD_MS, |s| port(s, pos, name).is_some_and(|x| !x.is_up()))
            else {
                continue;
            };
            let was_up = node
                .history
                .iter()
                .any(|s| port(s, pos, name).is_some_and(EthernetPort::is_up));
            let peers = peers(fleet, node, name);
            if !was_up && !up_on_peers(peers) {
                continue;
            }
            let f = f.get_or_insert_with(|| raise(self, &LINK_DOWN, node, held.since));
            f.since = f.since.min(held.since);
            let expected = match (was_up, peers) {
                (true, _) => "up (as earlier on this node)".to_string(),
                (false, Some(p)) => format!("up (as on {} of {} peers)", p.up, p.nodes),
                (false, None) => "up".to_string(),
            };
            f.evidence.push(
                Evidence::new(
                    &format!("host.ethernet[{name}].operstate"),
                    if p.operstate.is_empty() {
                        "unknown"
                    } else {
                        &p.operstate
                    },
                    &expected,
                )
                .held_for(held.held_ms),
            );
            names.push(if p.pci_address.is_empty() {
                name.to_string()
            } else {
                format!("{name} (PCI {})", p.pci_address)
            });
        }
        let mut f = f?;
        f.summary = format!(
            "Ethernet link{} down: {}",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        );
        Some(f)
    }

    fn slow(&self, node: &NodeState, fleet: &FleetContext, latest: &Sample) -> Option<Finding> {
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        let mut worst = 1.0_f64;
        let still = node.counters_still_since(0);
        for (pos, p) in latest.host.ethernet.iter().enumerate() {
            let (true, Some(speed)) = (p.is_up(), p.speed_mbps) else {
                continue;
            };
            let name = p.name.as_str();
            // The speed it should have: the fastest it was seen at recently, or its peers'.
            // (No port changed speed over the history: it is the speed now, without a scan.)
            let own = if still {
                speed
            } else {
                node.history
                    .iter()
                    .filter_map(|s| port(s, pos, name)?.speed_mbps)
                    .max()
                    .unwrap_or(speed)
            };
            let peer = peer_speed(peers(fleet, node, name));
            let full = own.max(peer.unwrap_or(0));
            let half = p.duplex == "half";
            if speed >= full && !half {
                continue;
            }
            let Some(held) = sustained_node(node, HOLD_MS, |s| {
                port(s, pos, name).is_some_and(|x| {
                    x.is_up() && (x.duplex == "half" || x.speed_mbps.is_some_and(|v| v < full))
                })
            }) else {
                continue;
            };
            let f = f.get_or_insert_with(|| raise(self, &SPEED_DEGRADED, node, held.since));
            f.since = f.since.min(held.since);
            if speed < full {
                let basis = if peer == Some(full) {
                    "the same port on its peers"
                } else {
                    "earlier on this node"
                };
                f.evidence.push(
                    Evidence::new(
                        &format!("host.ethernet[{name}].speed"),
                        mbps(speed),
                        format!("{} ({basis})", mbps(full)),
                    )
                    .held_for(held.held_ms),
                );
                names.push(format!("{name} at {}", mbps(speed)));
                worst = worst.min(speed as f64 / full as f64);
            }
            if half {
                f.evidence.push(
                    Evidence::new(&format!("host.ethernet[{name}].duplex"), "half", "full")
                        .held_for(held.held_ms),
                );
                names.push(format!("{name} at half duplex"));
                worst = worst.min(0.5);
            }
        }
        let mut f = f?;
        f.summary = format!("Ethernet link at reduced speed: {}", names.join(", "));
        f.performance_ratio = Some(worst);
        Some(f)
    }

    fn flapping(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let mut f: Option<Finding> = None;
        let mut names = Vec::new();
        let recent = Recent::of(node);
        if recent.counters_still() {
            return None;
        }
        for (pos, p) in latest.host.ethernet.iter().enumerate() {
            let name = p.name.as_str();
            let Some(g) = recent
                .growth(|s| port(s, pos, name)?.carrier_changes)
            .filter(|g| g.delta >= FLAP_CHANGES && g.rises >= MIN_SAMPLES.min(2)) else {
                continue;
            };
            let f = f.get_or_insert_with(|| raise(self, &FLAPPING, node, g.first_rise));
            f.since = f.since.min(g.first_rise);
            f.evidence.push(
                Evidence::new(
                    &format!("host.ethernet[{name}].carrier_changes"),
                    format!("+{} in {} s", g.delta, g.span_ms / 1000),
                    format!("< {FLAP_CHANGES} per 5 min"),
                )
                .held_for(g.rising_for_ms(latest.timestamp)),
            );
            names.push(format!("{name} ({} carrier changes)", g.delta));
        }
        let mut f = f?;
        f.summary = format!("Ethernet link flapping: {}", names.join(", "));
        Some(f)
    }
}

impl Rule for Ethernet {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        if latest.host.ethernet.is_empty() {
            return vec![];
        }
        [
            self.down(node, fleet, latest),
            self.slow(node, fleet, latest),
            self.flapping(node, latest),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
fn eth(name: &str, speed: u64) -> EthernetPort {
    EthernetPort {
        name: name.into(),
        operstate: "up".into(),
        speed_mbps: Some(speed),
        duplex: "full".into(),
        carrier_changes: Some(1),
        pci_address: "0000:2a:00.0".into(),
        mtu: Some(9000),
    }
}

#[cfg(test)]
fn down(p: &mut EthernetPort) {
    p.operstate = "down".into();
    p.speed_mbps = None;
    p.duplex = String::new();
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    vec![
        trigger("nic link down", |i, s| {
            s.host.ethernet = vec![eth("eth0", 100_000)];
            if i >= 10 {
                down(&mut s.host.ethernet[0]);
            }
        }),
        trigger("nic speed degraded", |i, s| {
            s.host.ethernet = vec![eth("eth0", if i >= 10 { 25_000 } else { 100_000 })];
        }),
        trigger("nic flapping", |i, s| {
            let mut p = eth("eth0", 100_000);
            p.carrier_changes = Some(1 + 2 * (i as u64 / 5));
            s.host.ethernet = vec![p];
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

    /// Healthy H100 nodes whose eth0 is up at 100 Gb/s and whose eth1 is never cabled.
    fn peers() -> FleetContext {
        let healthy = node(8, 30, |_, s| {
            let mut unused = eth("eth1", 100_000);
            down(&mut unused);
            s.host.ethernet = vec![eth("eth0", 100_000), unused];
        });
        FleetContext::from_nodes(&[&healthy, &healthy.clone(), &healthy.clone()])
    }

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut Vec<EthernetPort>);
        // (name, edit of [eth0, eth1] in sample i of 60, against peers or alone, causes wanted)
        let cases: &[(&str, Bend, bool, &[&str])] = &[
            ("healthy", |_, _| {}, true, &[]),
            ("healthy alone", |_, _| {}, false, &[]),
            (
                "down since the start, up on the peers",
                |_, p| down(&mut p[0]),
                true,
                &["host.nic.link_down"],
            ),
            (
                "down since the start, no peers to compare",
                |_, p| down(&mut p[0]),
                false,
                &[],
            ),
            (
                "went down, alone",
                |i, p| {
                    if i >= 40 {
                        down(&mut p[0])
                    }
                },
                false,
                &["host.nic.link_down"],
            ),
            (
                "down for too short a time",
                |i, p| {
                    if i >= 50 {
                        down(&mut p[0])
                    }
                },
                false,
                &[],
            ),
            ("an uncabled port is down everywhere", |_, _| {}, true, &[]),
            (
                "slower than the peers",
                |_, p| p[0].speed_mbps = Some(25_000),
                true,
                &["host.nic.speed_degraded"],
            ),
            (
                "slow since the start, alone",
                |_, p| p[0].speed_mbps = Some(25_000),
                false,
                &[],
            ),
            (
                "renegotiated lower, alone",
                |i, p| {
                    if i >= 30 {
                        p[0].speed_mbps = Some(40_000)
                    }
                },
                false,
                &["host.nic.speed_degraded"],
            ),
            (
                "half duplex",
                |_, p| p[0].duplex = "half".into(),
                false,
                &["host.nic.speed_degraded"],
            ),
            (
                "flapping",
                |i, p| p[0].carrier_changes = Some(1 + 2 * (i as u64 / 10)),
                false,
                &["host.nic.flapping"],
            ),
            (
                "one flap is not flapping",
                |i, p| p[0].carrier_changes = Some(if i >= 30 { 3 } else { 1 }),
                false,
                &[],
            ),
        ];
        for (name, bend, with_peers, want) in cases {
            let n = node(8, 60, |i, s| {
                let mut unused = eth("eth1", 100_000);
                down(&mut unused);
                let mut ports = vec![eth("eth0", 100_000), unused];
                bend(i, &mut ports);
                s.host.ethernet = ports;
            });
            let fleet = if *with_peers {
                peers()
            } else {
                FleetContext::from_nodes(&[&n])
            };
            let got = Ethernet.check(&n, &fleet, NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn evidence_names_the_port_and_what_it_should_be() {
        let n = node(8, 60, |_, s| {
            let mut p = eth("eth0", 100_000);
            p.speed_mbps = Some(25_000);
            s.host.ethernet = vec![p];
        });
        let got = Ethernet.check(&n, &peers(), NOW);
        assert_eq!(got.len(), 1);
        let f = &got[0];
        assert_eq!(f.summary, "Ethernet link at reduced speed: eth0 at 25 Gb/s");
        assert_eq!(f.evidence[0].value, "25 Gb/s");
        assert_eq!(f.evidence[0].threshold, "100 Gb/s (the same port on its peers)");
        assert_eq!(f.performance_ratio, Some(0.25));

        let n = node(8, 60, |_, s| {
            let mut p = eth("eth0", 100_000);
            down(&mut p);
            s.host.ethernet = vec![p];
        });
        let got = Ethernet.check(&n, &peers(), NOW);
        assert_eq!(got[0].summary, "Ethernet link down: eth0 (PCI 0000:2a:00.0)");
        assert_eq!(got[0].evidence[0].threshold, "up (as on 3 of 3 peers)");
    }
}
