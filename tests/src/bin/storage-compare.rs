//! Benchmark: bytes on disk per GPU-sample for the same fleet, side by side, in one run:
//! gpufleet's store (SQLite: columnar chunks and the 1-minute/1-hour tiers), a real Prometheus
//! TSDB and a real VictoriaMetrics.
//!
//!   cargo run --release -p gpufleet-tests --bin storage-compare -- [--nodes 2] [--hours 2]
//!
//! The fleet is N simulated nodes × 8 H100s sampled through the agent's own sampler every
//! second for the given hours of virtual time, ending now. Every sample is stored three ways:
//!
//! - **gpufleet**, twice, through `SqliteStore` as ingest stores batches (one sample per batch,
//!   compacted into chunks): once with every field of the sample (each NVLink's counters, the
//!   host, the processes) and once with only the fields the other two get ("same fields").
//! - **Prometheus** (`promtool tsdb create-blocks-from openmetrics`): the dcgm-exporter series
//!   our `/metrics` exposes for these samples, with dcgm-exporter's labels plus `job` and
//!   `instance` as a scrape adds them, written as compacted blocks: what a Prometheus holds
//!   once its head is compacted (a live one keeps its last 2–3 h in a write-ahead log,
//!   uncompressed). `--max-block-duration` is the run's length, as Prometheus' own compaction
//!   would reach.
//! - **VictoriaMetrics** (`victoria-metrics`, `/api/v1/import`): the same series and values,
//!   then a forced flush and merge, so its parts are as merged as a long-running one's.
//!
//! The byte counts are the directories' files (gpufleet: the database after a checkpoint and
//! `VACUUM`; VictoriaMetrics: `data/` and `indexdb/`, not its caches). Each store's sample count
//! is read back from it and must equal what was written, or the bench fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use gpufleet_agent::{GpuBackend, start_node};
use gpufleet_collector::store::chunk;
use gpufleet_collector::store::sqlite::{CHUNK_SAMPLES, SqliteStore};
use gpufleet_collector::store::{Store, Write};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::exposition::dcgm::{FIELDS, GpuView};
use gpufleet_model::{
    GpuSample, HostSample, Inventory, NodeIdentity, NvLinkSample, Sample, UnixMs,
};
use gpufleet_proto::v1 as pb;
use gpufleet_tests::{Proc, free_port, wait_for};

#[derive(Parser)]
#[command(about = "Bytes per GPU-sample: gpufleet vs Prometheus vs VictoriaMetrics, same fleet")]
struct Args {
    /// Simulated nodes (8 H100s each).
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// Virtual hours of 1 s samples.
    #[arg(long, default_value_t = 2.0)]
    hours: f64,
    /// Keep the three stores here (default: a temporary directory, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print one JSON line with the figures after the table.
    #[arg(long)]
    json: bool,
}

const GPUS: u32 = 8;
/// Columns listed in the cost breakdown.
const COSTS_SHOWN: usize = 12;
const INTERVAL_MS: i64 = 1000;
/// Seconds of samples per store transaction (ingest's group commits gather many batches); a
/// divisor of `CHUNK_SAMPLES`, so each node's head is compacted at exactly a chunk's worth.
const SECONDS_PER_COMMIT: usize = 8;

/// One series as Prometheus and VictoriaMetrics get it: labels and its samples.
struct Series {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.nodes > 0, "--nodes must be at least 1");
    // Whole chunks, so no sample is left in gpufleet's uncompacted head.
    let seconds = ((args.hours * 3600.0) as usize).div_ceil(CHUNK_SAMPLES) * CHUNK_SAMPLES;
    ensure!(seconds > 0, "--hours must be positive");
    for program in ["promtool", "victoria-metrics"] {
        if Command::new(program).arg("--help").output().is_err() {
            bail!(
                "{program} is not installed: apt-get install {}",
                if program == "promtool" {
                    "prometheus"
                } else {
                    "victoria-metrics"
                }
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let gpu_samples = seconds as u64 * u64::from(args.nodes * GPUS);
    // End now (VictoriaMetrics keeps only what is within its retention of now), start on a
    // 2-hour boundary as Prometheus' blocks do.
    let block = 2 * 3600 * 1000;
    // (Ten minutes short of now: VictoriaMetrics' queries leave out the last 30 s.)
    let end = UnixMs::now().0 - 10 * 60 * 1000;
    let start = UnixMs((end - seconds as i64 * INTERVAL_MS) / block * block);
    println!(
        "fleet: {} nodes × {GPUS} H100 (simulated), {seconds} samples at 1 s from {} ({} GPU-samples)",
        args.nodes, start, gpu_samples
    );

    // A fresh run each time: a kept directory's old databases would dedupe every batch away.
    for db in ["gpufleet-all-fields.db", "gpufleet-same-fields.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{db}{suffix}")));
        }
    }
    let t = Instant::now();
    let full = SqliteStore::open(&dir.join("gpufleet-all-fields.db"))?;
    let same = SqliteStore::open(&dir.join("gpufleet-same-fields.db"))?;
    let mut pending: (Vec<Write>, Vec<Write>) = (Vec::new(), Vec::new());
    // The first node's first chunk, for the cost of each column.
    let mut first_chunk: (Vec<pb::Sample>, Vec<pb::Sample>) = (Vec::new(), Vec::new());
    let mut nodes = Vec::new();
    for n in 0..args.nodes {
        let hostname = format!("gpu-node-{n:03}");
        let identity = NodeIdentity {
            hostname: hostname.clone(),
            machine_id: format!("{n:032x}"),
            boot_id: format!("boot-{n}"),
        };
        let backend = GpuBackend::Simulated {
            gpus: GPUS,
            model: "h100".into(),
            scenario: None,
            seed: u64::from(n) + 1,
        };
        let (agent, _) = start_node(
            identity.clone(),
            &backend,
            gpufleet_harness::agents::shipped_detector(),
            start,
        )
        .map_err(|e| anyhow::anyhow!("a simulated node starts: {e}"))?;
        let inventory = agent.inventory().clone();
        for store in [&full, &same] {
            store.apply(&[hello(&identity, &inventory, start)])?;
        }
        let series = node_series(&hostname, &inventory);
        nodes.push((hostname, agent, inventory, series));
    }
    for i in 0..seconds {
        let at = start.plus_ms(i as i64 * INTERVAL_MS);
        for (k, (hostname, agent, inventory, series)) in nodes.iter_mut().enumerate() {
            let sample = agent.tick(at).sample;
            record(series, hostname, inventory, &sample);
            let masked = same_fields(&sample);
            check_same_exposition(hostname, inventory, &sample, &masked)?;
            if k == 0 && i < CHUNK_SAMPLES {
                first_chunk.0.push(pb::Sample::from(sample.clone()));
                first_chunk.1.push(pb::Sample::from(masked.clone()));
            }
            pending
                .0
                .push(Write::batch(hostname, "s", batch(i, sample), at));
            pending
                .1
                .push(Write::batch(hostname, "s", batch(i, masked), at));
        }
        if (i + 1) % SECONDS_PER_COMMIT == 0 {
            full.apply(&std::mem::take(&mut pending.0))?;
            same.apply(&std::mem::take(&mut pending.1))?;
        }
    }
    full.apply(&pending.0)?;
    same.apply(&pending.1)?;
    drop((full, same));
    // A field the GPU never read has no series, as in the exposition.
    let series: Vec<Series> = nodes
        .into_iter()
        .flat_map(|n| n.3)
        .filter(|s| !s.values.is_empty())
        .collect();
    println!(
        "sampled and stored in gpufleet: {:.1} s; {} series for the other two",
        t.elapsed().as_secs_f64(),
        series.len()
    );
    let prom_samples: u64 = series.iter().map(|s| s.values.len() as u64).sum();

    let mut rows = Vec::new();
    for (name, file) in [
        ("gpufleet, every field", "gpufleet-all-fields.db"),
        ("gpufleet, same fields", "gpufleet-same-fields.db"),
    ] {
        let db = gpufleet_bytes(&dir.join(file), seconds as u64 * u64::from(args.nodes))?;
        rows.push((name.to_string(), db.total, Some(db)));
    }
    let t = Instant::now();
    let prom = prometheus(&dir, &series, seconds, prom_samples)?;
    println!(
        "Prometheus blocks written: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    rows.push(("Prometheus (promtool blocks)".into(), prom, None));
    let t = Instant::now();
    let vm = victoria_metrics(&dir, &series, start, prom_samples)?;
    println!(
        "VictoriaMetrics imported and merged: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    rows.push(("VictoriaMetrics".into(), vm, None));

    println!();
    println!(
        "{:<32} {:>14} {:>18}  detail",
        "store", "bytes", "B per GPU-sample"
    );
    for (name, bytes, db) in &rows {
        let detail = db.as_ref().map_or(String::new(), |d| {
            format!(
                "chunks {:.2} B, tiers {:.2} B, the rest (nodes, sessions, SQLite pages) {:.2} B",
                d.chunks as f64 / gpu_samples as f64,
                d.tiers as f64 / gpu_samples as f64,
                (d.total - d.chunks - d.tiers) as f64 / gpu_samples as f64
            )
        });
        println!(
            "{name:<32} {bytes:>14} {:>18.2}  {detail}",
            *bytes as f64 / gpu_samples as f64
        );
    }
    println!(
        "(Prometheus and VictoriaMetrics: {} series, {} samples = {:.1} per GPU-sample)",
        series.len(),
        prom_samples,
        prom_samples as f64 / gpu_samples as f64
    );
    for (what, samples) in [
        ("every field", first_chunk.0),
        ("same fields", first_chunk.1),
    ] {
        let per_gpu_sample = (samples.len() as f64 * f64::from(GPUS)).max(1.0);
        println!("\nlargest columns, gpufleet {what} (one chunk, each column compressed alone):");
        for (name, bytes) in chunk::column_costs(samples).iter().take(COSTS_SHOWN) {
            println!(
                "  {name:<44} {:>7.2} B per GPU-sample",
                *bytes as f64 / per_gpu_sample
            );
        }
    }
    if args.json {
        let per = |b: u64| b as f64 / gpu_samples as f64;
        println!(
            "{}",
            serde_json::json!({
                "nodes": args.nodes,
                "seconds": seconds,
                "gpu_samples": gpu_samples,
                "series": series.len(),
                "gpufleet_all_fields_b_per_gpu_sample": per(rows[0].1),
                "gpufleet_same_fields_b_per_gpu_sample": per(rows[1].1),
                "prometheus_b_per_gpu_sample": per(prom),
                "victoriametrics_b_per_gpu_sample": per(vm),
            })
        );
    }
    if args.keep.is_some() {
        println!("stores kept in {}", dir.display());
    }
    Ok(())
}

fn hello(identity: &NodeIdentity, inventory: &Inventory, at: UnixMs) -> Write {
    Write::Hello {
        hello: Box::new(Hello {
            protocol_version: gpufleet_proto::PROTOCOL_VERSION,
            node: identity.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            session_id: "s".into(),
            inventory: inventory.clone(),
            gpu_source: "simulated".into(),
            labels: Default::default(),
        }),
        at,
    }
}

fn batch(i: usize, sample: Sample) -> Batch {
    Batch {
        sequence: i as u64 + 1,
        samples: vec![sample],
        events: Vec::new(),
        inventory: None,
        dropped_samples: 0,
        dropped_events: 0,
    }
}

/// The sample with only what the dcgm-exporter series carry: every GPU reading they export,
/// NVLink counters as their sums over the links (one "link"), no host, no processes.
fn same_fields(s: &Sample) -> Sample {
    let gpus = s
        .gpus
        .iter()
        .map(|g| {
            let sum = |f: fn(&NvLinkSample) -> Option<u64>| {
                g.nvlinks.iter().filter_map(f).reduce(|a, b| a + b)
            };
            let links = if g.nvlinks.is_empty() {
                Vec::new()
            } else {
                vec![NvLinkSample {
                    link: 0,
                    active: None,
                    replay_errors: sum(|l| l.replay_errors),
                    recovery_errors: sum(|l| l.recovery_errors),
                    crc_flit_errors: sum(|l| l.crc_flit_errors),
                    crc_data_errors: sum(|l| l.crc_data_errors),
                }]
            };
            GpuSample {
                error: String::new(),
                graphics_clock_mhz: None,
                nvlinks: links,
                processes: Vec::new(),
                ..g.clone()
            }
        })
        .collect();
    Sample {
        timestamp: s.timestamp,
        gpus,
        host: HostSample::default(),
    }
}

fn views<'a>(hostname: &'a str, inventory: &'a Inventory, s: &'a Sample) -> Vec<GpuView<'a>> {
    inventory
        .gpus
        .iter()
        .map(|info| GpuView {
            hostname,
            info,
            driver_version: &inventory.driver.driver_version,
            sample: s.gpu(info.index),
            last_xid: 0,
            xid_events: 0,
        })
        .collect()
}

/// The "same fields" store holds no less than the other two get: the masked sample exposes
/// exactly the series of the full one.
fn check_same_exposition(
    hostname: &str,
    inventory: &Inventory,
    full: &Sample,
    masked: &Sample,
) -> Result<()> {
    for (a, b) in views(hostname, inventory, full)
        .iter()
        .zip(views(hostname, inventory, masked).iter())
    {
        for f in FIELDS {
            ensure!(
                (f.value)(a) == (f.value)(b),
                "{} differs between the full and the same-fields sample",
                f.name
            );
        }
    }
    Ok(())
}

/// One empty series per (GPU, dcgm-exporter field) of the node, GPU by GPU in field order.
fn node_series(hostname: &str, inventory: &Inventory) -> Vec<Series> {
    let empty = Sample {
        timestamp: UnixMs(0),
        gpus: Vec::new(),
        host: HostSample::default(),
    };
    let mut out = Vec::new();
    for view in views(hostname, inventory, &empty) {
        let idx = view.info.index.to_string();
        let device = format!("nvidia{idx}");
        let labels: Vec<(&'static str, String)> = view
            .labels(&idx, &device)
            .0
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .chain([
                ("instance", format!("{hostname}:9400")),
                ("job", "dcgm-exporter".to_string()),
            ])
            .collect();
        out.extend(FIELDS.iter().map(|f| Series {
            name: f.name,
            labels: labels.clone(),
            timestamps: Vec::new(),
            values: Vec::new(),
        }));
    }
    out
}

/// Appends the sample's dcgm-exporter values to the node's series (a reading the GPU did not
/// give is no sample, as in the exposition).
fn record(series: &mut [Series], hostname: &str, inventory: &Inventory, s: &Sample) {
    let mut slots = series.iter_mut();
    for view in views(hostname, inventory, s) {
        for field in FIELDS {
            let sr = slots.next().expect("one series per GPU and field");
            if let Some(value) = (field.value)(&view) {
                sr.timestamps.push(s.timestamp.0);
                sr.values.push(value);
            }
        }
    }
}

struct DbBytes {
    total: u64,
    chunks: u64,
    tiers: u64,
}

/// The database's bytes after a checkpoint and `VACUUM` (what it takes at rest), checking that
/// every sample is in a chunk.
fn gpufleet_bytes(db: &Path, node_samples: u64) -> Result<DbBytes> {
    let c = rusqlite::Connection::open(db)?;
    let sum = |sql: &str| -> Result<u64> {
        Ok(c.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(0) as u64)
    };
    let stored = sum("SELECT SUM(samples) FROM sample_chunks")?;
    ensure!(
        stored == node_samples && sum("SELECT COUNT(*) FROM sample_head")? == 0,
        "{}: {stored} samples in chunks, {node_samples} written",
        db.display()
    );
    let chunks = sum("SELECT SUM(length(chunk)) FROM sample_chunks")?;
    let tiers = sum("SELECT SUM(length(blob)) FROM rollups")?
        + sum("SELECT SUM(length(blob)) FROM rollup_partial")?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
    drop(c);
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        total += std::fs::metadata(&p).map_or(0, |m| m.len());
    }
    Ok(DbBytes {
        total,
        chunks,
        tiers,
    })
}

fn label_text(s: &Series) -> String {
    s.labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes the series as OpenMetrics (family by family, as the format requires) and has
/// promtool cut them into blocks; returns the blocks' bytes.
fn prometheus(dir: &Path, series: &[Series], seconds: usize, expected: u64) -> Result<u64> {
    use std::io::Write as _;
    let input = dir.join("fleet.om");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&input)?);
    let mut by_family: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in series {
        by_family.entry(s.name).or_default().push(s);
    }
    for (name, members) in &by_family {
        writeln!(out, "# TYPE {name} gauge")?;
        for s in members {
            let labels = label_text(s);
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                writeln!(out, "{name}{{{labels}}} {v} {}.{:03}", t / 1000, t % 1000)?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    drop(out);
    let blocks = dir.join("prometheus");
    let _ = std::fs::remove_dir_all(&blocks);
    let hours = seconds.div_ceil(3600).max(2);
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(format!("--max-block-duration={hours}h"))
        .arg(&input)
        .arg(&blocks)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running promtool")?;
    ensure!(status.success(), "promtool create-blocks-from failed");
    std::fs::remove_file(&input)?;
    let list = Command::new("promtool")
        .args(["tsdb", "list"])
        .arg(&blocks)
        .output()?;
    let text = String::from_utf8_lossy(&list.stdout);
    // Columns: BLOCK ULID, MIN TIME, MAX TIME, DURATION, NUM SAMPLES, NUM CHUNKS, NUM SERIES, SIZE
    let samples: u64 = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
        .sum();
    ensure!(
        samples == expected,
        "Prometheus blocks hold {samples} samples, {expected} written:\n{text}"
    );
    dir_bytes(&blocks, &[])
}

/// Imports the series into a fresh VictoriaMetrics, flushes and merges; returns the bytes of
/// its data and index.
fn victoria_metrics(dir: &Path, series: &[Series], start: UnixMs, expected: u64) -> Result<u64> {
    let data = dir.join("victoria-metrics");
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new("victoria-metrics");
    cmd.arg(format!("-storageDataPath={}", data.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=ERROR");
    let mut vm = Proc::spawn(cmd, "victoria-metrics");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let up = wait_for(Duration::from_secs(30), || {
        http.get(format!("{base}/health"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    if up.is_none() {
        bail!("VictoriaMetrics did not start:\n{}", vm.log());
    }
    let mut body = String::new();
    let flush = |body: &mut String| -> Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        let r = http
            .post(format!("{base}/api/v1/import"))
            .body(std::mem::take(body))
            .send()?;
        ensure!(r.status().is_success(), "import: {}", r.text()?);
        Ok(())
    };
    for s in series {
        let mut metric: serde_json::Map<String, serde_json::Value> = s
            .labels
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone().into()))
            .collect();
        metric.insert("__name__".into(), s.name.into());
        body.push_str(&serde_json::to_string(&serde_json::json!({
            "metric": metric,
            "values": s.values,
            "timestamps": s.timestamps,
        }))?);
        body.push('\n');
        if body.len() > 8 << 20 {
            flush(&mut body)?;
        }
    }
    flush(&mut body)?;
    http.get(format!("{base}/internal/force_flush")).send()?;
    // Every month the data touches: merge each partition into its final parts.
    let mut month = start.to_string()[..7].replace('-', "_");
    let last = UnixMs::now().to_string()[..7].replace('-', "_");
    loop {
        http.get(format!(
            "{base}/internal/force_merge?partition_prefix={month}"
        ))
        .send()?;
        if month >= last {
            break;
        }
        month = next_month(&month);
    }
    // force_merge runs in the background: wait until the bytes stop changing.
    let mut prev = 0;
    let mut stable = 0;
    while stable < 5 {
        std::thread::sleep(Duration::from_secs(1));
        let now = dir_bytes(&data, &["cache", "flock.lock", "snapshots"])?;
        stable = if now == prev { stable + 1 } else { 0 };
        prev = now;
    }
    let count: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{base}/api/v1/query"))
            .query(&[
                (
                    "query",
                    "sum(count_over_time({job=\"dcgm-exporter\"}[100d]))",
                ),
                ("time", &(UnixMs::now().0 / 1000 + 60).to_string()),
            ])
            .send()?
            .text()?,
    )?;
    let stored: u64 = count["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(
        stored == expected,
        "VictoriaMetrics holds {stored} samples, {expected} written: {count}"
    );
    vm.terminate(Duration::from_secs(30));
    Ok(prev)
}

fn next_month(m: &str) -> String {
    let (y, mo) = m.split_once('_').expect("YYYY_MM");
    let (y, mo): (u32, u32) = (y.parse().expect("year"), mo.parse().expect("month"));
    if mo == 12 {
        format!("{}_01", y + 1)
    } else {
        format!("{y}_{:02}", mo + 1)
    }
}

/// Bytes of every file under `dir`, leaving out top-level entries named in `skip`.
fn dir_bytes(dir: &Path, skip: &[&str]) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if skip.iter().any(|s| entry.file_name() == *s) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path(), &[])?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}
