//! Alerting end to end through the real binaries: a simulated agent running a scenario with a
//! fault, `gpufleet serve` with alert sinks, and real receivers — a loopback webhook (the
//! collector SIGKILLed with notifications pending, then restarted: each delivered exactly
//! once) and a real Prometheus Alertmanager (the alert appears with the right labels, then
//! resolves).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gpufleet_tests::receiver::Receiver;
use gpufleet_tests::{Proc, agent, free_port, gpufleet, serve_with, wait_for};
use serde_json::Value;

/// One node, eight GPUs; `fault` (TOML of one `[[fault]]` table) injected into it.
fn scenario(dir: &Path, fault: &str) -> std::path::PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"alerting\"\nduration = \"10m\"\n[fleet]\nnodes = 1\nmodel = \"h100-sxm-80gb\"\ngpus_per_node = 8\nseed = 1\n\n[[fault]]\nnode = \"gpu-node-01\"\n{fault}\n"
        ),
    )
    .unwrap();
    path
}

fn start_agent(url: &str, scenario: &Path) -> Proc {
    let mut cmd = agent();
    cmd.args([
        "run",
        "--simulate",
        "8",
        "--node-name",
        "gpu-node-01",
        "--interval",
        "200ms",
        "--collector",
        url,
        "--label",
        "pool=training",
    ])
    .arg("--scenario")
    .arg(scenario)
    .env_remove("GPUFLEET_LABELS");
    Proc::spawn(cmd, "gpufleet-agent")
}

fn kill9(p: &mut Proc) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -KILL {}", p.child.id())])
        .status();
    let _ = p.child.wait();
}

#[test]
fn a_collector_killed_with_pending_notifications_delivers_each_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    rx.answer(503);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let hook = format!("{}/hook", rx.url);
    let args = ["--alert-webhook", hook.as_str()];
    let data = dir.path().join("data");
    let mut collector = serve_with(port, &data, &args);
    let fault = scenario(
        dir.path(),
        "kind = \"xid\"\ngpu = 5\nstart = \"2s\"\nxid = 79",
    );
    let _agent = start_agent(&url, &fault);

    // The receiver is failing: the firing notification is tried and stays pending.
    let tried = wait_for(Duration::from_secs(40), || {
        let p = rx.posts();
        (!p.is_empty()).then_some(p)
    });
    let tried =
        tried.unwrap_or_else(|| panic!("no attempt reached the receiver:\n{}", collector.log()));
    let firing_id = tried[0].body["id"].as_str().unwrap().to_string();
    assert!(firing_id.contains("@firing:"), "{firing_id}");
    kill9(&mut collector);

    rx.answer(200);
    let mut collector = serve_with(port, &data, &args);
    let delivered = wait_for(Duration::from_secs(30), || {
        rx.accepted()
            .iter()
            .any(|p| p.body["id"] == firing_id.as_str())
            .then_some(())
    });
    assert!(
        delivered.is_some(),
        "not delivered after the restart:\n{}",
        collector.log()
    );
    // Let anything that would be a duplicate arrive.
    std::thread::sleep(Duration::from_secs(4));
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for p in rx.accepted() {
        *per_id
            .entry(p.body["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_id.get(&firing_id), Some(&1), "{per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "a notification arrived twice: {per_id:?}"
    );
    let first = &rx.accepted()[0];
    assert_eq!(first.headers["idempotency-key"], firing_id.as_str());
    assert_eq!(first.body["alerts"][0]["labels"]["pool"], "training");

    // The delivery log says so.
    let out = gpufleet()
        .args(["alerts", "--deliveries", "-o", "json", "--collector", &url])
        .output()
        .unwrap();
    let ds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = ds
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["notification"]["id"] == firing_id.as_str())
        .unwrap();
    assert_eq!(d["status"], "delivered");
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
    collector.terminate(Duration::from_secs(10));
}

#[test]
fn silences_and_test_notifications_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let hook = format!("{}/hook", rx.url);
    let mut collector = serve_with(port, &dir.path().join("data"), &["--alert-webhook", &hook]);
    let cli = |args: &[&str]| {
        gpufleet()
            .args(args)
            .args(["--collector", &url])
            .output()
            .unwrap()
    };
    let up = wait_for(Duration::from_secs(20), || {
        cli(&["alerts"]).status.success().then_some(())
    });
    assert!(up.is_some(), "{}", collector.log());
    let out = cli(&["alerts", "test", "webhook-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "webhook-1: delivered: HTTP 200: ok"
    );
    assert_eq!(rx.accepted()[0].body["test"], true);
    assert!(!cli(&["alerts", "test", "nope"]).status.success());

    let out = cli(&[
        "silence",
        "add",
        "--node",
        "gpu-node-01",
        "--gpu",
        "5",
        "--cause",
        "gpu.xid",
        "--for",
        "2h",
        "--comment",
        "RMA",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = s["id"].as_i64().unwrap();
    let fault = scenario(
        dir.path(),
        "kind = \"xid\"\ngpu = 5\nstart = \"1s\"\nxid = 79",
    );
    let _agent = start_agent(&url, &fault);
    // The alert fires, is listed with its silence, and is recorded as silenced, not sent.
    let listed = wait_for(Duration::from_secs(30), || {
        let a: Value = serde_json::from_slice(&cli(&["alerts", "-o", "json"]).stdout).ok()?;
        a["alerts"]
            .as_array()?
            .iter()
            .find(|x| x["finding"]["rule_id"] == "gpu.xid.bus")
            .cloned()
    })
    .expect("the Xid alert is listed");
    assert_eq!(listed["silenced_by"][0]["id"], id);
    let silenced = wait_for(Duration::from_secs(10), || {
        let ds: Value =
            serde_json::from_slice(&cli(&["alerts", "--deliveries", "-o", "json"]).stdout).ok()?;
        ds.as_array()?
            .iter()
            .find(|d| d["status"] == "silenced")
            .cloned()
    });
    assert!(silenced.is_some(), "no silenced delivery recorded");
    assert_eq!(
        rx.accepted().len(),
        1,
        "only the test notification was sent"
    );
    let table = String::from_utf8_lossy(&cli(&["silence", "list"]).stdout).to_string();
    assert!(
        table.contains("RMA") && table.contains("gpu.xid"),
        "{table}"
    );
    assert!(cli(&["silence", "rm", &id.to_string()]).status.success());
    assert!(
        !cli(&["silence", "rm", &id.to_string()]).status.success(),
        "already removed"
    );
    collector.terminate(Duration::from_secs(10));
}

fn alertmanager_binary() -> Option<&'static str> {
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
}

fn get_alerts(am: &str) -> Option<Vec<Value>> {
    let body = reqwest::blocking_get(&format!("{am}/api/v2/alerts"))?;
    serde_json::from_str::<Value>(&body)
        .ok()?
        .as_array()
        .cloned()
}

mod reqwest {
    /// A GET on a plain runtime (the test itself is synchronous).
    pub fn blocking_get(url: &str) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async { ::reqwest::get(url).await.ok()?.text().await.ok() })
    }
}

#[test]
fn alerts_reach_a_real_alertmanager_and_resolve() {
    let Some(bin) = alertmanager_binary() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "alertmanager not installed (apt-get install prometheus-alertmanager)"
        );
        println!("skipped: alertmanager not installed (apt-get install prometheus-alertmanager)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let am = format!("http://127.0.0.1:{am_port}");
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let mut am_cmd = Command::new(bin);
    am_cmd
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=");
    let mut alertmanager = Proc::spawn(am_cmd, "alertmanager");
    let ready = wait_for(Duration::from_secs(20), || get_alerts(&am).map(|_| ()));
    assert!(
        ready.is_some(),
        "alertmanager did not start:\n{}",
        alertmanager.log()
    );

    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!("[alerts.sinks.am]\ntype = \"alertmanager\"\nurl = \"{am}\"\nresend_interval = \"5s\"\n\n[[alerts.routes]]\nsinks = [\"am\"]\nlabels = \"pool=training\"\n"),
    )
    .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut collector = serve_with(
        port,
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    // HW slowdown on GPU 3 from 2 s to 8 s: fires, then resolves after the clear delay.
    let fault = scenario(
        dir.path(),
        "kind = \"hw_slowdown\"\ngpu = 3\nstart = \"2s\"\nend = \"8s\"",
    );
    let _agent = start_agent(&url, &fault);

    let ours = |a: &Value| a["labels"]["node"] == "gpu-node-01" && a["labels"]["gpu"] == "3";
    let alert = wait_for(Duration::from_secs(40), || {
        get_alerts(&am)?.into_iter().find(|a| ours(a))
    })
    .unwrap_or_else(|| panic!("no alert in Alertmanager:\n{}", collector.log()));
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "gpu.clocks.hw_slowdown", "{alert}");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["pool"], "training");
    assert_eq!(labels["source"], "gpufleet");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        alert["annotations"]["action"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );

    // Cleared at 8 s, resolved after the engine's clear delay: Alertmanager drops it from its
    // active alerts (or shows it ended).
    let gone = wait_for(Duration::from_secs(75), || {
        let now = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        let still = get_alerts(&am)?
            .into_iter()
            .any(|a| ours(&a) && a["endsAt"].as_str().is_none_or(|e| e > now.as_str()));
        (!still).then_some(())
    });
    assert!(
        gone.is_some(),
        "the alert did not resolve in Alertmanager:\n{}",
        collector.log()
    );
    collector.terminate(Duration::from_secs(10));
    alertmanager.terminate(Duration::from_secs(10));
}
