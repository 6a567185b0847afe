//! Diagnosis: name the cause of underperformance, with evidence, for every node.
//!
//! Each cause is a [`Rule`]: a pure function over one node's state, the fleet context and the
//! current time (passed in, never read), registered once in [`rules::all`]. The engine runs
//! every rule over every node and ranks the findings, most impactful first.
//!
//! Architecture invariant: nothing in this module does I/O or reads a clock.

pub mod context;
pub mod engine;
pub mod rules;

use gpufleet_model::{Finding, Sample, Severity, UnixMs};

pub use context::FleetContext;
pub use engine::{Engine, EngineConfig, Evaluation};

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

/// One rule: looks at a node and names zero or more causes.
pub trait Rule: Send + Sync {
    /// Stable id (or id prefix, for rules that emit several), e.g. `gpu.thermal`.
    fn id(&self) -> &'static str;
    fn title(&self) -> &'static str;
    /// Every cause this rule can emit; each finding's `rule_id` is one of these ids.
    fn catalog(&self) -> &'static [Cause] {
        &[]
    }
    fn check(&self, node: &NodeState, fleet: &FleetContext, now: UnixMs) -> Vec<Finding>;
}

/// Runs every registered rule over `nodes`; findings ranked most impactful first.
pub fn diagnose(nodes: &[&NodeState], now: UnixMs) -> Vec<Finding> {
    let ctx = FleetContext::from_nodes(nodes);
    let rules = rules::all();
    let mut out: Vec<Finding> = nodes
        .iter()
        .flat_map(|n| rules.iter().flat_map(|r| r.check(n, &ctx, now)))
        .collect();
    rank(&mut out);
    out
}

/// Orders findings: most severe first, then least performance left, then oldest.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        a.impact_key()
            .cmp(&b.impact_key())
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
