//! Limits and hostile clients (docs/limits.md): a limit lowered in `collector.toml` refuses
//! what is past it and names the key; thousands of silent connections and streams without a
//! Hello are closed while a real agent is served and the collector's memory stays bounded; at
//! the file-descriptor limit the collector waits instead of spinning and serves again once
//! descriptors are free; `max_streams` answers RESOURCE_EXHAUSTED.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use gpufleet_collector::limits::LimitsConfig;
use gpufleet_collector::metrics::ingest::StreamRefused;
use gpufleet_collector::server::{self, ServerConfig};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Inventory, NodeIdentity, Sample, UnixMs};
use gpufleet_proto::v1::{
    self as pb, AgentMessage, agent_message, collector_message, telemetry_client::TelemetryClient,
};
use gpufleet_tests::{Proc, free_port, gpufleet, serve_with, wait_for};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn hello_with_gpus(node: &str, gpus: u32) -> AgentMessage {
    let mut h: pb::Hello = Hello {
        protocol_version: gpufleet_proto::PROTOCOL_VERSION,
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
    h.inventory.as_mut().unwrap().gpus = (0..gpus)
        .map(|i| pb::GpuInfo {
            index: i,
            uuid: format!("GPU-{node}-{i}"),
            ..Default::default()
        })
        .collect();
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(h)),
    }
}

fn hello(node: &str) -> AgentMessage {
    hello_with_gpus(node, 0)
}

/// Batch `seq` with `samples` readings, each at its own moment.
fn batch(seq: u64, samples: usize) -> AgentMessage {
    let base = UnixMs::now().plus_ms((seq as i64) * 1_000);
    let b = Batch {
        sequence: seq,
        samples: (0..samples)
            .map(|i| Sample {
                timestamp: base.plus_ms(i as i64),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    AgentMessage {
        msg: Some(agent_message::Msg::Batch(b.into())),
    }
}

/// An open stream: what to send, and what comes back.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<pb::CollectorMessage>,
}

impl Agent {
    /// Connects, sends `first`, and returns once the collector answered the call.
    async fn open(url: &str, first: AgentMessage) -> Result<Agent, tonic::Status> {
        let mut client = TelemetryClient::connect(url.to_string())
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Agent { tx, rx })
    }

    /// Sends `msg` and waits (at most 10 s) for the ack of `seq`.
    async fn acked(&mut self, msg: AgentMessage, seq: u64) -> Result<(), String> {
        self.tx.send(msg).await.map_err(|e| e.to_string())?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
                Err(_) => return Err(format!("no ack of {seq} within 10 s")),
                Ok(Err(s)) => return Err(format!("stream ended: {s}")),
                Ok(Ok(None)) => return Err("stream closed".into()),
                Ok(Ok(Some(pb::CollectorMessage {
                    msg: Some(collector_message::Msg::Ack(a)),
                }))) if a.stored_sequence == seq => return Ok(()),
                Ok(Ok(Some(_))) => {}
            }
        }
    }
}

/// The first status of a stream that starts with `msgs`.
async fn refusal(url: &str, msgs: Vec<AgentMessage>) -> tonic::Status {
    let mut msgs = msgs.into_iter();
    let mut agent = match Agent::open(url, msgs.next().unwrap()).await {
        Ok(a) => a,
        Err(s) => return s,
    };
    for m in msgs {
        let _ = agent.tx.send(m).await;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), agent.rx.message()).await {
            Ok(Err(s)) => return s,
            Ok(Ok(Some(_))) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn write_config(dir: &Path, limits: &str) -> String {
    let path = dir.join("collector.toml");
    std::fs::write(&path, format!("[limits]\n{limits}")).unwrap();
    path.display().to_string()
}

/// `gpufleet serve` on a free port with `[limits]` as given, `/metrics` on another; waits
/// until it answers. Returns it, its URL and its `/metrics` address.
fn serve_limited(dir: &Path, limits: &str) -> (Proc, String, String) {
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir, limits);
    let data = dir.join("data");
    let proc = serve_with(
        port,
        &data,
        &["--config", &config, "--metrics-listen", &metrics],
    );
    let (proc, url) = listening(proc, port);
    (proc, url, metrics)
}

fn listening(proc: Proc, port: u16) -> (Proc, String) {
    let up = wait_for(Duration::from_secs(60), || {
        proc.log().contains("collector listening").then_some(())
    });
    assert!(up.is_some(), "collector did not start:\n{}", proc.log());
    (proc, format!("http://127.0.0.1:{port}"))
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// User + system CPU time of `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lowered_limit_in_the_config_refuses_past_it_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_collector, url, _) = serve_limited(
        dir.path(),
        "max_gpus_per_node = 4\nmax_labels = 2\nmax_message_bytes = 65536\n",
    );
    let s = refusal(&url, vec![hello_with_gpus("eight", 8)]).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("limits.max_gpus_per_node") && s.message().contains("8 entries"),
        "{}",
        s.message()
    );
    // Within the limit: served.
    let mut four = Agent::open(&url, hello_with_gpus("four", 4)).await.unwrap();
    four.acked(batch(1, 1), 1).await.unwrap();
    // A message past the lowered max_message_bytes (80 KB > 64 KiB).
    let big = pb::Batch {
        sequence: 1,
        events: (0..10)
            .map(|_| pb::Event {
                message: "x".repeat(8_000),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let s = refusal(
        &url,
        vec![
            hello("big"),
            AgentMessage {
                msg: Some(agent_message::Msg::Batch(big)),
            },
        ],
    )
    .await;
    assert_eq!(s.code(), tonic::Code::OutOfRange, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_and_streams_without_hello_are_closed_while_an_agent_is_served() {
    const IDLE_TCP: usize = 2_000;
    const CHANNELS: usize = 20;
    const STREAMS_PER_CHANNEL: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let (collector, url, metrics_addr) = serve_limited(
        dir.path(),
        "hello_timeout = \"2s\"\nidle_stream_timeout = \"4s\"\n",
    );
    let pid = collector.child.id();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let rss_before = rss_kib(pid);

    // The legitimate agent streams a batch every 250 ms throughout.
    let agent_url = url.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(async move {
        let mut a = Agent::open(&agent_url, hello_with_gpus("real", 8))
            .await
            .map_err(|s| s.to_string())?;
        let mut seq = 0;
        loop {
            seq += 1;
            a.acked(batch(seq, 1), seq).await?;
            tokio::select! {
                _ = &mut stop_rx => return Ok::<u64, String>(seq),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    });

    // 2,000 TCP connections that never send a byte.
    let started = Instant::now();
    let mut silent = Vec::with_capacity(IDLE_TCP);
    for _ in 0..IDLE_TCP {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let opened = Instant::now();
    let opening = opened - started;
    // HTTP/2 connections whose streams never send their Hello.
    let mut hello_less = Vec::new();
    for _ in 0..CHANNELS {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..STREAMS_PER_CHANNEL {
            let mut client = TelemetryClient::new(channel.clone());
            hello_less.push(tokio::spawn(async move {
                let (tx, rx) = mpsc::channel::<AgentMessage>(1);
                let r = client.stream(ReceiverStream::new(rx)).await;
                drop(tx);
                r.map(|_| ()).unwrap_err()
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_peak = rss_kib(pid);

    // Every silent connection is closed by the collector (EOF or reset).
    let closed = futures_closed(silent, Duration::from_secs(30)).await;
    assert_eq!(closed, IDLE_TCP, "silent connections closed");
    // The last silent connection goes `hello_timeout` (2 s) after it came, or a bit more.
    let closed_after = opened.elapsed();
    for h in hello_less {
        let s = h.await.unwrap();
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{s:?}");
        assert!(
            s.message().contains("limits.hello_timeout"),
            "{}",
            s.message()
        );
    }
    let rss_after = rss_kib(pid);
    stop_tx.send(()).unwrap();
    let batches = agent
        .await
        .unwrap()
        .expect("the real agent was served throughout");
    println!(
        "RSS {rss_before} KiB before, {rss_peak} KiB with {IDLE_TCP} silent connections and {} \
         Hello-less streams, {rss_after} KiB after; opened in {:.1} s, the last closed {:.1} s \
         after it was opened; the agent had {batches} batches acked",
        CHANNELS * STREAMS_PER_CHANNEL,
        opening.as_secs_f64(),
        closed_after.as_secs_f64()
    );
    assert!(batches >= 8, "{batches} batches acked");
    // Bounded: well under 100 KiB per silent connection.
    assert!(
        rss_peak.saturating_sub(rss_before) < 200 * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB"
    );
    let metrics = scrape(&metrics_addr);
    assert!(
        metrics.contains("gpufleet_streams_refused_total{reason=\"hello_timeout\"} 500"),
        "{metrics}"
    );
}

/// Waits for each connection to be closed by its peer; returns how many were within `limit`.
async fn futures_closed(conns: Vec<tokio::net::TcpStream>, limit: Duration) -> usize {
    use tokio::io::AsyncReadExt;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // The server's HTTP/2 settings may come first; then the end.
                let mut b = [0u8; 256];
                let to_end = async {
                    while let Ok(n) = c.read(&mut b).await
                        && n > 0
                    {}
                };
                tokio::time::timeout(limit, to_end).await.is_ok()
            })
        })
        .collect();
    let mut closed = 0;
    for t in tasks {
        closed += usize::from(t.await.unwrap());
    }
    closed
}

/// The collector's `/metrics` (plain HTTP/1.1 on a socket: the test runs on a runtime).
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_fd_limit_the_collector_waits_without_spinning_and_recovers() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    // Silent connections are kept long enough that the descriptors stay taken.
    let config = write_config(
        dir.path(),
        "hello_timeout = \"60s\"\nidle_stream_timeout = \"120s\"\n",
    );
    let port = free_port();
    let mut cmd = gpufleet();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", "127.0.0.1:0", "--config", &config])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("GPUFLEET_METRICS_LISTEN");
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (collector, url) = listening(Proc::spawn(cmd, "gpufleet serve (64 fds)"), port);
    let pid = collector.child.id();

    // More connections than descriptors: the kernel's backlog holds those not accepted.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    let logged = wait_for(Duration::from_secs(20), || {
        collector
            .log()
            .contains("out of file descriptors")
            .then_some(())
    });
    assert!(
        logged.is_some(),
        "no fd-exhaustion log:\n{}",
        collector.log()
    );
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu_before;
    println!("collector CPU over 3 s at the fd limit: {cpu:?}");
    assert!(
        cpu < Duration::from_millis(500),
        "spinning: {cpu:?} of CPU in 3 s"
    );
    let log = collector.log();
    assert_eq!(
        log.matches("out of file descriptors").count(),
        1,
        "logged once per episode:\n{log}"
    );

    drop(held);
    // Served again once descriptors are free.
    let served = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(mut a) = Agent::open(&url, hello("after")).await
                && a.acked(batch(1, 1), 1).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "not served after the episode:\n{}",
        collector.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || collector
            .log()
            .contains("accepting connections again")
            .then_some(()))
        .is_some(),
        "{}",
        collector.log()
    );
}

#[tokio::test]
async fn past_max_streams_a_stream_gets_resource_exhausted_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    config.limits = LimitsConfig {
        max_streams: 2,
        ..LimitsConfig::default()
    };
    let server = server::start(config).await.unwrap();
    let url = server.url();
    let mut a = Agent::open(&url, hello("a")).await.unwrap();
    a.acked(batch(1, 1), 1).await.unwrap();
    let mut b = Agent::open(&url, hello("b")).await.unwrap();
    b.acked(batch(1, 1), 1).await.unwrap();

    let s = refusal(&url, vec![hello("c")]).await;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().contains("limits.max_streams"),
        "{}",
        s.message()
    );
    assert!(server.fleet.node("c").is_none(), "nothing of c is kept");
    assert_eq!(
        server
            .metrics
            .ingest
            .streams_refused(StreamRefused::MaxStreams),
        1
    );

    // A slot frees when a stream ends.
    drop(a);
    let mut c = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(mut c) = Agent::open(&url, hello("c")).await
                && c.acked(batch(1, 1), 1).await.is_ok()
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a stream is accepted once another closed");
    c.acked(batch(2, 1), 2).await.unwrap();
    b.acked(batch(2, 1), 2).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_after_its_hello_is_ended_with_a_status_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    config.limits = LimitsConfig {
        hello_timeout: Duration::from_secs(1),
        idle_stream_timeout: Duration::from_secs(2),
        ..LimitsConfig::default()
    };
    let server = server::start(config).await.unwrap();
    let mut quiet = Agent::open(&server.url(), hello("quiet")).await.unwrap();
    quiet.acked(batch(1, 1), 1).await.unwrap();
    let s = match tokio::time::timeout(Duration::from_secs(20), quiet.rx.message()).await {
        Ok(Err(s)) => s,
        other => panic!("expected the stream to be ended, got {other:?}"),
    };
    assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{s:?}");
    assert!(
        s.message().contains("limits.idle_stream_timeout"),
        "{}",
        s.message()
    );
    assert_eq!(
        server
            .metrics
            .ingest
            .streams_refused(StreamRefused::IdleTimeout),
        1
    );
    let gone = wait_for(Duration::from_secs(5), || {
        (!server.fleet.node("quiet").unwrap().connected).then_some(())
    });
    assert!(gone.is_some(), "the node is shown disconnected");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_samples_per_second_is_slowed_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    config.limits = LimitsConfig {
        max_samples_per_second: 2,
        ..LimitsConfig::default()
    };
    let server = server::start(config).await.unwrap();
    let mut a = Agent::open(&server.url(), hello("fast")).await.unwrap();
    // 40 samples against a 10 s budget of 20: acked, then the stream is held back 10 s.
    a.acked(batch(1, 40), 1).await.unwrap();
    let held = wait_for(Duration::from_secs(5), || {
        let s = server.metrics.ingest.throttled_seconds.get();
        (s > 0.0).then_some(s)
    })
    .expect("throttled");
    assert!((held - 10.0).abs() < 0.5, "held back {held} s");
    assert!(server.fleet.node("fast").unwrap().connected);
    server.stop().await.unwrap();
}
