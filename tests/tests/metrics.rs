//! `/metrics` end to end: a real Prometheus scrapes a real `gpufleet serve` fed by real
//! simulated agents (and one agent's own `/metrics`), and the PromQL of dcgm-exporter's
//! Grafana dashboard (12239) returns the fleet's GPUs with the right labels through
//! Prometheus' HTTP API. promtool checks both endpoints.
//!
//! Needs `prometheus` and `promtool` (Debian package `prometheus`): skipped with a message
//! when they are missing, a failure when CI=true.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, free_port, installed, promtool_problems, serve_with_metrics, wait_for,
};
use serde_json::Value;

const NODES: [&str; 2] = ["prom-node-a", "prom-node-b"];
const GPUS: u32 = 2;
const PATIENCE: Duration = Duration::from_secs(90);

fn simulated_agent(node: &str, url: &str, metrics_port: Option<u16>) -> Proc {
    let mut cmd = agent();
    cmd.args([
        "run",
        "--simulate",
        &GPUS.to_string(),
        "--node-name",
        node,
        "--interval",
        "500ms",
        "--collector",
        url,
    ])
    .env("GPUFLEET_CONFIG", "/dev/null")
    .env_remove("GPUFLEET_LABELS");
    if let Some(p) = metrics_port {
        cmd.args(["--metrics-listen", &format!("127.0.0.1:{p}")]);
    }
    Proc::spawn(cmd, &format!("agent {node}"))
}

fn get(url: &str, accept: Option<&str>) -> Option<String> {
    let client = reqwest::blocking::Client::new();
    let mut req = client.get(url).timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let resp = req.send().ok()?;
    resp.status().is_success().then(|| resp.text().ok())?
}

/// The `result` of an instant query, when Prometheus answers.
fn query(prom: &str, promql: &str) -> Option<Vec<Value>> {
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", promql)])
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    let v: Value = serde_json::from_str(&resp.text().ok()?).ok()?;
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"].as_array().cloned()
}

/// Waits until `promql` returns a series for every GPU of every node; returns them.
fn every_gpu(prom: &str, promql: &str) -> Vec<Value> {
    wait_for(PATIENCE, || {
        let r = query(prom, promql)?;
        (r.len() == NODES.len() * GPUS as usize).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "{promql} never returned {} series; last: {:?}",
            NODES.len() * GPUS as usize,
            query(prom, promql)
        )
    })
}

fn label_set(series: &[Value], label: &str) -> BTreeSet<String> {
    series
        .iter()
        .map(|s| s["metric"][label].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn prometheus_scrapes_the_fleet_and_dashboard_12239_queries_return_it() {
    if !installed("prometheus", "prometheus") || !installed("promtool", "prometheus") {
        return;
    }
    let (port, metrics_port, agent_metrics_port, prom_port) =
        (free_port(), free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let _server = serve_with_metrics(port, data.path(), metrics_port);
    let url = format!("http://127.0.0.1:{port}");
    let _agents = [
        simulated_agent(NODES[0], &url, Some(agent_metrics_port)),
        simulated_agent(NODES[1], &url, None),
    ];

    let prom_dir = tempfile::tempdir().unwrap();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             - job_name: gpufleet\n  static_configs:\n  - targets: ['127.0.0.1:{metrics_port}']\n\
             - job_name: gpufleet-agent\n  static_configs:\n  - targets: ['127.0.0.1:{agent_metrics_port}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prometheus = Proc::spawn(cmd, "prometheus");
    let prom = format!("http://127.0.0.1:{prom_port}");

    // Both endpoints are up and Prometheus (which asks for OpenMetrics first) parses them.
    let up = wait_for(PATIENCE, || {
        let r = query(&prom, "up == 1")?;
        (r.len() == 2).then_some(r)
    });
    assert!(
        up.is_some(),
        "targets never up: {:?}\nprometheus:\n{}",
        query(&prom, "up"),
        prometheus.log()
    );

    // The dashboard's panels, $Hostname and $gpu set to "all".
    let all = |q: &str| q.replace("$Hostname", ".*").replace("$gpu", ".*");
    let job = r#"job="gpufleet""#;
    for panel in [
        r#"max(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname", gpu=~"$gpu", JOB}) by (Hostname, gpu, uuid)"#,
        r#"max(DCGM_FI_DEV_POWER_USAGE{Hostname=~"$Hostname", gpu=~"$gpu", JOB}) by (Hostname, gpu, uuid)"#,
        r#"max(DCGM_FI_DEV_SM_CLOCK{Hostname=~"$Hostname", gpu=~"$gpu", JOB} * 1000000) by (Hostname, UUID, gpu)"#,
        r#"max(DCGM_FI_DEV_FB_USED{Hostname=~"$Hostname", gpu=~"$gpu", JOB}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
        // The profiling panels, from NVML GPM on the simulated H100s.
        r#"max(DCGM_FI_PROF_GR_ENGINE_ACTIVE{Hostname=~"$Hostname", gpu=~"$gpu", JOB}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
        r#"max(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{Hostname=~"$Hostname", gpu=~"$gpu", JOB}) by (Hostname, gpu, GPU_I_ID, GPU_I_PROFILE)"#,
    ] {
        let q = all(panel).replace("JOB", job);
        let series = every_gpu(&prom, &q);
        assert_eq!(
            label_set(&series, "Hostname"),
            NODES.map(String::from).into(),
            "{q}"
        );
        assert_eq!(
            label_set(&series, "gpu"),
            ["0", "1"].map(String::from).into(),
            "{q}"
        );
        if q.contains("UUID") {
            assert!(
                label_set(&series, "UUID")
                    .iter()
                    .all(|u| u.starts_with("GPU-")),
                "{q}: {series:?}"
            );
            assert_eq!(label_set(&series, "UUID").len(), 4, "{q}");
        }
        for s in &series {
            let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            assert!(v > 0.0, "{q}: {s}");
        }
    }
    // Single-stat panels: one number for the fleet.
    for panel in [
        r#"avg(DCGM_FI_DEV_GPU_TEMP{Hostname=~"$Hostname", gpu=~"$gpu"})"#,
        r#"sum(max(DCGM_FI_DEV_POWER_USAGE{Hostname=~"$Hostname", gpu=~"$gpu"}) by (gpu))"#,
    ] {
        let r = query(&prom, &all(panel)).unwrap();
        assert_eq!(r.len(), 1, "{panel}: {r:?}");
    }
    // Template variables: label_values(DCGM_FI_DEV_FB_FREE, Hostname) and its gpu.
    let hosts: Value = serde_json::from_str(
        &get(
            &format!("{prom}/api/v1/label/Hostname/values?match[]=DCGM_FI_DEV_FB_FREE"),
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let hosts: BTreeSet<&str> = hosts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(hosts, NODES.into());
    // A DCGM counter keeps its name (typed unknown in OpenMetrics), and the agent's own
    // endpoint carries its node's GPUs under the same names.
    every_gpu(
        &prom,
        r#"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{job="gpufleet"}"#,
    );
    let own = wait_for(PATIENCE, || {
        let r = query(&prom, r#"DCGM_FI_DEV_GPU_TEMP{job="gpufleet-agent"}"#)?;
        (r.len() == GPUS as usize).then_some(r)
    })
    .expect("the agent's own /metrics is scraped");
    assert_eq!(label_set(&own, "Hostname"), [NODES[0].to_string()].into());
    // gpufleet's own series.
    let connected = query(&prom, r#"gpufleet_nodes{state="connected"}"#).unwrap();
    assert_eq!(connected[0]["value"][1], "2", "{connected:?}");
    assert!(
        !query(&prom, "gpufleet_ingest_batches_total > 0")
            .unwrap()
            .is_empty()
    );
    assert!(
        !query(&prom, "gpufleet_store_write_seconds_count > 0")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        query(&prom, "gpufleet_gpu_info").unwrap().len(),
        NODES.len() * GPUS as usize
    );

    // promtool: nothing but the complaints dcgm-exporter's names carry by design.
    for (what, port) in [("collector", metrics_port), ("agent", agent_metrics_port)] {
        let text = get(&format!("http://127.0.0.1:{port}/metrics"), None).unwrap();
        let problems = promtool_problems(&text).expect("promtool runs");
        assert!(
            problems.is_empty(),
            "{what} /metrics:\n{}",
            problems.join("\n")
        );
    }
    prometheus.terminate(Duration::from_secs(10));
}

#[test]
fn a_collector_whose_metrics_port_is_taken_fails_saying_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = taken.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let mut server = serve_with_metrics(free_port(), data.path(), metrics_port);
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the collector gives up");
    assert!(!status.success());
    let log = server.log();
    assert!(
        log.contains(&format!(
            "cannot listen for /metrics on 127.0.0.1:{metrics_port}"
        )) && log.contains("--metrics-listen"),
        "{log}"
    );
}
