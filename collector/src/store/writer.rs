//! Group commit: one writer thread takes writes from every agent connection, commits them
//! together in one transaction (one fsync for many agents), then answers each. An agent is
//! acknowledged only after its write's transaction committed.

use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, Write};

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 512;

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<(Write, Reply)>,
}

impl Writer {
    /// Starts the writer thread. `queue` bounds writes waiting to be committed; when it is full,
    /// ingest waits (backpressure reaches the agents, which buffer). Each commit's duration is
    /// observed in `commit_seconds`.
    pub fn start(store: Arc<dyn Store>, queue: usize, commit_seconds: Histogram) -> Writer {
        let (tx, rx) = mpsc::channel(queue);
        std::thread::Builder::new()
            .name("gpufleet-store-writer".into())
            .spawn(move || run(store, rx, commit_seconds))
            .expect("spawning the store writer thread");
        Writer { tx }
    }

    /// Stores `w` durably; returns once it is committed.
    pub async fn write(&self, w: Write) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((w, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Corrupt {
                what: "write".into(),
                reason: e,
            }),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

/// How long the writer waits after the first write of a group for others to join it. Agents
/// send about once a second each, spread over the second: without a wait, a busy collector
/// commits (and fsyncs) for nearly every batch; with it, one commit serves every batch that
/// arrived in the window, and an ack waits at most this much longer.
pub const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(Write, Reply)>, commit_seconds: Histogram) {
    let mut writes = Vec::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    while let Some((w, reply)) = rx.blocking_recv() {
        let first_at = std::time::Instant::now();
        writes.push(w);
        replies.push(reply);
        while writes.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok((w, reply)) => {
                    writes.push(w);
                    replies.push(reply);
                }
                Err(mpsc::error::TryRecvError::Empty) if first_at.elapsed() < COMMIT_LINGER => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let applied = store.apply(&writes);
        commit_seconds.observe(started.elapsed().as_secs_f64());
        match applied {
            Ok(()) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) if writes.len() > 1 => {
                // Find the bad write: apply one by one so the others still land.
                tracing::warn!(
                    "group commit of {} writes failed ({e}); retrying one by one",
                    writes.len()
                );
                for (w, reply) in writes.iter().zip(replies.drain(..)) {
                    let r = store
                        .apply(std::slice::from_ref(w))
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
        writes.clear();
    }
}
