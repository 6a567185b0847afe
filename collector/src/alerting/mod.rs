//! Alerting: telling on-call when a finding fires or resolves. Every finding transition
//! (diagnosis causes, `node.agent_offline`, `compliance.*`) is an alert; routes in
//! `[alerts]` (docs/alerts.md) pick the sinks; the outbox in the collector's own store makes
//! delivery survive restarts; the dispatcher sends without ever holding up ingest or
//! diagnosis.
//!
//! - `config.rs` — `[alerts]` (`AlertsConfig`), checked with errors naming the key.
//! - `alert.rs` — the alert and notification documents (the webhook JSON schema).
//! - `route.rs` — which sinks, with which timing.
//! - `silence.rs` — silences.
//! - `outbox.rs` — the durable outbox's steps and storage trait (SQLite: `store/alerts.rs`).
//! - `dispatcher.rs` — the task that routes, groups, sends, retries; delivery counters.
//! - `sinks/` — one file per sink behind the `Sink` trait, listed in `sinks!`.

pub mod alert;
pub mod config;
pub mod dispatcher;
pub mod outbox;
pub mod route;
pub mod silence;
pub mod sinks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use gpufleet_model::UnixMs;
use tokio::sync::Notify;

use crate::fleet::Fleet;
use crate::store::Store;
use alert::Notification;
use config::{AlertsConfig, AlertsConfigError};
use dispatcher::Counters;
use outbox::Attempt;
use route::Router;
use sinks::{Outcome, SendContext, Sink, SinkSpec};

/// The name `webhooks[i]` (and the i-th `--alert-webhook`) gets.
pub fn webhook_name(i: usize) -> String {
    format!("webhook-{}", i + 1)
}

/// The collector's alerting: configured sinks, routes, the outbox and its dispatcher.
pub struct Alerting {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    config: AlertsConfig,
    sinks: BTreeMap<String, Box<dyn Sink>>,
    router: Router,
    ctx: SendContext,
    wake: Notify,
    /// Deliveries being attempted now, and those whose attempt ended since the last pass.
    in_flight: Mutex<BTreeSet<i64>>,
    finished: Mutex<Vec<i64>>,
    counters: Counters,
}

impl Alerting {
    /// Checks `config` and builds its sinks. Nothing is sent until [`Alerting::spawn`].
    pub fn new(
        config: AlertsConfig,
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
    ) -> Result<Alerting, AlertsConfigError> {
        config.check()?;
        let mut sinks: BTreeMap<String, Box<dyn Sink>> = BTreeMap::new();
        let mut webhook_names = Vec::new();
        for (i, url) in config.webhooks.iter().enumerate() {
            let name = webhook_name(i);
            if config.sinks.contains_key(&name) {
                return Err(AlertsConfigError::new(
                    format!("alerts.sinks.{name}"),
                    format!(
                        "{name} is the name of webhooks[{i}] (--alert-webhook); pick another name"
                    ),
                ));
            }
            sinks.insert(
                name.clone(),
                sinks::webhook::WebhookConfig::plain(url).build(&name),
            );
            webhook_names.push(name);
        }
        for (name, c) in &config.sinks {
            sinks.insert(name.clone(), c.build(name));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("gpufleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.delivery.timeout)
            .build()
            .map_err(|e| AlertsConfigError::new("alerts", format!("cannot set up HTTP: {e}")))?;
        Ok(Alerting {
            router: Router::new(&config, &webhook_names),
            ctx: SendContext {
                client,
                timeout: config.delivery.timeout,
            },
            counters: Counters::with_sinks(sinks.keys()),
            sinks,
            config,
            store,
            fleet,
            wake: Notify::new(),
            in_flight: Mutex::default(),
            finished: Mutex::default(),
        })
    }

    /// Starts the dispatcher; it runs until the returned task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    /// New finding transitions are in the store: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Configured sink names and kinds.
    pub fn sinks(&self) -> Vec<(String, &'static str)> {
        self.sinks
            .iter()
            .map(|(n, s)| (n.clone(), s.kind()))
            .collect()
    }

    /// Delivery counters for the metrics endpoint.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sends a marked test notification through `sink` now (outside the outbox), records it
    /// in the delivery log, and returns the receiver's answer.
    pub async fn test(&self, sink: &str) -> Result<Outcome, String> {
        let Some(s) = self.sinks.get(sink) else {
            let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
            return Err(format!(
                "no sink named {sink:?} (configured: {})",
                if known.is_empty() {
                    "none; add [alerts.sinks.NAME] or --alert-webhook URL".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let now = UnixMs::now();
        let n = Notification::test(sink, now);
        let outcome = s.send(&n, &self.ctx).await;
        let attempt = match &outcome {
            Outcome::Delivered(a) => Attempt::Delivered { answer: a.clone() },
            Outcome::Retry { error, .. } | Outcome::Reject(error) => Attempt::Failed {
                error: error.clone(),
            },
        };
        let store = self.store.clone();
        let name = sink.to_string();
        let recorded = tokio::task::spawn_blocking(move || {
            store.alerts().record_test(&name, &n, &attempt, now)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = recorded
            .map_err(|e| e.to_string())
            .map(|r| r.map_err(|e| e.to_string()))
        {
            tracing::warn!("cannot record the test delivery: {e}");
        }
        Ok(outcome)
    }
}
