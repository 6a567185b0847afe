//! Benchmark: the cost of one `/metrics` scrape of a whole fleet — rendering every node's
//! GPUs (dcgm-exporter series), the gpufleet series and the compliance audit from memory.
//!
//!   cargo run --release -p gpufleet-tests --bin metrics-bench -- [NODES] [SCRAPES]
//!
//! Defaults: 1,000 nodes × 8 simulated H100s (readings from the real agent pipeline), 10
//! scrapes per format.

use std::sync::Arc;
use std::time::Instant;

use gpufleet_agent::{GpuBackend, start_node};
use gpufleet_collector::diagnose::EngineConfig;
use gpufleet_collector::evaluator::Evaluator;
use gpufleet_collector::fleet::{Fleet, Window};
use gpufleet_collector::metrics::Metrics;
use gpufleet_harness::agents::shipped_detector;
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::exposition::Format;
use gpufleet_model::{NodeIdentity, UnixMs};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let scrapes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let now = UnixMs::now();
    let fleet = Arc::new(Fleet::new(Window::default()));
    for i in 0..nodes {
        let backend = GpuBackend::Simulated {
            gpus: 8,
            model: "h100-sxm-80gb".into(),
            scenario: None,
            seed: u64::from(i),
        };
        let identity = NodeIdentity {
            hostname: format!("gpu-node-{i:04}"),
            ..Default::default()
        };
        let (mut agent, _) = start_node(identity.clone(), &backend, shipped_detector(), now)
            .expect("a simulated node starts");
        let sample = agent.tick(now).sample;
        fleet.on_hello(
            &Hello {
                protocol_version: gpufleet_proto::PROTOCOL_VERSION,
                node: identity.clone(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                session_id: format!("s{i}"),
                inventory: agent.inventory().clone(),
                gpu_source: "simulated".into(),
                labels: Default::default(),
            },
            now,
        );
        let batch = Batch {
            sequence: 1,
            samples: vec![sample],
            events: vec![],
            inventory: None,
            dropped_samples: 0,
            dropped_events: 0,
        };
        fleet.on_batch(&identity.hostname, &batch, now);
    }
    let evaluator = Arc::new(Evaluator::new(fleet.clone(), EngineConfig::default()));
    evaluator.evaluate(now);
    // What a scrape does under the fleet's read lock (ingest's writes wait meanwhile).
    let t = Instant::now();
    fleet.with_nodes(|nodes| {
        let copies: Vec<_> = nodes.iter().map(|n| n.latest_only()).collect();
        let audit = gpufleet_collector::metrics::compliance::summary(nodes, None, now);
        (copies.len(), audit)
    });
    let locked_ms = t.elapsed().as_secs_f64() * 1000.0;
    let metrics = Metrics::new(fleet, evaluator);
    println!("fleet: {nodes} nodes × 8 GPUs; {scrapes} scrapes per format");
    println!("fleet lock held per scrape (copy + compliance audit): {locked_ms:.1} ms");
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut times = Vec::new();
        let mut bytes = 0;
        let mut series = 0;
        for _ in 0..scrapes {
            let t = Instant::now();
            let out = metrics.render(format, now);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = out.len();
            series = out.lines().filter(|l| !l.starts_with('#')).count();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{format:?}: {series} series, {:.1} MB; render median {:.1} ms, max {:.1} ms",
            bytes as f64 / 1e6,
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
