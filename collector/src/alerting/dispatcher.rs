//! The dispatcher: one async task that moves notifications through the outbox — routes new
//! finding transitions, queues repeats, claims due rows into deliveries (or records them as
//! silenced), sends, and stores every attempt's result before retrying. It never blocks the
//! evaluator or ingest: they only write the inbox (in their own transaction) and wake it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpufleet_model::UnixMs;
use rand::Rng;

use super::Alerting;
use super::alert::{Alert, Transition};
use super::config::DeliveryConfig;
use super::outbox::{Attempt, Delivery, Enqueue, Routed};
use super::sinks::Outcome;
use crate::store::StoreError;

/// Longest sleep between passes when nothing is due (new transitions wake it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Inbox entries routed per pass.
const ROUTE_BATCH: usize = 1000;

/// Delivery counts for the metrics (`gpufleet_alert_deliveries_total{sink,outcome}`,
/// `gpufleet_alert_outbox_pending`).
#[derive(Debug, Default)]
pub struct Counters {
    deliveries: Mutex<BTreeMap<(String, &'static str), u64>>,
    pending: AtomicU64,
}

/// The outcomes counted per sink.
pub const OUTCOMES: [&str; 3] = ["delivered", "failed", "silenced"];

impl Counters {
    pub(crate) fn with_sinks<'a>(sinks: impl IntoIterator<Item = &'a String>) -> Counters {
        let mut m = BTreeMap::new();
        for s in sinks {
            for o in OUTCOMES {
                m.insert((s.clone(), o), 0);
            }
        }
        Counters {
            deliveries: Mutex::new(m),
            pending: AtomicU64::new(0),
        }
    }

    fn count(&self, sink: &str, outcome: &'static str) {
        *self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((sink.to_string(), outcome))
            .or_default() += 1;
    }

    /// `(sink, outcome, total)` for every configured sink and outcome (zeros included).
    pub fn deliveries(&self) -> Vec<(String, &'static str, u64)> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((s, o), n)| (s.clone(), *o, *n))
            .collect()
    }

    /// Notifications waiting in the outbox (queued or being retried), as of the last pass.
    pub fn outbox_pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

/// How long to wait before retry number `attempt` (1-based): exponential from
/// `initial_backoff`, capped at `max_backoff`, with jitter (half fixed, half random), and
/// never sooner than the receiver's `Retry-After`.
pub fn backoff(
    d: &DeliveryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = d
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(d.max_backoff);
    let half = exp / 2;
    let jittered = half + half.mul_f64(rng.random::<f64>());
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

/// What one attempt's outcome means for the delivery, given the give-up time.
pub fn attempt_result(
    outcome: Outcome,
    d: &DeliveryConfig,
    attempts_before: u32,
    give_up_at: UnixMs,
    now: UnixMs,
    rng: &mut impl Rng,
) -> Attempt {
    match outcome {
        Outcome::Delivered(answer) => Attempt::Delivered { answer },
        Outcome::Reject(error) => Attempt::Failed {
            error: format!("refused: {error}"),
        },
        Outcome::Retry { error, after } => {
            let attempts = attempts_before + 1;
            if now >= give_up_at {
                return Attempt::Failed {
                    error: format!("gave up after {attempts} attempts: {error}"),
                };
            }
            let wait = backoff(d, attempts, after, rng);
            let at = now.plus_ms(wait.as_millis().min(i64::MAX as u128) as i64);
            Attempt::Retry {
                at: if at > give_up_at { give_up_at } else { at },
                error: format!("attempt {attempts}: {error}"),
            }
        }
    }
}

impl Alerting {
    /// One alert per sink for a stored transition, timed by its route.
    fn route_entry(&self, id: i64, r: &gpufleet_model::FindingRecord) -> Routed {
        let labels = self.fleet.labels(&r.finding.node);
        let transition = match r.state {
            gpufleet_model::FindingState::Resolved => Transition::Resolved,
            _ => Transition::Firing,
        };
        let routes = self
            .router
            .route(r.finding.severity, &r.finding.rule_id, &labels);
        let alert = Alert::from_record(r, transition, labels, self.config.external_url.as_deref());
        let now = UnixMs::now();
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let sinks = routes
            .into_iter()
            .filter(|(name, _)| self.sinks.contains_key(name))
            .map(|(name, timing)| {
                let firm = r.fired_at.plus_ms(ms(timing.min_firing));
                let grouped = now.plus_ms(ms(timing.group_wait));
                let not_before = if transition == Transition::Firing && firm > now {
                    firm
                } else {
                    now
                };
                let mut repeat = timing.repeat_interval;
                if let Some(r) = self.sinks[&name].resend_every() {
                    repeat = repeat.min(r);
                }
                Enqueue {
                    sink: name,
                    alert: alert.clone(),
                    due: if grouped > not_before {
                        grouped
                    } else {
                        not_before
                    },
                    not_before,
                    repeat_ms: repeat.as_millis().min(u64::MAX as u128) as u64,
                }
            })
            .collect();
        Routed {
            inbox_id: id,
            sinks,
        }
    }

    /// One pass over the outbox; returns the deliveries to send now.
    fn pass(&self, now: UnixMs) -> Result<Vec<Delivery>, StoreError> {
        let outbox = self.store.alerts();
        loop {
            let entries = outbox.unrouted(ROUTE_BATCH)?;
            if entries.is_empty() {
                break;
            }
            let routed: Vec<Routed> = entries
                .iter()
                .map(|e| self.route_entry(e.id, &e.record))
                .collect();
            outbox.route(&routed, now)?;
        }
        outbox.enqueue_repeats(now)?;
        let silences = outbox.silences(now, false)?;
        let give_up = now.plus_ms(
            self.config
                .delivery
                .give_up_after
                .as_millis()
                .min(i64::MAX as u128) as i64,
        );
        let claimed = outbox.claim_due(now, &silences, give_up)?;
        for s in &claimed.silenced {
            self.counters.count(s, "silenced");
        }
        let mut due = outbox.retries_due(now)?;
        // New deliveries are in retries_due too (first attempt at `now`); keep one of each.
        let known: BTreeSet<i64> = due.iter().map(|d| d.id).collect();
        due.extend(
            claimed
                .deliveries
                .into_iter()
                .filter(|d| !known.contains(&d.id)),
        );
        self.counters
            .pending
            .store(outbox.pending()?, Ordering::Relaxed);
        Ok(due)
    }

    /// One attempt at a delivery, its result stored.
    async fn attempt(self: Arc<Self>, d: Delivery) {
        let outcome = match self.sinks.get(&d.sink) {
            Some(sink) => sink.send(&d.notification, &self.ctx).await,
            None => Outcome::Reject(format!(
                "sink {:?} is no longer configured (it was when this was queued)",
                d.sink
            )),
        };
        let now = UnixMs::now();
        let attempt = attempt_result(
            outcome,
            &self.config.delivery,
            d.attempts,
            d.give_up_at,
            now,
            &mut rand::rng(),
        );
        match &attempt {
            Attempt::Delivered { answer } => {
                self.counters.count(&d.sink, "delivered");
                tracing::info!(sink = %d.sink, node = %d.notification.node, alerts = d.notification.alerts.len(), "alert delivered: {answer}");
            }
            Attempt::Failed { error } => {
                self.counters.count(&d.sink, "failed");
                tracing::error!(sink = %d.sink, node = %d.notification.node, "alert delivery failed: {error}");
            }
            Attempt::Retry { at, error } => {
                tracing::warn!(sink = %d.sink, node = %d.notification.node, "alert delivery will be retried at {at}: {error}");
            }
        }
        let me = self.clone();
        let id = d.id;
        let stored = tokio::task::spawn_blocking(move || {
            me.store.alerts().finish_attempt(id, &attempt, now)
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot record an alert delivery: {e}"),
            Err(e) => tracing::error!("recording an alert delivery failed: {e}"),
        }
        // Leaves `in_flight` at the start of the next pass, whose reading of the outbox then
        // includes this result (removing it now could let a pass that read the delivery
        // before the result was stored send it again).
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        self.wake.notify_one();
    }

    /// Runs the dispatcher until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            {
                let done: Vec<i64> =
                    std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()));
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                for id in done {
                    in_flight.remove(&id);
                }
            }
            let me = self.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let now = UnixMs::now();
                let due = me.pass(now)?;
                Ok::<_, StoreError>((due, me.store.alerts().next_wake()?))
            })
            .await;
            let next = match pass {
                Ok(Ok((due, next))) => {
                    for d in due {
                        let fresh = self
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(d.id);
                        if fresh {
                            tokio::spawn(self.clone().attempt(d));
                        }
                    }
                    next
                }
                Ok(Err(e)) => {
                    tracing::error!("alert outbox: {e}");
                    None
                }
                Err(e) => {
                    tracing::error!("alert outbox pass failed: {e}");
                    None
                }
            };
            let sleep = next
                .map(|t| Duration::from_millis(t.0.saturating_sub(UnixMs::now().0).max(5) as u64))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() {
        let d = DeliveryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            ..DeliveryConfig::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)] {
            for _ in 0..20 {
                let b = backoff(&d, attempt, None, &mut rng);
                let base = Duration::from_secs(base);
                assert!(b >= base / 2 && b <= base, "attempt {attempt}: {b:?}");
            }
        }
        let b = backoff(&d, 1, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(b, Duration::from_secs(30), "Retry-After beats the backoff");
    }

    #[test]
    fn an_attempt_is_retried_until_the_give_up_time_then_failed() {
        let d = DeliveryConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let retry = || Outcome::Retry {
            error: "HTTP 500".into(),
            after: None,
        };
        let r = attempt_result(retry(), &d, 0, UnixMs(10_000), UnixMs(1_000), &mut rng);
        assert!(
            matches!(r, Attempt::Retry { at, .. } if at > UnixMs(1_000) && at <= UnixMs(10_000)),
            "{r:?}"
        );
        let r = attempt_result(retry(), &d, 4, UnixMs(10_000), UnixMs(10_000), &mut rng);
        assert_eq!(
            r,
            Attempt::Failed {
                error: "gave up after 5 attempts: HTTP 500".into()
            }
        );
        let r = attempt_result(
            Outcome::Reject("HTTP 400".into()),
            &d,
            0,
            UnixMs(10_000),
            UnixMs(1),
            &mut rng,
        );
        assert!(matches!(r, Attempt::Failed { .. }));
    }
}
