//! The agent outlives the collector: it buffers while the collector is down, reconnects with
//! backoff, and re-sends; the collector, restarted on the same data dir, remembers the fleet.
//! No acknowledged sample is lost and none is stored twice.

use std::time::Duration;

use gpufleet_agent::RunningAgent;
use gpufleet_agent::uplink::UplinkConfig;
use gpufleet_collector::server::{self, RunningServer, ServerConfig};
use gpufleet_model::UnixMs;
use gpufleet_tests::{free_port, spawn_simulated_agent};

const INTERVAL: Duration = Duration::from_millis(100);

fn agent(url: &str) -> RunningAgent {
    let mut cfg = UplinkConfig::new(url);
    cfg.max_backoff = Duration::from_millis(500);
    spawn_simulated_agent("resilient", "l40s", 2, cfg, INTERVAL)
}

async fn serve(port: u16, dir: &std::path::Path) -> RunningServer {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    server::start(ServerConfig::new(addr, dir.into()))
        .await
        .unwrap()
}

async fn stored(server: &RunningServer) -> Vec<UnixMs> {
    let store = server.store.clone();
    tokio::task::spawn_blocking(move || {
        store.samples("resilient", UnixMs(0), UnixMs(i64::MAX), 100_000)
    })
    .await
    .unwrap()
    .unwrap()
    .into_iter()
    .map(|s| s.timestamp)
    .collect()
}

/// Largest gap between consecutive stored samples.
fn largest_gap(ts: &[UnixMs]) -> u64 {
    ts.windows(2).map(|w| w[1].since(w[0])).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn buffers_while_the_collector_is_down_and_loses_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();

    // The agent starts first: nothing listens yet.
    let running = agent(&url);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first_server_start = UnixMs::now();
    let server = serve(port, dir.path()).await;
    let mut ts = Vec::new();
    for _ in 0..100 {
        ts = stored(&server).await;
        if ts.first().is_some_and(|t| *t < first_server_start) && ts.len() > 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ts.first().is_some_and(|t| *t < first_server_start),
        "samples taken before the collector existed were not delivered"
    );

    // The collector goes away and comes back on the same data dir.
    server.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = serve(port, dir.path()).await;
    assert!(
        server.fleet.node("resilient").is_some(),
        "restarted collector forgot the node"
    );
    let restart = UnixMs::now();
    let mut ts = Vec::new();
    for _ in 0..100 {
        ts = stored(&server).await;
        if ts.last().is_some_and(|t| t.since(restart) > 1_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    let mut dedup = ts.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), ts.len(), "a sample was stored twice");
    // Sampled every 100 ms throughout: the outage left no hole in the stored history.
    assert!(
        largest_gap(&ts) < 1_000,
        "a gap of {} ms in the history",
        largest_gap(&ts)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_can_set_the_agents_sample_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    config.sample_interval_ms = Some(100);
    let server = server::start(config).await.unwrap();
    // The agent's own interval is 2 s; the collector asks for 100 ms on connect.
    let running = spawn_simulated_agent(
        "resilient",
        "t4",
        1,
        UplinkConfig::new(server.url()),
        Duration::from_secs(2),
    );
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let n = stored(&server).await.len();
    running.stop().await;
    server.stop().await.unwrap();
    // 3 s at 2 s would be 2 samples; at 100 ms it is about 20 (the first interval is the
    // agent's own, until the config arrives).
    assert!(
        n >= 10,
        "only {n} samples: the pushed interval was not applied"
    );
}
