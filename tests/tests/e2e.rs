//! End to end: `gpufleet serve` + two `gpufleet-agent run --simulate` processes over loopback,
//! checked through the CLI (`nodes`, `node`, `diagnose` with `-o json`).

use std::time::Duration;

use gpufleet_tests::{Proc, agent, free_port, gpufleet, repo_root, run, wait_for};
use serde_json::Value;

fn json(cmd: &mut std::process::Command) -> Option<Value> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn serve_two_simulated_agents_and_query_them() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let server = gpufleet_tests::serve(port, data.path());

    let mut a1 = agent();
    a1.args([
        "run",
        "--simulate",
        "8",
        "--model",
        "h100",
        "--node-name",
        "gpu-node-a",
        "--interval",
        "200ms",
        "--collector",
        &url,
    ]);
    let _a1 = Proc::spawn(a1, "agent a");
    let mut a2 = agent();
    a2.args([
        "run",
        "--simulate",
        "4",
        "--model",
        "a100",
        "--node-name",
        "gpu-node-01",
        "--interval",
        "200ms",
        "--collector",
        &url,
    ])
    // demo.toml overheats GPU 3 of gpu-node-01 from the first second.
    .arg("--scenario")
    .arg(repo_root().join("scenarios/demo.toml"));
    let _a2 = Proc::spawn(a2, "agent b");

    let nodes = wait_for(Duration::from_secs(30), || {
        let v = json(gpufleet().args(["nodes", "-o", "json", "--collector", &url]))?;
        let arr = v.as_array()?;
        (arr.len() == 2 && arr.iter().all(|n| n["connected"] == true)).then(|| arr.clone())
    })
    .unwrap_or_else(|| panic!("both nodes never showed up; server log:\n{}", server.log()));
    let a = nodes
        .iter()
        .find(|n| n["name"] == "gpu-node-a")
        .unwrap_or_else(|| panic!("node a: {nodes:?}\nserver log:\n{}", server.log()));
    assert_eq!(a["gpu_count"], 8);
    assert_eq!(a["gpu_models"][0], "NVIDIA H100 80GB HBM3");
    assert!(!a["driver_version"].as_str().unwrap().is_empty());
    let b = nodes
        .iter()
        .find(|n| n["name"] == "gpu-node-01")
        .unwrap_or_else(|| panic!("node b: {nodes:?}"));
    assert_eq!(b["gpu_count"], 4);

    // One node in full: 8 GPUs with versions and readings. A node is listed (and connected)
    // from its Hello on, before its first sample is stored, so wait for that sample.
    let detail = wait_for(Duration::from_secs(30), || {
        let d = json(gpufleet().args(["node", "gpu-node-a", "-o", "json", "--collector", &url]))?;
        d["latest"]["gpus"].as_array().is_some().then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "gpu-node-a never had a sample; server log:\n{}",
            server.log()
        )
    });
    let gpus = detail["inventory"]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    for g in gpus {
        assert!(g["uuid"].as_str().unwrap().starts_with("GPU-"));
        assert!(!g["vbios_version"].as_str().unwrap().is_empty());
    }
    assert_eq!(detail["latest"]["gpus"].as_array().unwrap().len(), 8);

    // The injected fault is named on the right node.
    let found = wait_for(Duration::from_secs(60), || {
        let d = json(gpufleet().args(["diagnose", "-o", "json", "--collector", &url]))?;
        d["findings"]
            .as_array()?
            .iter()
            .find(|f| {
                f["node"] == "gpu-node-01"
                    && f["rule_id"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("gpu.thermal"))
            })
            .cloned()
    });
    let f = found.unwrap_or_else(|| {
        panic!(
            "thermal fault never diagnosed; server log:\n{}",
            server.log()
        )
    });
    assert!(f["gpu_index"].is_number());
    assert!(!f["evidence"].as_array().unwrap().is_empty());
    assert!(!f["action"].as_str().unwrap().is_empty());
    // The healthy node has no GPU finding.
    let d = json(gpufleet().args(["diagnose", "gpu-node-a", "-o", "json", "--collector", &url]))
        .unwrap();
    assert_eq!(d["findings"].as_array().unwrap().len(), 0, "{d:#}");

    // The firing finding is in the stored history, queried by time.
    let history = wait_for(Duration::from_secs(10), || {
        let d = json(gpufleet().args([
            "diagnose",
            "--since",
            "10m",
            "-o",
            "json",
            "--collector",
            &url,
        ]))?;
        let h = d["history"].as_array()?.clone();
        h.iter()
            .any(|r| {
                r["finding"]["node"] == "gpu-node-01"
                    && r["state"] == "firing"
                    && r["finding"]["rule_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("gpu.thermal"))
            })
            .then_some(h)
    });
    assert!(
        history.is_some(),
        "the thermal finding is not in `diagnose --since 10m`"
    );
    let out = run(
        gpufleet().args(["diagnose", "--since", "yesterday-ish", "--collector", &url]),
        false,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a duration"));

    // Table output works too.
    let out = run(gpufleet().args(["nodes", "--collector", &url]), true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gpu-node-a") && text.contains("gpu-node-01"),
        "{text}"
    );
}

#[test]
fn unknown_node_and_unreachable_collector_give_clear_errors() {
    let out = run(
        gpufleet().args(["nodes", "--collector", "http://127.0.0.1:1"]),
        false,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the collector"), "{err}");
}

#[test]
fn missing_nvml_library_suggests_simulate() {
    let out = run(
        agent().args(["probe", "--nvml-lib", "/nonexistent/libnvidia-ml.so.1"]),
        false,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--simulate"), "{err}");
    assert!(err.contains("libnvidia-ml"), "{err}");
}

#[test]
fn probe_prints_a_full_simulated_reading() {
    let out = run(
        agent().args(["probe", "--simulate", "8", "--window", "100ms", "--json"]),
        true,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "gpufleet.probe/v1");
    assert_eq!(v["inventory"]["gpus"].as_array().unwrap().len(), 8);
    let g = &v["sample"]["gpus"][0];
    for field in [
        "temperature_gpu_celsius",
        "power_usage_milliwatts",
        "sm_clock_mhz",
        "pcie_link_gen",
        "memory_used_bytes",
    ] {
        assert!(g[field].is_number(), "{field} missing in {g}");
    }
    let out = run(
        agent().args(["probe", "--simulate", "2", "--window", "100ms"]),
        true,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Readings") && text.contains("NVIDIA H100"),
        "{text}"
    );
}
