//! The audit: every selected node judged against a policy, or (without one) against the most
//! common value among nodes of the same GPU model. Pure: node state and `now` in, a report
//! out. A node that stopped reporting is stale, never silently compliant.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use gpufleet_model::{Labels, Selector, UnixMs};
use serde::{Deserialize, Serialize};

use super::fields::{self, FIELDS, Field, Value};
use super::policy::{Policy, PolicyRule};
use crate::fleet::NodeState;

/// `gpufleet audit --stale-after` default: a node silent this long is stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// The `rule` of a violation found without a policy.
pub const FLEET_MAJORITY: &str = "fleet majority";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Compliant,
    Violating,
    Stale,
    NeverReported,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Compliant => "compliant",
            Status::Violating => "violating",
            Status::Stale => "stale",
            Status::NeverReported => "never_reported",
        }
    }
}

/// One constraint that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub field: String,
    pub gpu_index: Option<u32>,
    pub expected: String,
    pub actual: String,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAudit {
    pub node: String,
    pub status: Status,
    pub labels: Labels,
    pub gpu_models: Vec<String>,
    pub last_seen: UnixMs,
    /// Policy rules that selected the node.
    pub rules: Vec<String>,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub nodes: u32,
    pub compliant: u32,
    pub violating: u32,
    pub stale: u32,
    pub never_reported: u32,
}

impl AuditSummary {
    /// Every selected node complies (the CLI's exit status 0).
    pub fn all_compliant(&self) -> bool {
        self.compliant == self.nodes
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// What the nodes were judged against.
    pub policy: String,
    pub evaluated_at: UnixMs,
    pub summary: AuditSummary,
    pub nodes: Vec<NodeAudit>,
}

/// What an audit judges against.
#[derive(Debug, Clone, Copy)]
pub enum Against<'a> {
    Policy(&'a Policy),
    FleetMajority,
}

/// Audits the nodes `selector` selects.
pub fn audit(
    nodes: &[&NodeState],
    against: Against,
    selector: &Selector,
    now: UnixMs,
    stale_after: Duration,
) -> Audit {
    let majorities = match against {
        Against::FleetMajority => Some(Majorities::of(nodes)),
        Against::Policy(_) => None,
    };
    let stale_ms = stale_after.as_millis().min(i64::MAX as u128) as i64;
    let mut out: Vec<NodeAudit> = nodes
        .iter()
        .filter(|n| selector.matches(&n.labels))
        .map(|n| {
            let (rules, violations) = match (against, &majorities) {
                (Against::Policy(p), _) => policy_violations(n, p),
                (Against::FleetMajority, Some(m)) => (Vec::new(), m.violations(n)),
                (Against::FleetMajority, None) => (Vec::new(), Vec::new()),
            };
            let status = if !reported(n) {
                Status::NeverReported
            } else if now.0.saturating_sub(n.last_seen.0) > stale_ms {
                Status::Stale
            } else if !violations.is_empty() {
                Status::Violating
            } else {
                Status::Compliant
            };
            NodeAudit {
                node: n.name().to_string(),
                status,
                labels: n.labels.clone(),
                gpu_models: gpu_models(n),
                last_seen: n.last_seen,
                rules,
                violations,
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    let mut summary = AuditSummary {
        nodes: out.len() as u32,
        ..Default::default()
    };
    for n in &out {
        *match n.status {
            Status::Compliant => &mut summary.compliant,
            Status::Violating => &mut summary.violating,
            Status::Stale => &mut summary.stale,
            Status::NeverReported => &mut summary.never_reported,
        } += 1;
    }
    Audit {
        policy: match against {
            Against::Policy(p) => p.describe(),
            Against::FleetMajority => format!("{FLEET_MAJORITY} per GPU model"),
        },
        evaluated_at: now,
        summary,
        nodes: out,
    }
}

/// Whether the collector has an inventory from the node.
fn reported(n: &NodeState) -> bool {
    n.inventory.read_at.0 != 0 || !n.inventory.gpus.is_empty()
}

/// The node's GPU product names, deduplicated, in order.
fn gpu_models(n: &NodeState) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in &n.inventory.gpus {
        if !out.contains(&g.name) {
            out.push(g.name.clone());
        }
    }
    out
}

/// Whether `rule` selects the node: its labels, and at least one GPU of a covered model.
fn selects(rule: &PolicyRule, n: &NodeState) -> bool {
    rule.selector.matches(&n.labels)
        && (rule.gpu_models.is_empty()
            || n.inventory.gpus.iter().any(|g| rule.covers_model(&g.name)))
}

/// The rules that select `n` and every constraint of theirs it breaks.
pub fn policy_violations(n: &NodeState, policy: &Policy) -> (Vec<String>, Vec<Violation>) {
    let mut rules = Vec::new();
    let mut out = Vec::new();
    let latest = n.latest();
    for rule in policy.rules.iter().filter(|r| selects(r, n)) {
        rules.push(rule.name.clone());
        for c in &rule.constraints {
            for (gpu, value) in fields::read(c.field, &n.inventory, latest) {
                if let Some(i) = gpu
                    && !n
                        .inventory
                        .gpu(i)
                        .is_some_and(|g| rule.covers_model(&g.name))
                {
                    continue;
                }
                if !c.constraint.allows(value.as_ref()) {
                    out.push(Violation {
                        field: c.field.name.to_string(),
                        gpu_index: gpu,
                        expected: c.constraint.to_string(),
                        actual: shown(value.as_ref()),
                        rule: rule.name.clone(),
                    });
                }
            }
        }
    }
    (rules, out)
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "n/a".to_string(), Value::to_string)
}

/// The node's model for node-wide fields: its most common GPU product name.
fn node_model(n: &NodeState) -> &str {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &n.inventory.gpus {
        *counts.entry(g.name.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(name, c)| (*c, *name))
        .map_or("", |(name, _)| name)
}

/// Per (GPU model, field): how many nodes (node-wide fields) or GPUs (per-GPU fields) report
/// each value.
struct Majorities {
    counts: HashMap<(String, &'static str), BTreeMap<Value, usize>>,
}

impl Majorities {
    fn of(nodes: &[&NodeState]) -> Self {
        let mut counts: HashMap<(String, &'static str), BTreeMap<Value, usize>> = HashMap::new();
        for n in nodes.iter().filter(|n| reported(n)) {
            let model = node_model(n);
            for f in FIELDS {
                for (gpu, v) in fields::read(f, &n.inventory, n.latest()) {
                    let Some(v) = v else { continue };
                    let m = gpu
                        .and_then(|i| n.inventory.gpu(i))
                        .map_or(model, |g| g.name.as_str());
                    *counts
                        .entry((m.to_string(), f.name))
                        .or_default()
                        .entry(v)
                        .or_default() += 1;
                }
            }
        }
        Majorities { counts }
    }

    /// The value more than half of the group reports, with its count and the group's size.
    fn majority(&self, model: &str, f: &Field) -> Option<(&Value, usize, usize)> {
        let c = self.counts.get(&(model.to_string(), f.name))?;
        let total: usize = c.values().sum();
        let (v, n) = c.iter().max_by_key(|(v, n)| (**n, *v))?;
        (total >= 2 && n * 2 > total).then_some((v, *n, total))
    }

    fn violations(&self, n: &NodeState) -> Vec<Violation> {
        let model = node_model(n);
        let mut out = Vec::new();
        for f in FIELDS {
            for (gpu, v) in fields::read(f, &n.inventory, n.latest()) {
                let Some(v) = v else { continue };
                let m = gpu
                    .and_then(|i| n.inventory.gpu(i))
                    .map_or(model, |g| g.name.as_str());
                let Some((want, count, total)) = self.majority(m, f) else {
                    continue;
                };
                if *want != v {
                    out.push(Violation {
                        field: f.name.to_string(),
                        gpu_index: gpu,
                        expected: format!(
                            "{want} ({count} of {total} {})",
                            if f.per_gpu() { "GPUs" } else { "nodes" }
                        ),
                        actual: v.to_string(),
                        rule: format!(
                            "{FLEET_MAJORITY} of {}",
                            if m.is_empty() {
                                "nodes without GPUs"
                            } else {
                                m
                            }
                        ),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::node;

    fn fleet(n: usize) -> Vec<NodeState> {
        (0..n)
            .map(|i| {
                let mut s = node(8, 3, |_, _| {});
                s.identity.hostname = format!("gpu-node-{i:02}");
                s.inventory.read_at = UnixMs(99_000);
                s.labels = [(
                    "pool".to_string(),
                    if i % 2 == 0 { "training" } else { "inference" }.to_string(),
                )]
                .into();
                for g in &mut s.inventory.gpus {
                    g.ecc_enabled = Some(true);
                }
                s
            })
            .collect()
    }

    const NOW: UnixMs = UnixMs(100_500);

    fn run(nodes: &[NodeState], against: Against, selector: &str) -> Audit {
        let refs: Vec<&NodeState> = nodes.iter().collect();
        audit(
            &refs,
            against,
            &Selector::parse(selector).unwrap(),
            NOW,
            DEFAULT_STALE_AFTER,
        )
    }

    #[test]
    fn fleet_majority_names_the_outliers() {
        let mut nodes = fleet(5);
        nodes[3].inventory.driver.driver_version = "535.161.08".into();
        nodes[1].inventory.gpus[6].vbios_version = "96.00.A5.00.01".into();
        nodes[4].inventory.gpus.pop();
        let a = run(&nodes, Against::FleetMajority, "");
        assert_eq!(a.policy, "fleet majority per GPU model");
        assert_eq!(
            a.summary,
            AuditSummary {
                nodes: 5,
                compliant: 2,
                violating: 3,
                stale: 0,
                never_reported: 0
            }
        );
        let v = |i: usize| &a.nodes[i].violations;
        assert_eq!(v(3).len(), 1);
        assert_eq!(
            (
                v(3)[0].field.as_str(),
                v(3)[0].actual.as_str(),
                v(3)[0].expected.as_str()
            ),
            ("driver_version", "535.161.08", "550.54.15 (4 of 5 nodes)")
        );
        assert_eq!(
            (v(1)[0].field.as_str(), v(1)[0].gpu_index),
            ("vbios_version", Some(6))
        );
        assert_eq!(v(1)[0].rule, "fleet majority of NVIDIA H100 80GB HBM3");
        assert_eq!(
            (v(4)[0].field.as_str(), v(4)[0].actual.as_str()),
            ("gpu_count", "7")
        );
        // Selected nodes are judged against the whole fleet.
        let a = run(&nodes, Against::FleetMajority, "pool=inference");
        assert_eq!(
            a.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["gpu-node-01", "gpu-node-03"]
        );
        assert_eq!(a.summary.violating, 2);
    }

    #[test]
    fn a_policy_applies_to_the_nodes_and_gpus_its_rules_select() {
        let mut nodes = fleet(4);
        nodes[0].inventory.driver.driver_version = "535.161.08".into();
        nodes[1].inventory.driver.driver_version = "535.161.08".into();
        nodes[2].inventory.gpus[2].ecc_enabled = Some(false);
        let p = Policy::parse(
            "[[rule]]\nname = \"training\"\nselector = \"pool=training\"\ndriver_version = \">=550, <560\"\necc_enabled = true\n\
             [[rule]]\nname = \"a100\"\ngpu_model = \"*A100*\"\ndriver_version = \"1.0\"\n",
            "p.toml",
        )
        .unwrap();
        let a = run(&nodes, Against::Policy(&p), "");
        assert_eq!(a.policy, "policy p.toml (2 rules)");
        let by: BTreeMap<&str, &NodeAudit> = a.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
        // gpu-node-01 is in the inference pool: no rule selects it, so its old driver is fine.
        assert_eq!(by["gpu-node-01"].status, Status::Compliant);
        assert!(by["gpu-node-01"].rules.is_empty());
        assert_eq!(by["gpu-node-00"].status, Status::Violating);
        assert_eq!(by["gpu-node-00"].rules, ["training"]);
        assert_eq!(
            by["gpu-node-00"].violations,
            [Violation {
                field: "driver_version".into(),
                gpu_index: None,
                expected: ">=550, <560".into(),
                actual: "535.161.08".into(),
                rule: "training".into()
            }]
        );
        assert_eq!(by["gpu-node-02"].violations[0].gpu_index, Some(2));
        assert_eq!(by["gpu-node-02"].violations[0].actual, "false");
        assert_eq!(a.summary.violating, 2);
        assert!(!a.summary.all_compliant());
    }

    #[test]
    fn silent_nodes_are_stale_and_never_compliant() {
        let mut nodes = fleet(3);
        nodes[1].last_seen = UnixMs(NOW.0 - 6 * 60_000);
        nodes[2].inventory = Default::default();
        let a = run(&nodes, Against::FleetMajority, "");
        assert_eq!(
            a.nodes.iter().map(|n| n.status).collect::<Vec<_>>(),
            [Status::Compliant, Status::Stale, Status::NeverReported]
        );
        assert_eq!(a.summary.stale, 1);
        assert_eq!(a.summary.never_reported, 1);
        assert!(!a.summary.all_compliant());
        let a = run(&nodes[..1], Against::FleetMajority, "");
        assert!(a.summary.all_compliant());
    }
}
