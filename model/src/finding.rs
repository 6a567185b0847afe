//! A named cause of underperformance on one node (and GPU), with its evidence.

use serde::{Deserialize, Serialize};

use crate::{Severity, UnixMs};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `gpu.thermal.hw_slowdown`.
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub node: String,
    pub gpu_index: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_uuid: String,
    /// One sentence with the numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Estimated fraction of performance left (0..1), where it can be estimated.
    pub performance_ratio: Option<f64>,
    /// What on-call should do.
    pub action: String,
    /// When the condition was first seen.
    pub since: UnixMs,
    /// Set on a fleet-wide finding: the one cause many nodes of a group share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetScope>,
    /// On a node finding folded under a fleet-wide one: that finding's `node` (its scope, e.g.
    /// `fleet:rack=r12`). Folded findings stay visible per node but are not told separately.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folded_into: String,
}

/// What a fleet-wide finding spans.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FleetScope {
    /// What the nodes share: `gpu_model=NVIDIA H100 80GB HBM3`, or a label such as `rack=r12`.
    pub group: String,
    /// Nodes in the group.
    pub group_nodes: u32,
    /// The affected nodes, by name.
    pub nodes: Vec<String>,
    /// Affected GPUs (0 for a node-wide cause).
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Evidence {
    pub field: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub threshold: String,
    /// How long the condition held (0 = single observation).
    #[serde(default)]
    pub duration_ms: u64,
}

impl Evidence {
    pub fn new(field: &str, value: impl ToString, threshold: impl ToString) -> Self {
        Evidence {
            field: field.to_string(),
            value: value.to_string(),
            threshold: threshold.to_string(),
            duration_ms: 0,
        }
    }

    pub fn held_for(mut self, ms: u64) -> Self {
        self.duration_ms = ms;
        self
    }
}

impl Finding {
    /// Ranking key: more severe first, then less performance left, then older.
    pub fn impact_key(&self) -> (std::cmp::Reverse<Severity>, u64, UnixMs) {
        let ratio = self.performance_ratio.unwrap_or(1.0).clamp(0.0, 1.0);
        (
            std::cmp::Reverse(self.severity),
            (ratio * 1_000_000.0) as u64,
            self.since,
        )
    }
}

/// Lifecycle of a finding (see `query.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingState {
    #[default]
    Pending,
    Firing,
    Resolved,
}

/// One finding's life as stored: what it said when it last fired, and when it fired/resolved.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FindingRecord {
    pub finding: Finding,
    pub state: FindingState,
    pub fired_at: UnixMs,
    pub resolved_at: Option<UnixMs>,
}

impl Finding {
    /// Identity of a finding across evaluations: node, cause and GPU.
    pub fn key(&self) -> (String, String, Option<u32>) {
        (self.node.clone(), self.rule_id.clone(), self.gpu_index)
    }
}
