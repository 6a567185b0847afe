//! PagerDuty Events API v2: one event per alert — `trigger` when it fires (and on repeats),
//! `resolve` when it resolves, both with the alert's dedupe key as `dedup_key`, so PagerDuty
//! keeps one incident per finding. Evidence goes in `custom_details`.

use futures::future::BoxFuture;
use gpufleet_model::Severity;
use serde::Deserialize;

use super::{Outcome, SendContext, Sink, SinkSpec, post_json};
use crate::alerting::alert::{Alert, Notification, Status};
use crate::alerting::config::{AlertsConfigError, check_url};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    /// The integration's routing key (32 characters).
    pub routing_key: String,
    /// The Events API endpoint (change it only to test against a local receiver).
    #[serde(default = "default_url")]
    pub url: String,
}

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

impl SinkSpec for PagerdutyConfig {
    fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
        check_url(&format!("{key}.url"), &self.url)?;
        if self.routing_key.len() != 32 || !self.routing_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AlertsConfigError::new(
                format!("{key}.routing_key"),
                "must be the 32-character integration key from the PagerDuty service's Events API v2 integration",
            ));
        }
        Ok(())
    }

    fn build(&self, _name: &str) -> Box<dyn Sink> {
        Box::new(Pagerduty {
            routing_key: self.routing_key.clone(),
            url: self.url.clone(),
        })
    }
}

struct Pagerduty {
    routing_key: String,
    url: String,
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// PagerDuty's limits: `dedup_key` ≤ 255, `summary` ≤ 1024 characters.
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The Events API v2 body for one alert.
pub fn event(routing_key: &str, a: &Alert, test: bool) -> serde_json::Value {
    let dedup_key = cut(&a.dedupe_key, 255);
    if a.status == Status::Resolved {
        return serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let summary = format!(
        "{}{} on {} {}: {}",
        if test { "[TEST] " } else { "" },
        a.title,
        a.node,
        a.scope(),
        a.summary
    );
    let mut links = Vec::new();
    if let Some(u) = &a.node_url {
        links.push(serde_json::json!({ "href": u, "text": format!("node {}", a.node) }));
    }
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": cut(&summary, 1024),
            "source": a.node,
            "severity": severity(a.severity),
            "timestamp": a.fired_at,
            "component": a.gpu.map(|g| format!("gpu{g}")).unwrap_or_else(|| "node".into()),
            "group": a.labels.get("pool").cloned().unwrap_or_default(),
            "class": a.cause,
            "custom_details": {
                "cause": a.cause,
                "evidence": a.evidence,
                "action": a.action,
                "gpu_uuid": a.gpu_uuid,
                "labels": a.labels,
                "since": a.since,
                "node_command": a.node_command,
                "idempotency_key": a.idempotency_key,
            },
        },
        "links": links,
    })
}

impl Sink for Pagerduty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            // PagerDuty takes one event per request; a retry re-sends them all, which the
            // dedup_key makes harmless.
            let mut answers = Vec::new();
            for a in &n.alerts {
                let body = event(&self.routing_key, a, n.test).to_string().into_bytes();
                match post_json(ctx, &self.url, &[], body).await {
                    Outcome::Delivered(said) => answers.push(said),
                    other => return other,
                }
            }
            answers.dedup();
            Outcome::Delivered(answers.join("; "))
        })
    }
}
