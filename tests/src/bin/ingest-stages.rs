//! Benchmark: what each in-process stage of ingest costs for one realistic 8-GPU batch (one
//! sample, as agents send them), and what a stored sample takes on disk in a chunk. Prints
//! µs per batch and per GPU-sample for: protobuf decode, validation into the domain type,
//! the store's encodings, and the columnar chunk (bytes per GPU-sample, encode/decode cost).
//!
//!   cargo run --release -p gpufleet-tests --bin ingest-stages -- [ITERATIONS]

use std::hint::black_box;
use std::time::Instant;

use gpufleet_agent::{GpuBackend, start_node};
use gpufleet_collector::store::chunk;
use gpufleet_model::convert::Batch;
use gpufleet_model::{NodeIdentity, UnixMs};
use gpufleet_proto::v1 as pb;
use prost::Message;

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let origin = UnixMs(1_700_000_000_000);
    let (mut agent, _) = start_node(
        NodeIdentity {
            hostname: "stages".into(),
            ..Default::default()
        },
        &GpuBackend::Simulated {
            gpus: 8,
            model: "h100".into(),
            scenario: None,
            seed: 1,
        },
        gpufleet_harness::agents::shipped_detector(),
        origin,
    )
    .expect("a simulated node starts");
    let samples: Vec<pb::Sample> = (0..600)
        .map(|i| pb::Sample::from(agent.tick(origin.plus_ms(i * 1000)).sample))
        .collect();
    let gpus = samples[0].gpus.len() as f64;
    if let Ok(path) = std::env::var("DUMP_SAMPLES") {
        let all = pb::Batch {
            samples: samples.clone(),
            ..Default::default()
        };
        std::fs::write(path, all.encode_to_vec()).expect("dump");
    }
    let batch = pb::Batch {
        sequence: 7,
        samples: vec![samples[0].clone()],
        ..Default::default()
    };
    let wire = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Batch(batch.clone())),
    }
    .encode_to_vec();
    println!(
        "one batch: 1 sample × {gpus} GPUs, {} bytes on the wire",
        wire.len()
    );
    let time = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..iters / 10 {
            f();
        }
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!(
            "{name:<40} {us:>8.2} µs per batch {:>7.2} µs per GPU-sample",
            us / gpus
        );
    };
    time("protobuf decode (AgentMessage)", &mut || {
        black_box(pb::AgentMessage::decode(black_box(wire.as_slice())).unwrap());
    });
    time("validate into the domain Batch", &mut || {
        black_box(Batch::try_from(black_box(batch.clone())).unwrap());
    });
    let domain = Batch::try_from(batch.clone()).unwrap();
    time("clone the domain Batch", &mut || {
        black_box(black_box(&domain).clone());
    });
    time("domain sample → protobuf bytes", &mut || {
        black_box(pb::Sample::from(black_box(&domain).samples[0].clone()).encode_to_vec());
    });
    for n in [60usize, 120, 600] {
        let blob = chunk::encode(samples[..n].to_vec());
        let raw: usize = samples[..n].iter().map(|s| s.encoded_len()).sum();
        println!(
            "chunk of {n:>3} samples: {:>7} bytes ({:.1} B per GPU-sample; protobuf {:.0} B)",
            blob.len(),
            blob.len() as f64 / (n as f64 * gpus),
            raw as f64 / (n as f64 * gpus)
        );
    }
    let per = |name: &str, n: usize, f: &mut dyn FnMut()| {
        let reps = (iters / n).max(1);
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / (reps * n) as f64;
        println!(
            "{name:<40} {us:>8.2} µs per sample    {:>7.2} µs per GPU-sample",
            us / gpus
        );
    };
    per("chunk encode (600 samples)", 600, &mut || {
        black_box(chunk::encode(black_box(samples.clone())));
    });
    let blob = chunk::encode(samples.clone());
    per("chunk decode (600 samples)", 600, &mut || {
        black_box(chunk::decode(black_box(&blob)).unwrap());
    });
}
