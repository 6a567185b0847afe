//! Benchmark: `gpufleet audit` and `gpufleet versions` over a large stored fleet, end to end:
//! the CLI process, gRPC, the collector's audit and rendering, as an operator runs them.
//!
//!   cargo build --release --bins && target/release/compliance-bench [NODES] [RUNS]
//!
//! Defaults: 10,000 nodes × 8 simulated H100s, 7 runs of each command. The fleet is written
//! straight into a fresh collector database (one Hello per node, as ingest stores it: the
//! simulator's inventory, labels `pool` and `rack`; 2 % of the nodes on another driver, 1 %
//! with one GPU on another VBIOS), then `gpufleet serve` starts on it and restores it, and each
//! command runs as its own process with its output discarded. Prints the median and max wall
//! time per command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpufleet_collector::store::sqlite::SqliteStore;
use gpufleet_collector::store::{Store, Write};
use gpufleet_model::convert::Hello;
use gpufleet_model::labels::parse_labels;
use gpufleet_model::{Inventory, NodeIdentity, UnixMs};
use gpufleet_sim::{SimConfig, simulated_node};
use gpufleet_tests::{Proc, free_port, repo_root, wait_for};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let bin = binaries_next_to_me();
    let data = tempfile::tempdir().expect("temp dir");

    let t = Instant::now();
    populate(&data.path().join("gpufleet.db"), nodes);
    println!(
        "stored {nodes} nodes × 8 GPUs in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = Command::new(bin.join("gpufleet"));
    serve
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data.path())
        .env("GPUFLEET_LOG", "warn");
    let t = Instant::now();
    let mut server = Proc::spawn(serve, "gpufleet serve");
    let cli = |args: &[&str]| {
        let mut c = Command::new(bin.join("gpufleet"));
        c.args(args).args(["--collector", &url]);
        c
    };
    wait_for(Duration::from_secs(300), || {
        let out = cli(&["versions", "-o", "json"]).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["nodes"] == nodes).then_some(())
    })
    .unwrap_or_else(|| panic!("the collector did not restore the fleet:\n{}", server.log()));
    println!(
        "collector up with the fleet restored in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let policy = repo_root().join("docs/policy.example.toml");
    let policy = policy.to_str().expect("utf-8 path");
    let commands: &[&[&str]] = &[
        &["audit"],
        &["audit", "--all"],
        &["audit", "-o", "json"],
        &["audit", "-o", "junit"],
        &["audit", "--policy", policy, "-o", "json"],
        &["audit", "--selector", "pool=training", "-o", "csv"],
        &["versions", "--field", "driver"],
        &["versions", "--field", "vbios", "-o", "json"],
    ];
    println!("\n| command | median | max | output |\n|---|---|---|---|");
    for args in commands {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let out = cli(args)
                .stderr(Stdio::null())
                .output()
                .expect("running gpufleet");
            times.push(t.elapsed());
            // audit exits 1 when some node violates: the fleet has outliers on purpose.
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "gpufleet {} failed: {:?}",
                args.join(" "),
                out.status
            );
            bytes = out.stdout.len();
        }
        times.sort();
        println!(
            "| `gpufleet {}` | {:.0} ms | {:.0} ms | {} KiB |",
            args.join(" "),
            ms(times[times.len() / 2]),
            ms(*times.last().expect("runs > 0")),
            bytes / 1024
        );
    }
    server.terminate(Duration::from_secs(10));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `gpufleet` is built into the same directory as this binary (`cargo build --release --bins`).
fn binaries_next_to_me() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("binary directory").to_path_buf();
    if !dir.join("gpufleet").exists() {
        eprintln!(
            "compliance-bench: {} has no `gpufleet` binary; run `cargo build --release --bins` first",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

/// One Hello per node into a new database, in transactions of 500.
fn populate(db: &Path, nodes: u32) {
    let store = SqliteStore::open(db).expect("open the bench database");
    let now = UnixMs::now();
    let hellos: Vec<Write> = (0..nodes)
        .map(|i| Write::Hello {
            hello: Box::new(hello(i, now)),
            at: now,
        })
        .collect();
    for chunk in hellos.chunks(500) {
        store.apply(chunk).expect("store the fleet");
    }
}

fn hello(i: u32, now: UnixMs) -> Hello {
    let name = format!("gpu-node-{i:05}");
    let (gpus, host) = simulated_node(SimConfig {
        node_name: name.clone(),
        model: "h100".into(),
        gpu_count: 8,
        seed: 1,
        scenario: None,
        start: now,
    })
    .expect("a simulated H100 node");
    let g = gpus.inventory(now);
    let mut inventory = Inventory {
        read_at: now,
        driver: g.driver,
        gpus: g.gpus,
        host: host.info(now),
    };
    if i % 50 == 7 {
        inventory.driver.driver_version = "535.161.08".into();
    }
    if i % 100 == 13 {
        inventory.gpus[2].vbios_version = "96.00.99.00.01".into();
    }
    let pool = if i % 4 == 0 { "inference" } else { "training" };
    let rack = format!("r{:03}", i / 40);
    Hello {
        protocol_version: gpufleet_proto::PROTOCOL_VERSION,
        node: NodeIdentity {
            hostname: name,
            machine_id: format!("{i:032x}"),
            boot_id: format!("boot-{i}"),
        },
        agent_version: env!("CARGO_PKG_VERSION").into(),
        session_id: format!("bench-{i}"),
        inventory,
        gpu_source: "simulated".into(),
        labels: parse_labels([format!("pool={pool}").as_str(), &format!("rack={rack}")])
            .expect("valid labels"),
    }
}
