//! Runs the diagnosis engine over the live fleet on an interval, stores what started firing
//! or resolved (the store puts each transition in the alerting inbox in the same
//! transaction), wakes the alert dispatcher, and keeps the latest evaluation for queries.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gpufleet_model::UnixMs;

use crate::compliance::policy::Policy;
use crate::diagnose::{Engine, EngineConfig, Evaluation};
use crate::fleet::Fleet;
use crate::store::Write;
use crate::store::writer::Writer;

/// How often `gpufleet serve` evaluates the fleet (the in-process harnesses use it too).
pub const DEFAULT_EVAL_INTERVAL: Duration = Duration::from_secs(2);

/// A batch bringing events (an Xid, an agent-side detection) triggers an evaluation at once,
/// but evaluations are never closer together than this.
pub const MIN_EVAL_GAP: Duration = Duration::from_millis(200);

pub struct Evaluator {
    fleet: Arc<Fleet>,
    engine: Mutex<Engine>,
    latest: RwLock<Arc<Evaluation>>,
    /// The compliance policy in force (`serve --policy`), replaced on reload.
    policy: RwLock<Option<Arc<Policy>>>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Evaluator")
    }
}

impl Evaluator {
    pub fn new(fleet: Arc<Fleet>, config: EngineConfig) -> Self {
        Evaluator {
            fleet,
            engine: Mutex::new(Engine::new(config)),
            latest: RwLock::default(),
            policy: RwLock::default(),
        }
    }

    /// Puts a compliance policy in force (or none); the next evaluation uses it.
    pub fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn restore(&self, open: Vec<gpufleet_model::FindingRecord>, now: UnixMs) {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(open, now);
    }

    /// One evaluation at `now`; returns it (and keeps it as the latest).
    pub fn evaluate(&self, now: UnixMs) -> Arc<Evaluation> {
        let policy = self.policy();
        let eval = self.fleet.with_nodes(|nodes| {
            self.engine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .evaluate_with(nodes, now, policy)
        });
        let eval = Arc::new(eval);
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = eval.clone();
        eval
    }

    pub fn latest(&self) -> Arc<Evaluation> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Evaluates every `interval` until the returned task is aborted.
    /// Stored transitions wake `alerting`'s dispatcher.
    pub fn spawn(
        self: &Arc<Self>,
        writer: Writer,
        interval: Duration,
        alerting: Option<Arc<crate::alerting::Alerting>>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = me.fleet.news() => {
                        tokio::time::sleep_until(last + MIN_EVAL_GAP).await;
                    }
                }
                last = tokio::time::Instant::now();
                let me2 = me.clone();
                let eval =
                    match tokio::task::spawn_blocking(move || me2.evaluate(UnixMs::now())).await {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!("diagnosis evaluation failed: {e}");
                            continue;
                        }
                    };
                for c in &eval.changes {
                    tracing::info!(
                        node = %c.finding.node,
                        gpu = ?c.finding.gpu_index,
                        cause = %c.finding.rule_id,
                        state = ?c.state,
                        "{}",
                        c.finding.summary
                    );
                }
                if eval.changes.is_empty() {
                    continue;
                }
                match writer.write(Write::Findings(eval.changes.clone())).await {
                    Ok(()) => {
                        if let Some(a) = &alerting {
                            a.wake();
                        }
                    }
                    Err(e) => tracing::error!("cannot store findings: {e}"),
                }
            }
        })
    }
}
