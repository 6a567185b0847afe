//! End to end over the fake NVML library: `gpufleet serve` and `gpufleet-agent run --nvml-lib
//! <fake libnvidia_ml.so>` as real processes on loopback, checked through the CLI (`nodes`,
//! `node`, `diagnose` with `-o json`). The agent's real NVML code path runs without a GPU:
//! inventory and readings reach the CLI intact, absent readings stay absent, a GPU lost
//! mid-run and Xids from the event set are diagnosed on the right GPU, a missing library is a
//! clear error, and over a whole run the agent calls no NVML function that changes GPU state.
//!
//! Each agent gets its own fixture and call log through its environment, so these tests run
//! in parallel.

use std::path::PathBuf;
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, fake_nvml_lib, free_port, gpufleet, nvml_fixture, run, state_changing_calls,
    wait_for,
};
use serde_json::Value;
use tempfile::TempDir;

/// How long anything may take to show up (the machine running the tests may be busy).
const PATIENCE: Duration = Duration::from_secs(60);

struct Collector {
    proc: Proc,
    url: String,
    _data: TempDir,
}

fn collector() -> Collector {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = gpufleet();
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data.path());
    Collector {
        proc: Proc::spawn(cmd, "gpufleet serve"),
        url: format!("http://127.0.0.1:{port}"),
        _data: data,
    }
}

impl Collector {
    /// `gpufleet <args> -o json` against this collector; `None` until it answers with JSON.
    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = gpufleet()
            .args(args)
            .args(["-o", "json", "--collector", &self.url])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn node(&self, name: &str) -> Option<Value> {
        self.json(&["node", name])
    }

    /// The node's document once its latest sample has `gpus` GPUs.
    fn node_with_sample(&self, name: &str, gpus: usize) -> Option<Value> {
        let d = self.node(name)?;
        (d["latest"]["gpus"].as_array()?.len() == gpus).then_some(d)
    }

    /// Findings of `diagnose` on `node` whose rule id starts with `rule`.
    fn findings(&self, node: &str, rule: &str) -> Vec<Value> {
        let Some(d) = self.json(&["diagnose"]) else {
            return Vec::new();
        };
        d["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["node"] == node)
            .filter(|f| f["rule_id"].as_str().is_some_and(|r| r.starts_with(rule)))
            .cloned()
            .collect()
    }
}

/// A `gpufleet-agent run` on the fake library, with its fixture and call log.
struct FakeAgent {
    proc: Proc,
    calls: PathBuf,
    _dir: TempDir,
}

fn fake_agent(c: &Collector, node: &str, fixture: &str) -> FakeAgent {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("nvml-calls.log");
    let mut cmd = agent();
    cmd.arg("run")
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .args(["--node-name", node, "--interval", "200ms", "--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--collector", &c.url])
        .env("FAKE_NVML_FIXTURE", nvml_fixture(fixture))
        .env("FAKE_NVML_CALL_LOG", &calls);
    FakeAgent {
        proc: Proc::spawn(cmd, &format!("agent {node} ({fixture})")),
        calls,
        _dir: dir,
    }
}

impl FakeAgent {
    /// Stops the agent the way a service manager does and checks, from the fake's call log,
    /// that the whole run only read: NVML was opened, sampled many times, shut down, and no
    /// state-changing function was ever called.
    fn stop_and_check_read_only(&mut self) {
        let status = self.proc.terminate(PATIENCE);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}):\n{}",
            self.proc.name,
            self.proc.log()
        );
        let log = std::fs::read_to_string(&self.calls).expect("the fake wrote a call log");
        let calls: Vec<&str> = log.lines().collect();
        let count = |f: &str| calls.iter().filter(|c| **c == f).count();
        assert!(
            count("nvmlInit_v2") + count("nvmlInitWithFlags") >= 1,
            "{}: NVML never initialised; calls: {calls:?}",
            self.proc.name
        );
        assert!(
            count("nvmlDeviceGetTemperature") >= 3,
            "{}: only {} temperature reads in the whole run",
            self.proc.name,
            count("nvmlDeviceGetTemperature")
        );
        assert!(
            count("nvmlShutdown") >= 1,
            "{}: NVML not shut down on exit",
            self.proc.name
        );
        let changing = state_changing_calls(calls.iter().copied());
        assert!(
            changing.is_empty(),
            "{} called state-changing NVML functions: {changing:?}",
            self.proc.name
        );
    }
}

/// Every process's log, for a failure message.
fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(nvml_fixture(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The values a fixture field takes: one value, or each value of a sequence.
fn fixture_values(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

#[test]
fn inventory_and_readings_reach_the_cli_and_the_agent_only_reads() {
    let c = collector();
    let mut h100 = fake_agent(&c, "fake-h100", "h100-8gpu.json");
    let mut mixed = fake_agent(&c, "fake-mixed", "mixed-notsupported.json");
    let all = || logs(&[&c.proc, &h100.proc, &mixed.proc]);
    let fx = fixture_json("h100-8gpu.json");
    let vbios = fx["defaults"]["vbios_version"].as_str().unwrap();

    let nodes = wait_for(PATIENCE, || {
        let v = c.json(&["nodes"])?;
        let arr = v.as_array()?;
        let up = |name: &str| {
            arr.iter()
                .any(|n| n["name"] == name && n["connected"] == true)
        };
        (up("fake-h100") && up("fake-mixed")).then(|| arr.clone())
    })
    .unwrap_or_else(|| panic!("the fake-NVML nodes never showed up\n{}", all()));
    let n = nodes.iter().find(|n| n["name"] == "fake-h100").unwrap();
    assert_eq!(n["gpu_source"], "nvml", "{n:#}");
    assert_eq!(n["gpu_count"], 8, "{n:#}");
    assert_eq!(
        n["gpu_models"],
        serde_json::json!(["NVIDIA H100 80GB HBM3"])
    );
    assert_eq!(n["driver_version"], fx["driver_version"]);
    assert_eq!(n["cuda_driver_version"], "12.4");
    assert_eq!(n["vbios_versions"], serde_json::json!([vbios]));

    let d = wait_for(PATIENCE, || c.node_with_sample("fake-h100", 8))
        .unwrap_or_else(|| panic!("fake-h100 never had a sample of 8 GPUs\n{}", all()));
    let inv = &d["inventory"];
    assert_eq!(inv["driver"]["driver_version"], fx["driver_version"]);
    assert_eq!(inv["driver"]["nvml_version"], fx["nvml_version"]);
    let gpus = inv["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    for (i, (g, want)) in gpus.iter().zip(fx["gpus"].as_array().unwrap()).enumerate() {
        assert_eq!(g["index"], i, "{g:#}");
        for field in ["uuid", "serial", "pci_bus_id"] {
            assert_eq!(g[field], want[field], "GPU {i} {field}");
        }
        assert_eq!(g["vbios_version"], vbios, "GPU {i}");
        assert_eq!(g["name"], "NVIDIA H100 80GB HBM3");
        assert_eq!(g["architecture"], "Hopper");
    }
    let latest = d["latest"]["gpus"].as_array().unwrap();
    for (i, (s, want)) in latest
        .iter()
        .zip(fx["gpus"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(s["status"], "ok", "GPU {i}: {s:#}");
        assert_eq!(s["uuid"], want["uuid"], "GPU {i}");
        // Values that change per read come from the fixture's sequences.
        for (reading, field) in [
            ("temperature_gpu_celsius", "temperature_gpu"),
            ("power_usage_milliwatts", "power_usage"),
            ("utilization_gpu_percent", "utilization_gpu"),
        ] {
            assert!(
                fixture_values(&want[field]).contains(&s[reading]),
                "GPU {i}: {reading} = {} is not one of the fixture's {}",
                s[reading],
                want[field]
            );
        }
        assert_eq!(s["processes"][0]["pid"], want["processes"][0]["pid"]);
        assert_eq!(s["sm_clock_mhz"], 1980, "GPU {i}");
        assert_eq!(s["memory_total_bytes"], 85_520_809_984_u64, "GPU {i}");
        assert_eq!(s["nvlinks"].as_array().map(Vec::len), Some(18), "GPU {i}");
    }

    // Absent readings are null from the library to the CLI, never 0.
    let m = wait_for(PATIENCE, || c.node_with_sample("fake-mixed", 2))
        .unwrap_or_else(|| panic!("fake-mixed never had a sample of 2 GPUs\n{}", all()));
    let a10 = &m["latest"]["gpus"][0];
    assert_eq!(a10["status"], "ok", "{a10:#}");
    for field in [
        "power_usage_milliwatts",
        "temperature_memory_celsius",
        "total_energy_millijoules",
        "pcie_tx_kbps",
        "pcie_rx_kbps",
        "utilization_encoder_percent",
        "violation_board_limit_ns",
        "violation_reliability_ns",
        "remapped_rows_correctable",
        "ecc_corrected_volatile",
        "fan_speed_percent",
    ] {
        assert_eq!(a10.get(field), Some(&Value::Null), "A10 {field}: {a10:#}");
    }
    assert_eq!(a10["temperature_gpu_celsius"], 52);
    assert_eq!(a10["clock_event_reasons"], 4);
    assert_eq!(a10["power_limit_enforced_milliwatts"], 150_000);
    let a10_info = &m["inventory"]["gpus"][0];
    assert_eq!(a10_info["name"], "NVIDIA A10");
    for field in [
        "persistence_mode",
        "mig_enabled",
        "memory_temperature_max_operating_celsius",
    ] {
        assert_eq!(a10_info.get(field), Some(&Value::Null), "A10 {field}");
    }
    assert_eq!(a10_info["ecc_enabled"], false);
    let quadro = &m["latest"]["gpus"][1];
    assert_eq!(quadro["fan_speed_percent"], 38, "{quadro:#}");
    assert_eq!(quadro["retired_pages_single_bit"], 2);
    assert_eq!(quadro.get("temperature_memory_celsius"), Some(&Value::Null));
    // The table says so in words.
    let out = run(
        gpufleet().args(["node", "fake-mixed", "--collector", &c.url]),
        true,
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("NVIDIA A10") && table.contains("n/a"),
        "{table}"
    );

    h100.stop_and_check_read_only();
    mixed.stop_and_check_read_only();
}

#[test]
fn a_gpu_lost_mid_run_is_reported_lost_and_diagnosed() {
    let c = collector();
    let mut a = fake_agent(&c, "fake-lost", "gpu-lost.json");
    let all = |a: &FakeAgent| logs(&[&c.proc, &a.proc]);

    // GPU 2 answers twice, then falls off the bus.
    let d = wait_for(PATIENCE, || {
        let d = c.node_with_sample("fake-lost", 4)?;
        (d["latest"]["gpus"][2]["status"] == "lost").then_some(d)
    })
    .unwrap_or_else(|| panic!("GPU 2 never showed as lost\n{}", all(&a)));
    let latest = &d["latest"]["gpus"];
    let statuses: Vec<&Value> = (0..4).map(|i| &latest[i]["status"]).collect();
    assert_eq!(statuses, ["ok", "ok", "lost", "ok"], "{latest:#}");
    let lost = &latest[2];
    assert_eq!(lost["uuid"], d["inventory"]["gpus"][2]["uuid"]);
    assert_eq!(lost.get("power_usage_milliwatts"), Some(&Value::Null));
    assert_eq!(d["summary"]["gpus_unhealthy"], 1);

    // The agent keeps running and sampling the other GPUs.
    let t0 = d["latest"]["timestamp"].as_i64().unwrap();
    let later = wait_for(PATIENCE, || {
        let d = c.node_with_sample("fake-lost", 4)?;
        (d["latest"]["timestamp"].as_i64()? > t0).then_some(d)
    })
    .unwrap_or_else(|| panic!("no sample after the GPU was lost\n{}", all(&a)));
    assert_eq!(later["latest"]["gpus"][2]["status"], "lost");
    assert_eq!(later["latest"]["gpus"][3]["status"], "ok");
    assert_eq!(later["summary"]["connected"], true);
    assert!(
        a.proc.exited().is_none(),
        "the agent exited after losing a GPU\n{}",
        all(&a)
    );

    // Its Xid 79 arrives through the event set too, as the driver's report of the same fault.
    let has_xid_79 = |f: &Value| {
        f["evidence"].as_array().is_some_and(|ev| {
            ev.iter().any(|e| {
                e["field"] == "xid" && e["value"].as_str().is_some_and(|v| v.starts_with("79"))
            })
        })
    };
    let found = wait_for(PATIENCE, || {
        c.findings("fake-lost", "gpu.lost")
            .into_iter()
            .find(|f| f["rule_id"] == "gpu.lost" && has_xid_79(f))
    })
    .unwrap_or_else(|| {
        panic!(
            "gpu.lost with Xid 79 never diagnosed; findings: {:#}\n{}",
            c.json(&["diagnose"]).unwrap_or_default(),
            all(&a)
        )
    });
    assert_eq!(found["gpu_index"], 2, "{found:#}");
    assert_eq!(found["severity"], "critical", "{found:#}");
    assert_eq!(found["gpu_uuid"], lost["uuid"], "{found:#}");

    a.stop_and_check_read_only();
}

#[test]
fn xids_from_the_event_set_reach_the_collector_and_the_diagnosis() {
    let c = collector();
    let mut a = fake_agent(&c, "fake-xid", "xid.json");
    let all = |a: &FakeAgent| logs(&[&c.proc, &a.proc]);

    // xid.json: Xid 31 on GPU 0 at once, a double-bit ECC event on GPU 0, Xid 79 on GPU 1.
    // Only events from NVML count: on a GPU machine the kernel log may hold real Xids.
    let from_nvml = |d: &Value| -> Vec<Value> {
        d["recent_events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["source"] == "nvml")
            .cloned()
            .collect()
    };
    let d = wait_for(PATIENCE, || {
        let d = c.node("fake-xid")?;
        let events = from_nvml(&d);
        (events.len() >= 3).then_some(d)
    })
    .unwrap_or_else(|| panic!("the NVML events never reached the collector\n{}", all(&a)));
    let events = from_nvml(&d);
    let mut got: Vec<(String, Option<u64>, Option<u64>)> = events
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or("").to_string(),
                e["xid"].as_u64(),
                e["gpu_index"].as_u64(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("nvml.double_bit_ecc".to_string(), None, Some(0)),
        ("xid.31".to_string(), Some(31), Some(0)),
        ("xid.79".to_string(), Some(79), Some(1)),
    ];
    assert_eq!(got, want, "each event once: {events:#?}");
    for e in events.iter().filter(|e| e["kind"] == "xid") {
        assert_eq!(e["severity"], "critical", "{e:#}");
        let gpu = e["gpu_index"].as_u64().unwrap() as usize;
        assert_eq!(e["gpu_uuid"], d["inventory"]["gpus"][gpu]["uuid"], "{e:#}");
    }

    // Each Xid is diagnosed on its GPU, classified by NVIDIA's catalog.
    let xid_rules = |f: &[Value], gpu: u64| -> Vec<String> {
        f.iter()
            .filter(|f| f["gpu_index"] == gpu)
            .filter_map(|f| f["rule_id"].as_str().map(str::to_string))
            .collect()
    };
    let findings = wait_for(PATIENCE, || {
        let f = c.findings("fake-xid", "gpu.xid");
        (!xid_rules(&f, 0).is_empty() && !xid_rules(&f, 1).is_empty()).then_some(f)
    })
    .unwrap_or_else(|| panic!("the Xids were never diagnosed\n{}", all(&a)));
    assert_eq!(
        xid_rules(&findings, 0),
        ["gpu.xid.application"],
        "{findings:#?}"
    );
    assert_eq!(xid_rules(&findings, 1), ["gpu.xid.bus"], "{findings:#?}");

    a.stop_and_check_read_only();
}

#[test]
fn run_without_a_usable_nvml_library_exits_and_suggests_simulate() {
    let state = tempfile::tempdir().unwrap();
    for lib in ["/nonexistent/libnvidia-ml.so.1", "/bin/ls"] {
        let mut cmd = agent();
        cmd.args([
            "run",
            "--nvml-lib",
            lib,
            "--node-name",
            "no-nvml",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--collector", "http://127.0.0.1:1"]);
        let mut p = Proc::spawn(cmd, &format!("agent --nvml-lib {lib}"));
        let status = p
            .wait_exit(PATIENCE)
            .unwrap_or_else(|| panic!("the agent kept running on {lib}:\n{}", p.log()));
        assert!(!status.success(), "{lib}: exited {status}");
        let err = p.log();
        assert!(err.contains("--simulate"), "{lib}: {err}");
        assert!(err.contains(lib), "{lib}: {err}");
    }
}
