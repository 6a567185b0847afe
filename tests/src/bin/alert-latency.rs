//! Fault-to-notification latency through the real binaries: `gpufleet serve --alert-webhook`
//! and one `gpufleet-agent run --simulate --scenario` per trial (at the shipped sample
//! interval), whose scenario injects Xid 79 (GPU fallen off the bus, critical) at a known
//! moment; the clock stops when the webhook receiver holds the POST naming that node.
//!
//! `cargo run -p gpufleet-tests --bin alert-latency [TRIALS]` (numbers in BENCHMARKS.md).
//! The fault moment is taken as the agent's spawn time plus the fault's `start`: the agent
//! starts its scenario clock a little after it is spawned, so the latency is overstated by
//! the agent's start-up, never understated.

use std::time::{Duration, SystemTime};

use gpufleet_tests::receiver::Receiver;
use gpufleet_tests::{Proc, agent, free_port, serve_with, wait_for};

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().expect("temp dir");
    let rx = Receiver::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let hook = format!("{}/hook", rx.url);
    let mut collector = serve_with(port, &dir.path().join("data"), &["--alert-webhook", &hook]);
    let interval = gpufleet_agent::DEFAULT_SAMPLE_INTERVAL;
    let mut latencies = Vec::new();
    for i in 1..=trials {
        let node = format!("gpu-node-{i:02}");
        // The fault lands at a different phase of the sample/evaluation cycles each trial.
        let phase_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_millis() as u64;
        let start = Duration::from_millis(3000 + phase_ms);
        let scenario = dir.path().join(format!("trial-{i}.toml"));
        std::fs::write(
            &scenario,
            format!(
                "name = \"latency\"\nduration = \"10m\"\n[fleet]\nnodes = {trials}\nmodel = \"h100-sxm-80gb\"\ngpus_per_node = 8\nseed = 1\n\n[[fault]]\nkind = \"xid\"\nnode = \"{node}\"\ngpu = 2\nstart = \"{}ms\"\nxid = 79\n",
                start.as_millis()
            ),
        )
        .expect("writing the scenario");
        let mut cmd = agent();
        cmd.args([
            "run",
            "--simulate",
            "8",
            "--node-name",
            &node,
            "--collector",
            &url,
        ])
        .arg("--scenario")
        .arg(&scenario);
        let spawned = SystemTime::now();
        let _agent = Proc::spawn(cmd, "gpufleet-agent");
        let fault_at = spawned + start;
        let got = wait_for(start + Duration::from_secs(20), || {
            rx.accepted()
                .into_iter()
                .find(|p| p.body["node"] == node.as_str() && p.body["status"] == "firing")
        });
        let Some(post) = got else {
            eprintln!("trial {i}: no notification\n{}", collector.log());
            std::process::exit(1);
        };
        let latency = post.at.duration_since(fault_at).unwrap_or(Duration::ZERO);
        println!("trial {i:2}: {:6.0} ms", latency.as_secs_f64() * 1000.0);
        latencies.push(latency);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} trials, sample interval {:?}: median {:.0} ms, max {:.0} ms, min {:.0} ms",
        latencies.len(),
        interval,
        ms(latencies[latencies.len() / 2]),
        ms(*latencies.last().unwrap()),
        ms(latencies[0])
    );
    collector.terminate(Duration::from_secs(10));
}
