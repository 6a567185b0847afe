//! The downsampled tiers in SQLite ([`super::rollup`] says what they hold).
//!
//! - `rollup_partial`: one row per compacted chunk, the 1-minute aggregates of its samples
//!   (written in the transaction that writes the chunk, so a sample is in exactly one of the
//!   head, or a chunk and a partial).
//! - `rollups`: per node and tier, one row per period — the 1-minute tier an hour per row,
//!   the 1-hour tier a UTC day per row. Once a node has [`FOLD_PARTIALS`] partial rows, they
//!   are folded into both tiers and deleted, in one transaction.
//!
//! A read merges a tier's rows with the partials not yet folded and the node's head samples, so
//! the newest minutes are never missing. Aggregates merge exactly (count, min, max, mean), so
//! nothing is counted twice or lost wherever a bucket was split.

use rusqlite::{OptionalExtension, Transaction, params};

use super::rollup::{DAY_MS, HOUR_MS, MINUTE_MS, Rollup, floor};
use super::{StoreError, Tier};

/// The tables, as in the schema and its migration step.
macro_rules! tier_tables {
    () => {
        "
CREATE TABLE IF NOT EXISTS rollup_partial (
    node TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rollup_partial_node ON rollup_partial(node, last_ms);
CREATE INDEX IF NOT EXISTS rollup_partial_last ON rollup_partial(last_ms);
CREATE TABLE IF NOT EXISTS rollups (
    node TEXT NOT NULL,
    tier_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (node, tier_ms, start_ms)
);
CREATE INDEX IF NOT EXISTS rollups_start ON rollups(tier_ms, start_ms);
"
    };
}
pub(super) use tier_tables;

/// Partial rows a node keeps before they are folded into the tiers: an hour of 2-minute chunks.
/// A read over any window merges at most this many partial rows per node.
pub const FOLD_PARTIALS: usize = 30;

/// The period one tier row covers.
fn row_period(tier: i64) -> i64 {
    if tier == HOUR_MS { DAY_MS } else { HOUR_MS }
}

fn corrupt(node: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: format!("rollup of {node}"),
        reason: e.to_string(),
    }
}

/// Stores the 1-minute aggregates of a chunk's samples, and folds the node's partials into
/// the tiers once it has [`FOLD_PARTIALS`] of them.
pub fn add_chunk(
    tx: &Transaction<'_>,
    node: &str,
    samples: &[gpufleet_proto::v1::Sample],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(());
    };
    let mut r = Rollup::default();
    for s in samples {
        r.add(s, MINUTE_MS);
    }
    tx.prepare_cached(
        "INSERT INTO rollup_partial(node, first_ms, last_ms, blob) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        node,
        first.timestamp_unix_ms,
        last.timestamp_unix_ms,
        r.encode()
    ])?;
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM rollup_partial WHERE node = ?1")?
        .query_row([node], |r| r.get(0))?;
    if n as usize >= FOLD_PARTIALS {
        fold(tx, node)?;
    }
    Ok(())
}

/// Folds all of a node's partial rows into its 1-minute and 1-hour tier rows.
pub fn fold(tx: &Transaction<'_>, node: &str) -> Result<(), StoreError> {
    let mut minutes = Rollup::default();
    let mut rows = Vec::new();
    {
        let mut q = tx.prepare_cached("SELECT rowid, blob FROM rollup_partial WHERE node = ?1")?;
        for row in q.query_map([node], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })? {
            let (rowid, blob) = row?;
            match Rollup::decode(&blob) {
                Ok(p) => minutes.merge(&p, MINUTE_MS),
                // Nothing can read it back: say so once and fold the rest.
                Err(e) => tracing::error!(%node, rowid, "dropping an unreadable rollup: {e}"),
            }
            rows.push(rowid);
        }
    }
    let span = minutes.span();
    for tier in [MINUTE_MS, HOUR_MS] {
        let Some((first, last)) = span else {
            break;
        };
        let period = row_period(tier);
        let mut by_row: std::collections::BTreeMap<i64, Rollup> = Default::default();
        let mut start = floor(first, period);
        while start <= last {
            let part = minutes.range(start, start + period);
            if !part.is_empty() {
                by_row.entry(start).or_default().merge(&part, tier);
            }
            start += period;
        }
        for (start, add) in by_row {
            let mut row = match tx
                .prepare_cached(
                    "SELECT blob FROM rollups WHERE node = ?1 AND tier_ms = ?2 AND start_ms = ?3",
                )?
                .query_row(params![node, tier, start], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                Some(blob) => Rollup::decode(&blob).unwrap_or_else(|e| {
                    tracing::error!(%node, tier, start, "replacing an unreadable rollup: {e}");
                    Rollup::default()
                }),
                None => Rollup::default(),
            };
            row.merge(&add, tier);
            tx.prepare_cached(
                "INSERT INTO rollups(node, tier_ms, start_ms, blob) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(node, tier_ms, start_ms) DO UPDATE SET blob = excluded.blob",
            )?
            .execute(params![node, tier, start, row.encode()])?;
        }
    }
    let mut del = tx.prepare_cached("DELETE FROM rollup_partial WHERE rowid = ?1")?;
    for rowid in rows {
        del.execute([rowid])?;
    }
    Ok(())
}

/// Retention per tier: deletes 1-minute aggregates (tier rows and partials) that ended before
/// `minute_before` and 1-hour rows that ended before `hour_before`. Returns the rows deleted.
pub fn prune(
    tx: &Transaction<'_>,
    minute_before: i64,
    hour_before: i64,
) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM rollups WHERE tier_ms = ?1 AND start_ms + ?2 <= ?3",
        params![MINUTE_MS, HOUR_MS, minute_before],
    )? + tx.execute(
        "DELETE FROM rollups WHERE tier_ms = ?1 AND start_ms + ?2 <= ?3",
        params![HOUR_MS, DAY_MS, hour_before],
    )? + tx.execute(
        "DELETE FROM rollup_partial WHERE last_ms < ?1",
        [minute_before],
    )?)
}

/// The node's aggregates at `tier` (1 minute or 1 hour) for buckets starting in
/// `[since, until)`: its tier rows, its partials not folded yet, and `head` (its samples not
/// yet in a chunk).
pub fn read(
    conn: &rusqlite::Connection,
    node: &str,
    tier: Tier,
    since: i64,
    until: i64,
    head: &[gpufleet_proto::v1::Sample],
) -> Result<Rollup, StoreError> {
    let step = tier.step_ms();
    let (from, to) = (floor(since, step), until);
    let mut out = Rollup::default();
    let mut q = conn.prepare_cached(
        "SELECT blob FROM rollups WHERE node = ?1 AND tier_ms = ?2 AND start_ms >= ?3
         AND start_ms < ?4",
    )?;
    let period = row_period(step);
    for blob in q.query_map(params![node, step, floor(from, period), to], |r| {
        r.get::<_, Vec<u8>>(0)
    })? {
        let r = Rollup::decode(&blob?).map_err(|e| corrupt(node, e))?;
        out.merge(&r.range(from, to), step);
    }
    let mut q = conn.prepare_cached(
        "SELECT blob FROM rollup_partial WHERE node = ?1 AND last_ms >= ?2 AND first_ms < ?3",
    )?;
    for blob in q.query_map(params![node, from, to], |r| r.get::<_, Vec<u8>>(0))? {
        let r = Rollup::decode(&blob?).map_err(|e| corrupt(node, e))?;
        out.merge(&r.range(from, to), step);
    }
    for s in head
        .iter()
        .filter(|s| (from..to).contains(&s.timestamp_unix_ms))
    {
        out.add(s, step);
    }
    Ok(out.range(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::series;
    use gpufleet_proto::v1 as pb;

    fn conn() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(tier_tables!()).unwrap();
        c
    }

    fn sample(t: i64, temp: i32) -> pb::Sample {
        pb::Sample {
            timestamp_unix_ms: t,
            gpus: vec![pb::GpuSample {
                index: 0,
                temperature_gpu_celsius: Some(temp),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn chunks_fold_into_minute_and_hour_rows_and_read_back_whole() {
        let mut c = conn();
        let key = (series("temperature").unwrap().0, 0);
        // 3 hours of 1 s samples in 2-minute chunks, temperature = minute of the hour.
        let samples: Vec<_> = (0..3 * 3600)
            .map(|i| sample(i * 1000, ((i / 60) % 60) as i32))
            .collect();
        let (chunks, head) = samples.split_at(3 * 3600 - 50);
        for chunk in chunks.chunks(120) {
            let tx = c.transaction().unwrap();
            add_chunk(&tx, "n1", chunk).unwrap();
            tx.commit().unwrap();
        }
        // Folded every 30 chunks: at most that many partials are left.
        assert!(count(&c, "SELECT COUNT(*) FROM rollup_partial") < FOLD_PARTIALS as i64);
        assert!(count(&c, "SELECT COUNT(*) FROM rollups WHERE tier_ms = 60000") >= 2);
        assert_eq!(
            count(&c, "SELECT COUNT(*) FROM rollups WHERE tier_ms = 3600000"),
            1
        );

        let m = read(&c, "n1", Tier::Minute, 0, 3 * HOUR_MS, head).unwrap();
        let buckets = &m.buckets[&key];
        assert_eq!(buckets.len(), 180, "every minute, head included");
        assert!(buckets.values().all(|a| a.count == 60 && a.min == a.max));
        assert_eq!(buckets[&(HOUR_MS + 7 * MINUTE_MS)].mean, 7.0);

        let h = read(&c, "n1", Tier::Hour, 0, 3 * HOUR_MS, head).unwrap();
        let hours = &h.buckets[&key];
        assert_eq!(hours.len(), 3);
        for a in hours.values() {
            assert_eq!((a.count, a.min, a.max), (3600, 0.0, 59.0));
            assert!((a.mean - 29.5).abs() < 1e-3);
        }
        // A window reads only its buckets.
        let part = read(
            &c,
            "n1",
            Tier::Minute,
            HOUR_MS,
            HOUR_MS + 5 * MINUTE_MS,
            &[],
        )
        .unwrap();
        assert_eq!(part.buckets[&key].len(), 5);
    }

    #[test]
    fn late_samples_merge_into_folded_rows() {
        let mut c = conn();
        let key = (series("temperature").unwrap().0, 0);
        let tx = c.transaction().unwrap();
        add_chunk(&tx, "n1", &[sample(0, 40), sample(1000, 50)]).unwrap();
        fold(&tx, "n1").unwrap();
        // An agent replays a buffered sample of the same minute after a reconnect.
        add_chunk(&tx, "n1", &[sample(2000, 90)]).unwrap();
        fold(&tx, "n1").unwrap();
        tx.commit().unwrap();
        let m = read(&c, "n1", Tier::Minute, 0, MINUTE_MS, &[]).unwrap();
        let a = m.buckets[&key][&0];
        assert_eq!((a.count, a.min, a.max), (3, 40.0, 90.0));
        assert!((a.mean - 60.0).abs() < 1e-4);
    }

    #[test]
    fn retention_is_per_tier() {
        let mut c = conn();
        let tx = c.transaction().unwrap();
        let day: Vec<_> = (0..48).map(|h| sample(h * HOUR_MS, 50)).collect();
        add_chunk(&tx, "n1", &day).unwrap();
        fold(&tx, "n1").unwrap();
        // Minutes kept from hour 40 on, hours from the second day on.
        let deleted = prune(&tx, 40 * HOUR_MS, DAY_MS).unwrap();
        tx.commit().unwrap();
        assert_eq!(deleted, 40 + 1);
        let key = (series("temperature").unwrap().0, 0);
        let m = read(&c, "n1", Tier::Minute, 0, 2 * DAY_MS, &[]).unwrap();
        assert_eq!(m.buckets[&key].len(), 8);
        let h = read(&c, "n1", Tier::Hour, 0, 2 * DAY_MS, &[]).unwrap();
        assert_eq!(h.buckets[&key].len(), 24);
    }
}
