//! Slack incoming webhook: one readable message per notification (severity, cause, node,
//! GPUs, evidence, action, the command to look closer). Slack answers 429 with
//! `Retry-After` past about one message a second; the dispatcher waits as told.

use futures::future::BoxFuture;
use gpufleet_model::Severity;
use serde::Deserialize;

use super::{Outcome, SendContext, Sink, SinkSpec, post_json};
use crate::alerting::alert::{Notification, Status};
use crate::alerting::config::{AlertsConfigError, check_url};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (`https://hooks.slack.com/services/…`).
    pub url: String,
}

impl SinkSpec for SlackConfig {
    fn check(&self, key: &str) -> Result<(), AlertsConfigError> {
        check_url(&format!("{key}.url"), &self.url)
    }

    fn build(&self, _name: &str) -> Box<dyn Sink> {
        Box::new(Slack {
            url: self.url.clone(),
        })
    }
}

struct Slack {
    url: String,
}

fn icon(status: Status, severity: Severity) -> &'static str {
    match (status, severity) {
        (Status::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":large_blue_circle:",
    }
}

/// The message text (Slack mrkdwn).
pub fn text(n: &Notification) -> String {
    let mut causes: Vec<&str> = n.alerts.iter().map(|a| a.cause.as_str()).collect();
    causes.dedup();
    let gpus = n.gpus();
    let mut out = format!(
        "{}{} *{}* {}: {} on *{}*{}",
        if n.test { "[TEST] " } else { "" },
        icon(n.status, n.severity),
        n.severity.to_string().to_uppercase(),
        n.status.as_str(),
        causes.join(", "),
        n.node,
        if gpus.is_empty() {
            String::new()
        } else {
            format!(" ({gpus})")
        }
    );
    for a in &n.alerts {
        out.push_str(&format!(
            "\n• `{}` {} *{}* [{}]: {}",
            a.severity, a.scope(), a.title, a.status.as_str(), a.summary
        ));
        for e in &a.evidence {
            let threshold = if e.threshold.is_empty() {
                String::new()
            } else {
                format!(" (threshold {})", e.threshold)
            };
            out.push_str(&format!("\n    {} = {}{threshold}", e.field, e.value));
        }
        if a.status == Status::Firing && !a.action.is_empty() {
            out.push_str(&format!("\n    *Action:* {}", a.action));
        }
    }
    if let Some(a) = n.alerts.first() {
        match &a.node_url {
            Some(u) => out.push_str(&format!("\n`{}` · <{u}|node page>", a.node_command)),
            None => out.push_str(&format!("\n`{}`", a.node_command)),
        }
    }
    out
}

impl Sink for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(&'a self, n: &'a Notification, ctx: &'a SendContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let body = serde_json::json!({ "text": text(n) });
            post_json(ctx, &self.url, &[], body.to_string().into_bytes()).await
        })
    }
}
