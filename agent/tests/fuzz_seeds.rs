//! The seeds of the `wire_agent_message` and `spool_segment` fuzz targets (`fuzz/corpus/`,
//! docs/fuzzing.md): a real simulated node's Hello and Batches as an agent sends them, and
//! the spool segment an agent writes for them.
//!
//! The tests check that the committed seeds are still messages the collector accepts and a
//! segment the agent reads back whole (a format change that breaks them shows here);
//! `GPUFLEET_WRITE_FUZZ_SEEDS=1` rewrites them.

use std::path::PathBuf;
use std::sync::Arc;

use gpufleet_agent::detect::{DEFAULT_SATURATION_HOLD, Detector, saturation::Thresholds};
use gpufleet_agent::{GpuBackend, start_node};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{NodeIdentity, UnixMs};
use gpufleet_proto::v1 as pb;
use gpufleet_sim::Scenario;
use prost::Message;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn write_seeds() -> bool {
    std::env::var_os("GPUFLEET_WRITE_FUZZ_SEEDS").is_some()
}

/// (file name, encoded AgentMessage): a Hello, a one-sample Batch, and a Batch of ten
/// seconds around an Xid 79 with its events and the changed inventory.
fn seeds() -> Vec<(String, Vec<u8>)> {
    batches()
        .into_iter()
        .map(|(name, m)| (name, m.encode_to_vec()))
        .collect()
}

fn batches() -> Vec<(String, pb::AgentMessage)> {
    let scenario_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/faults/fallen_off_bus.toml");
    let scenario = Arc::new(Scenario::load(&scenario_path).expect("the shipped scenario loads"));
    let start = UnixMs(1_760_000_000_000);
    let backend = GpuBackend::Simulated {
        gpus: 8,
        model: "h100-sxm-80gb".into(),
        scenario: Some(scenario),
        seed: 1,
    };
    let identity = NodeIdentity {
        hostname: "gpu-node-02".into(),
        machine_id: "3f1c0e5d2b8a4c6e9d7f1a2b3c4d5e6f".into(),
        boot_id: "0b5e2f6a-1c3d-4e8f-9a7b-6c5d4e3f2a1b".into(),
    };
    let detector = Detector::new(None, Thresholds::default(), DEFAULT_SATURATION_HOLD);
    let (mut agent, first_events) =
        start_node(identity, &backend, detector, start).expect("a simulated node starts");
    let hello = Hello {
        protocol_version: gpufleet_proto::PROTOCOL_VERSION,
        node: agent.identity().clone(),
        agent_version: "0.1.0".into(),
        session_id: "6f0d9c2e-58b1-4a7e-93c4-1d2e3f4a5b6c".into(),
        inventory: agent.inventory().clone(),
        gpu_source: "simulated".into(),
        labels: [("pool", "training"), ("rack", "r12")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let one = agent.tick(start.plus_ms(1_000));
    let first = Batch {
        sequence: 1,
        samples: vec![one.sample],
        events: first_events.into_iter().chain(one.events).collect(),
        inventory: one.inventory,
        ..Default::default()
    };
    let mut around_xid = Batch {
        sequence: 2,
        dropped_samples: 3,
        ..Default::default()
    };
    for s in 26..36 {
        let t = agent.tick(start.plus_ms(s * 1_000));
        around_xid.samples.push(t.sample);
        around_xid.events.extend(t.events);
        if t.inventory.is_some() {
            around_xid.inventory = t.inventory;
        }
    }
    let msg = |m: pb::agent_message::Msg| pb::AgentMessage { msg: Some(m) };
    vec![
        (
            "hello".into(),
            msg(pb::agent_message::Msg::Hello(hello.into())),
        ),
        (
            "batch-one-sample".into(),
            msg(pb::agent_message::Msg::Batch(first.into())),
        ),
        (
            "batch-xid79".into(),
            msg(pb::agent_message::Msg::Batch(around_xid.into())),
        ),
    ]
}

#[test]
fn committed_wire_seeds_are_messages_the_collector_accepts() {
    let dir = corpus_dir("wire_agent_message");
    if write_seeds() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut seen = (0, 0);
    for (name, _) in seeds() {
        let bytes = std::fs::read(dir.join(&name)).unwrap_or_else(|e| {
            panic!("{name}: {e} (GPUFLEET_WRITE_FUZZ_SEEDS=1 cargo test -p gpufleet-agent --test fuzz_seeds writes it)")
        });
        let m = pb::AgentMessage::decode(bytes.as_slice()).expect("a seed decodes");
        match m.msg.expect("a seed holds a message") {
            pb::agent_message::Msg::Hello(h) => {
                let h = Hello::try_from(h).expect("the seed Hello is accepted");
                assert_eq!(h.inventory.gpus.len(), 8);
                seen.0 += 1;
            }
            pb::agent_message::Msg::Batch(b) => {
                let b = Batch::try_from(b).expect("the seed Batch is accepted");
                assert!(!b.samples.is_empty());
                seen.1 += 1;
            }
        }
    }
    assert_eq!(seen, (1, 2));
}

/// The segment an agent leaves after spooling the seed batches: the first sealed and
/// acknowledged, the second sealed and owed, the Hello's inventory in an open tick.
fn spool_segment() -> Vec<u8> {
    use gpufleet_agent::spool::Spool;
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) =
        Spool::open(dir.path(), 0, "6f0d9c2e-58b1-4a7e-93c4-1d2e3f4a5b6c").unwrap();
    let mut owed = 0;
    for (_, m) in batches() {
        if let Some(pb::agent_message::Msg::Batch(b)) = m.msg {
            let b = Batch::try_from(b).unwrap();
            let seq = b.sequence;
            spool
                .tick(Batch {
                    sequence: 0,
                    dropped_samples: 0,
                    dropped_events: 0,
                    ..b.clone()
                })
                .unwrap();
            spool
                .seal(seq, b.dropped_samples, b.dropped_events)
                .unwrap();
            owed = seq;
        }
    }
    spool.released(owed - 1).unwrap();
    spool.tick(Batch::default()).unwrap();
    spool.sync().unwrap();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    std::fs::read(&segs[0]).unwrap()
}

#[test]
fn committed_spool_seed_is_a_segment_the_agent_reads_whole() {
    use gpufleet_agent::spool::Spool;
    let path = corpus_dir("spool_segment").join("segment");
    if write_seeds() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, spool_segment()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (GPUFLEET_WRITE_FUZZ_SEEDS=1 cargo test -p gpufleet-agent --test fuzz_seeds writes it)", path.display())
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.seg"), bytes).unwrap();
    let (_, rec) = Spool::open(dir.path(), 0, "other").unwrap();
    assert!(rec.damaged.is_empty(), "{:?}", rec.damaged);
    assert_eq!(
        rec.session_id.as_deref(),
        Some("6f0d9c2e-58b1-4a7e-93c4-1d2e3f4a5b6c")
    );
    assert_eq!(
        rec.batches.len(),
        1,
        "batch 1 was acknowledged, batch 2 is owed"
    );
    assert_eq!(rec.batches[0].sequence, 2);
    assert_eq!(rec.next_sequence, 3);
}
