//! The stream to the collector: one long-lived gRPC stream, batches with sequence numbers,
//! a bounded buffer of batches not yet acknowledged, re-sent after every reconnect.
//!
//! Invariant: a batch leaves the buffer only when the collector acknowledged it as durably
//! stored, or when the buffer overflows — then the oldest goes and the drop is counted and
//! reported in the next batch (`dropped_samples`), so the collector knows what it missed.
//!
//! With a spool ([`crate::spool`]), every change to the buffer is also written to disk, and a
//! restarted agent starts from what the spool held: same session, same sequence numbers, so
//! the collector stores each batch once.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::spool::Spool;
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Event, Inventory, Labels, NodeIdentity, Sample};
use gpufleet_proto::v1::{
    self as pb, AgentMessage, agent_message, collector_message, telemetry_client::TelemetryClient,
};
use tokio::sync::{mpsc, watch};

/// Counters other parts (and tests) can read.
#[derive(Debug, Default)]
pub struct UplinkStats {
    pub connects: AtomicU64,
    pub batches_sent: AtomicU64,
    pub acked_sequence: AtomicU64,
    pub dropped_samples: AtomicU64,
    /// Samples the sampler took this run (handed to the uplink, or dropped and counted in
    /// `dropped_samples` when its queue was full).
    pub samples: AtomicU64,
    /// Samples the sampler could not hand over (the uplink's queue full); the uplink reports
    /// them as dropped in its next batch.
    pub sampler_dropped: AtomicU64,
    /// Samples held for the collector (sent or not, not yet acknowledged).
    pub buffered_samples: AtomicU64,
    /// Bytes the spool holds on disk.
    pub spool_bytes: AtomicU64,
    /// Spool writes that failed (the spool is then off until the agent restarts).
    pub spool_errors: AtomicU64,
    /// Batches read back from the spool at start.
    pub spool_recovered_batches: AtomicU64,
}

/// Where the spool lives and how big it may grow (`state_dir`/spool, `spool_max_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// `http://host:port` of the collector.
    pub collector: String,
    /// Samples kept while the collector is unreachable (default: one hour at 1 Hz).
    pub buffer_samples: usize,
    /// Most samples in one batch.
    pub max_batch_samples: usize,
    pub connect_timeout: Duration,
    pub max_backoff: Duration,
    /// The node's labels (`--label`), sent in every Hello; already checked.
    pub labels: Labels,
    /// TLS files and token, read at every connect (docs/security.md).
    pub credentials: gpufleet_proto::client::Credentials,
    /// The on-disk spool (`None`: the buffer is in memory only).
    pub spool: Option<SpoolConfig>,
}

impl UplinkConfig {
    pub fn new(collector: impl Into<String>) -> Self {
        UplinkConfig {
            collector: collector.into(),
            buffer_samples: 3_600,
            max_batch_samples: 60,
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            labels: Labels::new(),
            credentials: Default::default(),
            spool: None,
        }
    }
}

/// What the sampler hands the uplink after each tick.
#[derive(Debug)]
pub struct Update {
    pub sample: Sample,
    pub events: Vec<Event>,
    pub inventory: Option<Inventory>,
}

/// Settings the collector pushed (currently the sample interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub sample_interval_ms: Option<u32>,
    pub inventory_interval_ms: Option<u32>,
}

pub struct Uplink {
    config: UplinkConfig,
    identity: NodeIdentity,
    session_id: String,
    gpu_source: String,
    inventory: Inventory,
    pending: VecDeque<Batch>,
    pending_samples: usize,
    next_sequence: u64,
    /// Highest sequence sent on the current stream (0 at each connect).
    sent_through: u64,
    dropped_samples: u64,
    dropped_events: u64,
    stats: Arc<UplinkStats>,
    spool: Option<Spool>,
}

enum StreamEnd {
    Shutdown,
    Error(String),
}

impl Uplink {
    pub fn new(
        config: UplinkConfig,
        identity: NodeIdentity,
        gpu_source: &str,
        inventory: Inventory,
        stats: Arc<UplinkStats>,
    ) -> Self {
        let mut up = Uplink {
            config,
            identity,
            session_id: uuid::Uuid::new_v4().to_string(),
            gpu_source: gpu_source.to_string(),
            inventory,
            pending: VecDeque::new(),
            pending_samples: 0,
            next_sequence: 1,
            sent_through: 0,
            dropped_samples: 0,
            dropped_events: 0,
            stats,
            spool: None,
        };
        if let Some(sc) = up.config.spool.clone() {
            up.open_spool(&sc);
        }
        up
    }

    /// Opens the spool and starts from what it held. A spool that cannot be opened is
    /// logged and left off: the agent still samples and streams, from memory.
    fn open_spool(&mut self, sc: &SpoolConfig) {
        let (spool, rec) = match Spool::open(&sc.dir, sc.max_bytes, &self.session_id) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("{e}; buffering in memory only, nothing survives a restart");
                self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        for d in &rec.damaged {
            tracing::warn!("spool: {d}");
        }
        self.session_id = spool.session_id().to_string();
        self.next_sequence = rec.next_sequence;
        self.dropped_samples = rec.dropped_samples;
        self.dropped_events = rec.dropped_events;
        let recovered = rec.batches.len();
        self.stats
            .spool_recovered_batches
            .store(recovered as u64, Ordering::Relaxed);
        for b in rec.batches.into_iter().chain(rec.open) {
            self.pending_samples += b.samples.len();
            self.pending.push_back(b);
        }
        if recovered > 0 || self.pending_samples > 0 {
            tracing::info!(
                dir = %sc.dir.display(),
                session = %self.session_id,
                "spool: {recovered} batches and {} samples in all from before the restart, sent when connected",
                self.pending_samples
            );
        }
        self.stats
            .spool_bytes
            .store(spool.bytes(), Ordering::Relaxed);
        self.spool = Some(spool);
        self.enforce_bound();
        self.publish_buffered();
    }

    /// Stopping while the collector is away: takes the sampler's last samples into the buffer
    /// and spool (the sampler stops and closes the queue), then syncs the spool.
    async fn stop_disconnected(&mut self, updates: &mut mpsc::Receiver<Update>) {
        let deadline = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                u = updates.recv() => match u {
                    Some(u) => self.absorb(u),
                    None => break,
                },
            }
        }
        self.seal();
        self.sync_spool();
    }

    /// Runs a spool write; a failure turns the spool off (logged once, counted).
    fn spooled<T>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> Result<T, crate::spool::SpoolError>,
    ) -> Option<T> {
        let spool = self.spool.as_mut()?;
        match f(spool) {
            Ok(v) => {
                self.stats
                    .spool_bytes
                    .store(spool.bytes(), Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                tracing::error!(
                    "{e}; the spool is off until the agent restarts, buffering in memory only"
                );
                self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                self.spool = None;
                None
            }
        }
    }

    /// Session id the batches go under (kept across restarts by the spool).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Runs until `shutdown` turns true: connects, streams, reconnects with backoff.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        pushed: watch::Sender<Pushed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = FIRST_BACKOFF.min(self.config.max_backoff);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let connects_before = self.stats.connects.load(Ordering::Relaxed);
            let end = self.stream_once(&mut updates, &pushed, &mut shutdown).await;
            // Nothing is in flight any more: what was sent and not acknowledged is owed again.
            self.sent_through = 0;
            if let Some(s) = self.spool.as_mut() {
                s.in_flight(0);
            }
            if self.stats.connects.load(Ordering::Relaxed) > connects_before {
                // It was connected: start the backoff over.
                backoff = FIRST_BACKOFF.min(self.config.max_backoff);
            }
            match end {
                StreamEnd::Shutdown => return,
                StreamEnd::Error(e) => {
                    tracing::warn!(
                        collector = %self.config.collector,
                        "stream to collector ended: {e}; retrying within {backoff:?} ({} batches buffered)",
                        self.pending.len()
                    );
                }
            }
            // Keep buffering while waiting to reconnect.
            let sleep = tokio::time::sleep(full_jitter(backoff));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.changed() => {
                        self.stop_disconnected(&mut updates).await;
                        return;
                    }
                    u = updates.recv() => match u {
                        Some(u) => self.absorb(u),
                        None => {
                            self.seal();
                            self.sync_spool();
                            return;
                        }
                    },
                }
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    async fn stream_once(
        &mut self,
        updates: &mut mpsc::Receiver<Update>,
        pushed: &watch::Sender<Pushed>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> StreamEnd {
        // Files are read at every connect: a rotated certificate or token needs no restart.
        let (endpoint, token) = match self.config.credentials.endpoint(&self.config.collector) {
            Ok((e, token)) => (
                e.connect_timeout(self.config.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(20))
                    .keep_alive_while_idle(true),
                token,
            ),
            Err(e) => return StreamEnd::Error(e),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return StreamEnd::Error(format!("cannot connect: {}", error_chain(&e))),
        };
        let mut client = TelemetryClient::with_interceptor(channel, token)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20);
        let (tx, rx) = mpsc::channel::<AgentMessage>(64);
        let hello = Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: self.identity.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            session_id: self.session_id.clone(),
            inventory: self.inventory.clone(),
            gpu_source: self.gpu_source.clone(),
            labels: self.config.labels.clone(),
        };
        let _ = tx
            .send(AgentMessage {
                msg: Some(agent_message::Msg::Hello(hello.into())),
            })
            .await;
        let mut inbound = match client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if self.config.credentials.tls_cert.is_some() && s.source().is_some() => {
                // A refused client certificate can surface as a bare reset (TLS 1.3).
                return StreamEnd::Error(format!(
                    "{} (is the client certificate valid, and signed by the collector's \
                     --tls-client-ca? the collector's log names the refusal)",
                    status_text(&s)
                ));
            }
            Err(s) => return StreamEnd::Error(status_text(&s)),
        };
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(collector = %self.config.collector, "connected; re-sending {} buffered batches", self.pending.len());
        self.sent_through = 0;
        loop {
            // Batches go out as the stream takes them, one per turn of this loop, so a long
            // backlog (a collector back after an outage, pacing its agents) never stops the
            // uplink from taking new samples.
            let unsent = self.has_unsent();
            tokio::select! {
                permit = tx.reserve(), if unsent => {
                    let Ok(permit) = permit else {
                        return StreamEnd::Error("stream closed".into());
                    };
                    if let Some(b) = self.next_unsent() {
                        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                        permit.send(AgentMessage {
                            msg: Some(agent_message::Msg::Batch(b.into())),
                        });
                    }
                }
                _ = shutdown.changed() => {
                    self.finish(updates, &tx, &mut inbound, pushed).await;
                    return StreamEnd::Shutdown;
                }
                u = updates.recv() => {
                    let Some(u) = u else {
                        self.finish(updates, &tx, &mut inbound, pushed).await;
                        return StreamEnd::Shutdown;
                    };
                    self.absorb(u);
                    // Drain whatever else is ready into the same batch.
                    while self.open_batch_samples() < self.config.max_batch_samples {
                        match updates.try_recv() {
                            Ok(u) => self.absorb(u),
                            Err(_) => break,
                        }
                    }
                    self.seal();
                }
                m = inbound.message() => match m {
                    Ok(Some(m)) => self.on_message(m, pushed),
                    Ok(None) => return StreamEnd::Error("collector closed the stream".into()),
                    Err(s) => return StreamEnd::Error(status_text(&s)),
                },
            }
        }
    }

    /// Stopping while connected: takes the sampler's last samples (it stops and closes the
    /// queue), seals them, sends what is unsent and waits a moment for the acks. What is still
    /// unacknowledged then stays in the spool for the next start.
    async fn finish(
        &mut self,
        updates: &mut mpsc::Receiver<Update>,
        tx: &mpsc::Sender<AgentMessage>,
        inbound: &mut tonic::Streaming<pb::CollectorMessage>,
        pushed: &watch::Sender<Pushed>,
    ) {
        let deadline = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(deadline);
        let mut closed = false;
        loop {
            if closed && self.pending.is_empty() {
                break;
            }
            let unsent = self.has_unsent();
            tokio::select! {
                _ = &mut deadline => break,
                u = updates.recv(), if !closed => match u {
                    Some(u) => self.absorb(u),
                    None => {
                        closed = true;
                        self.seal();
                    }
                },
                permit = tx.reserve(), if unsent => {
                    let Ok(permit) = permit else { break };
                    if let Some(b) = self.next_unsent() {
                        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                        permit.send(AgentMessage {
                            msg: Some(agent_message::Msg::Batch(b.into())),
                        });
                    }
                }
                m = inbound.message() => match m {
                    Ok(Some(m)) => self.on_message(m, pushed),
                    _ => break,
                },
            }
        }
        // Whatever the sampler still handed over goes to the buffer (and spool).
        while let Ok(u) = updates.try_recv() {
            self.absorb(u);
        }
        self.seal();
        self.sync_spool();
    }

    fn on_message(&mut self, m: pb::CollectorMessage, pushed: &watch::Sender<Pushed>) {
        match m.msg {
            Some(collector_message::Msg::Ack(a)) => self.ack(a.stored_sequence),
            Some(collector_message::Msg::Config(c)) => {
                let _ = pushed.send(Pushed {
                    sample_interval_ms: c.sample_interval_ms,
                    inventory_interval_ms: c.inventory_interval_ms,
                });
            }
            None => {}
        }
    }

    /// A sealed batch waits to go out on the current stream.
    fn has_unsent(&self) -> bool {
        self.pending
            .iter()
            .rev()
            .find(|b| b.sequence != 0)
            .is_some_and(|b| b.sequence > self.sent_through)
    }

    /// The oldest sealed batch not yet sent on the current stream; marks it sent.
    fn next_unsent(&mut self) -> Option<Batch> {
        let from = self.sent_through;
        let b = self.pending.iter().find(|b| b.sequence > from).cloned()?;
        self.sent_through = b.sequence;
        let through = self.sent_through;
        if let Some(s) = self.spool.as_mut() {
            s.in_flight(through);
        }
        Some(b)
    }

    /// Sealed batches not yet sent on the current stream, oldest first; marks them sent.
    #[cfg(test)]
    fn unsent(&mut self) -> Vec<Batch> {
        std::iter::from_fn(|| self.next_unsent()).collect()
    }

    /// Adds a tick's output to the open (unsealed) batch at the back of the buffer. A full
    /// open batch is sealed first, so while the collector is away the buffer is a queue of
    /// batches of at most `max_batch_samples` — each one the collector accepts — and the bound
    /// can drop the oldest of them.
    fn absorb(&mut self, u: Update) {
        let spool_full = self.spool.as_ref().is_some_and(Spool::wants_seal);
        if self.open_batch_samples() >= self.config.max_batch_samples || spool_full {
            self.seal();
        }
        if self.spool.is_some() {
            let tick = Batch {
                samples: vec![u.sample.clone()],
                events: u.events.clone(),
                inventory: u.inventory.clone(),
                ..Default::default()
            };
            self.spooled(move |s| s.tick(tick));
        }
        let open = match self.pending.back_mut() {
            Some(b) if b.sequence == 0 => b,
            _ => {
                self.pending.push_back(Batch::default());
                self.pending.back_mut().expect("just pushed")
            }
        };
        open.samples.push(u.sample);
        open.events.extend(u.events);
        if u.inventory.is_some() {
            open.inventory = u.inventory.clone();
        }
        if let Some(inv) = u.inventory {
            self.inventory = inv;
        }
        self.pending_samples += 1;
        self.enforce_bound();
        self.publish_buffered();
    }

    fn publish_buffered(&self) {
        self.stats
            .buffered_samples
            .store(self.pending_samples as u64, Ordering::Relaxed);
    }

    fn open_batch_samples(&self) -> usize {
        match self.pending.back() {
            Some(b) if b.sequence == 0 => b.samples.len(),
            _ => 0,
        }
    }

    /// Gives the open batch its sequence number and returns a copy to send.
    fn seal(&mut self) -> Option<Batch> {
        let lost = self.stats.sampler_dropped.swap(0, Ordering::Relaxed);
        self.dropped_samples += lost;
        self.stats
            .dropped_samples
            .fetch_add(lost, Ordering::Relaxed);
        let seq = self.next_sequence;
        let dropped = (self.dropped_samples, self.dropped_events);
        let b = self.pending.back_mut().filter(|b| b.sequence == 0)?;
        b.sequence = seq;
        b.dropped_samples = dropped.0;
        b.dropped_events = dropped.1;
        let sealed = b.clone();
        self.dropped_samples = 0;
        self.dropped_events = 0;
        self.next_sequence += 1;
        if let Some(Some(cap)) = self.spooled(|s| s.seal(seq, dropped.0, dropped.1)) {
            self.on_spool_cap(cap);
        }
        Some(sealed)
    }

    /// The spool dropped its oldest batches to stay under its cap: they go from memory too,
    /// counted like any other drop.
    fn on_spool_cap(&mut self, cap: crate::spool::CapDrop) {
        while let Some(front) = self.pending.front() {
            if front.sequence == 0 || front.sequence > cap.through {
                break;
            }
            let old = self.pending.pop_front().expect("front exists");
            self.pending_samples -= old.samples.len();
        }
        // With them go the drops they were to report: those ride in the next batch.
        self.dropped_samples += cap.samples + cap.carried_samples;
        self.dropped_events += cap.events + cap.carried_events;
        self.publish_buffered();
        self.stats
            .dropped_samples
            .fetch_add(cap.samples, Ordering::Relaxed);
        tracing::warn!(
            "spool full (spool_max_bytes): dropped the oldest {} samples, through batch {}",
            cap.samples,
            cap.through
        );
    }

    fn sync_spool(&mut self) {
        self.spooled(|s| s.sync());
    }

    fn ack(&mut self, stored: u64) {
        self.stats
            .acked_sequence
            .fetch_max(stored, Ordering::Relaxed);
        while let Some(front) = self.pending.front() {
            if front.sequence != 0 && front.sequence <= stored {
                self.pending_samples -= front.samples.len();
                self.pending.pop_front();
            } else {
                break;
            }
        }
        self.spooled(|s| s.released(stored));
        self.publish_buffered();
    }

    /// Drops the oldest batches while over the buffer bound, counting what was lost.
    fn enforce_bound(&mut self) {
        let mut dropped = (0u64, 0u64, 0u64);
        while self.pending_samples > self.config.buffer_samples && self.pending.len() > 1 {
            if let Some(old) = self.pending.pop_front() {
                self.pending_samples -= old.samples.len();
                // Lost: its samples and events, and the earlier drops it was to report.
                let samples = old.samples.len() as u64 + old.dropped_samples;
                let events = old.events.len() as u64 + old.dropped_events;
                self.dropped_samples += samples;
                self.dropped_events += events;
                self.stats
                    .dropped_samples
                    .fetch_add(old.samples.len() as u64, Ordering::Relaxed);
                dropped.0 = dropped.0.max(old.sequence);
                dropped.1 += samples;
                dropped.2 += events;
            }
        }
        if dropped.1 > 0 || dropped.2 > 0 {
            self.spooled(|s| s.dropped(dropped.0, dropped.1, dropped.2));
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    match std::error::Error::source(s) {
        // A TLS refusal surfaces as the first call's transport error: say what it was.
        Some(cause) => format!("{:?}: {}: {}", s.code(), s.message(), error_chain(cause)),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// An error and its causes, `: `-separated ("transport error" alone says nothing).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// How long a stopping agent waits for its sampler's last samples and its last acks.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The first wait before reconnecting; it doubles per failed attempt up to `max_backoff`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The shortest wait before reconnecting.
const MIN_WAIT: Duration = Duration::from_millis(100);

/// "Full jitter": a wait drawn uniformly between [`MIN_WAIT`] and `MIN_WAIT + backoff`. When a
/// collector restarts, its 10,000 agents lose their streams in the same instant; with full
/// jitter their first attempts spread evenly over the first second (and the retries of those
/// refused over the next two, four, ...) instead of arriving together.
fn full_jitter(backoff: Duration) -> Duration {
    MIN_WAIT + backoff.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink(buffer: usize) -> Uplink {
        let mut c = UplinkConfig::new("http://127.0.0.1:1");
        c.buffer_samples = buffer;
        Uplink::new(
            c,
            NodeIdentity::default(),
            "simulated",
            Inventory::default(),
            Arc::default(),
        )
    }

    fn spooled_uplink(buffer: usize, dir: &std::path::Path) -> Uplink {
        let mut c = UplinkConfig::new("http://127.0.0.1:1");
        c.buffer_samples = buffer;
        c.spool = Some(SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: crate::spool::DEFAULT_SPOOL_MAX_BYTES,
        });
        Uplink::new(
            c,
            NodeIdentity::default(),
            "simulated",
            Inventory::default(),
            Arc::default(),
        )
    }

    fn update(t: i64) -> Update {
        Update {
            sample: Sample {
                timestamp: gpufleet_model::UnixMs(t),
                ..Default::default()
            },
            events: vec![],
            inventory: None,
        }
    }

    #[test]
    fn reconnect_waits_spread_over_the_whole_backoff() {
        let b = Duration::from_secs(4);
        let waits: Vec<Duration> = (0..2_000).map(|_| full_jitter(b)).collect();
        assert!(waits.iter().all(|w| *w >= MIN_WAIT && *w <= MIN_WAIT + b));
        // Each quarter of the range gets a fair share: no herd at either end.
        for q in 0..4u32 {
            let lo = MIN_WAIT + b * q / 4;
            let hi = MIN_WAIT + b * (q + 1) / 4;
            let n = waits.iter().filter(|w| **w >= lo && **w < hi).count();
            assert!((350..650).contains(&n), "quarter {q}: {n} of 2000");
        }
    }

    #[test]
    fn sequences_grow_and_acks_release() {
        let mut u = uplink(100);
        u.absorb(update(1));
        u.absorb(update(2));
        assert_eq!(u.seal().unwrap().sequence, 1);
        u.absorb(update(3));
        let b = u.seal().unwrap();
        assert_eq!((b.sequence, b.samples.len()), (2, 1));
        assert!(u.seal().is_none(), "nothing open");
        u.ack(1);
        assert_eq!(u.pending.len(), 1);
        assert_eq!(u.pending_samples, 1);
        u.ack(2);
        assert!(u.pending.is_empty());
    }

    #[test]
    fn a_long_outage_keeps_the_buffer_bounded_in_batches_the_collector_accepts() {
        // An hour at 1 Hz fits; the second hour pushes out the first, batch by batch.
        let mut u = uplink(3_600);
        for t in 1..=7_200 {
            u.absorb(update(t));
        }
        assert!(u.pending_samples <= 3_600, "{}", u.pending_samples);
        assert!(u.pending_samples >= 3_600 - u.config.max_batch_samples);
        let max = u.pending.iter().map(|b| b.samples.len()).max().unwrap();
        assert!(
            max <= u.config.max_batch_samples,
            "a batch of {max} samples"
        );
        assert!(max <= gpufleet_model::convert::MAX_SAMPLES_PER_BATCH);
        let dropped = u.stats.dropped_samples.load(Ordering::Relaxed);
        assert_eq!(
            dropped as usize + u.pending_samples,
            7_200,
            "every sample kept or counted"
        );
        // Reconnected: every sealed batch goes out once, oldest first, then the open one.
        let first = u.unsent();
        assert!(first.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert!(u.unsent().is_empty());
        u.seal();
        assert_eq!(u.unsent().len(), 1);
    }

    #[test]
    fn a_restarted_agent_resumes_its_session_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = spooled_uplink(100, dir.path());
        let session = u.session_id().to_string();
        for t in 1..=3 {
            u.absorb(update(t));
            u.seal();
        }
        u.ack(1);
        u.absorb(update(4)); // open, not sealed
        drop(u); // killed: no shutdown, no sync

        let mut u = spooled_uplink(100, dir.path());
        assert_eq!(u.session_id(), session);
        let seqs: Vec<u64> = u.pending.iter().map(|b| b.sequence).collect();
        assert_eq!(seqs, [2, 3, 0], "batches 2 and 3 owed, the open one kept");
        assert_eq!(u.pending_samples, 3);
        assert_eq!(u.stats.spool_recovered_batches.load(Ordering::Relaxed), 2);
        u.absorb(update(5));
        let b = u.seal().unwrap();
        assert_eq!(b.sequence, 4, "numbering goes on");
        let ts: Vec<i64> = b.samples.iter().map(|s| s.timestamp.0).collect();
        assert_eq!(ts, [4, 5]);
        // Everything acknowledged: a further restart has nothing to send.
        u.ack(4);
        drop(u);
        let u = spooled_uplink(100, dir.path());
        assert!(u.pending.is_empty());
        assert_eq!(u.next_sequence, 5);
    }

    #[test]
    fn drops_of_the_memory_bound_are_reported_once_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = spooled_uplink(3, dir.path());
        for t in 1..=5 {
            u.absorb(update(t));
            u.seal();
        }
        assert_eq!(u.stats.dropped_samples.load(Ordering::Relaxed), 2);
        drop(u);
        let mut u = spooled_uplink(3, dir.path());
        assert_eq!(u.pending_samples, 3);
        assert_eq!(u.pending.front().unwrap().sequence, 3);
        assert_eq!(
            u.stats.dropped_samples.load(Ordering::Relaxed),
            0,
            "not counted again"
        );
        u.absorb(update(6));
        let b = u.seal().unwrap();
        // Batches 4 and 5 (kept) report the drops of 1 and 2; the new sample pushes out
        // batch 3, which reported nothing, so batch 6 reports just that one sample.
        assert_eq!(b.dropped_samples, 1);
    }

    #[test]
    fn a_drop_report_riding_in_a_dropped_batch_is_carried_to_the_next() {
        let mut u = uplink(1);
        u.absorb(update(1));
        u.seal();
        u.absorb(update(2)); // pushes out batch 1
        assert_eq!(u.seal().unwrap().dropped_samples, 1);
        u.absorb(update(3)); // pushes out batch 2, and its report of batch 1
        let b = u.seal().unwrap();
        assert_eq!(b.dropped_samples, 2, "the collector learns of both");
        assert_eq!(u.stats.dropped_samples.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn overflow_drops_oldest_and_reports_it() {
        let mut u = uplink(3);
        for t in 1..=5 {
            u.absorb(update(t));
            u.seal();
        }
        assert_eq!(u.pending_samples, 3);
        assert_eq!(u.pending.front().unwrap().sequence, 3);
        u.absorb(update(6));
        let b = u.seal().unwrap();
        assert_eq!(
            b.dropped_samples, 1,
            "each batch reports the drops since the previous one"
        );
        assert_eq!(u.stats.dropped_samples.load(Ordering::Relaxed), 3);
        assert_eq!(u.pending.front().unwrap().sequence, 4);
    }
}
