//! Load generator: N simulated nodes × G GPUs as real gRPC streams (one HTTP/2 connection per
//! node, as real agents have) against a real `gpufleet serve`, with persistence and diagnosis
//! on. Prints sustained GPU-samples/s, the collector's CPU per GPU-sample, RSS and RSS per GPU,
//! send→ack latency percentiles, the collector's disk bytes per GPU-sample, and this process's
//! own CPU (measured separately: the collector's from `/proc/<pid>/stat`, ours from
//! `getrusage(RUSAGE_SELF)`).
//!
//!   cargo build --release -p gpufleet-cli -p gpufleet-tests --bins
//!   target/release/ingest-load --nodes 10000 --duration 120
//!
//! With `--collector URL` it drives a collector started elsewhere (then no CPU/RSS/disk figures).
//! Samples come from the simulator through the agent's own sampler (`NodeAgent::tick`), so
//! they carry realistic, smoothly varying values; they are made once per template node and
//! replayed with each node's own GPU UUIDs and fresh timestamps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use gpufleet_agent::{GpuBackend, start_node};
use gpufleet_model::convert::Hello;
use gpufleet_model::{Labels, NodeIdentity, UnixMs};
use gpufleet_proto::v1::{
    self as pb, AgentMessage, agent_message, collector_message, telemetry_client::TelemetryClient,
};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Drive a gpufleet collector with N simulated nodes over real gRPC")]
struct Args {
    /// Simulated nodes (one gRPC stream and connection each).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// GPUs per node.
    #[arg(long, default_value_t = 8)]
    gpus: u32,
    /// Sample interval per node (each batch holds one sample, as the agent sends them).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Seconds of steady load measured after every node connected and the warm-up.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u64,
    /// Drive this collector instead of starting one (no CPU, RSS or disk figures then).
    #[arg(long)]
    collector: Option<String>,
    /// Extra arguments for the `gpufleet serve` this starts.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Keep the collector's data directory here (default: a temporary one, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object with every figure after the table.
    #[arg(long)]
    json: bool,
    /// After the measured window, while every node still streams, time the operator's queries
    /// (`gpufleet nodes`, `diagnose`, `node NAME`, `series NAME temperature --since 24h`), each as its own CLI process,
    /// this many times each (0: none).
    #[arg(long, default_value_t = 0)]
    query_runs: usize,
}

/// The operator's queries timed by `--query-runs`, as typed (NODE is one of the load's nodes).
const QUERIES: &[&[&str]] = &[
    &["nodes"],
    &["nodes", "-o", "json"],
    &["diagnose"],
    &["diagnose", "-o", "json"],
    &["node", "NODE"],
    &["series", "NODE", "temperature", "--since", "24h"],
];

/// Runs each of [`QUERIES`] `runs` times as a `gpufleet` process against `url`, output
/// discarded, and returns per query its wall times in ms and its output size.
fn time_queries(
    url: &str,
    node: &str,
    runs: usize,
) -> anyhow::Result<Vec<(String, Vec<f64>, usize)>> {
    let bin = gpufleet_tests::target_dir().join("gpufleet");
    let mut out = Vec::new();
    for q in QUERIES {
        let args: Vec<&str> = q
            .iter()
            .map(|a| if *a == "NODE" { node } else { a })
            .collect();
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let o = std::process::Command::new(&bin)
                .args(&args)
                .args(["--collector", url])
                .output()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                o.status.success(),
                "gpufleet {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
            bytes = o.stdout.len();
        }
        times.sort_by(f64::total_cmp);
        out.push((format!("gpufleet {}", args.join(" ")), times, bytes));
    }
    Ok(out)
}

/// Distinct simulated nodes whose samples are replayed by all (node i uses template i % T,
/// shifted by i steps so nodes do not move in lockstep).
const TEMPLATES: usize = 16;
/// Samples made per template (the replay loops over them).
const STEPS: usize = 600;

struct Template {
    hello: pb::Hello,
    samples: Vec<pb::Sample>,
}

fn templates(gpus: u32) -> Vec<Template> {
    let origin = UnixMs(1_700_000_000_000);
    (0..TEMPLATES)
        .map(|t| {
            let backend = GpuBackend::Simulated {
                gpus,
                model: "h100".into(),
                scenario: None,
                seed: t as u64 + 1,
            };
            let identity = NodeIdentity {
                hostname: format!("template-{t}"),
                machine_id: format!("template-{t}"),
                boot_id: String::new(),
            };
            let (mut agent, _) = start_node(
                identity.clone(),
                &backend,
                gpufleet_harness::agents::shipped_detector(),
                origin,
            )
            .expect("a simulated node without a scenario starts");
            let samples = (0..STEPS)
                .map(|i| pb::Sample::from(agent.tick(origin.plus_ms(i as i64 * 1000)).sample))
                .collect();
            let hello = Hello {
                protocol_version: gpufleet_proto::PROTOCOL_VERSION,
                node: identity,
                agent_version: "ingest-load".into(),
                session_id: String::new(),
                inventory: agent.inventory().clone(),
                gpu_source: agent.gpu_source_kind().into(),
                labels: Labels::new(),
            };
            Template {
                hello: hello.into(),
                samples,
            }
        })
        .collect()
}

fn gpu_uuid(node: usize, gpu: usize) -> String {
    format!("GPU-{node:08x}-10ad-4000-8000-{gpu:012x}")
}

/// Counters shared by every node task.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    connected: AtomicU64,
    acks: AtomicU64,
    acked_gpu_samples: AtomicU64,
    sent_gpu_samples: AtomicU64,
    errors: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u32>>,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error slot");
        if first.is_none() {
            *first = Some(e);
        }
    }
}

/// One simulated node: which it is, where it sends, and its timing.
struct NodeTask {
    i: usize,
    url: String,
    template: Arc<Template>,
    gpus: usize,
    interval: Duration,
    /// Offset of this node's first tick, so the fleet's sends spread over the interval.
    phase: Duration,
    shared: Arc<Shared>,
}

async fn run_node(task: NodeTask, stop: tokio::sync::watch::Receiver<bool>) {
    if let Err(e) = node_stream(&task, stop).await {
        task.shared.error(format!("node {}: {e}", task.i));
    }
}

async fn node_stream(
    task: &NodeTask,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let NodeTask {
        i,
        ref url,
        ref template,
        gpus,
        interval,
        phase,
        ref shared,
    } = *task;
    let name = node_name(i);
    let uuids: Vec<String> = (0..gpus).map(|g| gpu_uuid(i, g)).collect();
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let mut client = TelemetryClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let mut hello = template.hello.clone();
    if let Some(node) = hello.node.as_mut() {
        node.hostname = name.clone();
        node.machine_id = format!("load-machine-{i:05}");
    }
    hello.session_id = format!("load-session-{i:05}-{}", std::process::id());
    if let Some(inv) = hello.inventory.as_mut() {
        for (g, gpu) in inv.gpus.iter_mut().enumerate() {
            gpu.uuid = uuids[g].clone();
            gpu.serial = format!("load{i:05}{g:02}");
        }
    }
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello)),
    })
    .await?;
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    // Sent but not yet acked: (sequence, when sent, measured).
    let sent: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, Instant, bool)>>> =
        Default::default();
    let acks = {
        let sent = sent.clone();
        async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Some(collector_message::Msg::Ack(a)) = m.msg {
                            let now = Instant::now();
                            let mut q = sent.lock().expect("sent queue");
                            while let Some(&(seq, at, measured)) = q.front() {
                                if seq > a.stored_sequence {
                                    break;
                                }
                                q.pop_front();
                                if measured {
                                    shared
                                        .latencies_us
                                        .lock()
                                        .expect("latencies")
                                        .push(now.duration_since(at).as_micros() as u32);
                                    shared.acks.fetch_add(1, Ordering::Relaxed);
                                    shared
                                        .acked_gpu_samples
                                        .fetch_add(gpus as u64, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Ok(None) => return Ok::<_, anyhow::Error>(()),
                    Err(s) => return Err(anyhow::anyhow!("stream: {}", s.message())),
                }
            }
        }
    };
    tokio::pin!(acks);
    let start = tokio::time::Instant::now() + phase;
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut step = i % STEPS;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let mut sample = template.samples[step].clone();
                step = (step + 1) % STEPS;
                sample.timestamp_unix_ms = UnixMs::now().0;
                for (g, gpu) in sample.gpus.iter_mut().enumerate() {
                    gpu.uuid.clone_from(&uuids[g]);
                }
                let measured = shared.measuring.load(Ordering::Relaxed);
                sent.lock().expect("sent queue").push_back((seq, Instant::now(), measured));
                if measured {
                    shared.sent_gpu_samples.fetch_add(gpus as u64, Ordering::Relaxed);
                }
                let batch = pb::Batch { sequence: seq, samples: vec![sample], ..Default::default() };
                if tx.send(AgentMessage { msg: Some(agent_message::Msg::Batch(batch)) }).await.is_err() {
                    anyhow::bail!("stream closed by the collector");
                }
            }
            r = &mut acks => {
                r?;
                anyhow::bail!("the collector ended the stream");
            }
            _ = stop.changed() => {
                drop(tx);
                // Let the last acks arrive.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut acks).await;
                return Ok(());
            }
        }
    }
}

/// CPU seconds (user + system) and RSS of a process, from /proc.
struct ProcUsage {
    cpu_s: f64,
    rss_bytes: u64,
    hwm_bytes: u64,
}

fn proc_usage(pid: u32) -> anyhow::Result<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcUsage {
        cpu_s: (utime + stime) / ticks,
        rss_bytes: kb("VmRSS:"),
        hwm_bytes: kb("VmHWM:"),
    })
}

fn self_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A `gpufleet serve` child, killed when dropped.
struct Collector {
    child: Child,
}

impl Drop for Collector {
    fn drop(&mut self) {
        // SIGTERM first, so it stops cleanly; then make sure.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_collector(data: &Path, extra: &[String]) -> anyhow::Result<(Collector, String)> {
    let port = gpufleet_tests::free_port();
    let bin = gpufleet_tests::target_dir().join("gpufleet");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it first (cargo build --release -p gpufleet-cli)",
        bin.display()
    );
    let child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(["--metrics-listen", "off"])
        .args(extra)
        .env("GPUFLEET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let collector = Collector { child };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the collector did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((collector, url))
}

/// The hostname of load node `i`.
fn node_name(i: usize) -> String {
    format!("load-{i:05}")
}

/// The `p` quantile of sorted wall times, ms.
fn quantile_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let (collector, url) = match &args.collector {
        Some(u) => (
            None,
            gpufleet_proto::collector_url(u).map_err(anyhow::Error::msg)?,
        ),
        None => {
            let (c, u) = start_collector(&data, &args.serve_arg)?;
            (Some(c), u)
        }
    };
    let pid = collector.as_ref().map(|c| c.child.id());
    let templates: Vec<Arc<Template>> = templates(args.gpus).into_iter().map(Arc::new).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gpus = args.gpus as usize;
    let report = rt.block_on(async {
        let ramp_started = Instant::now();
        let mut tasks = Vec::with_capacity(args.nodes);
        let gap = Duration::from_secs_f64(1.0 / args.connect_rate.max(1) as f64);
        for i in 0..args.nodes {
            let phase = args.interval.mul_f64(i as f64 / args.nodes as f64);
            let task = NodeTask {
                i,
                url: url.clone(),
                template: templates[i % TEMPLATES].clone(),
                gpus,
                interval: args.interval,
                phase,
                shared: shared.clone(),
            };
            tasks.push(tokio::spawn(run_node(task, stop_rx.clone())));
            if i % 100 == 99 {
                tokio::time::sleep(gap * 100).await;
            }
        }
        let ramp_deadline = Instant::now() + Duration::from_secs(120);
        while (shared.connected.load(Ordering::Relaxed) as usize) < args.nodes {
            if Instant::now() > ramp_deadline || shared.errors.load(Ordering::Relaxed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ramp = ramp_started.elapsed();
        tokio::time::sleep(Duration::from_secs(args.warmup)).await;
        let c0 = pid.map(proc_usage).transpose()?;
        let s0 = self_cpu_s();
        let t0 = Instant::now();
        shared.measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(args.duration)).await;
        shared.measuring.store(false, Ordering::Relaxed);
        let window = t0.elapsed().as_secs_f64();
        let c1 = pid.map(proc_usage).transpose()?;
        let s1 = self_cpu_s();
        let queries = if args.query_runs > 0 {
            let (url, runs) = (url.clone(), args.query_runs);
            tokio::task::spawn_blocking(move || time_queries(&url, &node_name(0), runs)).await??
        } else {
            Vec::new()
        };
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok((ramp, window, c0, c1, s1 - s0, queries))
    })?;
    let (ramp, window, c0, c1, self_cpu, queries) = report;
    drop(collector);
    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().expect("latencies"));
    lat.sort_unstable();
    let acked = shared.acked_gpu_samples.load(Ordering::Relaxed);
    let sent = shared.sent_gpu_samples.load(Ordering::Relaxed);
    let rate = acked as f64 / window;
    let total_gpus = (args.nodes * gpus) as f64;
    println!(
        "ingest-load: {} nodes × {} GPUs, {:?} interval, {:.0} s measured after {:.1} s ramp-up and {} s warm-up",
        args.nodes,
        gpus,
        args.interval,
        window,
        ramp.as_secs_f64(),
        args.warmup
    );
    println!(
        "connected {} / {}, errors {}{}",
        shared.connected.load(Ordering::Relaxed),
        args.nodes,
        shared.errors.load(Ordering::Relaxed),
        shared
            .first_error
            .lock()
            .expect("error slot")
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "GPU-samples/s acked: {rate:.0} (sent {:.0}/s)",
        sent as f64 / window
    );
    println!(
        "send→ack latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        lat.len()
    );
    let mut json = serde_json::json!({
        "nodes": args.nodes, "gpus_per_node": gpus, "interval_ms": args.interval.as_millis() as u64,
        "window_s": window, "gpu_samples_per_s": rate,
        "errors": shared.errors.load(Ordering::Relaxed),
        "ack_p50_ms": percentile(&lat, 0.5), "ack_p99_ms": percentile(&lat, 0.99),
        "ack_max_ms": percentile(&lat, 1.0), "loadgen_cpu_us_per_gpu_sample": self_cpu * 1e6 / acked.max(1) as f64,
    });
    if let (Some(c0), Some(c1)) = (c0, c1) {
        let cpu = c1.cpu_s - c0.cpu_s;
        let us = cpu * 1e6 / acked.max(1) as f64;
        let disk = dir_bytes(&data);
        println!(
            "collector CPU: {:.1} % of a core, {us:.1} µs per GPU-sample",
            cpu * 100.0 / window
        );
        println!(
            "collector RSS: {:.1} MiB now, {:.1} MiB peak, {:.1} KiB per GPU",
            c1.rss_bytes as f64 / 1048576.0,
            c1.hwm_bytes as f64 / 1048576.0,
            c1.hwm_bytes as f64 / 1024.0 / total_gpus
        );
        println!(
            "collector disk: {:.1} MiB in {}",
            disk as f64 / 1048576.0,
            data.display()
        );
        json["collector_cpu_percent"] = (cpu * 100.0 / window).into();
        json["collector_cpu_us_per_gpu_sample"] = us.into();
        json["collector_rss_mib"] = (c1.rss_bytes as f64 / 1048576.0).into();
        json["collector_peak_rss_mib"] = (c1.hwm_bytes as f64 / 1048576.0).into();
        json["collector_peak_rss_kib_per_gpu"] = (c1.hwm_bytes as f64 / 1024.0 / total_gpus).into();
        json["collector_disk_bytes"] = disk.into();
    }
    println!(
        "load generator CPU: {:.1} % of a core, {:.1} µs per GPU-sample",
        self_cpu * 100.0 / window,
        self_cpu * 1e6 / acked.max(1) as f64
    );
    if !queries.is_empty() {
        println!(
            "\n| query (while every node streams) | median | max | output |\n|---|---|---|---|"
        );
        let mut q = Vec::new();
        for (cmd, times, bytes) in &queries {
            println!(
                "| `{cmd}` | {:.0} ms | {:.0} ms | {:.0} KiB |",
                quantile_ms(times, 0.5),
                quantile_ms(times, 1.0),
                *bytes as f64 / 1024.0
            );
            q.push(serde_json::json!({"command": cmd, "ms": times, "bytes": bytes}));
        }
        json["queries"] = q.into();
    }
    if args.json {
        println!("{json}");
    }
    let errors = shared.errors.load(Ordering::Relaxed);
    anyhow::ensure!(errors == 0, "{errors} node streams failed");
    anyhow::ensure!(acked > 0, "no batch was acknowledged");
    Ok(())
}
