//! What the query API answers, as domain types (serde = the CLI's `-o json` documents), built
//! from fleet state, and their conversion to and from the `Query` service's messages.

use std::collections::BTreeSet;

use gpufleet_model::{
    Event, Finding, FindingRecord, GpuStatus, Inventory, Sample, Severity, UnixMs,
};
use gpufleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::fleet::NodeState;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeSummary {
    pub name: String,
    pub connected: bool,
    pub last_seen: UnixMs,
    pub agent_version: String,
    pub gpu_source: String,
    pub gpu_count: u32,
    pub gpu_models: Vec<String>,
    pub driver_version: String,
    pub cuda_driver_version: String,
    pub kernel_version: String,
    pub vbios_versions: Vec<String>,
    pub finding_count: u32,
    pub worst_severity: Option<Severity>,
    pub gpus_unhealthy: u32,
    pub labels: gpufleet_model::Labels,
    /// Samples and events the node's agent dropped (buffer or spool full while the collector
    /// was unreachable), over the node's life.
    #[serde(default)]
    pub dropped_samples: u64,
    #[serde(default)]
    pub dropped_events: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeDetail {
    pub summary: NodeSummary,
    pub inventory: Inventory,
    pub latest: Option<Sample>,
    pub findings: Vec<Finding>,
    pub recent_events: Vec<Event>,
    /// The node's last few version/mode changes, oldest first.
    #[serde(default)]
    pub recent_changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diagnosis {
    pub evaluated_at: UnixMs,
    pub nodes_total: u32,
    pub nodes_healthy: u32,
    /// Firing findings, most impactful first.
    pub findings: Vec<Finding>,
    /// Conditions seen but not yet held long enough to fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Finding>,
    /// With `--since`: every finding that fired since then, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<FindingRecord>>,
}

pub fn summarize(n: &NodeState, findings: &[Finding]) -> NodeSummary {
    let inv = &n.inventory;
    let mine: Vec<&Finding> = findings.iter().filter(|f| f.node == n.name()).collect();
    NodeSummary {
        name: n.name().to_string(),
        connected: n.connected,
        last_seen: n.last_seen,
        agent_version: n.agent_version.clone(),
        gpu_source: n.gpu_source.clone(),
        gpu_count: inv.gpus.len() as u32,
        gpu_models: inv
            .gpus
            .iter()
            .map(|g| g.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        driver_version: inv.driver.driver_version.clone(),
        cuda_driver_version: inv.driver.cuda_driver_version.clone(),
        kernel_version: inv.host.kernel_version.clone(),
        vbios_versions: inv
            .gpus
            .iter()
            .map(|g| g.vbios_version.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        finding_count: mine.len() as u32,
        worst_severity: mine.iter().map(|f| f.severity).max(),
        gpus_unhealthy: n
            .latest()
            .map(|s| s.gpus.iter().filter(|g| g.status != GpuStatus::Ok).count() as u32)
            .unwrap_or(0),
        labels: n.labels.clone(),
        dropped_samples: n.dropped_samples,
        dropped_events: n.dropped_events,
    }
}

impl From<NodeSummary> for pb::NodeSummary {
    fn from(v: NodeSummary) -> Self {
        pb::NodeSummary {
            name: v.name,
            connected: v.connected,
            last_seen_unix_ms: v.last_seen.0,
            agent_version: v.agent_version,
            gpu_source: v.gpu_source,
            gpu_count: v.gpu_count,
            gpu_models: v.gpu_models,
            driver_version: v.driver_version,
            cuda_driver_version: v.cuda_driver_version,
            kernel_version: v.kernel_version,
            vbios_versions: v.vbios_versions,
            finding_count: v.finding_count,
            worst_severity: v
                .worst_severity
                .map(|s| pb::Severity::from(s) as i32)
                .unwrap_or(0),
            gpus_unhealthy: v.gpus_unhealthy,
            labels: v.labels.into_iter().collect(),
            dropped_samples: v.dropped_samples,
            dropped_events: v.dropped_events,
        }
    }
}

impl From<pb::NodeSummary> for NodeSummary {
    fn from(v: pb::NodeSummary) -> Self {
        let worst = pb::Severity::try_from(v.worst_severity).unwrap_or_default();
        NodeSummary {
            name: v.name,
            connected: v.connected,
            last_seen: UnixMs(v.last_seen_unix_ms),
            agent_version: v.agent_version,
            gpu_source: v.gpu_source,
            gpu_count: v.gpu_count,
            gpu_models: v.gpu_models,
            driver_version: v.driver_version,
            cuda_driver_version: v.cuda_driver_version,
            kernel_version: v.kernel_version,
            vbios_versions: v.vbios_versions,
            finding_count: v.finding_count,
            worst_severity: (worst != pb::Severity::Unspecified).then(|| worst.into()),
            gpus_unhealthy: v.gpus_unhealthy,
            labels: v.labels.into_iter().collect(),
            dropped_samples: v.dropped_samples,
            dropped_events: v.dropped_events,
        }
    }
}

impl From<NodeDetail> for pb::GetNodeResponse {
    fn from(v: NodeDetail) -> Self {
        pb::GetNodeResponse {
            summary: Some(v.summary.into()),
            inventory: Some(v.inventory.into()),
            latest: v.latest.map(Into::into),
            findings: v.findings.into_iter().map(Into::into).collect(),
            recent_events: v.recent_events.into_iter().map(Into::into).collect(),
            recent_changes: v.recent_changes.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::GetNodeResponse> for NodeDetail {
    type Error = gpufleet_model::convert::ConvertError;
    fn try_from(v: pb::GetNodeResponse) -> Result<Self, Self::Error> {
        Ok(NodeDetail {
            summary: v.summary.map(Into::into).unwrap_or_default(),
            inventory: v
                .inventory
                .map(Inventory::try_from)
                .transpose()?
                .unwrap_or_default(),
            latest: v.latest.map(Sample::try_from).transpose()?,
            findings: v.findings.into_iter().map(Into::into).collect(),
            recent_events: v.recent_events.into_iter().map(Into::into).collect(),
            recent_changes: v.recent_changes.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<Diagnosis> for pb::DiagnoseResponse {
    fn from(v: Diagnosis) -> Self {
        pb::DiagnoseResponse {
            findings: v.findings.into_iter().map(Into::into).collect(),
            nodes_total: v.nodes_total,
            nodes_healthy: v.nodes_healthy,
            evaluated_at_unix_ms: v.evaluated_at.0,
            history: v
                .history
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            pending: v.pending.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::DiagnoseResponse> for Diagnosis {
    fn from(v: pb::DiagnoseResponse) -> Self {
        Diagnosis {
            evaluated_at: UnixMs(v.evaluated_at_unix_ms),
            nodes_total: v.nodes_total,
            nodes_healthy: v.nodes_healthy,
            findings: v.findings.into_iter().map(Into::into).collect(),
            pending: v.pending.into_iter().map(Into::into).collect(),
            history: None,
        }
    }
}

// --- Compliance: audit and version matrix ---

use crate::compliance::audit::{Audit, AuditSummary, NodeAudit, Status, Violation};
use crate::compliance::versions::{VersionMatrix, VersionRow};

impl From<Status> for pb::ComplianceStatus {
    fn from(v: Status) -> Self {
        match v {
            Status::Compliant => pb::ComplianceStatus::Compliant,
            Status::Violating => pb::ComplianceStatus::Violating,
            Status::Stale => pb::ComplianceStatus::Stale,
            Status::NeverReported => pb::ComplianceStatus::NeverReported,
        }
    }
}

/// An unknown status (a newer collector) reads as violating: never silently compliant.
fn status_from_wire(v: i32) -> Status {
    match pb::ComplianceStatus::try_from(v) {
        Ok(pb::ComplianceStatus::Compliant) => Status::Compliant,
        Ok(pb::ComplianceStatus::Stale) => Status::Stale,
        Ok(pb::ComplianceStatus::NeverReported) => Status::NeverReported,
        _ => Status::Violating,
    }
}

impl From<Audit> for pb::AuditResponse {
    fn from(v: Audit) -> Self {
        pb::AuditResponse {
            policy: v.policy,
            evaluated_at_unix_ms: v.evaluated_at.0,
            summary: Some(pb::AuditSummary {
                nodes: v.summary.nodes,
                compliant: v.summary.compliant,
                violating: v.summary.violating,
                stale: v.summary.stale,
                never_reported: v.summary.never_reported,
            }),
            nodes: v
                .nodes
                .into_iter()
                .map(|n| pb::NodeAudit {
                    node: n.node,
                    status: pb::ComplianceStatus::from(n.status) as i32,
                    labels: n.labels.into_iter().collect(),
                    gpu_models: n.gpu_models,
                    last_seen_unix_ms: n.last_seen.0,
                    rules: n.rules,
                    violations: n
                        .violations
                        .into_iter()
                        .map(|x| pb::Violation {
                            field: x.field,
                            gpu_index: x.gpu_index,
                            expected: x.expected,
                            actual: x.actual,
                            rule: x.rule,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<pb::AuditResponse> for Audit {
    fn from(v: pb::AuditResponse) -> Self {
        let s = v.summary.unwrap_or_default();
        Audit {
            policy: v.policy,
            evaluated_at: UnixMs(v.evaluated_at_unix_ms),
            summary: AuditSummary {
                nodes: s.nodes,
                compliant: s.compliant,
                violating: s.violating,
                stale: s.stale,
                never_reported: s.never_reported,
            },
            nodes: v
                .nodes
                .into_iter()
                .map(|n| NodeAudit {
                    node: n.node,
                    status: status_from_wire(n.status),
                    labels: n.labels.into_iter().collect(),
                    gpu_models: n.gpu_models,
                    last_seen: UnixMs(n.last_seen_unix_ms),
                    rules: n.rules,
                    violations: n
                        .violations
                        .into_iter()
                        .map(|x| Violation {
                            field: x.field,
                            gpu_index: x.gpu_index,
                            expected: x.expected,
                            actual: x.actual,
                            rule: x.rule,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<VersionMatrix> for pb::VersionsResponse {
    fn from(v: VersionMatrix) -> Self {
        pb::VersionsResponse {
            field: v.field,
            nodes: v.nodes,
            rows: v
                .rows
                .into_iter()
                .map(|r| pb::VersionRow {
                    gpu_model: r.gpu_model,
                    value: r.value,
                    nodes: r.nodes,
                    gpus: r.gpus,
                })
                .collect(),
        }
    }
}

impl From<pb::VersionsResponse> for VersionMatrix {
    fn from(v: pb::VersionsResponse) -> Self {
        VersionMatrix {
            field: v.field,
            nodes: v.nodes,
            rows: v
                .rows
                .into_iter()
                .map(|r| VersionRow {
                    gpu_model: r.gpu_model,
                    value: r.value,
                    nodes: r.nodes,
                    gpus: r.gpus,
                })
                .collect(),
        }
    }
}

// --- Alerting: firing alerts, deliveries, silences ---

use crate::alerting::outbox::{Delivery, DeliveryStatus};
use crate::alerting::silence::Silence;

/// One firing finding as an alert, with the silences that hold it back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FiringAlert {
    pub finding: Finding,
    pub dedupe_key: String,
    pub silenced_by: Vec<Silence>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkInfo {
    pub name: String,
    pub kind: String,
}

/// `gpufleet alerts`: what fires, what is silenced, where alerts go.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertList {
    pub alerts: Vec<FiringAlert>,
    pub sinks: Vec<SinkInfo>,
}

impl From<Silence> for pb::Silence {
    fn from(v: Silence) -> Self {
        pb::Silence {
            id: v.id,
            node: v.node,
            gpu_index: v.gpu,
            cause_prefix: v.cause_prefix,
            comment: v.comment,
            created_unix_ms: v.created_at.0,
            expires_unix_ms: v.expires_at.0,
        }
    }
}

impl From<pb::Silence> for Silence {
    fn from(v: pb::Silence) -> Self {
        Silence {
            id: v.id,
            node: v.node,
            gpu: v.gpu_index,
            cause_prefix: v.cause_prefix,
            comment: v.comment,
            created_at: UnixMs(v.created_unix_ms),
            expires_at: UnixMs(v.expires_unix_ms),
        }
    }
}

impl From<AlertList> for pb::ListAlertsResponse {
    fn from(v: AlertList) -> Self {
        pb::ListAlertsResponse {
            alerts: v
                .alerts
                .into_iter()
                .map(|a| pb::FiringAlert {
                    finding: Some(a.finding.into()),
                    dedupe_key: a.dedupe_key,
                    silenced_by: a.silenced_by.into_iter().map(Into::into).collect(),
                })
                .collect(),
            sinks: v
                .sinks
                .into_iter()
                .map(|s| pb::AlertSink {
                    name: s.name,
                    kind: s.kind,
                })
                .collect(),
        }
    }
}

impl From<pb::ListAlertsResponse> for AlertList {
    fn from(v: pb::ListAlertsResponse) -> Self {
        AlertList {
            alerts: v
                .alerts
                .into_iter()
                .map(|a| FiringAlert {
                    finding: a.finding.map(Into::into).unwrap_or_default(),
                    dedupe_key: a.dedupe_key,
                    silenced_by: a.silenced_by.into_iter().map(Into::into).collect(),
                })
                .collect(),
            sinks: v
                .sinks
                .into_iter()
                .map(|s| SinkInfo {
                    name: s.name,
                    kind: s.kind,
                })
                .collect(),
        }
    }
}

impl From<DeliveryStatus> for pb::DeliveryStatus {
    fn from(v: DeliveryStatus) -> Self {
        match v {
            DeliveryStatus::Sending => pb::DeliveryStatus::Sending,
            DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
            DeliveryStatus::Silenced => pb::DeliveryStatus::Silenced,
        }
    }
}

impl From<Delivery> for pb::AlertDelivery {
    fn from(v: Delivery) -> Self {
        pb::AlertDelivery {
            id: v.id,
            sink: v.sink,
            node: v.notification.node.clone(),
            status: pb::DeliveryStatus::from(v.status).into(),
            attempts: v.attempts,
            created_unix_ms: v.created_at.0,
            finished_unix_ms: v.finished_at.map(|t| t.0),
            next_attempt_unix_ms: v.next_attempt_at.0,
            detail: v.detail,
            notification_json: serde_json::to_string(&v.notification)
                .expect("notifications always serialize"),
            give_up_unix_ms: v.give_up_at.0,
        }
    }
}

impl TryFrom<pb::AlertDelivery> for Delivery {
    type Error = serde_json::Error;

    fn try_from(v: pb::AlertDelivery) -> Result<Self, Self::Error> {
        // An unknown status (a newer collector) reads as still sending: never "delivered".
        let status = match pb::DeliveryStatus::try_from(v.status) {
            Ok(pb::DeliveryStatus::Delivered) => DeliveryStatus::Delivered,
            Ok(pb::DeliveryStatus::Failed) => DeliveryStatus::Failed,
            Ok(pb::DeliveryStatus::Silenced) => DeliveryStatus::Silenced,
            _ => DeliveryStatus::Sending,
        };
        Ok(Delivery {
            id: v.id,
            sink: v.sink,
            status,
            attempts: v.attempts,
            created_at: UnixMs(v.created_unix_ms),
            next_attempt_at: UnixMs(v.next_attempt_unix_ms),
            give_up_at: UnixMs(v.give_up_unix_ms),
            finished_at: v.finished_unix_ms.map(UnixMs),
            detail: v.detail,
            notification: serde_json::from_str(&v.notification_json)?,
        })
    }
}

// --- Change history ---

use crate::compliance::changes::{Change, Source};

impl From<Change> for pb::Change {
    fn from(v: Change) -> Self {
        pb::Change {
            node: v.node,
            at_unix_ms: v.at.0,
            field: v.field,
            gpu_index: v.gpu,
            old_value: v.old,
            new_value: v.new,
            source: v.source.as_str().to_string(),
        }
    }
}

impl From<pb::Change> for Change {
    fn from(v: pb::Change) -> Self {
        Change {
            node: v.node,
            at: UnixMs(v.at_unix_ms),
            field: v.field,
            gpu: v.gpu_index,
            old: v.old_value,
            new: v.new_value,
            source: Source::parse(&v.source),
        }
    }
}
