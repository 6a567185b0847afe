//! Counters of the ingest path: batches and GPU samples stored, messages refused by reason;
//! connections and streams open, and those refused or closed for a limit (docs/limits.md).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why ingest refused a message (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The agent speaks another protocol major version.
    ProtocolVersion,
    /// A Hello or batch failed validation at the wire boundary.
    Invalid,
    /// Messages out of order (no Hello first, a second Hello, an empty message).
    Protocol,
    /// The store could not commit it; the agent keeps it and resends.
    StoreUnavailable,
    /// Another agent session is streaming for the node right now.
    NodeBusy,
}

impl Rejected {
    pub const ALL: [Rejected; 5] = [
        Rejected::ProtocolVersion,
        Rejected::Invalid,
        Rejected::Protocol,
        Rejected::StoreUnavailable,
        Rejected::NodeBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::ProtocolVersion => "protocol_version",
            Rejected::Invalid => "invalid",
            Rejected::Protocol => "protocol",
            Rejected::StoreUnavailable => "store_unavailable",
            Rejected::NodeBusy => "node_busy",
        }
    }
}

/// Why a connection was refused or closed by the collector (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefused {
    /// `limits.max_connections` were open: closed at once.
    MaxConnections,
    /// accept() failed for lack of file descriptors (EMFILE, ENFILE): the connection waits in
    /// the kernel's backlog until one is free. Counted once per failed accept.
    FdLimit,
    /// Too many TLS handshakes under way at once: closed at once.
    Handshakes,
    /// Sent nothing for `limits.hello_timeout` after it was accepted, or nothing at all for
    /// `limits.idle_stream_timeout` later: closed.
    Idle,
}

impl ConnRefused {
    pub const ALL: [ConnRefused; 4] = [
        ConnRefused::MaxConnections,
        ConnRefused::FdLimit,
        ConnRefused::Handshakes,
        ConnRefused::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefused::MaxConnections => "max_connections",
            ConnRefused::FdLimit => "fd_limit",
            ConnRefused::Handshakes => "handshakes",
            ConnRefused::Idle => "idle",
        }
    }
}

/// Why a telemetry stream was refused or ended by the collector for a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// `limits.max_streams` were open (RESOURCE_EXHAUSTED).
    MaxStreams,
    /// No Hello within `limits.hello_timeout` (DEADLINE_EXCEEDED).
    HelloTimeout,
    /// Nothing for `limits.idle_stream_timeout` after the Hello (DEADLINE_EXCEEDED).
    IdleTimeout,
}

impl StreamRefused {
    pub const ALL: [StreamRefused; 3] = [
        StreamRefused::MaxStreams,
        StreamRefused::HelloTimeout,
        StreamRefused::IdleTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamRefused::MaxStreams => "max_streams",
            StreamRefused::HelloTimeout => "hello_timeout",
            StreamRefused::IdleTimeout => "idle_timeout",
        }
    }
}

type ReasonLabel = [(&'static str, &'static str); 1];

/// Cheap to clone: every clone counts into the same series.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub batches: Counter,
    pub gpu_samples: Counter,
    rejected: Family<ReasonLabel, Counter>,
    /// Connections open now (accepted, not yet closed).
    pub connections_open: Gauge,
    /// Telemetry streams open now (Hello or not).
    pub streams_open: Gauge,
    connections_refused: Family<ReasonLabel, Counter>,
    streams_refused: Family<ReasonLabel, Counter>,
    /// Time streams were held back for `limits.max_samples_per_second`.
    pub throttled_seconds: Counter<f64, AtomicU64>,
}

impl IngestMetrics {
    pub fn reject(&self, why: Rejected) {
        self.rejected
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    pub fn connection_refused(&self, why: ConnRefused) {
        self.connections_refused
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    pub fn connections_refused(&self, why: ConnRefused) -> u64 {
        self.connections_refused
            .get_or_create(&[("reason", why.as_str())])
            .get()
    }

    pub fn stream_refused(&self, why: StreamRefused) {
        self.streams_refused
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    pub fn streams_refused(&self, why: StreamRefused) -> u64 {
        self.streams_refused
            .get_or_create(&[("reason", why.as_str())])
            .get()
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        for r in Rejected::ALL {
            // Present at 0 from the first scrape.
            let _ = self.rejected.get_or_create(&[("reason", r.as_str())]);
        }
        registry.register(
            "gpufleet_ingest_batches",
            "Batches received from agents and committed to the store",
            self.batches.clone(),
        );
        registry.register(
            "gpufleet_ingest_gpu_samples",
            "Per-GPU readings received in committed batches",
            self.gpu_samples.clone(),
        );
        registry.register(
            "gpufleet_ingest_rejected",
            "Agent messages refused, by reason",
            self.rejected.clone(),
        );
        for r in ConnRefused::ALL {
            let _ = self
                .connections_refused
                .get_or_create(&[("reason", r.as_str())]);
        }
        for r in StreamRefused::ALL {
            let _ = self
                .streams_refused
                .get_or_create(&[("reason", r.as_str())]);
        }
        registry.register(
            "gpufleet_connections_open",
            "TCP connections (agents and CLIs) open now",
            self.connections_open.clone(),
        );
        registry.register(
            "gpufleet_connections_refused",
            "Connections refused or closed by the collector, by reason: max_connections, \
             fd_limit (accept failed: out of file descriptors), handshakes (too many TLS \
             handshakes at once), idle (sent nothing in time)",
            self.connections_refused.clone(),
        );
        registry.register(
            "gpufleet_streams_open",
            "Telemetry streams open now",
            self.streams_open.clone(),
        );
        registry.register(
            "gpufleet_streams_refused",
            "Telemetry streams refused or ended for a limit, by reason: max_streams, \
             hello_timeout, idle_timeout",
            self.streams_refused.clone(),
        );
        registry.register(
            "gpufleet_ingest_throttled_seconds",
            "Time telemetry streams were held back for limits.max_samples_per_second",
            self.throttled_seconds.clone(),
        );
    }
}
