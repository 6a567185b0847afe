//! `host.nic.errors`: a network interface keeps counting receive/transmit errors or dropped
//! packets — a bad cable, optic or port, or a NIC that cannot keep up.

use gpufleet_model::{Evidence, Finding, NicSample, Sample, Severity, UnixMs};

use super::raise;
use super::window::{Growth, Recent};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct NicErrors;

const ERRORS: Cause = Cause {
    id: "host.nic.errors",
    title: "NIC errors rising",
    severity: Severity::Warning,
    detects: "A NIC's rx/tx error counters rising faster than 6 per minute, or its drop counters \
              faster than 120 per minute, over the last 5 minutes in several separate intervals.",
    action: "Check the port (`ethtool -S <nic>`, `ip -s link show <nic>`; for InfiniBand \
             `ibstat` and `perfquery`): errors point at the cable, optic or switch port — reseat or \
             replace them; drops point at ring buffers or a receiver that cannot keep up.",
};

static INFO: RuleInfo = RuleInfo {
    id: ERRORS.id,
    title: ERRORS.title,
    catalog: &[ERRORS],
};

/// Errors per minute that mean a physical problem: a healthy link counts none at all.
const ERRORS_PER_MINUTE: f64 = 6.0;
/// Drops per minute that matter: Linux also counts harmless drops (frames for protocols the
/// host does not run), a few per minute on a busy network.
const DROPS_PER_MINUTE: f64 = 120.0;

fn nic_at<'a>(s: &'a Sample, pos: usize, name: &str) -> Option<&'a NicSample> {
    match s.host.nics.get(pos) {
        Some(n) if n.name == name => Some(n),
        _ => s.host.nics.iter().find(|n| n.name == name),
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

impl Rule for NicErrors {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        // One finding per node (its identity is node + cause), with one line per bad NIC.
        let mut bad: Vec<(&str, Option<Growth>, Option<Growth>)> = Vec::new();
        let recent = Recent::of(node);
        if recent.counters_still() {
            return vec![];
        }
        for (pos, n) in latest.host.nics.iter().enumerate() {
            let name = n.name.as_str();
            let errors = recent.growth(|s| {
                let x = nic_at(s, pos, name)?;
                sum(x.rx_errors, x.tx_errors)
            })
            .filter(|g| g.sustained(ERRORS_PER_MINUTE, MIN_SAMPLES));
            let drops = recent.growth(|s| {
                let x = nic_at(s, pos, name)?;
                sum(x.rx_dropped, x.tx_dropped)
            })
            .filter(|g| g.sustained(DROPS_PER_MINUTE, MIN_SAMPLES));
            if errors.is_some() || drops.is_some() {
                bad.push((name, errors, drops));
            }
        }
        let Some(since) = bad
            .iter()
            .flat_map(|(_, e, d)| [e, d])
            .flatten()
            .map(|g| g.first_rise)
            .min()
        else {
            return vec![];
        };
        let mut f = raise(self, &ERRORS, node, since);
        let mut parts = Vec::new();
        for (name, errors, drops) in &bad {
            for (what, g, limit) in [
                ("errors", errors, ERRORS_PER_MINUTE),
                ("drops", drops, DROPS_PER_MINUTE),
            ] {
                if let Some(g) = g {
                    f.evidence.push(
                        Evidence::new(
                            &format!("host.nic[{name}].{what}"),
                            format!(
                                "+{} in {} s ({:.0}/min)",
                                g.delta,
                                g.span_ms / 1000,
                                g.per_minute()
                            ),
                            format!("{limit:.0}/min"),
                        )
                        .held_for(g.rising_for_ms(latest.timestamp)),
                    );
                    parts.push(format!("{name} {:.0} {what}/min", g.per_minute()));
                }
            }
        }
        f.summary = format!("network errors rising: {}", parts.join(", "));
        vec![f]
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("nic errors", |i, s| {
        s.host.nics = vec![NicSample {
            name: "ibp24s0".into(),
            rx_errors: Some(i as u64 * 10),
            speed_mbps: Some(400_000),
            ..Default::default()
        }];
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        // (name, rx errors and rx drops of ibp24s0 in sample i of 60, want)
        type Counts = fn(u64) -> (u64, u64);
        let cases: &[(&str, Counts, bool)] = &[
            ("healthy", |_| (0, 0), false),
            ("old errors, flat", |_| (1_000, 50_000), false),
            ("errors rising", |i| (i * 10, 0), true),
            ("a few harmless drops", |i| (0, i / 2), false),
            ("drops rising fast", |i| (0, i * 4), true),
            ("one burst", |i| (if i >= 50 { 500 } else { 0 }, 0), false),
        ];
        for (name, counts, want) in cases {
            let n = node(1, 60, |i, s| {
                let (errors, drops) = counts(i as u64);
                s.host.nics = vec![
                    NicSample {
                        name: "eth0".into(),
                        rx_errors: Some(0),
                        tx_errors: Some(0),
                        ..Default::default()
                    },
                    NicSample {
                        name: "ibp24s0".into(),
                        rx_errors: Some(errors),
                        tx_errors: Some(0),
                        rx_dropped: Some(drops),
                        tx_dropped: Some(0),
                        ..Default::default()
                    },
                ];
            });
            let got = NicErrors.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!((f.rule_id.as_str(), f.gpu_index), ("host.nic.errors", None));
                assert!(
                    f.evidence[0].field.starts_with("host.nic[ibp24s0]"),
                    "{name}"
                );
            }
        }
    }
}
