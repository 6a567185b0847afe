//! Diagnosis: name the cause of underperformance, with evidence, for every node.
//!
//! Each cause is a [`Rule`]: a pure function over one node's state, the fleet context and the
//! current time (passed in, never read), registered once in [`rules::all`]. The engine runs
//! every rule over every node and ranks the findings, most impactful first.
//!
//! Architecture invariant: nothing in this module does I/O or reads a clock.

pub mod context;
pub mod engine;
pub mod fleet_scope;
pub mod rules;

use gpufleet_model::{Evidence, Finding, Sample, Severity, UnixMs};

pub use context::FleetContext;
pub use engine::{Engine, EngineConfig, Evaluation};
pub use fleet_scope::FleetScopeConfig;

use crate::fleet::NodeState;

/// One cause a rule can name: the catalog entry behind a finding's `rule_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    /// Stable id, e.g. `gpu.thermal.hw_slowdown` (`gpu.xid.*` classes are listed one by one).
    pub id: &'static str,
    pub title: &'static str,
    /// Severity when it fires (some causes escalate; this is the usual one).
    pub severity: Severity,
    /// What the rule looks at, in one sentence (for docs/causes.md).
    pub detects: &'static str,
    /// What on-call should do.
    pub action: &'static str,
}

/// What a rule is, declared once per rule as a `static INFO` so its identity is data, not
/// three hand-written methods.
#[derive(Debug)]
pub struct RuleInfo {
    /// Stable id (or id prefix, for rules that emit several), e.g. `gpu.thermal`.
    pub id: &'static str,
    pub title: &'static str,
    /// Every cause this rule can emit; each finding's `rule_id` is one of these ids.
    pub catalog: &'static [Cause],
}

/// One rule: looks at a node and names zero or more causes.
pub trait Rule: Send + Sync {
    /// The rule's identity and catalog (a method, not an associated const, so rules stay
    /// usable as `Box<dyn Rule>`).
    fn info(&self) -> &'static RuleInfo;
    fn check(&self, node: &NodeState, fleet: &FleetContext, now: UnixMs) -> Vec<Finding>;

    fn id(&self) -> &'static str {
        self.info().id
    }
    fn title(&self) -> &'static str {
        self.info().title
    }
    fn catalog(&self) -> &'static [Cause] {
        self.info().catalog
    }
}

/// Runs every registered rule over `nodes`; findings ranked most impactful first.
pub fn diagnose(nodes: &[&NodeState], now: UnixMs) -> Vec<Finding> {
    diagnose_with(nodes, now, None, &FleetScopeConfig::default())
}

/// [`diagnose`] with a compliance policy in force (its `compliance.*` findings) and the given
/// fleet-wide grouping (see [`fleet_scope`]).
pub fn diagnose_with(
    nodes: &[&NodeState],
    now: UnixMs,
    policy: Option<std::sync::Arc<crate::compliance::policy::Policy>>,
    scope: &FleetScopeConfig,
) -> Vec<Finding> {
    let mut ctx = FleetContext::from_nodes(nodes);
    ctx.policy = policy;
    let rules = rules::all();
    let mut out = Vec::new();
    for n in nodes {
        let mut mine: Vec<Finding> = rules.iter().flat_map(|r| r.check(n, &ctx, now)).collect();
        correlate_xids(&mut mine);
        out.append(&mut mine);
    }
    fleet_scope::fold(&mut out, &fleet_scope::groups(nodes, scope), scope);
    rank(&mut out);
    out
}

/// Xid classes (decided by `rules/xid.rs`) that report a condition another rule names
/// directly, by the cause-id prefixes of that condition. Such an Xid is the driver's report of
/// the same fault, not a second cause.
fn xid_family(xid_rule_id: &str) -> &'static [&'static str] {
    match xid_rule_id {
        "gpu.xid.memory" => &["gpu.ecc", "gpu.row_remap"],
        "gpu.xid.nvlink" => &["gpu.nvlink"],
        "gpu.xid.bus" => &["gpu.lost", "gpu.missing"],
        _ => &[],
    }
}

/// Folds an Xid finding into the finding of the condition it reports, on the same node and
/// GPU (e.g. Xid 48 into `gpu.ecc.uncorrectable`): the root cause ranks first, carries the
/// Xid as evidence, and takes the more severe of the two severities.
pub fn correlate_xids(findings: &mut Vec<Finding>) {
    let mut absorbed = vec![false; findings.len()];
    for i in 0..findings.len() {
        let family = xid_family(&findings[i].rule_id);
        if family.is_empty() {
            continue;
        }
        let code = findings[i]
            .evidence
            .iter()
            .find(|e| e.field == "xid")
            .map(|e| e.value.clone())
            .unwrap_or_default();
        let target = (0..findings.len()).find(|&j| {
            j != i
                && findings[j].node == findings[i].node
                && findings[j].gpu_index == findings[i].gpu_index
                && family.iter().any(|p| findings[j].rule_id.starts_with(p))
        });
        if let Some(j) = target {
            let x = findings[i].clone();
            let t = &mut findings[j];
            t.severity = t.severity.max(x.severity);
            t.since = t.since.min(x.since);
            t.evidence.push(Evidence::new(
                "xid",
                format!("{code} ({})", x.title),
                "reported by the driver for this fault",
            ));
            absorbed[i] = true;
        }
    }
    let mut keep = absorbed.iter().map(|a| !a);
    findings.retain(|_| keep.next().unwrap_or(true));
}

/// Orders findings: fleet-wide ones first, then most severe, then least performance left,
/// then oldest.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (a.fleet.is_none(), a.impact_key())
            .cmp(&(b.fleet.is_none(), b.impact_key()))
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| a.gpu_index.cmp(&b.gpu_index))
    });
}

/// How long `cond` has held over the most recent samples: `(since, duration_ms, samples)`, or
/// `None` if it does not hold in the latest sample.
pub fn held<'a>(
    history: impl DoubleEndedIterator<Item = &'a Sample>,
    mut cond: impl FnMut(&Sample) -> bool,
) -> Option<(UnixMs, u64, usize)> {
    let mut first: Option<UnixMs> = None;
    let mut last: Option<UnixMs> = None;
    let mut count = 0;
    for s in history.rev() {
        if !cond(s) {
            break;
        }
        last.get_or_insert(s.timestamp);
        first = Some(s.timestamp);
        count += 1;
    }
    Some((first?, last?.since(first?), count))
}

/// Consecutive samples a condition must hold before a rule reports it, so one noisy sample
/// never fires. (Issue-level lifecycle with pending/firing/resolved builds on this.)
pub const MIN_SAMPLES: usize = 3;

/// Starts a finding for `node` with the rule's identity filled in.
pub fn finding(rule: &dyn Rule, node: &NodeState, severity: Severity, since: UnixMs) -> Finding {
    Finding {
        rule_id: rule.id().to_string(),
        title: rule.title().to_string(),
        severity,
        node: node.name().to_string(),
        since,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64) -> Sample {
        Sample {
            timestamp: UnixMs(t),
            ..Default::default()
        }
    }

    #[test]
    fn an_xid_folds_into_the_fault_it_reports() {
        let f = |rule: &str, gpu: u32, sev: Severity, xid: Option<u32>| Finding {
            rule_id: rule.into(),
            node: "n".into(),
            gpu_index: Some(gpu),
            severity: sev,
            title: "t".into(),
            evidence: xid
                .map(|x| vec![Evidence::new("xid", x, "")])
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut v = vec![
            f("gpu.xid.memory", 3, Severity::Critical, Some(48)),
            f("gpu.ecc.uncorrectable", 3, Severity::Warning, None),
            f("gpu.xid.memory", 4, Severity::Critical, Some(48)), // no ECC finding on GPU 4
            f("gpu.xid.application", 3, Severity::Warning, Some(31)), // not an ECC report
        ];
        correlate_xids(&mut v);
        let ids: Vec<(&str, Option<u32>)> = v
            .iter()
            .map(|f| (f.rule_id.as_str(), f.gpu_index))
            .collect();
        assert_eq!(
            ids,
            [
                ("gpu.ecc.uncorrectable", Some(3)),
                ("gpu.xid.memory", Some(4)),
                ("gpu.xid.application", Some(3))
            ]
        );
        assert_eq!(v[0].severity, Severity::Critical);
        assert!(
            v[0].evidence
                .iter()
                .any(|e| e.field == "xid" && e.value.starts_with("48"))
        );
    }

    #[test]
    fn held_counts_the_recent_run() {
        let h = [s(1), s(2), s(3), s(4)];
        assert_eq!(
            held(h.iter(), |x| x.timestamp.0 >= 2),
            Some((UnixMs(2), 2, 3))
        );
        assert_eq!(held(h.iter(), |x| x.timestamp.0 < 4), None);
        assert_eq!(held(h.iter(), |_| true), Some((UnixMs(1), 3, 4)));
        assert_eq!(held([].iter(), |_| true), None);
    }
}
