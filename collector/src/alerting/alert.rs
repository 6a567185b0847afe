//! The alert model: what one finding's state change tells on-call, and a notification (the
//! alerts of one node sent to one sink at once). These are also the generic webhook's JSON
//! body (docs/alerts.md, schema version [`SCHEMA_VERSION`]), so fields are only added.

use gpufleet_model::{Evidence, FindingRecord, FindingState, Labels, Severity, UnixMs};
use serde::{Deserialize, Serialize};

/// Version of the JSON documents below (`"version"` in every notification).
pub const SCHEMA_VERSION: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One finding's state change, as on-call sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable across the finding's life: `node/gpuN/cause` (`node/-/cause` for node-wide).
    pub dedupe_key: String,
    /// The dedupe key plus the transition (`…@firing:<fired_at_ms>`, `…@resolved:…`,
    /// `…@repeat:<ms>`): a receiver seeing it twice saw a retry.
    pub idempotency_key: String,
    pub status: Status,
    pub severity: Severity,
    /// Rule id, e.g. `gpu.thermal.hw_slowdown`.
    pub cause: String,
    pub title: String,
    /// One sentence with the numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// What on-call should do.
    pub action: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_uuid: String,
    /// The node's labels (from its agent's `--label`).
    pub labels: Labels,
    /// When the condition was first seen, when it fired, when it resolved (RFC 3339).
    pub since: String,
    pub fired_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The command that shows the node.
    pub node_command: String,
    /// The node's page, when `alerts.external_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_url: Option<String>,
}

/// Which change of a finding an alert reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Firing,
    Resolved,
    /// A still-firing alert sent again (at this time).
    Repeat(UnixMs),
}

impl Transition {
    /// `firing:<fired_at>`, `resolved:<fired_at>`, `repeat:<at>`: unique per finding life.
    pub fn tag(self, fired_at: UnixMs) -> String {
        match self {
            Transition::Firing => format!("firing:{}", fired_at.0),
            Transition::Resolved => format!("resolved:{}", fired_at.0),
            Transition::Repeat(at) => format!("repeat:{}", at.0),
        }
    }
}

pub fn dedupe_key(node: &str, gpu: Option<u32>, cause: &str) -> String {
    match gpu {
        Some(g) => format!("{node}/gpu{g}/{cause}"),
        None => format!("{node}/-/{cause}"),
    }
}

pub fn rfc3339(t: UnixMs) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.0.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

impl Alert {
    /// The alert for a stored finding transition, with the node's labels and link base.
    pub fn from_record(
        r: &FindingRecord,
        transition: Transition,
        labels: Labels,
        external_url: Option<&str>,
    ) -> Alert {
        let f = &r.finding;
        let key = dedupe_key(&f.node, f.gpu_index, &f.rule_id);
        let status = match (transition, r.state) {
            (Transition::Resolved, _) | (_, FindingState::Resolved) => Status::Resolved,
            _ => Status::Firing,
        };
        Alert {
            idempotency_key: format!("{key}@{}", transition.tag(r.fired_at)),
            dedupe_key: key,
            status,
            severity: f.severity,
            cause: f.rule_id.clone(),
            title: f.title.clone(),
            summary: f.summary.clone(),
            evidence: f.evidence.clone(),
            action: f.action.clone(),
            node: f.node.clone(),
            gpu: f.gpu_index,
            gpu_uuid: f.gpu_uuid.clone(),
            labels,
            since: rfc3339(f.since),
            fired_at: rfc3339(r.fired_at),
            resolved_at: match status {
                Status::Resolved => Some(rfc3339(r.resolved_at.unwrap_or(r.fired_at))),
                Status::Firing => None,
            },
            node_command: format!("gpufleet node {}", f.node),
            node_url: external_url.map(|u| format!("{}/nodes/{}", u.trim_end_matches('/'), f.node)),
        }
    }

    /// `GPU 3` or `node`.
    pub fn scope(&self) -> String {
        match self.gpu {
            Some(g) => format!("GPU {g}"),
            None => "node".to_string(),
        }
    }
}

/// What one sink receives at once: the alerts of one node that came due together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always [`SCHEMA_VERSION`].
    pub version: String,
    /// Stable across retries (and restarts) of this notification: its alerts' idempotency
    /// keys, so a receiver can drop a duplicate.
    pub id: String,
    /// True only for `gpufleet alerts test`.
    pub test: bool,
    pub node: String,
    /// `firing` if any alert fires, else `resolved`.
    pub status: Status,
    /// Most severe of the alerts.
    pub severity: Severity,
    pub alerts: Vec<Alert>,
}

impl Notification {
    pub fn new(node: &str, mut alerts: Vec<Alert>) -> Notification {
        alerts.sort_by(|a, b| {
            (b.severity, &a.cause, a.gpu, a.status.as_str()).cmp(&(
                a.severity,
                &b.cause,
                b.gpu,
                b.status.as_str(),
            ))
        });
        let keys: Vec<&str> = alerts.iter().map(|a| a.idempotency_key.as_str()).collect();
        let mut id = keys.join("+");
        if id.len() > 200 {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(id.as_bytes());
            id = format!("{node}@sha256:{}", hex(&digest));
        }
        Notification {
            version: SCHEMA_VERSION.to_string(),
            id,
            test: false,
            node: node.to_string(),
            status: if alerts.iter().any(|a| a.status == Status::Firing) {
                Status::Firing
            } else {
                Status::Resolved
            },
            severity: alerts
                .iter()
                .map(|a| a.severity)
                .max()
                .unwrap_or(Severity::Info),
            alerts,
        }
    }

    /// A clearly marked test notification (`gpufleet alerts test SINK`).
    pub fn test(sink: &str, now: UnixMs) -> Notification {
        let at = rfc3339(now);
        let alert = Alert {
            dedupe_key: format!("gpufleet-test/-/gpufleet.test.{sink}"),
            idempotency_key: format!("gpufleet-test/-/gpufleet.test.{sink}@test:{}", now.0),
            status: Status::Firing,
            severity: Severity::Info,
            cause: "gpufleet.test".into(),
            title: "TEST notification from gpufleet (no action needed)".into(),
            summary: format!(
                "This is a test of the alert sink {sink:?}, sent by `gpufleet alerts test`."
            ),
            evidence: Vec::new(),
            action: "None: this only checks that notifications arrive.".into(),
            node: "gpufleet-test".into(),
            gpu: None,
            gpu_uuid: String::new(),
            labels: Labels::new(),
            since: at.clone(),
            fired_at: at,
            resolved_at: None,
            node_command: "gpufleet alerts --deliveries".into(),
            node_url: None,
        };
        let mut n = Notification::new("gpufleet-test", vec![alert]);
        n.test = true;
        n
    }

    /// The GPUs the alerts name, e.g. `GPUs 0, 1, 3` (empty when all are node-wide).
    pub fn gpus(&self) -> String {
        let mut g: Vec<u32> = self.alerts.iter().filter_map(|a| a.gpu).collect();
        g.sort_unstable();
        g.dedup();
        match g.len() {
            0 => String::new(),
            1 => format!("GPU {}", g[0]),
            _ => format!(
                "GPUs {}",
                g.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gpufleet_model::Finding;

    pub(crate) fn record(
        node: &str,
        gpu: Option<u32>,
        cause: &str,
        sev: Severity,
    ) -> FindingRecord {
        FindingRecord {
            finding: Finding {
                rule_id: cause.into(),
                title: format!("{cause} title"),
                severity: sev,
                node: node.into(),
                gpu_index: gpu,
                summary: "GPU is hot".into(),
                evidence: vec![Evidence::new("temp_celsius", 95, ">= 90")],
                action: "check cooling".into(),
                since: UnixMs(1_000),
                ..Default::default()
            },
            state: FindingState::Firing,
            fired_at: UnixMs(2_000),
            resolved_at: None,
        }
    }

    #[test]
    fn keys_are_stable_per_finding_and_unique_per_transition() {
        let r = record("n1", Some(3), "gpu.thermal.hw_slowdown", Severity::Critical);
        let fire = Alert::from_record(&r, Transition::Firing, Labels::new(), None);
        let mut resolved = r.clone();
        resolved.state = FindingState::Resolved;
        resolved.resolved_at = Some(UnixMs(9_000));
        let res = Alert::from_record(&resolved, Transition::Resolved, Labels::new(), None);
        assert_eq!(fire.dedupe_key, "n1/gpu3/gpu.thermal.hw_slowdown");
        assert_eq!(fire.dedupe_key, res.dedupe_key);
        assert_eq!(
            fire.idempotency_key,
            "n1/gpu3/gpu.thermal.hw_slowdown@firing:2000"
        );
        assert_eq!(
            res.idempotency_key,
            "n1/gpu3/gpu.thermal.hw_slowdown@resolved:2000"
        );
        assert_eq!(res.status, Status::Resolved);
        assert_eq!(res.resolved_at.as_deref(), Some("1970-01-01T00:00:09.000Z"));
        assert_eq!(fire.node_command, "gpufleet node n1");
        let linked = Alert::from_record(&r, Transition::Firing, Labels::new(), Some("http://c:1/"));
        assert_eq!(linked.node_url.as_deref(), Some("http://c:1/nodes/n1"));
    }

    #[test]
    fn a_notification_lists_its_gpus_and_takes_the_worst_severity() {
        let a: Vec<Alert> = [(2, Severity::Warning), (0, Severity::Critical)]
            .into_iter()
            .map(|(g, s)| {
                Alert::from_record(
                    &record("n1", Some(g), "c", s),
                    Transition::Firing,
                    Labels::new(),
                    None,
                )
            })
            .collect();
        let n = Notification::new("n1", a);
        assert_eq!(n.gpus(), "GPUs 0, 2");
        assert_eq!(n.severity, Severity::Critical);
        assert_eq!(n.alerts[0].gpu, Some(0), "most severe first");
        assert_eq!(n.id, "n1/gpu0/c@firing:2000+n1/gpu2/c@firing:2000");
    }
}
