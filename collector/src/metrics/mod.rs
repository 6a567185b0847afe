//! The collector's `/metrics`: the whole fleet's GPUs under dcgm-exporter's names
//! ([`gpus`]), gpufleet's own series about nodes ([`nodes`]), findings ([`findings`]) and
//! compliance ([`compliance`]), the ingest path's counters ([`ingest`]) and the process's own
//! CPU and memory; served on a listener of its own ([`http`]).
//!
//! Architecture invariant: a scrape renders what is already in memory (fleet state, the latest
//! evaluation, counters). It never touches the database and never blocks on the ingest path
//! beyond the fleet's read lock, which it holds only to copy each node's latest state.
//!
//! Other components add their series through [`Metrics::register`] (e.g. alert deliveries):
//! the [`Metrics`] is built first in `server::start` and handed to them.

pub mod alerts;
pub mod auth;
pub mod compliance;
pub mod driver_stack;
pub mod ethernet;
pub mod fabric;
pub mod findings;
pub mod gpus;
pub mod host_config;
pub mod http;
pub mod ingest;
pub mod nodes;
pub mod os;
pub mod pcie;
pub mod storage;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gpufleet_model::UnixMs;
use gpufleet_model::exposition::{Format, process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::evaluator::Evaluator;
use crate::fleet::{Fleet, NodeState};

pub use ingest::{IngestMetrics, Rejected};

pub struct Metrics {
    /// Series owned by components (ingest, store, and what registers through the hook).
    registry: Mutex<Registry>,
    pub ingest: IngestMetrics,
    /// Time to commit one group of writes (`gpufleet_store_write_seconds`).
    pub store_write_seconds: Histogram,
    fleet: Arc<Fleet>,
    evaluator: Arc<Evaluator>,
    /// Every catalogued cause id, for `gpufleet_findings_firing` at 0.
    causes: Arc<[&'static str]>,
    /// Size of the last rendering, to allocate the next one at once.
    last_len: AtomicUsize,
}

impl Metrics {
    pub fn new(fleet: Arc<Fleet>, evaluator: Arc<Evaluator>) -> Metrics {
        let mut registry = Registry::default();
        let ingest = IngestMetrics::default();
        ingest.register(&mut registry);
        // 0.5 ms to 4 s: a group commit is an fsync, slower on busy or network disks.
        let store_write_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "gpufleet_store_write_seconds",
            "Time to commit one group of writes (samples, events, findings) to the database",
            store_write_seconds.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ingest,
            store_write_seconds,
            fleet,
            evaluator,
            causes: findings::catalog_causes().into(),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Adds a component's series (a counter, a family, …) to every scrape. The name must be
    /// lint-clean and not yet registered; a counter's name is given without `_total`, the
    /// help without its final period (prometheus-client adds one).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Adds series a component renders itself at scrape time.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The complete exposition at `now`, in `format`.
    pub fn render(&self, format: Format, now: UnixMs) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 4096);
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(FleetSeries {
            fleet: self.fleet.clone(),
            evaluator: self.evaluator.clone(),
            causes: self.causes.clone(),
            format,
            now,
        }));
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        let encoded = encode_registry(&mut out, &self.lock())
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
        if let Err(e) = encoded {
            tracing::error!("rendering /metrics failed: {e}");
        }
        let out = format.finish(out);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// The series rendered from fleet state, the latest evaluation and `/proc` at scrape time.
#[derive(Debug)]
struct FleetSeries {
    fleet: Arc<Fleet>,
    evaluator: Arc<Evaluator>,
    causes: Arc<[&'static str]>,
    format: Format,
    now: UnixMs,
}

impl Collector for FleetSeries {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let policy = self.evaluator.policy();
        // Under the read lock only what is copied and the audit; ingest waits for no encoding.
        let (snapshot, audit) = self.fleet.with_nodes(|nodes| {
            let copies: Vec<NodeState> = nodes.iter().map(|n| n.latest_only()).collect();
            (
                copies,
                compliance::summary(nodes, policy.as_deref(), self.now),
            )
        });
        let nodes: Vec<&NodeState> = snapshot.iter().collect();
        gpus::encode(&mut enc, &nodes, self.format)?;
        nodes::encode(&mut enc, &nodes, self.now)?;
        fabric::encode(&mut enc, &nodes)?;
        host_config::encode(&mut enc, &nodes)?;
        os::encode(&mut enc, &nodes)?;
        ethernet::encode(&mut enc, &nodes)?;
        driver_stack::encode(&mut enc, &nodes)?;
        pcie::encode(&mut enc, &nodes)?;
        storage::encode(&mut enc, &nodes)?;
        compliance::encode(&mut enc, &audit)?;
        findings::encode(&mut enc, &self.causes, &self.evaluator.latest())?;
        process::encode(&mut enc)
    }
}
