//! The telemetry stream endpoint: handshake (`Hello`, protocol version check), validation of
//! every batch at the wire boundary, durable write, then the ack.
//!
//! Invariant: an `Ack` for sequence N is sent only after batch N is committed to the store.
//! A malformed message ends the stream with INVALID_ARGUMENT and a message naming the
//! problem; nothing a peer sends can panic the collector.
//!
//! `[limits]` (docs/limits.md): at most `max_streams` streams at once (more get
//! RESOURCE_EXHAUSTED), the Hello within `hello_timeout` and then a message at least every
//! `idle_stream_timeout` (else DEADLINE_EXCEEDED), and a stream sending more than
//! `max_samples_per_second` is read more slowly (backpressure) rather than refused.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use gpufleet_model::UnixMs;
use gpufleet_model::convert::WireLimits;
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_proto::PROTOCOL_VERSION;
use gpufleet_proto::v1::{
    self as pb, AgentMessage, CollectorMessage, agent_message, collector_message,
    telemetry_server::Telemetry,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, Caller};
use crate::fleet::Fleet;
use crate::limits::{LimitsConfig, RateBucket};
use crate::metrics::ingest::StreamRefused;
use crate::metrics::{IngestMetrics, Rejected};
use crate::store::Write;
use crate::store::writer::Writer;

pub struct Ingest {
    fleet: Arc<Fleet>,
    writer: Writer,
    /// Sample interval pushed to every agent on connect (`None`: leave agents alone).
    sample_interval_ms: Option<u32>,
    /// Turns true when the collector stops: every open stream ends with UNAVAILABLE, so
    /// agents reconnect (to this collector once it is back) instead of holding the shutdown.
    shutdown: watch::Receiver<bool>,
    metrics: IngestMetrics,
    /// Binds each stream to its node (certificate or token); open unless [`Ingest::with_auth`].
    auth: Arc<Auth>,
    limits: StreamLimits,
    /// One permit per open stream (`limits.max_streams`).
    streams: Arc<Semaphore>,
}

/// What each stream is held to (from `[limits]`).
#[derive(Debug, Clone, Copy)]
struct StreamLimits {
    wire: WireLimits,
    max_streams: usize,
    hello_timeout: Duration,
    idle_timeout: Duration,
    samples_per_second: u32,
}

impl From<&LimitsConfig> for StreamLimits {
    fn from(l: &LimitsConfig) -> Self {
        StreamLimits {
            wire: l.wire(),
            max_streams: l.max_streams,
            hello_timeout: l.hello_timeout,
            idle_timeout: l.idle_stream_timeout,
            samples_per_second: l.max_samples_per_second,
        }
    }
}

/// A stream's place among `max_streams`, and in `gpufleet_streams_open`.
struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    metrics: IngestMetrics,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.metrics.streams_open.dec();
    }
}

impl Ingest {
    pub fn new(
        fleet: Arc<Fleet>,
        writer: Writer,
        sample_interval_ms: Option<u32>,
        shutdown: watch::Receiver<bool>,
        metrics: IngestMetrics,
    ) -> Self {
        Ingest {
            fleet,
            writer,
            sample_interval_ms,
            shutdown,
            metrics,
            auth: Arc::new(Auth::open()),
            limits: StreamLimits::from(&LimitsConfig::default()),
            streams: Arc::new(Semaphore::new(LimitsConfig::default().max_streams)),
        }
    }

    /// Holds every stream to `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: &LimitsConfig) -> Self {
        self.limits = StreamLimits::from(limits);
        self.streams = Arc::new(Semaphore::new(limits.max_streams));
        self
    }

    /// Checks every Hello against the caller's credentials (docs/security.md).
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = auth;
        self
    }
}

impl Ingest {
    /// Counts a refused message; returns its status.
    fn reject(&self, why: Rejected, status: Status) -> Status {
        self.metrics.reject(why);
        status
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

/// Checks the protocol version before anything else, so a newer agent gets a clear answer.
pub fn check_version(v: u32) -> Result<(), Status> {
    if v == PROTOCOL_VERSION {
        return Ok(());
    }
    let hint = if v > PROTOCOL_VERSION {
        "upgrade the collector (gpufleet) to a release that speaks it"
    } else {
        "upgrade the agent"
    };
    Err(Status::failed_precondition(format!(
        "agent speaks gpufleet protocol v{v}, this collector speaks v{PROTOCOL_VERSION}: {hint}"
    )))
}

#[tonic::async_trait]
impl Telemetry for Ingest {
    type StreamStream = Outbound;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let caller = request.extensions().get::<Caller>().cloned();
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            self.metrics.stream_refused(StreamRefused::MaxStreams);
            return Err(Status::resource_exhausted(format!(
                "the collector has {} telemetry streams open, its limit (limits.max_streams): \
                 retry later, or raise limits.max_streams",
                self.limits.max_streams
            )));
        };
        self.metrics.streams_open.inc();
        let slot = StreamSlot {
            _permit: permit,
            metrics: self.metrics.clone(),
        };
        let mut inbound = request.into_inner();
        let hello_timeout = self.limits.hello_timeout;
        let first = tokio::time::timeout(hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                self.metrics.stream_refused(StreamRefused::HelloTimeout);
                Status::deadline_exceeded(format!(
                    "no Hello within {} (limits.hello_timeout): an agent sends its Hello as the \
                     stream's first message",
                    humantime::format_duration(hello_timeout)
                ))
            })??
            .ok_or_else(|| {
                self.reject(
                    Rejected::Protocol,
                    Status::invalid_argument("stream ended before the Hello message"),
                )
            })?;
        let Some(agent_message::Msg::Hello(hello)) = first.msg else {
            return Err(self.reject(
                Rejected::Protocol,
                Status::invalid_argument("the first message of a stream must be Hello"),
            ));
        };
        check_version(hello.protocol_version)
            .map_err(|s| self.reject(Rejected::ProtocolVersion, s))?;
        let hello = Hello::from_wire(hello, &self.limits.wire).map_err(|e| {
            self.reject(
                Rejected::Invalid,
                Status::invalid_argument(format!("invalid Hello: {e}")),
            )
        })?;
        let node = hello.node.hostname.clone();
        let session = hello.session_id.clone();
        // Before the node is claimed: a node's certificate or token streams as that node only.
        let binding = self.auth.bind_stream(caller.as_ref(), &node)?;
        // Before anything is stored: a second agent must not overwrite a live node.
        let stream = self
            .fleet
            .claim(&hello)
            .map_err(|e| self.reject(Rejected::NodeBusy, Status::already_exists(e.to_string())))?;
        if let Err(e) = self
            .writer
            .write(Write::Hello {
                hello: Box::new(hello.clone()),
                at: UnixMs::now(),
            })
            .await
        {
            self.fleet.on_disconnect(&node, stream);
            return Err(self.reject(
                Rejected::StoreUnavailable,
                Status::unavailable(format!("cannot store node {node}: {e}")),
            ));
        }
        self.fleet.on_hello(&hello, UnixMs::now());
        tracing::info!(%node, %peer, agent = %hello.agent_version, gpus = hello.inventory.gpus.len(), "agent connected");

        let (tx, rx) = mpsc::channel::<Result<CollectorMessage, Status>>(16);
        if let Some(ms) = self.sample_interval_ms {
            let _ = tx
                .send(Ok(CollectorMessage {
                    msg: Some(collector_message::Msg::Config(pb::AgentConfig {
                        sample_interval_ms: Some(ms),
                        inventory_interval_ms: None,
                    })),
                }))
                .await;
        }
        let ctx = StreamCtx {
            fleet: self.fleet.clone(),
            writer: self.writer.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits,
        };
        let fleet = self.fleet.clone();
        let mut shutdown = self.shutdown.clone();
        let span = tracing::info_span!("agent", %node, %peer);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _slot = slot;
                let end = tokio::select! {
                    end = pump(&mut inbound, &tx, &ctx, &node, &session) => end,
                    _ = shutdown.wait_for(|stop| *stop) => {
                        Err(Status::unavailable("the collector is shutting down; reconnect later"))
                    }
                    status = binding.revoked() => Err(status),
                };
                if let Err(status) = end {
                    tracing::warn!(%node, "closing stream: {}", status.message());
                    let _ = tx.send(Err(status)).await;
                } else {
                    tracing::info!(%node, "agent disconnected");
                }
                fleet.on_disconnect(&node, stream);
            },
            span,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// How far ahead of the collector's clock a reading may be stamped (clocks drift; NTP fixes
/// them within seconds).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// How old a reading may be when it arrives (an agent's spool replayed after a long outage).
pub const MAX_AGE_MS: i64 = 30 * 24 * 3600 * 1000;

/// Refuses a batch stamped far in the future (a reading from 2100 would stand as the node's
/// latest forever) or the distant past, saying how far off the agent's clock is.
fn check_times(batch: &Batch, now: UnixMs) -> Result<(), String> {
    let times = batch
        .samples
        .iter()
        .map(|s| ("sample", s.timestamp))
        .chain(batch.events.iter().map(|e| ("event", e.timestamp)));
    for (what, t) in times {
        let ahead = t.0.saturating_sub(now.0);
        if ahead > MAX_FUTURE_SKEW_MS {
            return Err(format!(
                "{what} stamped {t}, {} s ahead of the collector's clock (at most {} s): fix the \
                 node's clock (NTP) and it will be accepted",
                ahead / 1000,
                MAX_FUTURE_SKEW_MS / 1000
            ));
        }
        if now.0.saturating_sub(t.0) > MAX_AGE_MS {
            return Err(format!(
                "{what} stamped {t}, older than {} days",
                MAX_AGE_MS / (24 * 3600 * 1000)
            ));
        }
    }
    Ok(())
}

/// What a stream's pump works with.
struct StreamCtx {
    fleet: Arc<Fleet>,
    writer: Writer,
    metrics: IngestMetrics,
    limits: StreamLimits,
}

/// Reads batches until the agent closes the stream or sends something invalid.
async fn pump(
    inbound: &mut Streaming<AgentMessage>,
    tx: &mpsc::Sender<Result<CollectorMessage, Status>>,
    ctx: &StreamCtx,
    node: &str,
    session: &str,
) -> Result<(), Status> {
    let StreamCtx {
        fleet,
        writer,
        metrics,
        limits,
    } = ctx;
    // Within one stream sequence numbers only grow; a re-send after a reconnect comes on a
    // new stream (and is skipped by the store if already held).
    let mut last_in_stream = 0u64;
    let reject = |why: Rejected, s: Status| {
        metrics.reject(why);
        s
    };
    let mut budget = RateBucket::new(limits.samples_per_second, std::time::Instant::now());
    let mut throttled = false;
    loop {
        let Ok(next) = tokio::time::timeout(limits.idle_timeout, inbound.message()).await else {
            metrics.stream_refused(StreamRefused::IdleTimeout);
            return Err(Status::deadline_exceeded(format!(
                "nothing from {node} for {} (limits.idle_stream_timeout): closing the stream; \
                 an agent reconnects and resends what was not acknowledged",
                humantime::format_duration(limits.idle_timeout)
            )));
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            // Transport errors (agent gone, reset) end the stream quietly; decode errors and
            // oversized messages come back to the agent.
            Err(s) if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Cancelled => {
                return Ok(());
            }
            Err(s) => return Err(s),
        };
        let (batch, wire) = match msg.msg {
            Some(agent_message::Msg::Batch(b)) => {
                // The batch's protobuf, which the store holds until it compacts it. (Encoded
                // again from what tonic decoded, about 5 % of the collector's CPU: a codec that
                // kept the received bytes would save it.)
                let wire = prost::Message::encode_to_vec(&b);
                let batch = Batch::from_wire(b, &limits.wire).map_err(|e| {
                    reject(
                        Rejected::Invalid,
                        Status::invalid_argument(format!("invalid batch from {node}: {e}")),
                    )
                })?;
                (Arc::new(batch), wire)
            }
            Some(agent_message::Msg::Hello(_)) => {
                return Err(reject(
                    Rejected::Protocol,
                    Status::invalid_argument("Hello may only be the first message of a stream"),
                ));
            }
            None => {
                return Err(reject(
                    Rejected::Protocol,
                    Status::invalid_argument("empty AgentMessage"),
                ));
            }
        };
        let seq = batch.sequence;
        if seq <= last_in_stream {
            return Err(reject(
                Rejected::Protocol,
                Status::invalid_argument(format!(
                    "batch sequence {seq} from {node} after {last_in_stream} on the same stream: \
                     sequence numbers must grow within a stream"
                )),
            ));
        }
        last_in_stream = seq;
        let now = UnixMs::now();
        check_times(&batch, now).map_err(|e| {
            reject(
                Rejected::Invalid,
                Status::invalid_argument(format!("batch {seq} from {node}: {e}")),
            )
        })?;
        writer
            .write(Write::Batch {
                node: node.to_string(),
                session: session.to_string(),
                batch: batch.clone(),
                wire,
                at: now,
            })
            .await
            .map_err(|e| {
                reject(
                    Rejected::StoreUnavailable,
                    Status::unavailable(format!("cannot store batch {seq} of {node}: {e}")),
                )
            })?;
        metrics.batches.inc();
        metrics
            .gpu_samples
            .inc_by(batch.samples.iter().map(|s| s.gpus.len() as u64).sum());
        fleet.on_batch(node, &batch, now);
        let ack = CollectorMessage {
            msg: Some(collector_message::Msg::Ack(pb::Ack {
                stored_sequence: seq,
            })),
        };
        if tx.send(Ok(ack)).await.is_err() {
            return Ok(());
        }
        // Backpressure: past its budget the stream's next message is read later, so HTTP/2
        // flow control slows the agent; nothing is refused or lost.
        let wait = budget.take(batch.samples.len(), std::time::Instant::now());
        if !wait.is_zero() {
            if !throttled {
                throttled = true;
                tracing::info!(
                    "{node} sends more than limits.max_samples_per_second ({}): reading its \
                     stream more slowly (counted in gpufleet_ingest_throttled_seconds_total)",
                    limits.samples_per_second
                );
            }
            metrics.throttled_seconds.inc_by(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }
}
