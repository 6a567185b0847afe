//! Durable fleet history behind one trait, so another backend (PostgreSQL, a TSDB) can come
//! later without touching ingest, query or diagnosis. SQLite is the embedded default.

use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Event, FindingRecord, Inventory, Labels, NodeIdentity, Sample, UnixMs};

mod alerts;
pub mod chunk;
pub mod rollup;
pub mod sqlite;
mod tiers;
pub mod tokens;
mod varint;
pub mod writer;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database {path}: {source} (if the file is damaged, `sqlite3 {path} 'PRAGMA integrity_check'` \
         tells; move it aside to start over with an empty database)"
    )]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored data is corrupt ({what}): {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the storage writer has stopped")]
    WriterGone,
}

/// A node as the store remembers it (to rebuild fleet state after a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNode {
    pub identity: NodeIdentity,
    /// From the node's last Hello.
    pub labels: Labels,
    pub agent_version: String,
    pub gpu_source: String,
    pub inventory: Inventory,
    pub first_seen: UnixMs,
    pub last_seen: UnixMs,
    /// Samples and events the node's agent reported dropping, over the node's life.
    pub dropped_samples: u64,
    pub dropped_events: u64,
}

/// One write: a `Hello` (node + inventory) or a batch from an agent session.
#[derive(Debug, Clone)]
pub enum Write {
    Hello {
        hello: Box<Hello>,
        at: UnixMs,
    },
    Batch {
        node: String,
        session: String,
        batch: std::sync::Arc<Batch>,
        /// The batch as it came off the wire (protobuf): its samples are stored as these bytes
        /// until they are compacted into a chunk, so the store never re-encodes them.
        wire: Vec<u8>,
        at: UnixMs,
    },
    /// Findings that started firing (stored) or resolved (closed) in one evaluation; each
    /// also enters the alerting inbox in the same transaction.
    Findings(Vec<FindingRecord>),
    /// Retention: delete samples and events older than `before`, 1-minute aggregates older
    /// than `minute_before` and 1-hour aggregates older than `hour_before`.
    Prune {
        before: UnixMs,
        minute_before: UnixMs,
        hour_before: UnixMs,
    },
    /// A decommissioned node: everything stored about it (`gpufleet node rm NAME`).
    RemoveNode {
        name: String,
    },
}

impl Write {
    /// A batch write, encoding `batch` for the store (ingest passes the received bytes instead).
    pub fn batch(node: &str, session: &str, batch: Batch, at: UnixMs) -> Write {
        use prost::Message;
        let wire = gpufleet_proto::v1::Batch::from(batch.clone()).encode_to_vec();
        Write::Batch {
            node: node.into(),
            session: session.into(),
            batch: std::sync::Arc::new(batch),
            wire,
            at,
        }
    }
}

/// Where an answer about a series comes from: raw samples, or a downsampled tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Raw,
    Minute,
    Hour,
}

impl Tier {
    /// The finest step the tier answers in, ms (raw: any).
    pub fn step_ms(self) -> i64 {
        match self {
            Tier::Raw => 1,
            Tier::Minute => rollup::MINUTE_MS,
            Tier::Hour => rollup::HOUR_MS,
        }
    }

    /// The coarsest tier whose buckets add up to `step_ms` exactly.
    pub fn for_step(step_ms: i64) -> Tier {
        if step_ms > 0 && step_ms % rollup::HOUR_MS == 0 {
            Tier::Hour
        } else if step_ms > 0 && step_ms % rollup::MINUTE_MS == 0 {
            Tier::Minute
        } else {
            Tier::Raw
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }
}

/// Storage backend. Implementations are synchronous; the collector calls them from its
/// writer thread and from `spawn_blocking`, never on the async reactor.
pub trait Store: Send + Sync {
    /// Applies writes atomically (all or none) and durably before returning. For batches,
    /// a (node, session, sequence) already stored is skipped, so re-sent batches are idempotent.
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError>;
    /// Highest batch sequence stored for an agent session (0 if none).
    fn last_sequence(&self, node: &str, session: &str) -> Result<u64, StoreError>;
    fn nodes(&self) -> Result<Vec<StoredNode>, StoreError>;
    /// Samples of a node in `[since, until)`, oldest first, at most `limit`.
    fn samples(
        &self,
        node: &str,
        since: UnixMs,
        until: UnixMs,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError>;
    /// The node's rolled-up series ([`rollup::SERIES`]) as count, min, max and mean per bucket
    /// of `step_ms`, for buckets starting in `[since, until)`, from [`Tier::for_step`]: the
    /// 1-hour or 1-minute tier, or raw samples (at most `limit`) for a step below a minute.
    fn series(
        &self,
        node: &str,
        since: UnixMs,
        until: UnixMs,
        step_ms: i64,
        limit: usize,
    ) -> Result<(Tier, rollup::Rollup), StoreError>;
    /// Events (of one node, or all) at or after `since`, oldest first, at most `limit` (the
    /// newest `limit` when there are more).
    fn events(
        &self,
        node: Option<&str>,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<(String, Event)>, StoreError>;
    /// Inventories a node reported over time, oldest first.
    fn inventory_history(&self, node: &str) -> Result<Vec<Inventory>, StoreError>;
    /// Every stored inventory of one node or of all, by node, then oldest first.
    fn inventories(&self, node: Option<&str>) -> Result<Vec<(String, Inventory)>, StoreError>;
    /// Events (of one node, or all) whose code starts with `prefix` (`drift.`), oldest first.
    fn events_with_code_prefix(
        &self,
        node: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<(String, Event)>, StoreError>;
    /// Findings (of one node, or all) that were firing at any time at or after `since`,
    /// oldest first, at most `limit` (the newest when there are more).
    fn findings(
        &self,
        node: Option<&str>,
        since: UnixMs,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError>;
    /// Findings still firing (not resolved), to carry across a collector restart.
    fn open_findings(&self) -> Result<Vec<FindingRecord>, StoreError>;
    /// The alerting outbox, in the same database (finding transitions reach its inbox in the
    /// transaction that stores them).
    fn alerts(&self) -> &dyn crate::alerting::outbox::AlertStore;
}
