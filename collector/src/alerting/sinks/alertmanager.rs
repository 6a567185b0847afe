//! Prometheus Alertmanager API v2: `POST {url}/api/v2/alerts` with every alert of the
//! notification. Alertmanager considers a firing alert it has not heard of for its
//! `resolve_timeout` (default 5m) resolved, so firing alerts are re-sent every
//! `resend_interval`; resolved ones carry `endsAt`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Outcome, SendContext, Sink, SinkSpec, post_json};
use crate::alerting::alert::{Alert, Notification, Status};
use crate::alerting::config::{AlertsConfigError, check_url, duration};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Firing alerts are re-sent this often (keep it well under Alertmanager's
    /// `resolve_timeout`).
    #[serde(default = "resend_interval", with = "duration")]
    pub resend_interval: Duration,
}

fn resend_interval() -> Duration {
    Duration::from_secs(60)
}

impl SinkSpec for AlertmanagerConfig {
    fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
        check_url(&format!("{key}.url"), &self.url)?;
        if self.resend_interval < Duration::from_secs(1) {
            return Err(AlertsConfigError::new(
                format!("{key}.resend_interval"),
                "must be at least 1s",
            ));
        }
        Ok(())
    }

    fn build(&self, _name: &str) -> Box<dyn Sink> {
        Box::new(Alertmanager {
            endpoint: format!("{}/api/v2/alerts", self.url.trim_end_matches('/')),
            resend: self.resend_interval,
        })
    }
}

struct Alertmanager {
    endpoint: String,
    resend: Duration,
}

/// A Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`) for a node label key.
fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

/// One alert as Alertmanager's API v2 `postableAlert`.
pub fn postable(a: &Alert, test: bool) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    // Node labels first, so ours win a clash.
    for (k, v) in &a.labels {
        labels.insert(label_name(k), v.clone().into());
    }
    labels.insert("alertname".into(), a.cause.clone().into());
    labels.insert("node".into(), a.node.clone().into());
    labels.insert("severity".into(), a.severity.to_string().into());
    labels.insert("source".into(), "gpufleet".into());
    if let Some(g) = a.gpu {
        labels.insert("gpu".into(), g.to_string().into());
    }
    if test {
        labels.insert("test".into(), "true".into());
    }
    let evidence: Vec<String> = a
        .evidence
        .iter()
        .map(|e| {
            if e.threshold.is_empty() {
                format!("{} = {}", e.field, e.value)
            } else {
                format!("{} = {} (threshold {})", e.field, e.value, e.threshold)
            }
        })
        .collect();
    let mut body = serde_json::json!({
        "labels": labels,
        "annotations": {
            "summary": a.summary,
            "description": a.title,
            "action": a.action,
            "evidence": evidence.join("\n"),
            "node_command": a.node_command,
            "dedupe_key": a.dedupe_key,
        },
        "startsAt": a.fired_at,
    });
    if a.status == Status::Resolved {
        body["endsAt"] = a.resolved_at.clone().unwrap_or_default().into();
    }
    if let Some(u) = &a.node_url {
        body["generatorURL"] = u.clone().into();
    }
    body
}

impl Sink for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn resend_every(&self) -> Option<Duration> {
        Some(self.resend)
    }

    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let alerts: Vec<_> = n.alerts.iter().map(|a| postable(a, n.test)).collect();
            let body = serde_json::to_vec(&alerts).expect("JSON values always serialize");
            post_json(ctx, &self.endpoint, &[], body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_label_keys_become_prometheus_label_names() {
        assert_eq!(label_name("pool"), "pool");
        assert_eq!(label_name("topology.kubernetes.io/zone"), "topology_kubernetes_io_zone");
        assert_eq!(label_name("9rack"), "_9rack");
    }
}
