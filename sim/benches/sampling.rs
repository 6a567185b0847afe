//! What one reading of a simulated node costs: all 8 GPUs and the host of an H100 node, healthy
//! and with one active fault (the fault makes the energy and violation counters integrate over
//! its breakpoints).
//!
//!   cargo bench -p gpufleet-sim --bench sampling -- [SAMPLES]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use gpufleet_model::UnixMs;
use gpufleet_sim::{Scenario, SimConfig, simulated_node};

const T0: UnixMs = UnixMs(1_767_225_600_000);

fn main() {
    // `cargo bench` passes `--bench`; the first number given is the sample count.
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let fault = Scenario::parse(
        "name = \"p\"\n[[fault]]\nkind = \"thermal_throttle\"\ngpu = 3\nstart = \"10s\"\n",
        "bench.toml",
    )
    .expect("bench scenario");
    for (label, scenario) in [
        ("healthy", None),
        ("one thermal fault", Some(Arc::new(fault))),
    ] {
        let (gpus, host) = simulated_node(SimConfig {
            node_name: "gpu-node-01".into(),
            model: "h100".into(),
            gpu_count: 8,
            seed: 7,
            scenario,
            start: T0,
        })
        .expect("simulated node");
        let began = Instant::now();
        for t in 0..n {
            let at = T0.plus_ms(i64::from(t) * 1000);
            black_box(gpus.sample(at));
            black_box(host.sample(at));
        }
        let per = began.elapsed() / n;
        println!("one 8-GPU H100 node + host ({label}), {n} samples: {per:?} per sample");
    }
}
