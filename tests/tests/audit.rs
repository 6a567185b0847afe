//! `gpufleet audit` and `gpufleet versions` end to end: real agents with labels, one of them
//! upgrading its driver in the middle of the run; the audit without a policy (fleet majority)
//! and with one, every output format (JSON and CSV carry the same rows, JUnit validates
//! against tests/fixtures/junit/junit.xsd with xmllint), every exit status, a selector, a
//! stale node and bad policies.

use std::process::{Command, Output};
use std::time::Duration;

use gpufleet_tests::{Proc, agent, free_port, gpufleet, repo_root, serve, wait_for};
use serde_json::Value;

fn agent_cmd(node: &str, url: &str, pool: &str, scenario: Option<&std::path::Path>) -> Command {
    let mut cmd = agent();
    cmd.args([
        "run",
        "--simulate",
        "8",
        "--node-name",
        node,
        "--interval",
        "200ms",
        "--collector",
        url,
        "--label",
    ])
    .arg(format!("pool={pool}"))
    .env_remove("GPUFLEET_LABELS");
    if let Some(s) = scenario {
        cmd.arg("--scenario").arg(s);
    }
    cmd
}

fn audit(url: &str, args: &[&str]) -> Output {
    gpufleet()
        .args(["audit", "--collector", url])
        .args(args)
        .output()
        .expect("running gpufleet audit")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `json` for polling: `None` while the collector is not up yet.
fn try_json(out: &Output) -> Option<Value> {
    serde_json::from_slice(&out.stdout).ok()
}

fn status_of<'a>(audit: &'a Value, node: &str) -> &'a str {
    audit["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["status"].as_str())
        .unwrap_or("absent")
}

/// The JSON audit flattened like the CSV: one row per violation, one for a node without any.
fn flat(audit: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for n in audit["nodes"].as_array().unwrap() {
        let labels: Vec<String> = n["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let base = vec![
            n["node"].as_str().unwrap().to_string(),
            n["status"].as_str().unwrap().to_string(),
            labels.join(","),
        ];
        let violations = n["violations"].as_array().unwrap();
        if violations.is_empty() {
            let mut r = base.clone();
            r.extend(["", "", "", "", ""].map(String::from));
            rows.push(r);
        }
        for v in violations {
            let mut r = base.clone();
            r.push(v["field"].as_str().unwrap().into());
            r.push(
                v["gpu_index"]
                    .as_u64()
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            );
            for k in ["expected", "actual", "rule"] {
                r.push(v[k].as_str().unwrap().into());
            }
            rows.push(r);
        }
    }
    rows
}

fn xmllint_validates(xml: &str) {
    let have = Command::new("xmllint").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "xmllint not installed (apt-get install libxml2-utils)"
        );
        println!("skipped: xmllint not installed (apt-get install libxml2-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(repo_root().join("tests/fixtures/junit/junit.xsd"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "JUnit output does not validate:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn audit_versions_and_a_driver_upgrade_mid_run() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let _server = serve(port, data.path());

    // gpu-node-02 moves to driver 535.161.08 ten seconds in; the others stay on 550.54.15.
    let scenario = data.path().join("upgrade.toml");
    std::fs::write(
        &scenario,
        "name = \"upgrade\"\n[fleet]\nnodes = 4\n[[fault]]\nkind = \"driver_change\"\nnode = \"gpu-node-02\"\nstart = \"10s\"\ndriver_version = \"535.161.08\"\n[[expect]]\nnode = \"gpu-node-02\"\ncause = \"drift\"\n",
    )
    .unwrap();
    let mut agents: Vec<Proc> = ["gpu-node-01", "gpu-node-03", "gpu-node-04"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pool = if i == 2 { "inference" } else { "training" };
            Proc::spawn(agent_cmd(n, &url, pool, None), n)
        })
        .collect();
    agents.push(Proc::spawn(
        agent_cmd("gpu-node-02", &url, "training", Some(&scenario)),
        "gpu-node-02",
    ));

    // Before the upgrade every node agrees: exit 0.
    let first = wait_for(Duration::from_secs(20), || {
        let out = audit(&url, &["-o", "json"]);
        let a = try_json(&out)?;
        (a["summary"]["nodes"] == 4).then_some((out, a))
    })
    .expect("four nodes reach the audit");
    assert_eq!(first.0.status.code(), Some(0), "{}", first.1);
    assert_eq!(first.1["summary"]["compliant"], 4);
    assert_eq!(first.1["policy"], "fleet majority per GPU model");

    // After it, gpu-node-02 is the outlier: exit 1, with old and new in the violation.
    let (out, a) = wait_for(Duration::from_secs(20), || {
        let out = audit(&url, &["-o", "json"]);
        let a = try_json(&out)?;
        (status_of(&a, "gpu-node-02") == "violating").then_some((out, a))
    })
    .expect("the upgrade flips the audit");
    assert_eq!(out.status.code(), Some(1));
    let node2 = a["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "gpu-node-02")
        .unwrap();
    let v = node2["violations"].as_array().unwrap();
    let driver = v
        .iter()
        .find(|v| v["field"] == "driver_version")
        .expect("driver violation");
    assert_eq!(driver["actual"], "535.161.08");
    assert_eq!(driver["expected"], "550.54.15 (3 of 4 nodes)");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 violating"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // CSV carries the same rows as JSON.
    let csv_out = audit(&url, &["-o", "csv"]);
    assert_eq!(csv_out.status.code(), Some(1));
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "node", "status", "labels", "field", "gpu", "expected", "actual", "rule"
        ]
    );
    let csv_rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(csv_rows, flat(&json(&audit(&url, &["-o", "json"]))));

    // JUnit: one testcase per node, a failure per violation, valid against the schema.
    let junit = audit(&url, &["-o", "junit"]);
    assert_eq!(junit.status.code(), Some(1));
    let xml = String::from_utf8(junit.stdout).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert!(xml.contains("type=\"driver_version\""), "{xml}");
    xmllint_validates(&xml);

    // A selector narrows the audit: the inference pool alone complies.
    let inference = audit(&url, &["-o", "json", "--selector", "pool=inference"]);
    assert_eq!(inference.status.code(), Some(0));
    assert_eq!(json(&inference)["summary"]["nodes"], 1);

    // A policy: the training pool must run the 550 branch.
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"training-550\"\nselector = \"pool=training\"\ndriver_version = \">=550.54.15, <560\"\n",
    )
    .unwrap();
    let with = audit(&url, &["-o", "json", "--policy", policy.to_str().unwrap()]);
    assert_eq!(with.status.code(), Some(1));
    let w = json(&with);
    assert!(
        w["policy"]
            .as_str()
            .unwrap()
            .contains("policy.toml (1 rule)"),
        "{w}"
    );
    assert_eq!(status_of(&w, "gpu-node-02"), "violating");
    assert_eq!(status_of(&w, "gpu-node-04"), "compliant");

    // The version matrix shows the rollout.
    let versions = gpufleet()
        .args([
            "versions",
            "--field",
            "driver",
            "-o",
            "json",
            "--collector",
            &url,
        ])
        .output()
        .unwrap();
    assert!(versions.status.success());
    let m = json(&versions);
    let rows = m["rows"].as_array().unwrap();
    let of = |v: &str| {
        rows.iter()
            .find(|r| r["value"] == v)
            .map(|r| r["nodes"].clone())
    };
    assert_eq!(of("550.54.15"), Some(Value::from(3)));
    assert_eq!(of("535.161.08"), Some(Value::from(1)));

    // Bad policies and selectors, and an unreachable collector: exit 2, saying why.
    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\ndriver = \"550\"\n").unwrap();
    for (args, want) in [
        (
            vec!["--policy", bad.to_str().unwrap()],
            "bad.toml, line 2: unknown field `driver`",
        ),
        (vec!["--selector", "pool in (a"], "without its ')'"),
        (vec!["--policy", "/nonexistent.toml"], "cannot read it"),
    ] {
        let out = audit(&url, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let dead = audit(&format!("http://127.0.0.1:{}", free_port()), &[]);
    assert_eq!(dead.status.code(), Some(2));

    // A node that stops reporting turns stale (never compliant), here after 1 s.
    let mut gone = agents.remove(0);
    gone.terminate(Duration::from_secs(5));
    let stale = wait_for(Duration::from_secs(15), || {
        let a = json(&audit(&url, &["-o", "json", "--stale-after", "1s"]));
        (status_of(&a, "gpu-node-01") == "stale").then_some(a)
    })
    .expect("a silent node turns stale");
    assert!(stale["summary"]["stale"].as_u64().unwrap() >= 1);
}

#[test]
fn the_shipped_example_policy_is_valid() {
    // `audit --policy` checks the file before it asks anyone, so this needs no collector.
    let out = audit(
        &format!("http://127.0.0.1:{}", free_port()),
        &[
            "--policy",
            repo_root()
                .join("docs/policy.example.toml")
                .to_str()
                .unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach the collector"),
        "the policy parsed, then: {err}"
    );
}
