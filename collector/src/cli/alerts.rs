//! `gpufleet alerts`, `gpufleet alerts --deliveries`, `gpufleet alerts test` and
//! `gpufleet silence …`: the alerting RPCs, and their tables.

use anyhow::{Context, Result};
use gpufleet_model::UnixMs;
use gpufleet_proto::v1 as pb;

use super::render::table;
use super::{Client, status};
use crate::alerting::outbox::Delivery;
use crate::alerting::silence::Silence;
use crate::api::AlertList;

pub async fn list(c: &mut Client) -> Result<AlertList> {
    let r = c
        .list_alerts(pb::ListAlertsRequest {})
        .await
        .map_err(status)?;
    Ok(r.into_inner().into())
}

pub async fn deliveries(c: &mut Client, limit: u32) -> Result<Vec<Delivery>> {
    let r = c
        .list_deliveries(pb::ListDeliveriesRequest { limit })
        .await
        .map_err(status)?;
    r.into_inner()
        .deliveries
        .into_iter()
        .map(|d| Delivery::try_from(d).context("the collector sent an unreadable delivery"))
        .collect()
}

/// What `silence add` asks for.
pub struct SilenceRequest {
    pub node: String,
    pub gpu: Option<u32>,
    pub cause_prefix: String,
    pub duration: std::time::Duration,
    pub comment: String,
}

pub async fn add_silence(c: &mut Client, s: SilenceRequest) -> Result<Silence> {
    let r = c
        .add_silence(pb::AddSilenceRequest {
            node: s.node,
            gpu_index: s.gpu,
            cause_prefix: s.cause_prefix,
            duration_ms: s.duration.as_millis().min(u64::MAX as u128) as u64,
            comment: s.comment,
        })
        .await
        .map_err(status)?;
    r.into_inner()
        .silence
        .map(Into::into)
        .context("the collector answered without the silence")
}

pub async fn silences(c: &mut Client, include_expired: bool) -> Result<Vec<Silence>> {
    let r = c
        .list_silences(pb::ListSilencesRequest { include_expired })
        .await
        .map_err(status)?;
    Ok(r.into_inner()
        .silences
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn remove_silence(c: &mut Client, id: i64) -> Result<()> {
    c.remove_silence(pb::RemoveSilenceRequest { id })
        .await
        .map_err(status)?;
    Ok(())
}

/// The receiver's answer to a test notification: (delivered, answer).
pub async fn test_sink(c: &mut Client, sink: &str) -> Result<(bool, String)> {
    let r = c
        .test_alert_sink(pb::TestAlertSinkRequest {
            sink: sink.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok((r.delivered, r.answer))
}

fn when(t: UnixMs, now: UnixMs) -> String {
    let d = std::time::Duration::from_secs((now.0 - t.0).unsigned_abs() / 1000);
    let d = humantime::format_duration(d).to_string();
    if t <= now {
        format!("{d} ago")
    } else {
        format!("in {d}")
    }
}

fn scope(gpu: Option<u32>) -> String {
    gpu.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
}

pub fn alerts_table(list: &AlertList, now: UnixMs) -> String {
    let mut out = String::new();
    if list.alerts.is_empty() {
        out.push_str("No alerts firing.\n");
    } else {
        let mut t = table();
        t.set_header([
            "SEVERITY", "NODE", "GPU", "CAUSE", "SINCE", "SILENCED", "SUMMARY",
        ]);
        for a in &list.alerts {
            let f = &a.finding;
            let silenced: Vec<String> =
                a.silenced_by.iter().map(|s| format!("#{}", s.id)).collect();
            t.add_row([
                f.severity.to_string(),
                f.node.clone(),
                scope(f.gpu_index),
                f.rule_id.clone(),
                when(f.since, now),
                if silenced.is_empty() {
                    "-".into()
                } else {
                    silenced.join(",")
                },
                f.summary.clone(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if list.sinks.is_empty() {
        out.push_str("No alert sinks configured (serve --alert-webhook URL, or [alerts.sinks] in --config).\n");
    } else {
        let s: Vec<String> = list
            .sinks
            .iter()
            .map(|s| format!("{} ({})", s.name, s.kind))
            .collect();
        out.push_str(&format!("Sinks: {}\n", s.join(", ")));
    }
    out
}

pub fn deliveries_table(ds: &[Delivery], now: UnixMs) -> String {
    if ds.is_empty() {
        return "No deliveries yet.\n".into();
    }
    let mut t = table();
    t.set_header([
        "ID", "WHEN", "SINK", "NODE", "STATUS", "TRIES", "ALERTS", "DETAIL",
    ]);
    for d in ds {
        let n = &d.notification;
        let mut causes: Vec<String> = n
            .alerts
            .iter()
            .map(|a| format!("{} {} {}", a.status.as_str(), a.cause, a.scope()))
            .collect();
        if causes.len() > 4 {
            let more = causes.len() - 3;
            causes.truncate(3);
            causes.push(format!("+{more} more"));
        }
        let status = match (d.status, d.finished_at) {
            (crate::alerting::outbox::DeliveryStatus::Sending, _) => {
                format!("sending (next {})", when(d.next_attempt_at, now))
            }
            (s, _) => s.as_str().to_string(),
        };
        t.add_row([
            d.id.to_string(),
            when(d.created_at, now),
            d.sink.clone(),
            if n.test {
                format!("{} (test)", n.node)
            } else {
                n.node.clone()
            },
            status,
            d.attempts.to_string(),
            causes.join("\n"),
            d.detail.clone(),
        ]);
    }
    format!("{t}\n")
}

pub fn silences_table(ss: &[Silence], now: UnixMs) -> String {
    if ss.is_empty() {
        return "No silences.\n".into();
    }
    let mut t = table();
    t.set_header(["ID", "NODE", "GPU", "CAUSE PREFIX", "EXPIRES", "COMMENT"]);
    for s in ss {
        t.add_row([
            s.id.to_string(),
            s.node.clone(),
            scope(s.gpu),
            if s.cause_prefix.is_empty() {
                "(all)".into()
            } else {
                s.cause_prefix.clone()
            },
            if s.active(now) {
                when(s.expires_at, now)
            } else {
                format!("expired {}", when(s.expires_at, now))
            },
            s.comment.clone(),
        ]);
    }
    format!("{t}\n")
}
