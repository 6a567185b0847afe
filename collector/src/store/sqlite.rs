//! The embedded default store: one SQLite file (WAL, synchronous=FULL, so a committed batch
//! survives a crash or power loss before it is acknowledged).
//!
//! Samples are stored as protobuf-encoded `gpufleet.v1.Sample` blobs: compact (~1 KB for an
//! 8-GPU node), and their schema evolves with the wire protocol's rules. Inventories and events
//! are JSON (small, rare, and readable with `sqlite3` when debugging).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use gpufleet_model::convert::Batch;
use gpufleet_model::{
    Event, Finding, FindingRecord, FindingState, Inventory, NodeIdentity, Sample, UnixMs,
};
use gpufleet_proto::v1 as pb;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError, StoredNode, Write};

/// The alerting outbox (`alerting/outbox.rs`): the inbox of finding transitions, per-sink
/// rows, repeat schedules, deliveries and silences. Added in schema version 3.
macro_rules! alert_tables {
    () => {
        "
CREATE TABLE IF NOT EXISTS alert_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    record_json TEXT NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alert_transitions_unrouted ON alert_transitions(routed, id);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    node TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    resolved INTEGER NOT NULL,
    status TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    alert_json TEXT NOT NULL,
    delivery INTEGER,
    UNIQUE (sink, idem_key)
);
CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox(status, due_ms);
CREATE INDEX IF NOT EXISTS alert_outbox_key ON alert_outbox(sink, dedupe_key, id);
CREATE TABLE IF NOT EXISTS alert_active (
    sink TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    alert_json TEXT NOT NULL,
    repeat_ms INTEGER NOT NULL,
    next_repeat_ms INTEGER NOT NULL,
    PRIMARY KEY (sink, dedupe_key)
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    node TEXT NOT NULL,
    notification_json TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    give_up_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries(status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS alert_silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    gpu_index INTEGER,
    cause_prefix TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
"
    };
}

/// The newest layout. A new file is created with it; an older one is first brought to it by
/// [`MIGRATIONS`] (whose steps change existing tables; a table that is new here needs no step:
/// its `CREATE TABLE IF NOT EXISTS` adds it).
const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    gpu_source TEXT NOT NULL,
    inventory_json TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}',
    dropped_samples INTEGER NOT NULL DEFAULT 0,
    dropped_events INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS inventories (
    node TEXT NOT NULL,
    read_at_ms INTEGER NOT NULL,
    inventory_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inventories_node ON inventories(node, read_at_ms);
CREATE TABLE IF NOT EXISTS sessions (
    node TEXT NOT NULL,
    session TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, session)
);
CREATE TABLE IF NOT EXISTS samples (
    node TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    sample_pb BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_node_ts ON samples(node, ts_ms);
CREATE TABLE IF NOT EXISTS sample_head (
    node TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    batch_pb BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_head_node ON sample_head(node, first_ms);
CREATE TABLE IF NOT EXISTS sample_chunks (
    node TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    chunk BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_chunks_node ON sample_chunks(node, last_ms);
CREATE INDEX IF NOT EXISTS sample_chunks_last ON sample_chunks(last_ms);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    event_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_node_ts ON events(node, ts_ms);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE INDEX IF NOT EXISTS events_code ON events(code, node);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    gpu_index INTEGER,
    fired_at_ms INTEGER NOT NULL,
    resolved_at_ms INTEGER,
    finding_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_open ON findings(node, rule_id, gpu_index, resolved_at_ms);
CREATE INDEX IF NOT EXISTS findings_time ON findings(resolved_at_ms, fired_at_ms);
",
    alert_tables!(),
    super::tokens::token_tables!(),
    super::tiers::tier_tables!()
);

/// The steps that bring a file made by an older gpufleet up to [`SCHEMA`]: `MIGRATIONS[i]`
/// takes schema version `i + 1` to `i + 2`. Steps are appended, never edited: files in the field
/// have run the old ones.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: node labels (the agent's `--label`).
    "ALTER TABLE nodes ADD COLUMN labels_json TEXT NOT NULL DEFAULT '{}';",
    // 2 → 3: the alerting outbox.
    alert_tables!(),
    // 3 → 4: hashed bearer tokens (`gpufleet token`, docs/security.md).
    super::tokens::token_tables!(),
    // 4 → 5: samples in compressed chunks (`sample_head` until compacted, `sample_chunks`,
    // both new tables; rows of the old `samples` table are still read and pruned), and when a
    // node was last heard kept with its session instead of rewriting the node's row per batch.
    "ALTER TABLE sessions ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;",
    // 5 → 6: what the node's agent reported dropping (its buffer or spool overflowed while
    // the collector was unreachable), summed over the node's life.
    "ALTER TABLE nodes ADD COLUMN dropped_samples INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE nodes ADD COLUMN dropped_events INTEGER NOT NULL DEFAULT 0;",
    // 6 → 7: downsampled tiers (1-minute and 1-hour aggregates, store/tiers.rs); both tables
    // are new, and samples already in chunks before the upgrade have no aggregates.
    super::tiers::tier_tables!(),
];

/// The version [`SCHEMA`] is, kept in `meta.schema_version`. An older file is migrated on open;
/// a newer one is refused (an older gpufleet cannot know what it would break).
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32 + 1;

/// Samples of a node held in `sample_head` (one row per batch, as received) before they are
/// compacted into one chunk of `sample_chunks`. 120 samples are 2 minutes at the default 1 s
/// interval: a chunk that size stores an 8-GPU sample in about 4 % of its protobuf size
/// (BENCHMARKS.md), and the head stays a few hundred KB per node.
pub const CHUNK_SAMPLES: usize = 120;
/// Most nodes compacted in one commit, so one commit never stalls ingest for long; the rest
/// are compacted by the next commits.
const COMPACTIONS_PER_COMMIT: usize = 8;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Samples each node has in `sample_head` (known after open; kept with every commit).
    head: Mutex<HashMap<String, usize>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_connection(path)?;
        let head = head_counts(&conn).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            head: Mutex::new(head),
        })
    }

    fn head(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite itself inconsistent (transactions
        // roll back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection to the file at `path` (created if missing) in WAL mode with `synchronous=FULL`,
/// the schema brought to [`SCHEMA_VERSION`]. The store's own, and that of the token table
/// (`store/tokens.rs`), which `gpufleet token` opens beside a running collector.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Brings the file at `path` to [`SCHEMA_VERSION`] in one transaction (all or nothing): a new
/// file gets [`SCHEMA`], an older one the steps it lacks, and a newer one is refused before
/// anything in it changes.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let refuse = |reason: String| StoreError::Corrupt {
        what: path.display().to_string(),
        reason,
    };
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .map_err(sql)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let from = match stored.as_deref().map(str::parse::<u32>) {
        // A new file: SCHEMA creates the newest layout.
        None => SCHEMA_VERSION,
        Some(Ok(v)) if (1..=SCHEMA_VERSION).contains(&v) => v,
        Some(Ok(v)) if v > SCHEMA_VERSION => {
            return Err(refuse(format!(
                "schema version {v} is newer than this gpufleet reads (version {SCHEMA_VERSION}); \
                 upgrade gpufleet or use a new --data-dir"
            )));
        }
        Some(_) => {
            return Err(refuse(format!(
                "unknown schema version {:?}; use a new --data-dir",
                stored.unwrap_or_default()
            )));
        }
    };
    for step in &MIGRATIONS[(from - 1) as usize..] {
        tx.execute_batch(step).map_err(sql)?;
    }
    tx.execute_batch(SCHEMA).map_err(sql)?;
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION.to_string()],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    if stored.is_some() && from < SCHEMA_VERSION {
        tracing::info!(
            path = %path.display(),
            from,
            to = SCHEMA_VERSION,
            "database schema upgraded"
        );
    }
    Ok(())
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("stored types always serialize")
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn head_counts(conn: &Connection) -> rusqlite::Result<HashMap<String, usize>> {
    let mut q = conn.prepare("SELECT node, SUM(samples) FROM sample_head GROUP BY node")?;
    let rows = q.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
    })?;
    rows.collect()
}

/// Stores one batch; returns how many samples it added to the node's head (0 for a re-sent
/// batch already stored).
fn apply_batch(
    tx: &rusqlite::Transaction<'_>,
    node: &str,
    session: &str,
    batch: &Batch,
    wire: &[u8],
    at: UnixMs,
) -> Result<usize, StoreError> {
    let last: u64 = tx
        .prepare_cached("SELECT last_sequence FROM sessions WHERE node = ?1 AND session = ?2")?
        .query_row(params![node, session], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0) as u64;
    if batch.sequence <= last {
        return Ok(0); // already stored: a re-send after reconnect
    }
    if let Some(first) = batch.samples.iter().map(|s| s.timestamp.0).min() {
        // The batch as received; its samples join a chunk once the node has enough of them.
        tx.prepare_cached(
            "INSERT INTO sample_head(node, first_ms, samples, batch_pb) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![node, first, batch.samples.len() as i64, wire])?;
    }
    if !batch.events.is_empty() {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events(node, ts_ms, code, event_json) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in &batch.events {
            ins.execute(params![node, e.timestamp.0, e.code, json(e)])?;
        }
    }
    if let Some(inv) = &batch.inventory {
        tx.execute(
            "INSERT INTO inventories(node, read_at_ms, inventory_json) VALUES (?1, ?2, ?3)",
            params![node, inv.read_at.0, json(inv)],
        )?;
        tx.execute(
            "UPDATE nodes SET inventory_json = ?2 WHERE name = ?1",
            params![node, json(inv)],
        )?;
    }
    if batch.dropped_samples > 0 || batch.dropped_events > 0 {
        tx.prepare_cached(
            "UPDATE nodes SET dropped_samples = dropped_samples + ?2,
                dropped_events = dropped_events + ?3 WHERE name = ?1",
        )?
        .execute(params![
            node,
            batch.dropped_samples.min(i64::MAX as u64) as i64,
            batch.dropped_events.min(i64::MAX as u64) as i64
        ])?;
    }
    tx.prepare_cached(
        "INSERT INTO sessions(node, session, last_sequence, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(node, session) DO UPDATE SET last_sequence = excluded.last_sequence,
            last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
    )?
    .execute(params![node, session, batch.sequence as i64, at.0])?;
    Ok(batch.samples.len())
}

/// A node's samples in `[since, until)` as stored (protobuf), oldest first, one per moment, at
/// most `limit`: from chunks, the head, and the table of gpufleet before chunks.
fn wire_samples(
    conn: &Connection,
    node: &str,
    since: UnixMs,
    until: UnixMs,
    limit: usize,
) -> Result<Vec<pb::Sample>, StoreError> {
    let mut wire: Vec<pb::Sample> = Vec::new();
    let mut q = conn.prepare_cached(
        "SELECT chunk FROM sample_chunks WHERE node = ?1 AND last_ms >= ?2 AND first_ms < ?3
             ORDER BY first_ms",
    )?;
    for blob in q.query_map(params![node, since.0, until.0], |r| r.get::<_, Vec<u8>>(0))? {
        let chunk = super::chunk::decode(&blob?)
            .map_err(|e| corrupt(format!("sample chunk of {node}"), e))?;
        wire.extend(chunk);
    }
    held_samples(conn, node, &mut wire)?;
    // Written by gpufleet before chunks (schema 3 and older), until retention deletes them.
    let mut q = conn.prepare_cached(
        "SELECT sample_pb FROM samples WHERE node = ?1 AND ts_ms >= ?2 AND ts_ms < ?3",
    )?;
    for blob in q.query_map(params![node, since.0, until.0], |r| r.get::<_, Vec<u8>>(0))? {
        wire.push(
            pb::Sample::decode(blob?.as_slice())
                .map_err(|e| corrupt(format!("sample of {node}"), e))?,
        );
    }
    wire.retain(|s| (since.0..until.0).contains(&s.timestamp_unix_ms));
    one_per_moment(&mut wire);
    wire.truncate(limit);
    Ok(wire)
}

fn corrupt(what: String, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        reason: e.to_string(),
    }
}

/// The samples of `rows` (head rows: encoded batches), appended to `out`.
fn head_samples(node: &str, blob: &[u8], out: &mut Vec<pb::Sample>) -> Result<(), StoreError> {
    let b = pb::Batch::decode(blob).map_err(|e| corrupt(format!("held batch of {node}"), e))?;
    out.extend(b.samples);
    Ok(())
}

/// Every sample of a node held in `sample_head` (not yet in a chunk), appended to `out`.
fn held_samples(
    conn: &Connection,
    node: &str,
    out: &mut Vec<pb::Sample>,
) -> Result<(), StoreError> {
    let mut q = conn.prepare_cached("SELECT batch_pb FROM sample_head WHERE node = ?1")?;
    for blob in q.query_map([node], |r| r.get::<_, Vec<u8>>(0))? {
        head_samples(node, &blob?, out)?;
    }
    Ok(())
}

/// Sorts samples by time and keeps one per moment (an agent that ticked twice in one
/// millisecond, after a stall, must not show the same moment twice).
fn one_per_moment(samples: &mut Vec<pb::Sample>) {
    samples.sort_by_key(|s| s.timestamp_unix_ms);
    samples.dedup_by_key(|s| s.timestamp_unix_ms);
}

/// Moves a node's held samples into one chunk, in the caller's transaction.
fn compact(tx: &rusqlite::Transaction<'_>, node: &str) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    {
        let mut q = tx.prepare_cached(
            "SELECT rowid, batch_pb FROM sample_head WHERE node = ?1 ORDER BY first_ms, rowid",
        )?;
        for r in q.query_map([node], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })? {
            rows.push(r?);
        }
    }
    let mut samples = Vec::new();
    for (rowid, blob) in &rows {
        if let Err(e) = head_samples(node, blob, &mut samples) {
            // Nothing can read it back: say so once and let the rest be compacted.
            tracing::error!(%node, rowid, "dropping an unreadable held batch: {e}");
        }
    }
    one_per_moment(&mut samples);
    super::tiers::add_chunk(tx, node, &samples)?;
    if let (Some(first), Some(last)) = (
        samples.first().map(|s| s.timestamp_unix_ms),
        samples.last().map(|s| s.timestamp_unix_ms),
    ) {
        tx.prepare_cached(
            "INSERT INTO sample_chunks(node, first_ms, last_ms, samples, chunk)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            node,
            first,
            last,
            samples.len() as i64,
            super::chunk::encode(samples)
        ])?;
    }
    let mut del = tx.prepare_cached("DELETE FROM sample_head WHERE rowid = ?1")?;
    for (rowid, _) in &rows {
        del.execute([rowid])?;
    }
    Ok(())
}

/// Whether a transition goes to alerting. A node finding folded under a fleet-wide one when it
/// fired is told through that one only — its firing and its resolution both; one that fired on
/// its own is resolved on its own, even if it was folded since (so no incident stays open).
fn on_call_hears(tx: &rusqlite::Transaction<'_>, r: &FindingRecord) -> Result<bool, StoreError> {
    let f = &r.finding;
    match r.state {
        FindingState::Firing => Ok(f.folded_into.is_empty()),
        FindingState::Pending => Ok(false),
        FindingState::Resolved => {
            let fired: Option<String> = tx
                .query_row(
                    "SELECT finding_json FROM findings
                     WHERE node = ?1 AND rule_id = ?2 AND gpu_index IS ?3 AND resolved_at_ms IS NULL",
                    params![f.node, f.rule_id, f.gpu_index],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(match fired {
                Some(j) => from_json::<Finding>("finding", &j)?.folded_into.is_empty(),
                None => true,
            })
        }
    }
}

fn apply_finding(tx: &rusqlite::Transaction<'_>, r: &FindingRecord) -> Result<(), StoreError> {
    let f = &r.finding;
    match r.state {
        FindingState::Resolved => {
            tx.execute(
                "UPDATE findings SET resolved_at_ms = ?4, finding_json = ?5
                 WHERE node = ?1 AND rule_id = ?2 AND gpu_index IS ?3 AND resolved_at_ms IS NULL",
                params![
                    f.node,
                    f.rule_id,
                    f.gpu_index,
                    r.resolved_at.unwrap_or(r.fired_at).0,
                    json(f)
                ],
            )?;
        }
        FindingState::Firing => {
            tx.execute(
                "INSERT INTO findings(node, rule_id, gpu_index, fired_at_ms, resolved_at_ms, finding_json)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                params![f.node, f.rule_id, f.gpu_index, r.fired_at.0, json(f)],
            )?;
        }
        FindingState::Pending => {} // pending conditions are not history
    }
    Ok(())
}

fn finding_rows(
    q: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
) -> Result<Vec<FindingRecord>, StoreError> {
    let rows = q.query_map(p, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (fired, resolved, j) = row?;
        out.push(FindingRecord {
            finding: from_json::<Finding>("finding", &j)?,
            state: if resolved.is_some() {
                FindingState::Resolved
            } else {
                FindingState::Firing
            },
            fired_at: UnixMs(fired),
            resolved_at: resolved.map(UnixMs),
        });
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut head = self.head();
        // Head counts as they will be once this commits (`head` itself changes only then).
        let mut held: HashMap<String, usize> = HashMap::new();
        let mut recount = false;
        let tx = conn.transaction()?;
        for w in writes {
            match w {
                Write::Hello { hello, at } => {
                    let inv = json(&hello.inventory);
                    let previous: Option<String> = tx
                        .query_row(
                            "SELECT inventory_json FROM nodes WHERE name = ?1",
                            [&hello.node.hostname],
                            |r| r.get(0),
                        )
                        .optional()?;
                    tx.execute(
                        "INSERT INTO nodes(name, machine_id, boot_id, agent_version, gpu_source,
                                           inventory_json, first_seen_ms, last_seen_ms, labels_json)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
                         ON CONFLICT(name) DO UPDATE SET machine_id = excluded.machine_id,
                            boot_id = excluded.boot_id, agent_version = excluded.agent_version,
                            gpu_source = excluded.gpu_source, inventory_json = excluded.inventory_json,
                            last_seen_ms = excluded.last_seen_ms, labels_json = excluded.labels_json",
                        params![
                            hello.node.hostname,
                            hello.node.machine_id,
                            hello.node.boot_id,
                            hello.agent_version,
                            hello.gpu_source,
                            inv,
                            at.0,
                            json(&hello.labels)
                        ],
                    )?;
                    let changed = match previous {
                        Some(p) => !from_json::<Inventory>("nodes.inventory_json", &p)
                            .map(|p| p.same_content(&hello.inventory))
                            .unwrap_or(false),
                        None => true,
                    };
                    if changed {
                        tx.execute(
                            "INSERT INTO inventories(node, read_at_ms, inventory_json) VALUES (?1, ?2, ?3)",
                            params![hello.node.hostname, hello.inventory.read_at.0, inv],
                        )?;
                    }
                }
                Write::Batch {
                    node,
                    session,
                    batch,
                    wire,
                    at,
                } => {
                    let added = apply_batch(&tx, node, session, batch, wire, *at)?;
                    if added > 0 {
                        *held
                            .entry(node.clone())
                            .or_insert_with(|| head.get(node.as_str()).copied().unwrap_or(0)) +=
                            added;
                    }
                }
                Write::Findings(records) => {
                    for r in records {
                        let tell = on_call_hears(&tx, r)?;
                        apply_finding(&tx, r)?;
                        if tell {
                            super::alerts::to_inbox(&tx, r)?;
                        }
                    }
                }
                Write::RemoveNode { name } => {
                    let mut rows = 0;
                    for table in [
                        "nodes WHERE name",
                        "inventories WHERE node",
                        "sessions WHERE node",
                        "samples WHERE node",
                        "sample_head WHERE node",
                        "sample_chunks WHERE node",
                        "rollup_partial WHERE node",
                        "rollups WHERE node",
                        "events WHERE node",
                        "findings WHERE node",
                    ] {
                        rows += tx.execute(&format!("DELETE FROM {table} = ?1"), [name])?;
                    }
                    tracing::info!(node = %name, rows, "node removed from the store");
                    held.insert(name.clone(), 0);
                }
                Write::Prune {
                    before,
                    minute_before,
                    hour_before,
                } => {
                    let s = tx.execute("DELETE FROM samples WHERE ts_ms < ?1", [before.0])?
                        + tx.execute("DELETE FROM sample_head WHERE first_ms < ?1", [before.0])?
                        + tx.execute("DELETE FROM sample_chunks WHERE last_ms < ?1", [before.0])?;
                    let r = super::tiers::prune(&tx, minute_before.0, hour_before.0)?;
                    recount = true;
                    let e = tx.execute("DELETE FROM events WHERE ts_ms < ?1", [before.0])?;
                    super::alerts::prune(&tx, *before)?;
                    if s + e + r > 0 {
                        tracing::info!(
                            samples = s,
                            events = e,
                            rollups = r,
                            "retention: deleted rows older than {before}"
                        );
                    }
                }
            }
        }
        let full: Vec<String> = held
            .iter()
            .filter(|(_, n)| **n >= CHUNK_SAMPLES)
            .map(|(node, _)| node.clone())
            .chain(
                head.iter()
                    .filter(|(node, n)| **n >= CHUNK_SAMPLES && !held.contains_key(*node))
                    .map(|(node, _)| node.clone()),
            )
            .take(COMPACTIONS_PER_COMMIT)
            .collect();
        for node in &full {
            compact(&tx, node)?;
            held.insert(node.clone(), 0);
        }
        tx.commit()?;
        if recount {
            *head = head_counts(&conn)?;
        } else {
            for (node, n) in held {
                if n == 0 {
                    head.remove(&node);
                } else {
                    head.insert(node, n);
                }
            }
        }
        Ok(())
    }

    fn last_sequence(&self, node: &str, session: &str) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_sequence FROM sessions WHERE node = ?1 AND session = ?2",
                params![node, session],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0) as u64)
    }

    fn nodes(&self) -> Result<Vec<StoredNode>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT name, machine_id, boot_id, agent_version, gpu_source, inventory_json,
                    first_seen_ms,
                    MAX(last_seen_ms, COALESCE(
                        (SELECT MAX(s.last_seen_ms) FROM sessions s WHERE s.node = nodes.name), 0)),
                    labels_json, dropped_samples, dropped_events FROM nodes ORDER BY name",
        )?;
        let rows = q.query_map([], |r| {
            Ok((
                NodeIdentity {
                    hostname: r.get(0)?,
                    machine_id: r.get(1)?,
                    boot_id: r.get(2)?,
                },
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
                (r.get::<_, i64>(9)?, r.get::<_, i64>(10)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (identity, agent_version, gpu_source, inv, first, last, labels, dropped) = row?;
            out.push(StoredNode {
                inventory: from_json(&format!("inventory of {}", identity.hostname), &inv)?,
                labels: from_json(&format!("labels of {}", identity.hostname), &labels)?,
                identity,
                agent_version,
                gpu_source,
                first_seen: UnixMs(first),
                last_seen: UnixMs(last),
                dropped_samples: dropped.0.max(0) as u64,
                dropped_events: dropped.1.max(0) as u64,
            });
        }
        Ok(out)
    }

    fn samples(
        &self,
        node: &str,
        since: UnixMs,
        until: UnixMs,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let conn = self.conn();
        wire_samples(&conn, node, since, until, limit)?
            .into_iter()
            .map(|s| Sample::try_from(s).map_err(|e| corrupt(format!("sample of {node}"), e)))
            .collect()
    }

    fn series(
        &self,
        node: &str,
        since: UnixMs,
        until: UnixMs,
        step_ms: i64,
        limit: usize,
    ) -> Result<(super::Tier, super::rollup::Rollup), StoreError> {
        use super::Tier;
        let step = step_ms.max(1);
        let conn = self.conn();
        let tier = Tier::for_step(step);
        let mut out = super::rollup::Rollup::default();
        if tier == Tier::Raw {
            for s in wire_samples(&conn, node, since, until, limit)? {
                out.add(&s, step);
            }
        } else {
            let mut head = Vec::new();
            held_samples(&conn, node, &mut head)?;
            one_per_moment(&mut head);
            let r = super::tiers::read(&conn, node, tier, since.0, until.0, &head)?;
            out.merge(&r, step);
        }
        Ok((tier, out))
    }

    fn events(
        &self,
        node: Option<&str>,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<(String, Event)>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT node, event_json FROM (
                SELECT id, node, event_json FROM events
                WHERE (?1 IS NULL OR node = ?1) AND ts_ms >= ?2
                ORDER BY ts_ms DESC, id DESC LIMIT ?3
             ) ORDER BY id",
        )?;
        let rows = q.query_map(params![node, since.0, limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, j) = row?;
            out.push((n, from_json("event", &j)?));
        }
        Ok(out)
    }

    fn findings(
        &self,
        node: Option<&str>,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT fired_at_ms, resolved_at_ms, finding_json FROM (
                SELECT id, fired_at_ms, resolved_at_ms, finding_json FROM findings
                WHERE (?1 IS NULL OR node = ?1) AND (resolved_at_ms IS NULL OR resolved_at_ms >= ?2)
                ORDER BY fired_at_ms DESC, id DESC LIMIT ?3
             ) ORDER BY fired_at_ms, id",
        )?;
        finding_rows(&mut q, params![node, since.0, limit as i64])
    }

    fn alerts(&self) -> &dyn crate::alerting::outbox::AlertStore {
        self
    }

    fn open_findings(&self) -> Result<Vec<FindingRecord>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT fired_at_ms, resolved_at_ms, finding_json FROM findings
             WHERE resolved_at_ms IS NULL ORDER BY id",
        )?;
        finding_rows(&mut q, [])
    }

    fn inventories(&self, node: Option<&str>) -> Result<Vec<(String, Inventory)>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT node, inventory_json FROM inventories WHERE (?1 IS NULL OR node = ?1)
             ORDER BY node, read_at_ms, rowid",
        )?;
        let rows = q.query_map([node], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, j) = row?;
            let inv = from_json(&format!("inventory of {n}"), &j)?;
            out.push((n, inv));
        }
        Ok(out)
    }

    fn events_with_code_prefix(
        &self,
        node: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<(String, Event)>, StoreError> {
        let conn = self.conn();
        // A range over `code` rather than LIKE, so the `events_code` index answers it.
        let mut end = prefix.to_string();
        end.push(char::MAX);
        let mut q = conn.prepare_cached(
            "SELECT node, event_json FROM events
             WHERE code >= ?1 AND code < ?2 AND (?3 IS NULL OR node = ?3)
             ORDER BY ts_ms, id",
        )?;
        let rows = q.query_map(params![prefix, end, node], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, j) = row?;
            out.push((n, from_json("event", &j)?));
        }
        Ok(out)
    }

    fn inventory_history(&self, node: &str) -> Result<Vec<Inventory>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare_cached(
            "SELECT inventory_json FROM inventories WHERE node = ?1 ORDER BY read_at_ms",
        )?;
        let rows = q.query_map([node], |r| r.get::<_, String>(0))?;
        rows.map(|j| from_json("inventory", &j?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::convert::Hello;
    use gpufleet_model::{EventKind, GpuSample, Severity};

    fn hello(node: &str, driver: &str) -> Hello {
        let mut inventory = Inventory::default();
        inventory.driver.driver_version = driver.into();
        Hello {
            protocol_version: 1,
            node: NodeIdentity {
                hostname: node.into(),
                ..Default::default()
            },
            agent_version: "0.1.0".into(),
            session_id: "s1".into(),
            inventory,
            gpu_source: "simulated".into(),
            labels: Default::default(),
        }
    }

    fn batch(seq: u64, t: i64) -> Batch {
        Batch {
            sequence: seq,
            samples: vec![Sample {
                timestamp: UnixMs(t),
                gpus: vec![GpuSample {
                    temperature_gpu_celsius: Some(61),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            events: vec![Event::new(
                UnixMs(t),
                EventKind::Xid,
                Severity::Critical,
                "xid.79",
                "x",
            )],
            ..Default::default()
        }
    }

    fn write_batch(node: &str, b: Batch) -> Write {
        Write::batch(node, "s1", b, UnixMs(10))
    }

    fn count(s: &SqliteStore, sql: &str) -> i64 {
        s.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn samples_move_into_chunks_and_read_back_once_each_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let total = CHUNK_SAMPLES * 2 + 7;
        {
            let s = SqliteStore::open(&path).unwrap();
            s.apply(&[Write::Hello {
                hello: Box::new(hello("n1", "550.54.15")),
                at: UnixMs(1),
            }])
            .unwrap();
            // Batches of various sizes, one commit each, plus one moment sent twice.
            let mut seq = 0;
            let mut t = 0;
            while t < total as i64 {
                seq += 1;
                let mut b = batch(seq, 1000 + t);
                for k in 1..(seq % 3) as i64 {
                    let mut more = b.samples[0].clone();
                    more.timestamp = UnixMs(1000 + t + k);
                    b.samples.push(more);
                }
                b.samples.retain(|x| x.timestamp.0 < 1000 + total as i64);
                t += b.samples.len() as i64;
                s.apply(&[write_batch("n1", b)]).unwrap();
            }
            s.apply(&[write_batch("n1", batch(seq + 1, 1005))]).unwrap();
            assert_eq!(count(&s, "SELECT COUNT(*) FROM sample_chunks"), 2);
            assert!(count(&s, "SELECT SUM(samples) FROM sample_head") < CHUNK_SAMPLES as i64);
        }
        let s = SqliteStore::open(&path).unwrap();
        let all = s
            .samples("n1", UnixMs(0), UnixMs(i64::MAX), 100_000)
            .unwrap();
        let times: Vec<i64> = all.iter().map(|x| x.timestamp.0).collect();
        assert_eq!(times, (1000..1000 + total as i64).collect::<Vec<_>>());
        assert_eq!(all[3].gpus[0].temperature_gpu_celsius, Some(61));
        // A window inside a chunk, and a limit.
        let some = s.samples("n1", UnixMs(1100), UnixMs(1110), 5).unwrap();
        let times: Vec<i64> = some.iter().map(|x| x.timestamp.0).collect();
        assert_eq!(times, vec![1100, 1101, 1102, 1103, 1104]);
        // The head count came back with the reopen: the next batches compact on time.
        let held = count(&s, "SELECT SUM(samples) FROM sample_head") as usize;
        let mut seq = 10_000;
        for t in 0..(CHUNK_SAMPLES - held) as i64 {
            seq += 1;
            s.apply(&[write_batch("n1", batch(seq, 5000 + t))]).unwrap();
        }
        assert_eq!(count(&s, "SELECT COUNT(*) FROM sample_chunks"), 3);
        // Retention drops whole chunks that ended before the cut.
        s.apply(&[Write::Prune {
            before: UnixMs(1000 + CHUNK_SAMPLES as i64 + 1),
            minute_before: UnixMs(0),
            hour_before: UnixMs(0),
        }])
        .unwrap();
        assert_eq!(count(&s, "SELECT COUNT(*) FROM sample_chunks"), 2);
        s.apply(&[Write::RemoveNode { name: "n1".into() }]).unwrap();
        assert_eq!(count(&s, "SELECT COUNT(*) FROM sample_chunks"), 0);
        assert_eq!(count(&s, "SELECT COUNT(*) FROM sample_head"), 0);
    }

    #[test]
    fn drops_the_agent_reports_are_summed_once_per_batch_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.apply(&[Write::Hello {
                hello: Box::new(hello("n1", "550.54.15")),
                at: UnixMs(5),
            }])
            .unwrap();
            let mut b = batch(1, 100);
            b.dropped_samples = 40;
            b.dropped_events = 2;
            s.apply(&[write_batch("n1", b.clone())]).unwrap();
            // Re-sent after a lost ack: stored once, counted once.
            s.apply(&[write_batch("n1", b)]).unwrap();
            let mut b = batch(2, 200);
            b.dropped_samples = 2;
            s.apply(&[write_batch("n1", b)]).unwrap();
        }
        let n = &SqliteStore::open(&path).unwrap().nodes().unwrap()[0];
        assert_eq!((n.dropped_samples, n.dropped_events), (42, 2));
    }

    #[test]
    fn last_seen_comes_from_the_latest_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        s.apply(&[Write::Hello {
            hello: Box::new(hello("n1", "550.54.15")),
            at: UnixMs(5),
        }])
        .unwrap();
        s.apply(&[Write::batch("n1", "s1", batch(1, 100), UnixMs(4242))])
            .unwrap();
        assert_eq!(s.nodes().unwrap()[0].last_seen, UnixMs(4242));
    }

    #[test]
    fn a_removed_node_leaves_nothing_behind_and_others_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        for n in ["gone", "kept"] {
            s.apply(&[Write::Hello {
                hello: Box::new(hello(n, "550.54.15")),
                at: UnixMs(0),
            }])
            .unwrap();
            s.apply(&[write_batch(n, batch(1, 5_000))]).unwrap();
        }
        s.apply(&[Write::RemoveNode {
            name: "gone".into(),
        }])
        .unwrap();
        let names: Vec<_> = s
            .nodes()
            .unwrap()
            .into_iter()
            .map(|n| n.identity.hostname)
            .collect();
        assert_eq!(names, ["kept"]);
        let all = UnixMs(i64::MAX);
        assert!(s.samples("gone", UnixMs(0), all, 10).unwrap().is_empty());
        assert!(s.events(Some("gone"), UnixMs(0), 10).unwrap().is_empty());
        assert!(s.inventory_history("gone").unwrap().is_empty());
        assert_eq!(s.last_sequence("gone", "s1").unwrap(), 0);
        assert_eq!(s.samples("kept", UnixMs(0), all, 10).unwrap().len(), 1);
    }

    #[test]
    fn one_moment_of_a_node_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        s.apply(&[Write::Hello {
            hello: Box::new(hello("n1", "550.54.15")),
            at: UnixMs(0),
        }])
        .unwrap();
        let mut b = batch(1, 5_000);
        b.samples.push(b.samples[0].clone());
        s.apply(&[write_batch("n1", b), write_batch("n1", batch(2, 5_000))])
            .unwrap();
        let stored = s.samples("n1", UnixMs(0), UnixMs(i64::MAX), 10).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(s.last_sequence("n1", "s1").unwrap(), 2);
    }

    #[test]
    fn stores_and_reads_back_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.apply(&[
                Write::Hello {
                    hello: Box::new(hello("n1", "550.54.15")),
                    at: UnixMs(1),
                },
                write_batch("n1", batch(1, 1_000)),
                write_batch("n1", batch(2, 2_000)),
            ])
            .unwrap();
            // A re-sent batch is skipped, not duplicated.
            s.apply(&[write_batch("n1", batch(2, 2_000))]).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.last_sequence("n1", "s1").unwrap(), 2);
        let nodes = s.nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].inventory.driver.driver_version, "550.54.15");
        let samples = s.samples("n1", UnixMs(0), UnixMs(i64::MAX), 100).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].gpus[0].temperature_gpu_celsius, Some(61));
        assert_eq!(samples[1].gpus[0].temperature_memory_celsius, None);
        assert_eq!(s.events(Some("n1"), UnixMs(0), 100).unwrap().len(), 2);
        assert_eq!(s.events(None, UnixMs(1_500), 100).unwrap().len(), 1);
    }

    #[test]
    fn findings_folded_under_a_fleet_wide_one_are_not_told_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        let rec = |node: &str, folded: &str, state, resolved: Option<i64>| FindingRecord {
            finding: Finding {
                rule_id: "gpu.power.sw_cap".into(),
                node: node.into(),
                gpu_index: Some(0),
                folded_into: folded.into(),
                ..Default::default()
            },
            state,
            fired_at: UnixMs(1_000),
            resolved_at: resolved.map(UnixMs),
        };
        let fleet = "fleet:gpu_model=H100";
        // Folded when it fired: neither its firing nor its resolve is told. On its own when
        // it fired: both are, even though it was folded by the time it resolved.
        s.apply(&[Write::Findings(vec![
            rec("folded", fleet, FindingState::Firing, None),
            rec("alone", "", FindingState::Firing, None),
        ])])
        .unwrap();
        s.apply(&[Write::Findings(vec![
            rec("folded", fleet, FindingState::Resolved, Some(9_000)),
            rec("alone", fleet, FindingState::Resolved, Some(9_000)),
        ])])
        .unwrap();
        let told: Vec<(String, FindingState)> = s
            .alerts()
            .unrouted(10)
            .unwrap()
            .into_iter()
            .map(|e| (e.record.finding.node, e.record.state))
            .collect();
        assert_eq!(
            told,
            [
                ("alone".to_string(), FindingState::Firing),
                ("alone".to_string(), FindingState::Resolved)
            ]
        );
    }

    #[test]
    fn findings_fire_resolve_and_are_queried_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        let f = |node: &str| Finding {
            rule_id: "gpu.thermal.hw_slowdown".into(),
            node: node.into(),
            gpu_index: Some(3),
            ..Default::default()
        };
        let rec = |node: &str, state, fired, resolved: Option<i64>| FindingRecord {
            finding: f(node),
            state,
            fired_at: UnixMs(fired),
            resolved_at: resolved.map(UnixMs),
        };
        s.apply(&[Write::Findings(vec![
            rec("a", FindingState::Firing, 1_000, None),
            rec("b", FindingState::Firing, 2_000, None),
        ])])
        .unwrap();
        s.apply(&[Write::Findings(vec![rec(
            "a",
            FindingState::Resolved,
            1_000,
            Some(5_000),
        )])])
        .unwrap();
        assert_eq!(s.open_findings().unwrap().len(), 1);
        let all = s.findings(None, UnixMs(0), 100).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].resolved_at, Some(UnixMs(5_000)));
        assert_eq!(all[0].state, FindingState::Resolved);
        // Resolved before `since`: left out; still firing: kept.
        let recent = s.findings(None, UnixMs(6_000), 100).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].finding.node, "b");
        assert_eq!(s.findings(Some("a"), UnixMs(0), 100).unwrap().len(), 1);
    }

    #[test]
    fn prune_deletes_only_older_samples_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        s.apply(&[
            Write::Hello {
                hello: Box::new(hello("n1", "1")),
                at: UnixMs(1),
            },
            write_batch("n1", batch(1, 1_000)),
            write_batch("n1", batch(2, 5_000)),
        ])
        .unwrap();
        s.apply(&[Write::Prune {
            before: UnixMs(2_000),
            minute_before: UnixMs(0),
            hour_before: UnixMs(0),
        }])
        .unwrap();
        let left = s.samples("n1", UnixMs(0), UnixMs(i64::MAX), 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].timestamp, UnixMs(5_000));
        assert_eq!(s.events(None, UnixMs(0), 10).unwrap().len(), 1);
        assert_eq!(s.nodes().unwrap().len(), 1, "nodes are kept");
    }

    #[test]
    fn inventory_history_records_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        for (i, d) in ["550.54.15", "550.54.15", "550.90.07"].iter().enumerate() {
            s.apply(&[Write::Hello {
                hello: Box::new(hello("n1", d)),
                at: UnixMs(i as i64),
            }])
            .unwrap();
        }
        let h = s.inventory_history("n1").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].driver.driver_version, "550.90.07");
    }

    #[test]
    fn inventories_and_drift_events_are_read_per_node_or_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("f.db")).unwrap();
        for (i, (n, d)) in [("b", "1"), ("a", "1"), ("a", "2")].iter().enumerate() {
            let mut h = hello(n, d);
            h.inventory.read_at = UnixMs(i as i64);
            s.apply(&[Write::Hello {
                hello: Box::new(h),
                at: UnixMs(i as i64),
            }])
            .unwrap();
        }
        let all = s.inventories(None).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|(n, i)| (n.as_str(), i.driver.driver_version.as_str()))
            .collect();
        assert_eq!(names, [("a", "1"), ("a", "2"), ("b", "1")]);
        assert_eq!(s.inventories(Some("b")).unwrap().len(), 1);

        let mut b = batch(1, 10);
        b.events = [
            "drift.driver_version",
            "xid.79",
            "drift.vbios_version",
            "drifting",
        ]
        .iter()
        .map(|c| Event::new(UnixMs(10), EventKind::Drift, Severity::Info, *c, "m"))
        .collect();
        s.apply(&[write_batch("a", b)]).unwrap();
        let codes: Vec<_> = s
            .events_with_code_prefix(Some("a"), "drift.")
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.code)
            .collect();
        assert_eq!(codes, ["drift.driver_version", "drift.vbios_version"]);
        assert!(
            s.events_with_code_prefix(Some("b"), "drift.")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn labels_are_stored_restored_and_replaced_by_the_next_hello() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let labelled = |items: &[(&str, &str)]| {
            let mut h = hello("n1", "550.54.15");
            h.labels = items
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Write::Hello {
                hello: Box::new(h),
                at: UnixMs(1),
            }
        };
        SqliteStore::open(&path)
            .unwrap()
            .apply(&[labelled(&[("pool", "training"), ("rack", "r12")])])
            .unwrap();
        let s = SqliteStore::open(&path).unwrap();
        let l = &s.nodes().unwrap()[0].labels;
        assert_eq!(
            gpufleet_model::labels::format_labels(l),
            "pool=training,rack=r12"
        );
        // The agent restarted with other labels: the newest Hello's labels are the node's.
        s.apply(&[labelled(&[("pool", "inference")])]).unwrap();
        let l = &s.nodes().unwrap()[0].labels;
        assert_eq!(gpufleet_model::labels::format_labels(l), "pool=inference");
    }

    /// The layout gpufleet wrote as schema version 1 (before labels), as files in the field have it.
    const SCHEMA_V1: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY, machine_id TEXT NOT NULL, boot_id TEXT NOT NULL,
        agent_version TEXT NOT NULL, gpu_source TEXT NOT NULL, inventory_json TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE inventories (node TEXT NOT NULL, read_at_ms INTEGER NOT NULL, inventory_json TEXT NOT NULL);
    CREATE INDEX inventories_node ON inventories(node, read_at_ms);
    CREATE TABLE sessions (
        node TEXT NOT NULL, session TEXT NOT NULL, last_sequence INTEGER NOT NULL,
        PRIMARY KEY (node, session)
    );
    CREATE TABLE samples (node TEXT NOT NULL, ts_ms INTEGER NOT NULL, sample_pb BLOB NOT NULL);
    CREATE INDEX samples_node_ts ON samples(node, ts_ms);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, ts_ms INTEGER NOT NULL,
        code TEXT NOT NULL, event_json TEXT NOT NULL
    );
    CREATE INDEX events_node_ts ON events(node, ts_ms);
    CREATE INDEX events_ts ON events(ts_ms);
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, rule_id TEXT NOT NULL,
        gpu_index INTEGER, fired_at_ms INTEGER NOT NULL, resolved_at_ms INTEGER,
        finding_json TEXT NOT NULL
    );
    CREATE INDEX findings_open ON findings(node, rule_id, gpu_index, resolved_at_ms);
    CREATE INDEX findings_time ON findings(resolved_at_ms, fired_at_ms);
    INSERT INTO meta(key, value) VALUES ('schema_version', '1');
    ";

    fn schema_version(path: &Path) -> String {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA_V1).unwrap();
        old.execute(
            "INSERT INTO nodes VALUES ('old-node', 'm1', 'b1', '0.1.0', 'nvml', ?1, 5, 9)",
            [json(&Inventory::default())],
        )
        .unwrap();
        drop(old);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(schema_version(&path), SCHEMA_VERSION.to_string());
        let nodes = s.nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].identity.hostname, "old-node");
        assert_eq!(nodes[0].last_seen, UnixMs(9));
        assert!(
            nodes[0].labels.is_empty(),
            "a node stored before labels has none"
        );
        // The migrated file takes labels like a new one, and opens again as it is.
        let mut h = hello("old-node", "550.54.15");
        h.labels.insert("pool".into(), "training".into());
        s.apply(&[Write::Hello {
            hello: Box::new(h),
            at: UnixMs(20),
        }])
        .unwrap();
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let nodes = s.nodes().unwrap();
        assert_eq!(nodes[0].labels["pool"], "training");
        assert_eq!(nodes[0].first_seen, UnixMs(5));
        assert_eq!(schema_version(&path), SCHEMA_VERSION.to_string());
    }

    #[test]
    fn an_unreadable_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE meta SET value = 'two' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("unknown schema version \"two\""), "{err}");
    }

    #[test]
    fn refuses_a_newer_schema_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(c);
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        assert!(err.contains("upgrade gpufleet"), "{err}");
        assert_eq!(
            schema_version(&path),
            "99",
            "a refused file is left as it was"
        );
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("f.db"), "{err}");
        assert!(
            err.contains("integrity_check") && err.contains("move it aside"),
            "{err}"
        );
    }
}
