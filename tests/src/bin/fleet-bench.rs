//! Benchmark: a simulated fleet in virtual time through the real agent pipeline, fleet state
//! and diagnosis engine. Prints sampling+ingest throughput and the cost of one diagnosis
//! evaluation over the whole fleet.
//!
//!   cargo run --release -p gpufleet-tests --bin fleet-bench -- [NODES] [VIRTUAL_MINUTES]
//!
//! Defaults: 1,000 nodes × 8 H100s for 10 virtual minutes, 1 s samples, evaluation every 2 s
//! (the collector's default), 300-sample window (the collector's default).

use std::sync::Arc;
use std::time::Duration;

use gpufleet_sim::Scenario;
use gpufleet_tests::virtual_fleet::{RunOptions, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let minutes: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let text = format!(
        "name = \"bench\"\nhealthy = true\n[fleet]\nnodes = {nodes}\nmodel = \"h100\"\ngpus_per_node = 8\nseed = 1\n"
    );
    let sc = Arc::new(Scenario::parse(&text, "fleet-bench").expect("bench scenario"));
    let opts = RunOptions {
        duration_ms: Some(minutes * 60_000),
        stop_when_met: false,
        time_rules: true,
        ..RunOptions::default()
    };
    let out = run(sc, &opts);
    let mut evals = out.eval_wall.clone();
    evals.sort();
    let pct = |p: f64| evals[((evals.len() as f64 - 1.0) * p) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fleet: {nodes} nodes × 8 GPUs, {minutes} virtual min at 1 s ({} node-samples)",
        out.node_ticks
    );
    println!(
        "sample + ingest: {:.1} s wall, {:.1} µs per node-sample, {:.0} node-samples/s",
        out.tick_wall.as_secs_f64(),
        out.tick_wall.as_secs_f64() * 1e6 / out.node_ticks as f64,
        out.node_ticks as f64 / out.tick_wall.as_secs_f64()
    );
    println!(
        "diagnosis evaluation over the whole fleet ({} runs): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        evals.len(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(*evals.last().expect("at least one evaluation"))
    );
    println!("findings fired: {}", out.fired.len());
    println!("each rule alone over the whole fleet (median of 5 passes, final state):");
    for (rule, d) in &out.rule_wall {
        println!("  {rule:<28} {:>8.2} ms", ms(*d));
    }
}
