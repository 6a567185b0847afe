//! `node.agent_offline`: the collector stopped hearing from a node's agent.

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct AgentOffline;

const OFFLINE: Cause = Cause {
    id: "node.agent_offline",
    title: "Agent offline",
    severity: Severity::Warning,
    detects: "The node's agent stream is closed, or it sent nothing for more than 30 s.",
    action: "Check that the node is up and `systemctl status gpufleet-agent` on it; check \
             network reachability of the collector from the node.",
};

static INFO: RuleInfo = RuleInfo {
    id: OFFLINE.id,
    title: OFFLINE.title,
    catalog: &[OFFLINE],
};

/// Silence longer than this is reported even if the stream looks open.
const SILENT_MS: u64 = 30_000;

impl Rule for AgentOffline {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        let silent = now.since(node.last_seen);
        if node.connected && silent <= SILENT_MS {
            return vec![];
        }
        let mut f = raise(self, &OFFLINE, node, node.last_seen);
        f.evidence
            .push(Evidence::new("last_seen", node.last_seen, "").held_for(silent));
        f.evidence
            .push(Evidence::new("connected", node.connected, "true"));
        f.summary = format!(
            "no telemetry from {} for {}s: its GPUs cannot be diagnosed",
            node.name(),
            silent / 1000
        );
        vec![f]
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut offline = super::testutil::trigger("offline", |_, _| {});
    offline.1.connected = false;
    vec![offline]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        let n = node(1, 1, |_, _| {});
        assert!(
            AgentOffline
                .check(&n, &FleetContext::default(), NOW)
                .is_empty()
        );
        let mut n = node(1, 1, |_, _| {});
        n.connected = false;
        assert_eq!(
            AgentOffline.check(&n, &FleetContext::default(), NOW).len(),
            1
        );
        let n = node(1, 1, |_, _| {});
        let later = UnixMs(NOW.0 + 60_000);
        assert_eq!(
            AgentOffline
                .check(&n, &FleetContext::default(), later)
                .len(),
            1
        );
    }
}
