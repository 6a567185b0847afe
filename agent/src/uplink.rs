//! The stream to the collector: one long-lived gRPC stream, batches with sequence numbers,
//! a bounded buffer of batches not yet acknowledged, re-sent after every reconnect.
//!
//! Invariant: a batch leaves the buffer only when the collector acknowledged it as durably
//! stored, or when the buffer overflows — then the oldest goes and the drop is counted and
//! reported in the next batch (`dropped_samples`), so the collector knows what it missed.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        Uplink {
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
        }
    }

    /// Runs until `shutdown` turns true: connects, streams, reconnects with backoff.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        pushed: watch::Sender<Pushed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(250);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let connects_before = self.stats.connects.load(Ordering::Relaxed);
            let end = self.stream_once(&mut updates, &pushed, &mut shutdown).await;
            if self.stats.connects.load(Ordering::Relaxed) > connects_before {
                // It was connected: start the backoff over.
                backoff = Duration::from_millis(250);
            }
            match end {
                StreamEnd::Shutdown => return,
                StreamEnd::Error(e) => {
                    tracing::warn!(
                        collector = %self.config.collector,
                        "stream to collector ended: {e}; retrying in {backoff:?} ({} batches buffered)",
                        self.pending.len()
                    );
                }
            }
            // Keep buffering while waiting to reconnect.
            let sleep = tokio::time::sleep(jitter(backoff));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.changed() => return,
                    u = updates.recv() => match u {
                        Some(u) => self.absorb(u),
                        None => return,
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
        for b in self.unsent() {
            if send_batch(&tx, b, &self.stats).await.is_err() {
                return StreamEnd::Error("stream closed while re-sending".into());
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    // Give the last batch a moment to be acknowledged.
                    let deadline = tokio::time::sleep(Duration::from_secs(2));
                    tokio::pin!(deadline);
                    while !self.pending.is_empty() {
                        tokio::select! {
                            _ = &mut deadline => break,
                            m = inbound.message() => match m {
                                Ok(Some(m)) => self.on_message(m, pushed),
                                _ => break,
                            },
                        }
                    }
                    return StreamEnd::Shutdown;
                }
                u = updates.recv() => {
                    let Some(u) = u else { return StreamEnd::Shutdown };
                    self.absorb(u);
                    // Drain whatever else is ready into the same batch.
                    while self.open_batch_samples() < self.config.max_batch_samples {
                        match updates.try_recv() {
                            Ok(u) => self.absorb(u),
                            Err(_) => break,
                        }
                    }
                    self.seal();
                    for b in self.unsent() {
                        if send_batch(&tx, b, &self.stats).await.is_err() {
                            return StreamEnd::Error("stream closed".into());
                        }
                    }
                }
                m = inbound.message() => match m {
                    Ok(Some(m)) => self.on_message(m, pushed),
                    Ok(None) => return StreamEnd::Error("collector closed the stream".into()),
                    Err(s) => return StreamEnd::Error(status_text(&s)),
                },
            }
        }
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

    /// Sealed batches not yet sent on the current stream, oldest first; marks them sent.
    fn unsent(&mut self) -> Vec<Batch> {
        let from = self.sent_through;
        let out: Vec<Batch> = self
            .pending
            .iter()
            .filter(|b| b.sequence > from)
            .cloned()
            .collect();
        if let Some(last) = out.last() {
            self.sent_through = last.sequence;
        }
        out
    }

    /// Adds a tick's output to the open (unsealed) batch at the back of the buffer. A full
    /// open batch is sealed first, so while the collector is away the buffer is a queue of
    /// batches of at most `max_batch_samples` — each one the collector accepts — and the bound
    /// can drop the oldest of them.
    fn absorb(&mut self, u: Update) {
        if self.open_batch_samples() >= self.config.max_batch_samples {
            self.seal();
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
    }

    fn open_batch_samples(&self) -> usize {
        match self.pending.back() {
            Some(b) if b.sequence == 0 => b.samples.len(),
            _ => 0,
        }
    }

    /// Gives the open batch its sequence number and returns a copy to send.
    fn seal(&mut self) -> Option<Batch> {
        let seq = self.next_sequence;
        let dropped = (self.dropped_samples, self.dropped_events);
        let b = self.pending.back_mut().filter(|b| b.sequence == 0)?;
        b.sequence = seq;
        b.dropped_samples = dropped.0;
        b.dropped_events = dropped.1;
        self.dropped_samples = 0;
        self.dropped_events = 0;
        self.next_sequence += 1;
        Some(b.clone())
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
    }

    /// Drops the oldest batches while over the buffer bound, counting what was lost.
    fn enforce_bound(&mut self) {
        while self.pending_samples > self.config.buffer_samples && self.pending.len() > 1 {
            if let Some(old) = self.pending.pop_front() {
                self.pending_samples -= old.samples.len();
                self.dropped_samples += old.samples.len() as u64;
                self.dropped_events += old.events.len() as u64;
                self.stats
                    .dropped_samples
                    .fetch_add(old.samples.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

async fn send_batch(
    tx: &mpsc::Sender<AgentMessage>,
    b: Batch,
    stats: &UplinkStats,
) -> Result<(), ()> {
    stats.batches_sent.fetch_add(1, Ordering::Relaxed);
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Batch(b.into())),
    })
    .await
    .map_err(|_| ())
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

fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random::<f64>() * 0.4 + 0.8;
    d.mul_f64(f)
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
