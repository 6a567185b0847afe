//! The durable outbox: every step from a finding transition to a receiver's answer is a row in
//! the collector's store, so a restart (SIGKILL included) loses no notification and repeats
//! none for the same state change.
//!
//! 1. The store writes each finding transition to an inbox in the same transaction as the
//!    finding itself (`alert_transitions`).
//! 2. The dispatcher routes inbox entries into per-sink outbox rows (`alert_outbox`) and marks
//!    them routed, in one transaction.
//! 3. Due rows of one sink and node are claimed into one delivery (`alert_deliveries`, with
//!    the notification's JSON and its stable id) or recorded as silenced.
//! 4. Each attempt's result is stored before the next: delivered, retry at T, or failed.
//!
//! The only repeat a crash can cause is a retry of a delivery whose answer was lost; it
//! carries the same id (the receivers' idempotency key).

use gpufleet_model::{FindingRecord, UnixMs};
use serde::Serialize;

use super::alert::{Alert, Notification};
use super::silence::{NewSilence, Silence};
use crate::store::StoreError;

/// A finding transition not yet routed.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub id: i64,
    pub record: FindingRecord,
}

/// One sink's share of a routed transition.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub sink: String,
    pub alert: Alert,
    /// Not sent before this (group window, minimum firing duration).
    pub due: UnixMs,
    /// Earliest due time this row may be pulled to by joining an earlier group of its node.
    pub not_before: UnixMs,
    /// Firing only: re-send every this many ms while it keeps firing.
    pub repeat_ms: u64,
}

/// One inbox entry's routing, applied atomically with marking it routed.
#[derive(Debug, Clone)]
pub struct Routed {
    pub inbox_id: i64,
    pub sinks: Vec<Enqueue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Being tried (retries pending).
    Sending,
    Delivered,
    /// Gave up (give-up time passed, or the receiver refused it for good).
    Failed,
    /// Held back by a silence: recorded, not sent.
    Silenced,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Silenced => "silenced",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "sending" => DeliveryStatus::Sending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "silenced" => DeliveryStatus::Silenced,
            _ => return None,
        })
    }
}

/// One notification to one sink, and how its delivery went.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub sink: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: UnixMs,
    pub next_attempt_at: UnixMs,
    pub give_up_at: UnixMs,
    pub finished_at: Option<UnixMs>,
    /// The receiver's last answer, the last error, or the silence that held it back.
    pub detail: String,
    pub notification: Notification,
}

/// The result of one attempt, to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered { answer: String },
    Retry { at: UnixMs, error: String },
    Failed { error: String },
}

/// What [`AlertStore::claim_due`] did.
#[derive(Debug, Default, Clone)]
pub struct Claimed {
    /// New deliveries to send now.
    pub deliveries: Vec<Delivery>,
    /// Silenced notifications recorded, per sink.
    pub silenced: Vec<String>,
}

/// The outbox's storage (implemented by the SQLite store in `store/alerts.rs`). Every method
/// is one transaction.
pub trait AlertStore: Send + Sync {
    /// Inbox entries not yet routed, oldest first.
    fn unrouted(&self, limit: usize) -> Result<Vec<InboxEntry>, StoreError>;
    /// Applies routing: for a firing alert, a queued row per sink and its repeat schedule; for
    /// a resolved one, a queued row only where the firing one went out (a firing row still
    /// waiting is cancelled instead; a silenced one makes the resolve silenced too). Marks the
    /// entries routed.
    fn route(&self, routed: &[Routed], now: UnixMs) -> Result<(), StoreError>;
    /// Queues a repeat of every still-firing alert whose repeat time has come.
    fn enqueue_repeats(&self, now: UnixMs) -> Result<usize, StoreError>;
    /// Claims queued rows due by `now`, grouped per sink and node: silenced ones (per
    /// `silences`) are recorded as silenced deliveries; the others become deliveries to send,
    /// first attempt at `now`, given up at `give_up_at`.
    fn claim_due(
        &self,
        now: UnixMs,
        silences: &[Silence],
        give_up_at: UnixMs,
    ) -> Result<Claimed, StoreError>;
    /// Deliveries still being tried whose next attempt is due (after a restart: all of them
    /// that are due).
    fn retries_due(&self, now: UnixMs) -> Result<Vec<Delivery>, StoreError>;
    /// Stores one attempt's result.
    fn finish_attempt(
        &self,
        delivery: i64,
        attempt: &Attempt,
        now: UnixMs,
    ) -> Result<(), StoreError>;
    /// Records a delivery made outside the outbox (`gpufleet alerts test`).
    fn record_test(
        &self,
        sink: &str,
        notification: &Notification,
        attempt: &Attempt,
        now: UnixMs,
    ) -> Result<(), StoreError>;
    /// The earliest time anything queued, retrying or repeating comes due.
    fn next_wake(&self) -> Result<Option<UnixMs>, StoreError>;
    /// Rows waiting to be sent (queued, or in a delivery being tried).
    fn pending(&self) -> Result<u64, StoreError>;
    /// Most recent deliveries, newest first.
    fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    fn add_silence(&self, s: &NewSilence) -> Result<Silence, StoreError>;
    /// Silences, newest first; expired ones only with `include_expired`.
    fn silences(&self, now: UnixMs, include_expired: bool) -> Result<Vec<Silence>, StoreError>;
    /// Removes a silence; false if there is none with that id.
    fn remove_silence(&self, id: i64) -> Result<bool, StoreError>;
}
