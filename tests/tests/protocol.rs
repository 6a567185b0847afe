//! The wire contract under bad input: wrong protocol version, messages out of order, invalid
//! or oversized payloads. Each gets a clear gRPC status; the collector keeps serving and loses
//! nothing it had acknowledged.

use std::time::Duration;

use gpufleet_collector::server::{self, ServerConfig};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Inventory, NodeIdentity, Sample, UnixMs};
use gpufleet_proto::v1::{
    self as pb, AgentMessage, agent_message, collector_message, telemetry_client::TelemetryClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn hello(node: &str, version: u32) -> AgentMessage {
    labelled_hello(node, version, &[])
}

/// A Hello with `labels` as the agent's `--label` flags give them (not checked here: the
/// point is what the collector does with bad ones).
fn labelled_hello(node: &str, version: u32, labels: &[(&str, &str)]) -> AgentMessage {
    let mut h: pb::Hello = Hello {
        protocol_version: version,
        node: NodeIdentity {
            hostname: node.into(),
            ..Default::default()
        },
        agent_version: "test".into(),
        session_id: format!("{node}-session"),
        inventory: Inventory::default(),
        gpu_source: "simulated".into(),
        labels: Default::default(),
    }
    .into();
    h.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(h)),
    }
}

fn batch(seq: u64) -> AgentMessage {
    let b = Batch {
        sequence: seq,
        samples: vec![Sample {
            // One moment per batch (the store keeps one sample per node and time).
            timestamp: UnixMs::now().plus_ms(seq.min(1 << 40) as i64),
            ..Default::default()
        }],
        ..Default::default()
    };
    AgentMessage {
        msg: Some(agent_message::Msg::Batch(b.into())),
    }
}

/// Opens a stream, sends `msgs`, and returns the first thing the collector answers.
async fn exchange(
    url: &str,
    msgs: Vec<AgentMessage>,
) -> Result<Vec<pb::CollectorMessage>, tonic::Status> {
    let mut client = TelemetryClient::connect(url.to_string())
        .await
        .expect("connect");
    client = client.max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(m))) => {
                got.push(m);
                if got.len() >= 2 {
                    drop(tx);
                    return Ok(got);
                }
            }
            Ok(Ok(None)) => return Ok(got),
            Ok(Err(s)) => return Err(s),
            Err(_) => return Ok(got),
        }
    }
}

async fn start() -> (server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().into(),
    ))
    .await
    .unwrap();
    (s, dir)
}

#[tokio::test]
async fn bad_input_gets_clear_statuses_and_the_collector_keeps_serving() {
    let (server, _dir) = start().await;
    let url = server.url();

    // (case, messages, expected code, text the message must contain)
    let oversized = AgentMessage {
        msg: Some(agent_message::Msg::Batch(pb::Batch {
            sequence: 1,
            events: vec![pb::Event {
                message: "x".repeat(20 << 20),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let cases: Vec<(&str, Vec<AgentMessage>, tonic::Code, &str)> = vec![
        (
            "newer protocol",
            vec![hello("n1", 2)],
            tonic::Code::FailedPrecondition,
            "protocol v2",
        ),
        (
            "batch before hello",
            vec![batch(1)],
            tonic::Code::InvalidArgument,
            "first message",
        ),
        (
            "empty hostname",
            vec![hello("", 1)],
            tonic::Code::InvalidArgument,
            "hostname",
        ),
        (
            "bad hostname",
            vec![hello("a b/c", 1)],
            tonic::Code::InvalidArgument,
            "hostname",
        ),
        (
            "bad label value",
            vec![labelled_hello("n5", 1, &[("pool", "two words")])],
            tonic::Code::InvalidArgument,
            "label pool",
        ),
        (
            "bad label key",
            vec![labelled_hello("n6", 1, &[("-pool", "training")])],
            tonic::Code::InvalidArgument,
            "label key \"-pool\"",
        ),
        (
            "second hello",
            vec![hello("n2", 1), hello("n2", 1)],
            tonic::Code::InvalidArgument,
            "Hello",
        ),
        (
            "sequence 0",
            vec![hello("n3", 1), batch(0)],
            tonic::Code::InvalidArgument,
            "sequence",
        ),
        (
            "oversized",
            vec![hello("n4", 1), oversized],
            tonic::Code::OutOfRange,
            "message length too large",
        ),
    ];
    for (name, msgs, code, text) in cases {
        let r = exchange(&url, msgs).await;
        let status = match r {
            Err(s) => s,
            Ok(m) => panic!("{name}: expected {code:?}, got messages {m:?}"),
        };
        assert_eq!(status.code(), code, "{name}: {}", status.message());
        assert!(
            status.message().contains(text),
            "{name}: {:?} lacks {text:?}",
            status.message()
        );
    }

    // After all that, a well-behaved agent is served and acknowledged.
    let got = exchange(&url, vec![hello("good", 1), batch(1), batch(2)])
        .await
        .unwrap();
    let acks: Vec<u64> = got
        .iter()
        .filter_map(|m| match &m.msg {
            Some(collector_message::Msg::Ack(a)) => Some(a.stored_sequence),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [1, 2]);
    // Acknowledged means stored.
    let stored = server
        .store
        .samples("good", UnixMs(0), UnixMs(i64::MAX), 10)
        .unwrap();
    assert_eq!(stored.len(), 2);
    // A refused Hello left nothing behind.
    assert!(server.fleet.node("n5").is_none() && server.fleet.node("n6").is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hello_labels_reach_fleet_state_and_the_store() {
    let (server, _dir) = start().await;
    let labels = [("pool", "training"), ("example.com/rack", "r12")];
    exchange(
        &server.url(),
        vec![labelled_hello("n", 1, &labels), batch(1)],
    )
    .await
    .unwrap();
    let want: gpufleet_model::Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(server.fleet.node("n").unwrap().labels, want);
    assert_eq!(server.store.nodes().unwrap()[0].labels, want);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn re_sent_batches_are_stored_once() {
    let (server, _dir) = start().await;
    let url = server.url();
    exchange(&url, vec![hello("n", 1), batch(1), batch(2)])
        .await
        .unwrap();
    // The agent reconnects (same session) and re-sends what it had not seen acknowledged.
    exchange(&url, vec![hello("n", 1), batch(2), batch(3)])
        .await
        .unwrap();
    let stored = server
        .store
        .samples("n", UnixMs(0), UnixMs(i64::MAX), 10)
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(server.store.last_sequence("n", "n-session").unwrap(), 3);
    server.stop().await.unwrap();
}

/// A batch of one sample whose GPUs are `gpus` (as the wire carries them).
fn raw_batch(seq: u64, gpus: Vec<pb::GpuSample>) -> AgentMessage {
    let mut b: pb::Batch = Batch {
        sequence: seq,
        samples: vec![Sample {
            timestamp: UnixMs::now(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .into();
    b.samples[0].gpus = gpus;
    if let Some(h) = b.samples[0].host.as_mut() {
        h.cpu_percent = Some(f32::NAN);
        h.load_average_1m = Some(f64::INFINITY);
    }
    AgentMessage {
        msg: Some(agent_message::Msg::Batch(b)),
    }
}

#[tokio::test]
async fn impossible_readings_are_stored_absent_and_contradictions_refused() {
    let (server, _dir) = start().await;
    let url = server.url();
    let gpu = |index: u32, uuid: &str| pb::GpuSample {
        index,
        uuid: uuid.into(),
        status: pb::GpuStatus::Ok as i32,
        sm_clock_mhz: Some(u32::MAX),
        temperature_gpu_celsius: Some(61),
        ecc_uncorrected_volatile: Some(u64::MAX),
        ..Default::default()
    };
    // NVML sentinels, NaN and infinities: acknowledged, stored as "not reported".
    exchange(
        &url,
        vec![hello("n", 1), raw_batch(1, vec![gpu(0, "GPU-a")])],
    )
    .await
    .unwrap();
    let stored = server
        .store
        .samples("n", UnixMs(0), UnixMs(i64::MAX), 10)
        .unwrap();
    assert_eq!(stored.len(), 1);
    let g = &stored[0].gpus[0];
    assert_eq!(g.temperature_gpu_celsius, Some(61), "a sane reading stays");
    assert_eq!(g.sm_clock_mhz, None, "never 4294967295 MHz");
    assert_eq!(g.ecc_uncorrected_volatile, None);
    assert_eq!(stored[0].host.cpu_percent, None);
    assert_eq!(stored[0].host.load_average_1m, None);

    // Two GPUs with one index: refused with a status that says so; nothing stored.
    let twice = exchange(
        &url,
        vec![
            hello("m", 1),
            raw_batch(1, vec![gpu(0, "GPU-a"), gpu(0, "GPU-b")]),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::InvalidArgument);
    assert!(
        twice.message().contains("GPU index 0 appears twice"),
        "{}",
        twice.message()
    );
    assert!(
        server
            .store
            .samples("m", UnixMs(0), UnixMs(i64::MAX), 10)
            .unwrap()
            .is_empty()
    );

    // A GPU name of a megabyte: refused, naming the record and the limit.
    let mut h = hello("big", 1);
    if let Some(agent_message::Msg::Hello(h)) = &mut h.msg {
        h.inventory.as_mut().unwrap().gpus.push(pb::GpuInfo {
            name: "x".repeat(1 << 20),
            ..Default::default()
        });
    }
    let big = exchange(&url, vec![h]).await.unwrap_err();
    assert_eq!(big.code(), tonic::Code::InvalidArgument);
    assert!(
        big.message().contains("inventory.gpus[]"),
        "{}",
        big.message()
    );
    assert!(server.fleet.node("big").is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sequence_numbers_must_grow_within_a_stream_and_fit_in_63_bits() {
    let (server, _dir) = start().await;
    let url = server.url();
    let back = exchange(&url, vec![hello("n", 1), batch(5), batch(3)])
        .await
        .unwrap_err();
    assert_eq!(back.code(), tonic::Code::InvalidArgument);
    assert!(
        back.message().contains("must grow within a stream"),
        "{}",
        back.message()
    );
    // What came before the bad batch was stored and acknowledged.
    assert_eq!(server.store.last_sequence("n", "n-session").unwrap(), 5);

    let huge = exchange(&url, vec![hello("m", 1), batch(u64::MAX)])
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::InvalidArgument);
    assert!(huge.message().contains("63 bits"), "{}", huge.message());
    assert_eq!(server.store.last_sequence("m", "m-session").unwrap(), 0);
    // And a later, sane batch of that session is still stored.
    exchange(&url, vec![hello("m", 1), batch(1)]).await.unwrap();
    assert_eq!(server.store.last_sequence("m", "m-session").unwrap(), 1);
    server.stop().await.unwrap();
}

#[test]
fn the_cli_does_not_hang_on_a_peer_that_never_answers() {
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    // The shipped default, and a short one for the test (the default is a minute).
    assert_eq!(
        gpufleet_collector::cli::CLI_DEADLINE,
        Duration::from_secs(60)
    );
    let started = std::time::Instant::now();
    let out = gpufleet_tests::gpufleet()
        .args(["nodes", "--collector", &addr.to_string()])
        .env("GPUFLEET_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() <= Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer within 2s"), "{err}");
    // A bad deadline is a usage error, said as such.
    let bad = gpufleet_tests::gpufleet()
        .args(["nodes", "--collector", &addr.to_string()])
        .env("GPUFLEET_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("GPUFLEET_TIMEOUT"));
}

#[tokio::test]
async fn a_reading_from_the_future_is_refused_and_does_not_freeze_the_node() {
    let (server, _dir) = start().await;
    let url = server.url();
    let stamped = |seq: u64, t: UnixMs| {
        let b = Batch {
            sequence: seq,
            samples: vec![Sample {
                timestamp: t,
                ..Default::default()
            }],
            ..Default::default()
        };
        AgentMessage {
            msg: Some(agent_message::Msg::Batch(b.into())),
        }
    };
    let year_2100 = UnixMs(4_102_444_800_000);
    let future = exchange(&url, vec![hello("n", 1), stamped(1, year_2100)])
        .await
        .unwrap_err();
    assert_eq!(future.code(), tonic::Code::InvalidArgument);
    assert!(
        future.message().contains("ahead of the collector's clock"),
        "{}",
        future.message()
    );
    let past = exchange(&url, vec![hello("n", 1), stamped(1, UnixMs(86_400_000))])
        .await
        .unwrap_err();
    assert!(
        past.message().contains("older than 30 days"),
        "{}",
        past.message()
    );
    // The node's real readings still become its latest.
    let now = UnixMs::now();
    exchange(&url, vec![hello("n", 1), stamped(1, now)])
        .await
        .unwrap();
    let latest = server
        .fleet
        .node("n")
        .unwrap()
        .latest()
        .map(|s| s.timestamp);
    assert_eq!(latest, Some(now));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_agent_cannot_stream_as_a_connected_node() {
    let (server, _dir) = start().await;
    let url = server.url();
    // The real agent's stream stays open.
    let mut client = TelemetryClient::connect(url.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello("n", 1)).await.unwrap();
    tx.send(batch(1)).await.unwrap();
    let mut live = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    live.message().await.unwrap().expect("ack of batch 1");

    // Another session as the same node: refused, nothing of it stored or shown.
    let mut forged = match hello("n", 1).msg {
        Some(agent_message::Msg::Hello(h)) => h,
        _ => unreachable!(),
    };
    forged.session_id = "forger".into();
    forged.agent_version = "forged".into();
    let refused = exchange(
        &url,
        vec![AgentMessage {
            msg: Some(agent_message::Msg::Hello(forged)),
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert!(
        refused
            .message()
            .contains("already streaming from another agent"),
        "{}",
        refused.message()
    );
    let n = server.fleet.node("n").unwrap();
    assert_eq!(n.agent_version, "test");
    assert!(n.connected);

    // The same agent reconnecting while its old stream lingers takes over (its batch is
    // stored); that the old stream's end then leaves the node connected is
    // `fleet::tests` (stream numbers).
    exchange(&url, vec![hello("n", 1), batch(2)]).await.unwrap();
    drop(tx);
    drop(live);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.store.last_sequence("n", "n-session").unwrap(), 2);
    server.stop().await.unwrap();
}
