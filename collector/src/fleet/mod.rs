//! Live fleet state in memory: per node its identity, inventory, connection, a bounded window
//! of recent samples and events. Ingest writes it; query and diagnosis read it under a read lock.
//! History beyond the window lives in the store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::RwLock;

use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Event, GpuInfo, Inventory, NodeIdentity, Sample, UnixMs};

use crate::store::StoredNode;

pub mod counters;

/// How much recent data each node keeps in memory for diagnosis.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub samples: usize,
    pub events: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            samples: 300,
            events: 500,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub identity: NodeIdentity,
    /// Labels from the agent's Hello (`--label`).
    pub labels: gpufleet_model::Labels,
    pub agent_version: String,
    pub gpu_source: String,
    pub inventory: Inventory,
    pub first_seen: UnixMs,
    pub last_seen: UnixMs,
    pub connected: bool,
    pub session: String,
    /// The live stream's number (from [`Fleet::claim`]): only its end disconnects the node.
    pub stream: u64,
    /// Recent samples, oldest first. Add with [`NodeState::push_sample`].
    pub history: VecDeque<Sample>,
    /// One number per sample of `history`, moving whenever an error counter differs from the
    /// sample before ([`counters::same`]): equal numbers at both ends of a window mean that no
    /// such counter moved within it. Kept by [`NodeState::push_sample`]; rebuilt there when it
    /// does not match `history`, and then ignored by readers until it does.
    pub counter_epochs: VecDeque<u32>,
    /// Recent events, oldest first.
    pub events: VecDeque<Event>,
    /// Samples and events the agent reported it had to drop (its buffer or spool full while
    /// the collector was away), over the node's life (restored from the store).
    pub dropped_samples: u64,
    pub dropped_events: u64,
    /// Highest batch sequence of `session` seen, so a re-sent batch is not counted twice.
    pub last_sequence: u64,
    /// Every GPU (by UUID) any inventory of this node has listed, so a GPU that stops being
    /// enumerated at all (dead after a reboot) is still known to be missing.
    pub known_gpus: BTreeMap<String, GpuInfo>,
    /// Per GPU index: Xid events received since the collector started, and the last Xid.
    pub xid_events: BTreeMap<u32, u64>,
    pub last_xid: BTreeMap<u32, u32>,
    /// Kernel-log error events received since the collector started, by type (`sxid`,
    /// `pcie_aer`, `storage`, `nic_tx_timeout`, `hung_task`).
    pub kernel_events: BTreeMap<String, u64>,
}

impl NodeState {
    pub fn name(&self) -> &str {
        &self.identity.hostname
    }

    /// Adds the GPUs of `inv` to the GPUs this node is known to have. A GPU that now sits at
    /// the PCI address of a known one replaced it (an RMA swap): the old one is forgotten.
    pub fn remember_gpus(&mut self, inv: &Inventory) {
        for g in &inv.gpus {
            if g.uuid.is_empty() {
                continue;
            }
            self.known_gpus.retain(|uuid, k| {
                *uuid == g.uuid || k.pci_bus_id != g.pci_bus_id || g.pci_bus_id.is_empty()
            });
            self.known_gpus.insert(g.uuid.clone(), g.clone());
        }
    }

    /// What a Hello says about the node: identity, labels, agent, inventory; seen `now`.
    fn take_hello(&mut self, hello: &Hello, now: UnixMs) {
        if self.first_seen.0 == 0 {
            self.first_seen = now;
        }
        self.identity = hello.node.clone();
        self.labels = hello.labels.clone();
        self.agent_version = hello.agent_version.clone();
        self.gpu_source = hello.gpu_source.clone();
        self.remember_gpus(&hello.inventory);
        self.inventory = hello.inventory.clone();
        self.last_seen = now;
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.history.back()
    }

    /// Appends `s` to the history (with its counter epoch), keeping the newest `keep` samples.
    pub fn push_sample(&mut self, s: Sample, keep: usize) {
        if self.counter_epochs.len() != self.history.len() {
            self.rebuild_epochs();
        }
        let epoch = match (self.history.back(), self.counter_epochs.back()) {
            (Some(prev), Some(&e)) if counters::same(prev, &s) => e,
            (Some(_), Some(&e)) => e.wrapping_add(1),
            _ => 0,
        };
        self.history.push_back(s);
        self.counter_epochs.push_back(epoch);
        while self.history.len() > keep {
            self.history.pop_front();
            self.counter_epochs.pop_front();
        }
    }

    /// No error counter ([`counters::same`]) moved from `history[start]` to the latest
    /// sample; `false` also when the epochs do not match the history.
    pub fn counters_still_since(&self, start: usize) -> bool {
        let e = &self.counter_epochs;
        e.len() == self.history.len() && e.get(start).is_some_and(|first| Some(first) == e.back())
    }

    fn rebuild_epochs(&mut self) {
        self.counter_epochs.clear();
        let mut epoch = 0u32;
        for (i, s) in self.history.iter().enumerate() {
            if i > 0 && !counters::same(&self.history[i - 1], s) {
                epoch = epoch.wrapping_add(1);
            }
            self.counter_epochs.push_back(epoch);
        }
    }

    /// A copy without the history window: the latest sample only, no events. What a scrape
    /// renders, taken under the read lock so the rendering itself does not hold it.
    pub fn latest_only(&self) -> NodeState {
        NodeState {
            identity: self.identity.clone(),
            labels: self.labels.clone(),
            agent_version: self.agent_version.clone(),
            gpu_source: self.gpu_source.clone(),
            inventory: self.inventory.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            connected: self.connected,
            session: self.session.clone(),
            stream: self.stream,
            history: self.history.back().cloned().into_iter().collect(),
            counter_epochs: self.counter_epochs.back().copied().into_iter().collect(),
            events: VecDeque::new(),
            dropped_samples: self.dropped_samples,
            dropped_events: self.dropped_events,
            last_sequence: self.last_sequence,
            known_gpus: BTreeMap::new(),
            xid_events: self.xid_events.clone(),
            last_xid: self.last_xid.clone(),
            kernel_events: self.kernel_events.clone(),
        }
    }
}

#[derive(Default)]
pub struct Fleet {
    nodes: RwLock<BTreeMap<String, NodeState>>,
    window: Window,
    /// Numbers streams for [`Fleet::claim`].
    streams: std::sync::atomic::AtomicU64,
    /// Signalled when a batch brings events (Xids, agent-side detections), which may fire a
    /// critical finding: the evaluator then runs early instead of at its next tick.
    news: tokio::sync::Notify,
}

/// A Hello for a node that another agent session is streaming for right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} is already streaming from another agent (session {live}{machine}); one node name, \
     one agent: give each agent its own --node-name, or stop the other one (a dead stream is \
     noticed within a minute, then this agent gets in)"
)]
pub struct NodeBusy {
    pub node: String,
    pub live: String,
    machine: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({} nodes)", self.len())
    }
}

impl Fleet {
    pub fn new(window: Window) -> Self {
        Fleet {
            streams: Default::default(),
            nodes: RwLock::default(),
            window,
            news: tokio::sync::Notify::new(),
        }
    }

    /// Resolves when a batch with events arrived since the last call returned.
    pub async fn news(&self) {
        self.news.notified().await
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeState>> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeState>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Nodes known from the store, shown as disconnected until their agents come back.
    pub fn restore(&self, stored: Vec<StoredNode>) {
        let mut nodes = self.write();
        for s in stored {
            nodes.insert(
                s.identity.hostname.clone(),
                NodeState {
                    identity: s.identity,
                    labels: s.labels,
                    agent_version: s.agent_version,
                    gpu_source: s.gpu_source,
                    inventory: s.inventory,
                    first_seen: s.first_seen,
                    last_seen: s.last_seen,
                    dropped_samples: s.dropped_samples,
                    dropped_events: s.dropped_events,
                    ..Default::default()
                },
            );
        }
    }

    /// Takes the node's one live stream for `hello`'s agent session and returns the stream's
    /// number (for [`Fleet::on_disconnect`]). A new stream of the live session — its agent
    /// reconnecting while the old stream lingers half-open — takes over; another session is
    /// refused while one is live, so a second agent cannot stream as a connected node.
    pub fn claim(&self, hello: &Hello) -> Result<u64, NodeBusy> {
        let mut nodes = self.write();
        let n = nodes.entry(hello.node.hostname.clone()).or_default();
        if n.connected && n.session != hello.session_id {
            return Err(NodeBusy {
                node: hello.node.hostname.clone(),
                live: n.session.clone(),
                machine: if n.identity.machine_id.is_empty() {
                    String::new()
                } else {
                    format!(", machine id {}", n.identity.machine_id)
                },
            });
        }
        let stream = self
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.identity.hostname.is_empty() {
            // A node new to the fleet is whole from its claim on: listed while its Hello is
            // being stored, never as a nameless entry.
            n.take_hello(hello, UnixMs::now());
        }
        n.connected = true;
        if n.session != hello.session_id {
            n.last_sequence = 0;
        }
        n.session = hello.session_id.clone();
        n.stream = stream;
        Ok(stream)
    }

    pub fn on_hello(&self, hello: &Hello, now: UnixMs) {
        let mut nodes = self.write();
        let n = nodes.entry(hello.node.hostname.clone()).or_default();
        if n.connected
            && !n.identity.machine_id.is_empty()
            && n.identity.machine_id != hello.node.machine_id
        {
            tracing::warn!(
                node = %hello.node.hostname,
                "two machines (machine-id {} and {}) use the same node name; give each agent a unique --node-name",
                n.identity.machine_id, hello.node.machine_id
            );
        }
        n.take_hello(hello, now);
        if n.session != hello.session_id {
            n.last_sequence = 0;
        }
        n.session = hello.session_id.clone();
        n.connected = true;
    }

    pub fn on_batch(&self, node: &str, batch: &Batch, now: UnixMs) {
        if !batch.events.is_empty() {
            self.news.notify_one();
        }
        let mut nodes = self.write();
        let Some(n) = nodes.get_mut(node) else {
            return;
        };
        n.last_seen = now;
        if let Some(inv) = &batch.inventory {
            n.remember_gpus(inv);
            n.inventory = inv.clone();
        }
        if batch.sequence > n.last_sequence {
            n.last_sequence = batch.sequence;
            n.dropped_samples += batch.dropped_samples;
            n.dropped_events += batch.dropped_events;
        }
        for s in &batch.samples {
            // Samples re-sent after a reconnect may already be here.
            if n.history.back().is_some_and(|l| l.timestamp >= s.timestamp) {
                continue;
            }
            n.push_sample(s.clone(), self.window.samples);
        }
        for e in &batch.events {
            if !n.events.contains(e) {
                if let (Some(xid), Some(gpu)) = (e.xid, e.gpu_index) {
                    *n.xid_events.entry(gpu).or_default() += 1;
                    n.last_xid.insert(gpu, xid);
                }
                if e.kind == gpufleet_model::EventKind::Kernel {
                    let kind = e.code.trim_start_matches("kernel.");
                    let kind = kind.split('.').next().unwrap_or(kind);
                    *n.kernel_events.entry(kind.to_string()).or_default() += 1;
                }
                n.events.push_back(e.clone());
            }
        }
        while n.events.len() > self.window.events {
            n.events.pop_front();
        }
    }

    /// Stream number `stream` (from [`Fleet::claim`]) ended. A newer stream of the node — the
    /// same agent reconnected — keeps it connected.
    pub fn on_disconnect(&self, node: &str, stream: u64) {
        if let Some(n) = self.write().get_mut(node)
            && n.stream == stream
        {
            n.connected = false;
        }
    }

    /// Runs `f` over every node under the read lock, without copying their history.
    pub fn with_nodes<T>(&self, f: impl FnOnce(&[&NodeState]) -> T) -> T {
        let nodes = self.read();
        let refs: Vec<&NodeState> = nodes.values().collect();
        f(&refs)
    }

    /// Feeds a node's stored inventory history (after a restart) into its known GPUs.
    pub fn remember_history(&self, node: &str, history: &[Inventory]) {
        if let Some(n) = self.write().get_mut(node) {
            for inv in history {
                n.remember_gpus(inv);
            }
            let current = n.inventory.clone();
            n.remember_gpus(&current);
        }
    }

    /// Forgets a node (decommissioned); whether it was known.
    pub fn remove(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }

    pub fn node(&self, name: &str) -> Option<NodeState> {
        self.read().get(name).cloned()
    }

    /// A node without its sample window: its latest sample and recent events. What one
    /// node's detail (`gpufleet node NAME`) shows, copied without its 300 samples.
    pub fn node_now(&self, name: &str) -> Option<NodeState> {
        self.read().get(name).map(|n| NodeState {
            events: n.events.clone(),
            ..n.latest_only()
        })
    }

    /// Whether the fleet knows the node, without copying it.
    pub fn knows(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// A node's labels (empty for an unknown node), without copying its history.
    pub fn labels(&self, name: &str) -> gpufleet_model::Labels {
        self.read()
            .get(name)
            .map(|n| n.labels.clone())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_now_is_its_latest_sample_and_events_and_epochs_follow_the_window() {
        let fleet = Fleet::new(Window {
            samples: 5,
            ..Window::default()
        });
        let hello = Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: NodeIdentity {
                hostname: "n1".into(),
                ..Default::default()
            },
            agent_version: "test".into(),
            session_id: "s".into(),
            inventory: Inventory::default(),
            gpu_source: "simulated".into(),
            labels: Default::default(),
        };
        fleet.on_hello(&hello, UnixMs(1));
        for t in 1..=8u64 {
            let mut s = Sample {
                timestamp: UnixMs(t as i64 * 1000),
                ..Default::default()
            };
            // An error counter moves in sample 7.
            s.host.nics = vec![gpufleet_model::NicSample {
                name: "eth0".into(),
                rx_errors: Some(u64::from(t >= 7)),
                ..Default::default()
            }];
            let batch = Batch {
                sequence: t,
                samples: vec![s],
                events: vec![Event {
                    timestamp: UnixMs(t as i64 * 1000),
                    code: format!("test.{t}"),
                    ..Default::default()
                }],
                ..Default::default()
            };
            fleet.on_batch("n1", &batch, UnixMs(t as i64 * 1000));
        }
        let whole = fleet.node("n1").unwrap();
        assert_eq!(whole.history.len(), 5);
        assert_eq!(
            whole.counter_epochs.iter().copied().collect::<Vec<_>>(),
            [0, 0, 0, 1, 1],
            "samples 4-8: the epoch moves once, at sample 7"
        );
        let now = fleet.node_now("n1").unwrap();
        assert_eq!(now.history.len(), 1);
        assert_eq!(now.latest(), whole.latest());
        assert_eq!(now.events, whole.events);
        assert_eq!(now.counter_epochs.len(), 1);
    }

    #[test]
    fn a_node_claimed_but_not_yet_hello_d_is_listed_whole() {
        let fleet = Fleet::default();
        let hello = Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: NodeIdentity {
                hostname: "n9".into(),
                ..Default::default()
            },
            agent_version: "0.1.0".into(),
            session_id: "s".into(),
            inventory: Inventory::default(),
            gpu_source: "simulated".into(),
            labels: Default::default(),
        };
        fleet.claim(&hello).unwrap();
        let names = fleet.with_nodes(|ns| {
            ns.iter()
                .map(|n| {
                    (
                        n.name().to_string(),
                        n.agent_version.clone(),
                        n.last_seen.0 > 0,
                    )
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(names, [("n9".to_string(), "0.1.0".to_string(), true)]);
    }

    #[test]
    fn labels_come_from_the_latest_hello_and_from_the_store_after_a_restart() {
        let fleet = Fleet::default();
        let mut hello = Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: NodeIdentity {
                hostname: "n1".into(),
                ..Default::default()
            },
            agent_version: "test".into(),
            session_id: "s1".into(),
            inventory: Inventory::default(),
            gpu_source: "simulated".into(),
            labels: [("pool".to_string(), "training".to_string())].into(),
        };
        fleet.on_hello(&hello, UnixMs(1));
        assert_eq!(fleet.node("n1").unwrap().labels["pool"], "training");
        hello.labels = [("pool".to_string(), "inference".to_string())].into();
        fleet.on_hello(&hello, UnixMs(2));
        assert_eq!(fleet.node("n1").unwrap().labels["pool"], "inference");

        // One live stream per node: the same agent reconnecting takes over, another is
        // refused, and only the live stream's end disconnects the node.
        let first = fleet.claim(&hello).unwrap();
        let second = fleet.claim(&hello).unwrap();
        assert_ne!(first, second);
        let mut other = hello.clone();
        other.session_id = "s2".into();
        let busy = fleet.claim(&other).unwrap_err();
        assert!(
            busy.to_string()
                .contains("already streaming from another agent (session s1")
        );
        fleet.on_disconnect("n1", first);
        assert!(fleet.node("n1").unwrap().connected, "the old stream's end");
        fleet.on_disconnect("n1", second);
        assert!(!fleet.node("n1").unwrap().connected);
        assert!(
            fleet.claim(&other).is_ok(),
            "free once the live stream ended"
        );

        let restarted = Fleet::default();
        restarted.restore(vec![StoredNode {
            identity: hello.node.clone(),
            labels: hello.labels.clone(),
            agent_version: String::new(),
            gpu_source: String::new(),
            inventory: Inventory::default(),
            first_seen: UnixMs(1),
            last_seen: UnixMs(2),
            dropped_samples: 7,
            dropped_events: 1,
        }]);
        let n = restarted.node("n1").unwrap();
        assert_eq!(n.labels, hello.labels);
        assert_eq!((n.dropped_samples, n.dropped_events), (7, 1));
        assert!(!n.connected);
    }
}
