//! Fleet-wide causes, named once. When one cause holds on a large share of the nodes of a
//! group — the nodes of one GPU model, or of one value of a grouping label such as `rack` —
//! it is one finding for the group (a power cap applied to every GPU by policy, a cooling
//! failure along a row, a driver rolled out everywhere), with the affected nodes and GPUs as
//! evidence; the per-node findings stay, marked `folded_into` it, so `diagnose NODE` still
//! shows them but on-call is told once.
//!
//! Pure: findings and group memberships in, findings out.

use std::collections::{BTreeMap, BTreeSet};

use gpufleet_model::{Evidence, Finding, FleetScope};

use crate::fleet::NodeState;

/// When a cause counts as fleet-wide.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetScopeConfig {
    /// Share of a group's nodes that must have the cause (0..1).
    pub min_share: f64,
    /// And at least this many nodes.
    pub min_nodes: u32,
    /// Labels that group nodes besides their GPU model (e.g. `rack`, `row`, `pdu`).
    pub group_labels: Vec<String>,
}

/// Half the nodes of a group, and at least 3.
pub const DEFAULT_MIN_SHARE: f64 = 0.5;
pub const DEFAULT_MIN_NODES: u32 = 3;

impl Default for FleetScopeConfig {
    fn default() -> Self {
        FleetScopeConfig {
            min_share: DEFAULT_MIN_SHARE,
            min_nodes: DEFAULT_MIN_NODES,
            group_labels: vec!["rack".to_string()],
        }
    }
}

/// Group name (`gpu_model=…`, `rack=r12`) → the names of its nodes.
pub type Groups = BTreeMap<String, BTreeSet<String>>;

/// The `node` of a fleet-wide finding: its scope.
pub fn scope_name(group: &str) -> String {
    format!("fleet:{group}")
}

/// Group → its nodes: one group per GPU model (`gpu_model=…`) and one per value of each
/// grouping label (`rack=r12`).
pub fn groups(nodes: &[&NodeState], cfg: &FleetScopeConfig) -> Groups {
    let mut out = Groups::new();
    for n in nodes {
        let models: BTreeSet<&str> = n
            .inventory
            .gpus
            .iter()
            .map(|g| g.name.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        for m in models {
            out.entry(format!("gpu_model={m}"))
                .or_default()
                .insert(n.name().to_string());
        }
        for key in &cfg.group_labels {
            if let Some(v) = n.labels.get(key) {
                out.entry(format!("{key}={v}"))
                    .or_default()
                    .insert(n.name().to_string());
            }
        }
    }
    out
}

/// Most names listed in a fleet-wide finding's `nodes` evidence.
const NODES_SHOWN: usize = 10;

/// Adds a fleet-wide finding for every (group, cause) that holds on enough of the group's
/// nodes and marks the node findings it covers. Larger groups are judged first, so a cause
/// across the whole model is one finding, not one per rack; a finding already folded is not
/// counted again.
pub fn fold(findings: &mut Vec<Finding>, groups: &Groups, cfg: &FleetScopeConfig) {
    let mut order: Vec<(&String, &BTreeSet<String>)> = groups.iter().collect();
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(b.0)));
    let mut added = Vec::new();
    for (group, members) in order {
        if (members.len() as u32) < cfg.min_nodes {
            continue;
        }
        // Cause → indices of the open node findings in this group.
        let mut by_cause: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, f) in findings.iter().enumerate() {
            if f.fleet.is_none() && f.folded_into.is_empty() && members.contains(&f.node) {
                by_cause.entry(f.rule_id.as_str()).or_default().push(i);
            }
        }
        let mut fold_now: Vec<(String, Vec<usize>)> = Vec::new();
        for (cause, idx) in by_cause {
            let nodes: BTreeSet<&str> = idx.iter().map(|&i| findings[i].node.as_str()).collect();
            let share = nodes.len() as f64 / members.len() as f64;
            if nodes.len() as u32 >= cfg.min_nodes && share >= cfg.min_share {
                fold_now.push((cause.to_string(), idx));
            }
        }
        for (_, idx) in fold_now {
            let f = fleet_finding(findings, &idx, group, members.len() as u32, cfg);
            for &i in &idx {
                findings[i].folded_into = f.node.clone();
            }
            added.push(f);
        }
    }
    findings.extend(added);
}

/// The one finding for `idx` (the node findings of one cause in `group`).
fn fleet_finding(
    findings: &[Finding],
    idx: &[usize],
    group: &str,
    group_nodes: u32,
    cfg: &FleetScopeConfig,
) -> Finding {
    let members: Vec<&Finding> = idx.iter().map(|&i| &findings[i]).collect();
    let first = members[0];
    let nodes: Vec<String> = members
        .iter()
        .map(|f| f.node.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let gpus = members.iter().filter(|f| f.gpu_index.is_some()).count() as u32;
    let share = nodes.len() as f64 / group_nodes as f64;
    let mut shown = nodes
        .iter()
        .take(NODES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > NODES_SHOWN {
        shown += &format!(" and {} more", nodes.len() - NODES_SHOWN);
    }
    let what = if gpus > 0 {
        format!("{} of {group_nodes} nodes ({gpus} GPUs)", nodes.len())
    } else {
        format!("{} of {group_nodes} nodes", nodes.len())
    };
    let mut evidence = vec![
        Evidence::new("nodes", shown, format!("{what} of {group}")),
        Evidence::new(
            "share",
            format!("{:.0} %", share * 100.0),
            format!(
                "fleet-wide from {:.0} % and {} nodes",
                cfg.min_share * 100.0,
                cfg.min_nodes
            ),
        ),
    ];
    // What one affected node shows, so the numbers are at hand.
    evidence.extend(first.evidence.iter().map(|e| {
        let mut e = e.clone();
        e.field = format!("{}.{}", first.node, e.field);
        e
    }));
    Finding {
        rule_id: first.rule_id.clone(),
        title: format!("{} (fleet-wide)", first.title),
        severity: members.iter().map(|f| f.severity).max().unwrap_or_default(),
        node: scope_name(group),
        gpu_index: None,
        gpu_uuid: String::new(),
        summary: format!("{what} of {group}: {}", first.summary),
        evidence,
        performance_ratio: members
            .iter()
            .filter_map(|f| f.performance_ratio)
            .min_by(f64::total_cmp),
        action: format!(
            "One cause on many nodes at once: look first for what they share ({group}: a power \
             or clock policy, cooling along the row, a rollout) rather than treating nodes one \
             by one. Per node: {}",
            first.action
        ),
        since: members.iter().map(|f| f.since).min().unwrap_or_default(),
        fleet: Some(FleetScope {
            group: group.to_string(),
            group_nodes,
            nodes,
            gpus,
        }),
        folded_into: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{Severity, UnixMs};

    fn f(node: &str, gpu: Option<u32>, cause: &str) -> Finding {
        Finding {
            rule_id: cause.into(),
            title: "Software power cap".into(),
            severity: Severity::Warning,
            node: node.into(),
            gpu_index: gpu,
            summary: "clocks at 70 % of max".into(),
            performance_ratio: Some(0.7),
            action: "restore the limit".into(),
            since: UnixMs(100 + gpu.unwrap_or(0) as i64),
            ..Default::default()
        }
    }

    fn groups_of(spec: &[(&str, &[&str])]) -> Groups {
        spec.iter()
            .map(|(g, ns)| (g.to_string(), ns.iter().map(|n| n.to_string()).collect()))
            .collect()
    }

    const CAP: &str = "gpu.power.sw_cap";
    const HOT: &str = "gpu.thermal.sw_slowdown";

    /// `(fleet-wide findings as (scope, cause, nodes, gpus), findings left unfolded)`.
    type Outcome = (Vec<(String, String, usize, u32)>, usize);

    fn run(findings: Vec<Finding>, groups: &Groups) -> Outcome {
        let mut fs = findings;
        fold(&mut fs, groups, &FleetScopeConfig::default());
        let fleet = fs
            .iter()
            .filter_map(|f| {
                let s = f.fleet.as_ref()?;
                Some((f.node.clone(), f.rule_id.clone(), s.nodes.len(), s.gpus))
            })
            .collect();
        let open = fs
            .iter()
            .filter(|f| f.fleet.is_none() && f.folded_into.is_empty())
            .count();
        (fleet, open)
    }

    #[test]
    fn a_cause_on_most_of_a_group_is_named_once() {
        let h100 = "gpu_model=H100";
        let four = groups_of(&[(h100, &["a", "b", "c", "d"])]);
        let with_racks = groups_of(&[
            (h100, &["a", "b", "c", "d", "e", "f", "g", "h"]),
            ("rack=r1", &["a", "b", "c", "d"]),
            ("rack=r2", &["e", "f", "g", "h"]),
        ]);
        let every_gpu = |nodes: &[&str], cause: &str| -> Vec<Finding> {
            nodes
                .iter()
                .flat_map(|n| (0..8).map(move |g| f(n, Some(g), cause)))
                .collect()
        };
        let cases: Vec<(&str, Vec<Finding>, &Groups, Outcome)> = vec![
            ("nothing", vec![], &four, (vec![], 0)),
            (
                "a power cap on every GPU of the fleet",
                every_gpu(&["a", "b", "c", "d"], CAP),
                &four,
                (vec![(format!("fleet:{h100}"), CAP.into(), 4, 32)], 0),
            ),
            (
                "two nodes of four: a share but too few nodes",
                every_gpu(&["a", "b"], CAP),
                &four,
                (vec![], 16),
            ),
            (
                "three of four nodes, one GPU each",
                vec![
                    f("a", Some(1), CAP),
                    f("b", Some(2), CAP),
                    f("c", Some(0), CAP),
                ],
                &four,
                (vec![(format!("fleet:{h100}"), CAP.into(), 3, 3)], 0),
            ),
            (
                "a hot rack: 3 of its 4 nodes, but 3 of the model's 8",
                every_gpu(&["e", "f", "g"], HOT),
                &with_racks,
                (vec![("fleet:rack=r2".into(), HOT.into(), 3, 24)], 0),
            ),
            (
                "the whole model capped: one finding, not one per rack as well",
                every_gpu(&["a", "b", "c", "d", "e", "f", "g", "h"], CAP),
                &with_racks,
                (vec![(format!("fleet:{h100}"), CAP.into(), 8, 64)], 0),
            ),
            (
                "different causes do not add up",
                vec![
                    f("a", Some(0), CAP),
                    f("b", Some(0), HOT),
                    f("c", Some(0), "gpu.pcie.downtrained"),
                ],
                &four,
                (vec![], 3),
            ),
            (
                "a node-wide cause counts nodes, 0 GPUs",
                ["a", "b", "c"]
                    .iter()
                    .map(|n| f(n, None, "node.agent_offline"))
                    .collect(),
                &four,
                (
                    vec![(format!("fleet:{h100}"), "node.agent_offline".into(), 3, 0)],
                    0,
                ),
            ),
        ];
        for (name, findings, groups, want) in cases {
            assert_eq!(run(findings, groups), want, "{name}");
        }
    }

    #[test]
    fn the_fleet_finding_carries_scope_evidence_and_the_worst_of_its_members() {
        let groups = groups_of(&[("rack=r9", &["a", "b", "c"])]);
        let mut fs = vec![
            f("a", Some(0), CAP),
            f("b", Some(1), CAP),
            f("c", Some(2), CAP),
        ];
        fs[1].severity = Severity::Critical;
        fs[2].performance_ratio = Some(0.4);
        fold(&mut fs, &groups, &FleetScopeConfig::default());
        let fleet = fs.iter().find(|f| f.fleet.is_some()).unwrap();
        assert_eq!(fleet.node, "fleet:rack=r9");
        assert_eq!(fleet.severity, Severity::Critical);
        assert_eq!(fleet.performance_ratio, Some(0.4));
        assert_eq!(fleet.since, UnixMs(100));
        assert_eq!(fleet.evidence[0].value, "a, b, c");
        assert_eq!(
            fleet.evidence[0].threshold,
            "3 of 3 nodes (3 GPUs) of rack=r9"
        );
        assert_eq!(fleet.evidence[1].value, "100 %");
        assert!(
            fleet
                .summary
                .starts_with("3 of 3 nodes (3 GPUs) of rack=r9: ")
        );
        assert!(fleet.title.ends_with("(fleet-wide)"));
        assert!(
            fs.iter()
                .filter(|f| f.fleet.is_none())
                .all(|f| f.folded_into == "fleet:rack=r9")
        );
    }

    #[test]
    fn many_nodes_are_listed_in_part() {
        let names: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let groups = groups_of(&[("gpu_model=H100", &refs)]);
        let mut fs: Vec<Finding> = refs.iter().map(|n| f(n, Some(0), CAP)).collect();
        fold(&mut fs, &groups, &FleetScopeConfig::default());
        let fleet = fs.iter().find(|f| f.fleet.is_some()).unwrap();
        assert!(
            fleet.evidence[0].value.ends_with("n09 and 15 more"),
            "{}",
            fleet.evidence[0].value
        );
        assert_eq!(fleet.fleet.as_ref().unwrap().nodes.len(), 25);
    }
}
