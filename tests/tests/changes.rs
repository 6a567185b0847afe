//! `gpufleet changes`, `gpufleet history NODE` and the changes in `gpufleet node NAME`, end to
//! end: real agents, one upgrading its driver and one GPU's VBIOS in the middle of the run; the
//! change shows with old → new and its time, a selector and `--since` narrow it, and it is
//! still there after the collector restarts (it is built from the stored inventories); then
//! `gpufleet node rm` forgets a decommissioned node (and refuses one whose agent is connected).

use std::process::Output;
use std::time::Duration;

use gpufleet_tests::{Proc, agent, free_port, query, serve, wait_for};
use serde_json::Value;

fn json(out: &Output) -> Option<Value> {
    serde_json::from_slice(&out.stdout).ok()
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn agent_proc(node: &str, url: &str, pool: &str, scenario: Option<&std::path::Path>) -> Proc {
    let mut cmd = agent();
    cmd.args(["run", "--simulate", "4", "--node-name", node])
        .args(["--interval", "200ms", "--collector", url])
        .arg("--label")
        .arg(format!("pool={pool}"))
        .env_remove("GPUFLEET_LABELS");
    if let Some(s) = scenario {
        cmd.arg("--scenario").arg(s);
    }
    Proc::spawn(cmd, node)
}

/// `(node, field, gpu, old, new)` of every change in a `-o json` answer.
fn rows(v: &Value) -> Vec<(String, String, Option<u64>, String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("node"), s("field"), c["gpu"].as_u64(), s("old"), s("new"))
        })
        .collect()
}

#[test]
fn a_driver_and_vbios_upgrade_shows_in_changes_history_and_node_across_a_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(port, data.path());

    let scenario = data.path().join("upgrade.toml");
    std::fs::write(
        &scenario,
        r#"name = "upgrade"
[fleet]
nodes = 2
[[fault]]
kind = "driver_change"
node = "gpu-node-02"
start = "4s"
driver_version = "535.161.08"
[[fault]]
kind = "driver_change"
node = "gpu-node-02"
gpu = 3
start = "4s"
vbios_version = "96.00.99.00.01"
"#,
    )
    .unwrap();
    let mut agents = vec![
        agent_proc("gpu-node-01", &url, "inference", None),
        agent_proc("gpu-node-02", &url, "training", Some(&scenario)),
    ];

    // A new driver brings its CUDA version and its GSP firmware (one per GPU) with it.
    let change = |field: &str, gpu: Option<u64>, old: &str, new: &str| {
        let n = "gpu-node-02".to_string();
        (n, field.to_string(), gpu, old.to_string(), new.to_string())
    };
    let mut want = vec![
        change("cuda_driver_version", None, "12.4", "12.2"),
        change("driver_version", None, "550.54.15", "535.161.08"),
    ];
    want.extend((0..4).map(|g| change("gsp_firmware_version", Some(g), "550.54.15", "535.161.08")));
    want.push(change(
        "vbios_version",
        Some(3),
        "96.00.89.00.01",
        "96.00.99.00.01",
    ));
    let changes = wait_for(Duration::from_secs(30), || {
        let v = json(&query(&url, &["changes", "-o", "json"]))?;
        (rows(&v).len() >= want.len()).then_some(v)
    })
    .expect("the upgrade shows in `gpufleet changes`");
    assert_eq!(rows(&changes), want, "{changes}");
    assert!(changes[0]["at"].as_i64().unwrap() > 0);
    assert_eq!(changes[0]["source"], "inventory");

    // The table says the same with old and new side by side.
    let table = text(&query(&url, &["changes"]));
    for s in [
        "gpu-node-02",
        "driver_version",
        "550.54.15",
        "535.161.08",
        "7 changes on 1 node",
    ] {
        assert!(table.contains(s), "{s} missing:\n{table}");
    }

    // A selector narrows it: nothing changed in the inference pool.
    let inference = query(&url, &["changes", "-o", "json", "-l", "pool=inference"]);
    assert_eq!(rows(&json(&inference).unwrap()), []);
    let none = text(&query(&url, &["changes", "-l", "pool=inference"]));
    assert!(
        none.starts_with("No version or mode changed since"),
        "{none}"
    );

    // `--since` a millisecond after the change leaves it out, at the change keeps it; a bad
    // one is a usage error.
    let at = changes[0]["at"].as_i64().unwrap();
    let time = |ms: i64| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
            .to_string()
    };
    let since = |ms| {
        rows(
            &json(&query(
                &url,
                &["changes", "-o", "json", "--since", &time(ms)],
            ))
            .unwrap(),
        )
    };
    assert_eq!(since(at), want);
    assert_eq!(since(at + 1), []);
    let bad = query(&url, &["changes", "--since", "yesterday-ish"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither a duration"));

    // `history NODE` for one node; an unknown node is an error that says how to list them.
    let history = json(&query(&url, &["history", "gpu-node-02", "-o", "json"])).unwrap();
    assert_eq!(rows(&history), want);
    assert_eq!(
        rows(&json(&query(&url, &["history", "gpu-node-01", "-o", "json"])).unwrap()),
        []
    );
    let unknown = query(&url, &["history", "gpu-node-99"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("gpufleet nodes"));

    // `node NAME` shows its last changes, in JSON and in the table.
    let node = json(&query(&url, &["node", "gpu-node-02", "-o", "json"])).unwrap();
    assert_eq!(rows(&node["recent_changes"]), want);
    let node_table = text(&query(&url, &["node", "gpu-node-02"]));
    assert!(
        node_table.contains("driver_version: 550.54.15 → 535.161.08"),
        "{node_table}"
    );

    // A node whose agent is connected cannot be removed.
    let busy = query(&url, &["node", "rm", "gpu-node-01"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("agent is connected"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );

    // The history is the store's: it survives a collector restart with every agent gone.
    for a in &mut agents {
        a.terminate(Duration::from_secs(5));
    }
    server.terminate(Duration::from_secs(10));
    let _server = serve(port, data.path());
    let after = wait_for(Duration::from_secs(20), || {
        json(&query(&url, &["history", "gpu-node-02", "-o", "json"]))
    })
    .expect("the restarted collector answers");
    assert_eq!(rows(&after), want);

    // A decommissioned node is forgotten, its history with it; the other node stays.
    let rm = query(&url, &["node", "rm", "gpu-node-01"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let nodes = json(&query(&url, &["nodes", "-o", "json"])).unwrap();
    let names: Vec<_> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["gpu-node-02"]);
    assert!(!query(&url, &["history", "gpu-node-01"]).status.success());
    assert!(
        !query(&url, &["node", "rm", "gpu-node-01"]).status.success(),
        "gone already"
    );
}
