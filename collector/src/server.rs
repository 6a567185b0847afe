//! Assembles the collector: store, writer, fleet state and the gRPC services (telemetry,
//! query, health, reflection) on one listener, and `/metrics` on another.
//!
//! [`RunningServer::metrics`] is the registry other components add their series to
//! ([`Metrics::register`]); it exists before any service starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gpufleet_proto::v1::{query_server::QueryServer, telemetry_server::TelemetryServer};
use tokio::sync::oneshot;

use crate::alerting::Alerting;
use crate::auth::{Auth, AuthConfig, Exposure, layer::AuthLayer};
use crate::diagnose::EngineConfig;
use crate::evaluator::Evaluator;
use crate::fleet::{Fleet, Window};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::query::QueryService;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::store::writer::Writer;

/// Largest message accepted from an agent by default (`limits.max_message_bytes`); bigger
/// ones are refused with OUT_OF_RANGE.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// An HTTP/2 ping the peer has not answered by then closes its connection.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub window: Window,
    /// Pushed to agents on connect, when set.
    pub sample_interval_ms: Option<u32>,
    pub engine: EngineConfig,
    /// How often the diagnosis engine runs over the fleet.
    pub eval_interval: std::time::Duration,
    /// Samples and events older than this are deleted (hourly). Nodes, inventories and
    /// findings history are kept.
    pub retention: std::time::Duration,
    /// 1-minute and 1-hour aggregates older than these are deleted (hourly).
    pub retention_1m: std::time::Duration,
    pub retention_1h: std::time::Duration,
    /// `[alerts]`: sinks, routes, delivery (docs/alerts.md).
    pub alerts: crate::alerting::config::AlertsConfig,
    /// Where `/metrics` is served (`None`: nowhere). `gpufleet serve` defaults to
    /// [`crate::config::DEFAULT_METRICS_LISTEN`]; the library leaves it off.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS, client certificates, tokens, `--insecure` (docs/security.md). Default: none,
    /// which [`start`] allows on loopback only.
    pub auth: AuthConfig,
    /// `[limits]`: sizes, rates, streams, connections, time-outs (docs/limits.md).
    pub limits: crate::limits::LimitsConfig,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            window: Window::default(),
            sample_interval_ms: None,
            engine: EngineConfig::default(),
            eval_interval: crate::evaluator::DEFAULT_EVAL_INTERVAL,
            retention: std::time::Duration::from_secs(7 * 24 * 3600),
            retention_1m: std::time::Duration::from_secs(35 * 24 * 3600),
            retention_1h: std::time::Duration::from_secs(400 * 24 * 3600),
            alerts: Default::default(),
            metrics_listen: None,
            auth: AuthConfig::default(),
            limits: Default::default(),
        }
    }
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub fleet: Arc<Fleet>,
    pub store: Arc<dyn Store>,
    pub evaluator: Arc<Evaluator>,
    pub alerting: Arc<Alerting>,
    /// Every series `/metrics` serves; components register theirs here.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Who may stream and query; its TLS settings reload with [`Auth::tls`].
    pub auth: Arc<Auth>,
    auth_refresh: Option<tokio::task::JoinHandle<()>>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    metrics_shutdown: Option<oneshot::Sender<()>>,
    evaluating: tokio::task::JoinHandle<()>,
    dispatching: tokio::task::JoinHandle<()>,
    pruning: tokio::task::JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
    streams_shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        let scheme = if self.auth.tls().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Ends every agent stream, stops accepting connections and waits (at most a few seconds)
    /// for in-flight requests. Everything acknowledged is already durable.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.evaluating.abort();
        self.pruning.abort();
        if let Some(t) = &self.auth_refresh {
            t.abort();
        }
        if let Some(tokens) = self.auth.tokens().cloned() {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || tokens.flush_usage()).await {
                tracing::warn!("tokens' last use not recorded: {e}");
            }
        }
        // What the dispatcher had not finished is in the outbox; the next start resumes it.
        self.dispatching.abort();
        let _ = self.streams_shutdown.send(true);
        let _ = self.shutdown.send(());
        if let Some(tx) = self.metrics_shutdown {
            let _ = tx.send(());
        }
        if let Some(t) = self.metrics_task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        let mut task = self.task;
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await {
            Ok(r) => r??,
            Err(_) => {
                tracing::warn!("connections did not close within 5 s; stopping anyway");
                task.abort();
            }
        }
        Ok(())
    }
}

/// Deletes old samples, events and aggregates at start and then hourly.
fn spawn_retention(
    writer: Writer,
    [raw, minute, hour]: [std::time::Duration; 3],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = gpufleet_model::UnixMs::now();
            let ago =
                |d: std::time::Duration| now.plus_ms(-(d.as_millis().min(i64::MAX as u128) as i64));
            let prune = crate::store::Write::Prune {
                before: ago(raw),
                minute_before: ago(minute),
                hour_before: ago(hour),
            };
            if let Err(e) = writer.write(prune).await {
                tracing::error!("retention pass failed: {e}");
            }
        }
    })
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    use anyhow::Context;
    config.limits.check().map_err(anyhow::Error::msg)?;
    // Before anything is created: an exposed collector without client authentication is a
    // configuration error, not something to find out later.
    if let Exposure::Warn(w) = config
        .auth
        .exposure(config.listen)
        .map_err(anyhow::Error::msg)?
    {
        tracing::warn!("{w}");
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create data directory {} (pass --data-dir DIR to use another)",
            config.data_dir.display()
        )
    })?;
    let db = config.data_dir.join("gpufleet.db");
    let token_db = db.clone();
    let store: Arc<dyn Store> =
        Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&db)).await??);
    let fleet = Arc::new(Fleet::new(config.window));
    let s = store.clone();
    let stored = tokio::task::spawn_blocking(move || s.nodes()).await??;
    let names: Vec<String> = stored.iter().map(|n| n.identity.hostname.clone()).collect();
    fleet.restore(stored);
    for name in names {
        let s = store.clone();
        let n = name.clone();
        let history = tokio::task::spawn_blocking(move || s.inventory_history(&n)).await??;
        fleet.remember_history(&name, &history);
    }
    let evaluator = Arc::new(Evaluator::new(fleet.clone(), config.engine));
    let metrics = Arc::new(Metrics::new(fleet.clone(), evaluator.clone()));
    let auth_metrics = crate::metrics::auth::AuthMetrics::default();
    auth_metrics.register(&metrics);
    let auth_config = config.auth.clone();
    let listen = config.listen;
    let auth = Arc::new(
        tokio::task::spawn_blocking(move || {
            Auth::load(&auth_config, listen, token_db, auth_metrics)
        })
        .await??,
    );
    let auth_refresh = auth.tokens().map(|t| t.clone().spawn_refresh());
    // Bound before anything starts, so a taken port fails the start with a clear error.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(crate::metrics::http::bind(addr).await?),
        None => None,
    };
    let writer = Writer::start(store.clone(), 4096, metrics.store_write_seconds.clone());
    let s = store.clone();
    evaluator.restore(
        tokio::task::spawn_blocking(move || s.open_findings()).await??,
        gpufleet_model::UnixMs::now(),
    );
    let alerting = Arc::new(
        Alerting::new(config.alerts.clone(), store.clone(), fleet.clone())
            .context("bad [alerts] configuration")?,
    );
    metrics.register_collector(Box::new(crate::metrics::alerts::AlertSeries(
        alerting.clone(),
    )));
    let dispatching = alerting.spawn();
    let evaluating = evaluator.spawn(writer.clone(), config.eval_interval, Some(alerting.clone()));
    let pruning = spawn_retention(
        writer.clone(),
        [config.retention, config.retention_1m, config.retention_1h],
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use? pass --listen ADDR)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TelemetryServer<Ingest>>()
        .await;
    health_reporter
        .set_serving::<QueryServer<QueryService>>()
        .await;
    // Reflection in both versions: v1, and v1alpha for older grpcurl and grpcio clients.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(gpufleet_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_alpha = reflection_builder().build_v1alpha()?;

    let (streams_shutdown, streams_stop) = tokio::sync::watch::channel(false);
    let telemetry = TelemetryServer::new(
        Ingest::new(
            fleet.clone(),
            writer,
            config.sample_interval_ms,
            streams_stop,
            metrics.ingest.clone(),
        )
        .with_auth(auth.clone())
        .with_limits(&config.limits),
    )
    .max_decoding_message_size(config.limits.max_message_bytes);
    let query = QueryServer::new(
        QueryService::new(fleet.clone(), evaluator.clone(), store.clone())
            .with_alerting(alerting.clone())
            .with_security_warning(auth.warning().map(str::to_string)),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Every call passes the authentication layer first (open when none is configured).
        .layer(AuthLayer::new(auth.clone()))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(telemetry)
        .add_service(query);
    let stopped = async {
        let _ = rx.await;
    };
    // One accept loop for plain TCP and TLS (connection cap, silence, fd exhaustion).
    let conn_limits = crate::connections::ConnLimits {
        max_connections: config.limits.max_connections,
        first_byte: config.limits.hello_timeout,
        // Longer than a stream's, so a silent agent gets its stream's DEADLINE_EXCEEDED
        // before its connection goes.
        idle: config.limits.idle_stream_timeout + config.limits.hello_timeout,
    };
    let task = match auth.tls() {
        Some(tls) => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::connections::incoming(
                listener,
                conn_limits,
                metrics.ingest.clone(),
                crate::auth::tls::handshake(
                    tls.clone(),
                    auth.refusals().clone(),
                    metrics.ingest.clone(),
                    config.limits.hello_timeout,
                ),
            ),
            stopped,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::connections::incoming(
                listener,
                conn_limits,
                metrics.ingest.clone(),
                crate::connections::plain,
            ),
            stopped,
        )),
    };
    for (name, kind) in alerting.sinks() {
        tracing::info!(sink = %name, kind, "alert sink");
    }
    let (metrics_addr, metrics_task, metrics_shutdown) = match metrics_listener {
        Some(l) => {
            let at = l.local_addr()?;
            let (tx, rx) = oneshot::channel::<()>();
            let task = crate::metrics::http::serve(l, metrics.clone(), async {
                let _ = rx.await;
            });
            tracing::info!(addr = %at, "serving /metrics");
            (Some(at), Some(task), Some(tx))
        }
        None => (None, None, None),
    };
    tracing::info!(%addr, data_dir = %config.data_dir.display(), nodes = fleet.len(), auth = %auth.describe(), "gpufleet collector listening");
    Ok(RunningServer {
        addr,
        fleet,
        store,
        evaluator,
        alerting,
        metrics,
        metrics_addr,
        auth,
        auth_refresh,
        metrics_task,
        metrics_shutdown,
        evaluating,
        dispatching,
        pruning,
        shutdown: tx,
        streams_shutdown,
        task,
    })
}
