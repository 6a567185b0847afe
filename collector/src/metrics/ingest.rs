//! Counters of the ingest path: batches and GPU samples stored, messages refused by reason.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

type ReasonLabel = [(&'static str, &'static str); 1];

/// Cheap to clone: every clone counts into the same series.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub batches: Counter,
    pub gpu_samples: Counter,
    rejected: Family<ReasonLabel, Counter>,
}

impl IngestMetrics {
    pub fn reject(&self, why: Rejected) {
        self.rejected
            .get_or_create(&[("reason", why.as_str())])
            .inc();
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
    }
}
