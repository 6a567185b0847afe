//! `gpufleet series`, end to end: a real agent streams to a real collector until its samples
//! are compacted into chunks (and so into the 1-minute tier); the same window answered from the
//! 1-minute tier and from raw samples holds the same readings; the answer survives a collector
//! restart; bad requests say what to do.

use std::process::Output;
use std::time::Duration;

use gpufleet_tests::{Proc, agent, free_port, query, serve, wait_for};
use serde_json::Value;

fn json(out: &Output) -> Option<Value> {
    serde_json::from_slice(&out.stdout).ok()
}

/// Readings in every bucket of every line, and the lines' GPUs.
fn counts(v: &Value) -> (u64, Vec<u64>) {
    let lines = v["lines"].as_array().unwrap();
    let total = lines
        .iter()
        .flat_map(|l| l["points"].as_array().unwrap())
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    (
        total,
        lines.iter().filter_map(|l| l["gpu"].as_u64()).collect(),
    )
}

#[test]
fn minutes_and_raw_samples_agree_and_survive_a_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(port, data.path());
    let mut cmd = agent();
    cmd.args(["run", "--simulate", "2", "--node-name", "series-node"])
        .args(["--interval", "100ms", "--collector", &url]);
    let mut node = Proc::spawn(cmd, "agent");

    // More than one chunk's worth (120 samples): some are in a chunk and its partial row.
    let minute = |url: &str| {
        let out = query(
            url,
            &[
                "series",
                "series-node",
                "temperature",
                "--since",
                "1h",
                "--step",
                "1m",
                "-o",
                "json",
            ],
        );
        json(&out)
    };
    wait_for(Duration::from_secs(120), || {
        let v = minute(&url)?;
        (counts(&v).0 >= 2 * 200).then_some(())
    })
    .unwrap_or_else(|| panic!("no minute aggregates:\n{}\n{}", server.log(), node.log()));
    node.terminate(Duration::from_secs(10));

    let m = minute(&url).unwrap();
    assert_eq!(m["tier"], "1m");
    assert_eq!(m["unit"], "°C");
    let (in_minutes, gpus) = counts(&m);
    assert_eq!(gpus, [0, 1]);
    let raw = json(&query(
        &url,
        &[
            "series",
            "series-node",
            "temperature",
            "--since",
            "1h",
            "--step",
            "1s",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(raw["tier"], "raw");
    assert_eq!(
        counts(&raw).0,
        in_minutes,
        "every stored reading, once, in both"
    );
    // Per-bucket aggregates hold: min <= mean <= max, plausible temperatures.
    for p in m["lines"][0]["points"].as_array().unwrap() {
        let (min, mean, max) = (
            p["min"].as_f64().unwrap(),
            p["mean"].as_f64().unwrap(),
            p["max"].as_f64().unwrap(),
        );
        assert!(min <= mean + 1e-3 && mean <= max + 1e-3 && (20.0..100.0).contains(&mean));
    }

    // One GPU, an hour step (1-hour tier), and the table.
    let h = json(&query(
        &url,
        &[
            "series",
            "series-node",
            "power",
            "--gpu",
            "1",
            "--step",
            "1h",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!((h["tier"].as_str(), counts(&h).1), (Some("1h"), vec![1]));
    let table = query(&url, &["series", "series-node", "cpu", "--since", "1h"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        text.contains("cpu (%) on series-node") && text.contains("HOST"),
        "{text}"
    );
    assert!(text.contains("window max"), "{text}");

    // After a restart the collector answers the same from the database.
    server.terminate(Duration::from_secs(10));
    let mut server = serve(port, data.path());
    let again = wait_for(Duration::from_secs(30), || minute(&url))
        .unwrap_or_else(|| panic!("no answer after a restart:\n{}", server.log()));
    assert_eq!(counts(&again).0, in_minutes);

    // Bad requests: an unknown series names the real ones; a raw step over a week says what to do.
    let out = query(&url, &["series", "series-node", "temprature"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("temperature"),
        "{err}"
    );
    let out = query(
        &url,
        &[
            "series",
            "series-node",
            "power",
            "--since",
            "7d",
            "--step",
            "10s",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--step 1m"), "{err}");
    let out = query(&url, &["series", "no-such-node", "power"]);
    assert!(!out.status.success());
    let list = query(&url, &["series", "--list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("tensor_active") && text.contains("swap_used"),
        "{text}"
    );
    server.terminate(Duration::from_secs(10));
}
