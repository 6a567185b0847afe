//! The alerting outbox in SQLite ([`AlertStore`] for [`SqliteStore`]); the tables are
//! `alert_tables!` in `sqlite.rs`. Each method is one transaction, so every step of a
//! notification's life survives a crash between steps.

use std::collections::BTreeMap;

use gpufleet_model::{FindingRecord, FindingState, UnixMs};
use rusqlite::{OptionalExtension, Transaction, params};

use super::StoreError;
use super::sqlite::{SqliteStore, from_json, json};
use crate::alerting::alert::{Alert, Notification, Status, Transition};
use crate::alerting::outbox::{
    AlertStore, Attempt, Claimed, Delivery, DeliveryStatus, InboxEntry, Routed,
};
use crate::alerting::silence::{NewSilence, Silence, silencing};

/// The longest receiver answer or error kept per delivery.
const MAX_DETAIL: usize = 1000;

fn clip(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_string();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Puts a finding transition into the alerting inbox (called inside the transaction storing
/// the finding, so the two cannot part).
pub(super) fn to_inbox(tx: &Transaction<'_>, r: &FindingRecord) -> Result<(), StoreError> {
    if r.state == FindingState::Pending {
        return Ok(());
    }
    let at = r.resolved_at.unwrap_or(r.fired_at);
    tx.execute(
        "INSERT INTO alert_transitions(at_ms, record_json) VALUES (?1, ?2)",
        params![at.0, json(r)],
    )?;
    Ok(())
}

/// Retention: forgets finished alerting rows older than `before` (silences that expired
/// before it too). Anything still queued or being tried is kept.
pub(super) fn prune(tx: &Transaction<'_>, before: UnixMs) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM alert_transitions WHERE routed = 1 AND at_ms < ?1",
        [before.0],
    )?;
    tx.execute(
        "DELETE FROM alert_outbox WHERE status != 'queued' AND created_ms < ?1
         AND (delivery IS NULL OR delivery NOT IN (SELECT id FROM alert_deliveries WHERE status = 'sending'))",
        [before.0],
    )?;
    tx.execute(
        "DELETE FROM alert_deliveries WHERE status != 'sending' AND created_ms < ?1",
        [before.0],
    )?;
    tx.execute(
        "DELETE FROM alert_silences WHERE expires_ms < ?1",
        [before.0],
    )?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "id, sink, notification_json, status, attempts, created_ms, \
     next_attempt_ms, give_up_ms, finished_ms, detail";

fn delivery_rows(
    q: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = q.query_map(p, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, String>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sink, n, status, attempts, created, next, give_up, finished, detail) = row?;
        out.push(Delivery {
            id,
            sink,
            status: DeliveryStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                what: "alert_deliveries.status".into(),
                reason: format!("unknown status {status:?}"),
            })?,
            attempts: attempts.clamp(0, u32::MAX as i64) as u32,
            created_at: UnixMs(created),
            next_attempt_at: UnixMs(next),
            give_up_at: UnixMs(give_up),
            finished_at: finished.map(UnixMs),
            detail,
            notification: from_json("alert_deliveries.notification_json", &n)?,
        });
    }
    Ok(out)
}

/// The due time a new row of (sink, node) gets: its own, or the earlier due time of a group
/// of that node still waiting, when joining it respects the row's `not_before`.
fn group_due(
    tx: &Transaction<'_>,
    sink: &str,
    node: &str,
    own: UnixMs,
    not_before: UnixMs,
) -> Result<UnixMs, StoreError> {
    let waiting: Option<i64> = tx.query_row(
        "SELECT MIN(due_ms) FROM alert_outbox WHERE sink = ?1 AND node = ?2 AND status = 'queued'",
        params![sink, node],
        |r| r.get(0),
    )?;
    Ok(match waiting {
        Some(d) if d >= not_before.0 && d < own.0 => UnixMs(d),
        _ => own,
    })
}

fn insert_row(
    tx: &Transaction<'_>,
    sink: &str,
    alert: &Alert,
    status: &str,
    due: UnixMs,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO alert_outbox(sink, node, dedupe_key, idem_key, resolved, status, due_ms, created_ms, alert_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(sink, idem_key) DO NOTHING",
        params![
            sink,
            alert.node,
            alert.dedupe_key,
            alert.idempotency_key,
            alert.status == Status::Resolved,
            status,
            due.0,
            now.0,
            json(alert)
        ],
    )?;
    Ok(())
}

impl AlertStore for SqliteStore {
    fn unrouted(&self, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT id, record_json FROM alert_transitions WHERE routed = 0 ORDER BY id LIMIT ?1",
        )?;
        let rows = q.query_map([limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, j) = row?;
            out.push(InboxEntry {
                id,
                record: from_json("alert_transitions.record_json", &j)?,
            });
        }
        Ok(out)
    }

    fn route(&self, routed: &[Routed], now: UnixMs) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for r in routed {
            for e in &r.sinks {
                let a = &e.alert;
                match a.status {
                    Status::Firing => {
                        let due = group_due(&tx, &e.sink, &a.node, e.due, e.not_before)?;
                        insert_row(&tx, &e.sink, a, "queued", due, now)?;
                        tx.execute(
                            "INSERT INTO alert_active(sink, dedupe_key, alert_json, repeat_ms, next_repeat_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT(sink, dedupe_key) DO UPDATE SET alert_json = excluded.alert_json,
                                repeat_ms = excluded.repeat_ms, next_repeat_ms = excluded.next_repeat_ms",
                            params![
                                e.sink,
                                a.dedupe_key,
                                json(a),
                                e.repeat_ms.min(i64::MAX as u64) as i64,
                                due.0.saturating_add(e.repeat_ms.min(i64::MAX as u64) as i64)
                            ],
                        )?;
                    }
                    Status::Resolved => {
                        tx.execute(
                            "DELETE FROM alert_active WHERE sink = ?1 AND dedupe_key = ?2",
                            params![e.sink, a.dedupe_key],
                        )?;
                        // How the firing side went decides what the resolve does.
                        let firing: Option<(i64, String)> = tx
                            .query_row(
                                "SELECT id, status FROM alert_outbox
                                 WHERE sink = ?1 AND dedupe_key = ?2 AND resolved = 0
                                 ORDER BY id DESC LIMIT 1",
                                params![e.sink, a.dedupe_key],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()?;
                        match firing.as_ref().map(|(id, s)| (*id, s.as_str())) {
                            // Never told (resolved within the route's `for`, or the firing
                            // row still waits): nothing to resolve.
                            None | Some((_, "cancelled")) => {}
                            Some((id, "queued")) => {
                                tx.execute(
                                    "UPDATE alert_outbox SET status = 'cancelled' WHERE id = ?1",
                                    [id],
                                )?;
                            }
                            Some((_, "silenced")) => {
                                insert_row(&tx, &e.sink, a, "silenced", e.due, now)?;
                            }
                            Some(_) => {
                                let due = group_due(&tx, &e.sink, &a.node, e.due, e.not_before)?;
                                insert_row(&tx, &e.sink, a, "queued", due, now)?;
                            }
                        }
                    }
                }
            }
            tx.execute(
                "UPDATE alert_transitions SET routed = 1 WHERE id = ?1",
                [r.inbox_id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn enqueue_repeats(&self, now: UnixMs) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let due: Vec<(String, String, String, i64, i64)> = {
            let mut q = tx.prepare_cached(
                "SELECT sink, dedupe_key, alert_json, repeat_ms, next_repeat_ms FROM alert_active
                 WHERE next_repeat_ms <= ?1",
            )?;
            q.query_map([now.0], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (sink, key, alert_json, repeat_ms, at) in &due {
            // Only once the alert actually went out (not while it waits out `for` or a
            // silence holds it, not for a sink that dropped it).
            let sent: Option<String> = tx
                .query_row(
                    "SELECT status FROM alert_outbox WHERE sink = ?1 AND dedupe_key = ?2 AND resolved = 0
                     ORDER BY id DESC LIMIT 1",
                    params![sink, key],
                    |r| r.get(0),
                )
                .optional()?;
            let next = now.0.saturating_add((*repeat_ms).max(1000));
            if matches!(
                sent.as_deref(),
                Some("sent") | Some("silenced") | Some("failed")
            ) {
                let mut alert: Alert = from_json("alert_active.alert_json", alert_json)?;
                alert.idempotency_key = format!(
                    "{}@{}",
                    alert.dedupe_key,
                    Transition::Repeat(UnixMs(*at)).tag(UnixMs(0))
                );
                insert_row(&tx, sink, &alert, "queued", now, now)?;
            }
            tx.execute(
                "UPDATE alert_active SET next_repeat_ms = ?3 WHERE sink = ?1 AND dedupe_key = ?2",
                params![sink, key, next],
            )?;
        }
        tx.commit()?;
        Ok(due.len())
    }

    fn claim_due(
        &self,
        now: UnixMs,
        silences: &[Silence],
        give_up_at: UnixMs,
    ) -> Result<Claimed, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows: Vec<(i64, String, String, String)> = {
            let mut q = tx.prepare_cached(
                // A node's next notification to a sink waits for the one being tried, so
                // a receiver never hears "resolved" before "firing".
                "SELECT id, sink, node, alert_json FROM alert_outbox o
                 WHERE status = 'queued' AND due_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                                   WHERE d.status = 'sending' AND d.sink = o.sink AND d.node = o.node)
                 ORDER BY id",
            )?;
            q.query_map([now.0], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?
        };
        // (sink, node, silenced) → rows; a silenced group is recorded as one delivery too.
        type Group = Vec<(i64, Alert, Option<i64>)>;
        let mut groups: BTreeMap<(String, String, bool), Group> = BTreeMap::new();
        for (id, sink, node, j) in rows {
            let alert: Alert = from_json("alert_outbox.alert_json", &j)?;
            let by = silencing(silences, &alert, now).map(|s| s.id);
            groups
                .entry((sink, node, by.is_some()))
                .or_default()
                .push((id, alert, by));
        }
        let mut claimed = Claimed::default();
        for ((sink, node, silenced), rows) in groups {
            let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
            let mut by: Vec<i64> = rows.iter().filter_map(|(_, _, s)| *s).collect();
            by.sort_unstable();
            by.dedup();
            let n = Notification::new(&node, rows.into_iter().map(|(_, a, _)| a).collect());
            let (status, detail, finished) = if silenced {
                let ids: Vec<String> = by.iter().map(|i| format!("#{i}")).collect();
                (
                    DeliveryStatus::Silenced,
                    format!("silenced by {}", ids.join(", ")),
                    Some(now.0),
                )
            } else {
                (DeliveryStatus::Sending, String::new(), None)
            };
            tx.execute(
                "INSERT INTO alert_deliveries(sink, node, notification_json, status, created_ms,
                     next_attempt_ms, give_up_ms, finished_ms, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
                params![
                    sink,
                    node,
                    json(&n),
                    status.as_str(),
                    now.0,
                    give_up_at.0,
                    finished,
                    detail
                ],
            )?;
            let delivery = tx.last_insert_rowid();
            let row_status = if silenced { "silenced" } else { "claimed" };
            for id in ids {
                tx.execute(
                    "UPDATE alert_outbox SET status = ?2, delivery = ?3 WHERE id = ?1",
                    params![id, row_status, delivery],
                )?;
            }
            if silenced {
                claimed.silenced.push(sink);
            } else {
                claimed.deliveries.push(Delivery {
                    id: delivery,
                    sink,
                    status,
                    attempts: 0,
                    created_at: now,
                    next_attempt_at: now,
                    give_up_at,
                    finished_at: None,
                    detail,
                    notification: n,
                });
            }
        }
        tx.commit()?;
        Ok(claimed)
    }

    fn retries_due(&self, now: UnixMs) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries
             WHERE status = 'sending' AND next_attempt_ms <= ?1 ORDER BY id"
        ))?;
        delivery_rows(&mut q, [now.0])
    }

    fn finish_attempt(
        &self,
        delivery: i64,
        attempt: &Attempt,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (status, row_status, next, detail, finished) = match attempt {
            Attempt::Delivered { answer } => ("delivered", "sent", now, answer, Some(now.0)),
            Attempt::Retry { at, error } => ("sending", "claimed", *at, error, None),
            Attempt::Failed { error } => ("failed", "failed", now, error, Some(now.0)),
        };
        tx.execute(
            "UPDATE alert_deliveries SET status = ?2, attempts = attempts + 1, next_attempt_ms = ?3,
                 detail = ?4, finished_ms = ?5
             WHERE id = ?1 AND status = 'sending'",
            params![delivery, status, next.0, clip(detail), finished],
        )?;
        tx.execute(
            "UPDATE alert_outbox SET status = ?2 WHERE delivery = ?1",
            params![delivery, row_status],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn record_test(
        &self,
        sink: &str,
        notification: &Notification,
        attempt: &Attempt,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let (status, detail) = match attempt {
            Attempt::Delivered { answer } => ("delivered", answer),
            Attempt::Retry { error, .. } | Attempt::Failed { error } => ("failed", error),
        };
        self.conn().execute(
            "INSERT INTO alert_deliveries(sink, node, notification_json, status, attempts, created_ms,
                 next_attempt_ms, give_up_ms, finished_ms, detail)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?5, ?5, ?6)",
            params![
                sink,
                notification.node,
                json(notification),
                status,
                now.0,
                clip(detail)
            ],
        )?;
        Ok(())
    }

    fn next_wake(&self) -> Result<Option<UnixMs>, StoreError> {
        let conn = self.conn();
        let t: Option<i64> = conn.query_row(
            "SELECT MIN(t) FROM (
                SELECT MIN(due_ms) AS t FROM alert_outbox o WHERE status = 'queued'
                   AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                                   WHERE d.status = 'sending' AND d.sink = o.sink AND d.node = o.node)
                UNION ALL SELECT MIN(next_attempt_ms) FROM alert_deliveries WHERE status = 'sending'
                UNION ALL SELECT MIN(next_repeat_ms) FROM alert_active)",
            [],
            |r| r.get(0),
        )?;
        Ok(t.map(UnixMs))
    }

    fn pending(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM alert_outbox WHERE status IN ('queued', 'claimed')",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries ORDER BY id DESC LIMIT ?1"
        ))?;
        delivery_rows(&mut q, [limit as i64])
    }

    fn add_silence(&self, s: &NewSilence) -> Result<Silence, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO alert_silences(node, gpu_index, cause_prefix, comment, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.node,
                s.gpu,
                s.cause_prefix,
                s.comment,
                s.created_at.0,
                s.expires_at.0
            ],
        )?;
        Ok(Silence {
            id: conn.last_insert_rowid(),
            node: s.node.clone(),
            gpu: s.gpu,
            cause_prefix: s.cause_prefix.clone(),
            comment: s.comment.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
        })
    }

    fn silences(&self, now: UnixMs, include_expired: bool) -> Result<Vec<Silence>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT id, node, gpu_index, cause_prefix, comment, created_ms, expires_ms
             FROM alert_silences WHERE ?2 OR expires_ms > ?1 ORDER BY id DESC",
        )?;
        let rows = q.query_map(params![now.0, include_expired], |r| {
            Ok(Silence {
                id: r.get(0)?,
                node: r.get(1)?,
                gpu: r.get(2)?,
                cause_prefix: r.get(3)?,
                comment: r.get(4)?,
                created_at: UnixMs(r.get(5)?),
                expires_at: UnixMs(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn remove_silence(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM alert_silences WHERE id = ?1", [id])?
            > 0)
    }
}
