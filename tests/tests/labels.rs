//! Node labels end to end: `gpufleet-agent run --label` and `GPUFLEET_LABELS` → Hello →
//! collector state and store → `gpufleet nodes --selector` / `gpufleet node`, across a
//! collector restart; and bad labels and selectors refused with the reason.

use std::process::Command;
use std::time::Duration;

use gpufleet_tests::{Proc, agent, free_port, gpufleet, run, serve, wait_for};
use serde_json::Value;

const LABELS_ENV: &str = "GPUFLEET_LABELS";

/// `gpufleet-agent run` for a small simulated node, with no labels from this environment.
fn labelled_agent(node: &str, url: &str, labels: &[&str]) -> Command {
    let mut cmd = agent();
    cmd.args([
        "run",
        "--simulate",
        "2",
        "--model",
        "l40s",
        "--node-name",
        node,
        "--interval",
        "200ms",
        "--collector",
        url,
    ])
    .env_remove(LABELS_ENV);
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd
}

/// `gpufleet nodes -o json` with `extra` arguments, when it succeeds.
fn nodes_json(url: &str, extra: &[&str]) -> Option<Vec<Value>> {
    let out = gpufleet()
        .args(["nodes", "-o", "json", "--collector", url])
        .args(extra)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

fn names(nodes: &[Value]) -> Vec<&str> {
    let mut n: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    n.sort_unstable();
    n
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn labelled_agents_are_selected_by_label_and_remembered_across_a_restart() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(port, data.path());

    let mut agents = vec![
        Proc::spawn(
            labelled_agent("train-a", &url, &["pool=training", "rack=r12"]),
            "agent train-a",
        ),
        Proc::spawn(
            labelled_agent("infer-b", &url, &["pool=inference", "rack=r12"]),
            "agent infer-b",
        ),
    ];
    // Labels from the environment merge with --label.
    let mut c = labelled_agent("train-c", &url, &["rack=r13"]);
    c.env(LABELS_ENV, "pool=training,zone=eu-1");
    agents.push(Proc::spawn(c, "agent train-c"));

    let nodes = wait_for(Duration::from_secs(30), || {
        let n = nodes_json(&url, &[])?;
        (n.len() == 3 && n.iter().all(|n| n["connected"] == true)).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "the three nodes never showed up; server log:\n{}",
            server.log()
        )
    });
    let labels_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["labels"].clone())
            .unwrap_or_else(|| panic!("{name} missing from {:?}", names(&nodes)))
    };
    assert_eq!(
        labels_of("train-a"),
        serde_json::json!({"pool": "training", "rack": "r12"})
    );
    assert_eq!(
        labels_of("infer-b"),
        serde_json::json!({"pool": "inference", "rack": "r12"})
    );
    assert_eq!(
        labels_of("train-c"),
        serde_json::json!({"pool": "training", "rack": "r13", "zone": "eu-1"})
    );

    for (selector, want) in [
        ("pool=training", &["train-a", "train-c"][..]),
        ("pool=training,rack!=r13", &["train-a"]),
        ("rack in (r12)", &["infer-b", "train-a"]),
        ("!zone", &["infer-b", "train-a"]),
        ("pool=nothing", &[]),
    ] {
        let got = nodes_json(&url, &["--selector", selector]).expect(selector);
        assert_eq!(names(&got), want, "--selector {selector:?}");
        let short = nodes_json(&url, &["-l", selector]).expect(selector);
        assert_eq!(names(&short), want, "-l {selector:?}");
    }

    // Tables: a LABELS column, every label of one node, and an empty selection said so.
    let out = run(gpufleet().args(["nodes", "--collector", &url]), true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("LABELS") && table.contains("pool=inference"),
        "{table}"
    );
    let out = run(
        gpufleet().args(["node", "train-c", "--collector", &url]),
        true,
    );
    let detail = String::from_utf8_lossy(&out.stdout);
    assert!(
        detail.contains("Labels pool=training,rack=r13,zone=eu-1"),
        "{detail}"
    );
    let out = run(
        gpufleet().args(["nodes", "-l", "pool=nothing", "--collector", &url]),
        true,
    );
    let empty = String::from_utf8_lossy(&out.stdout);
    assert!(empty.contains("No node matches"), "{empty}");

    // The collector restarts with every agent gone: the stored labels still select.
    for a in &mut agents {
        a.terminate(Duration::from_secs(10));
    }
    server.terminate(Duration::from_secs(10));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = serve(port, data.path());
    let training = wait_for(Duration::from_secs(30), || {
        nodes_json(&url, &["--selector", "pool=training"])
    })
    .unwrap_or_else(|| panic!("the restarted collector never answered:\n{}", server.log()));
    assert_eq!(names(&training), ["train-a", "train-c"]);
    assert!(training.iter().all(|n| n["connected"] == false));
    assert_eq!(training[0]["labels"]["rack"], "r12");
}

#[test]
fn a_bad_selector_is_a_usage_error_before_anything_is_asked() {
    // Port 1: nothing listens there, so this also shows the check happens client-side.
    for (selector, why) in [
        ("rack in (r12", "without its ')'"),
        ("po ol=x", "not allowed"),
        ("pool=training,", "empty requirement"),
    ] {
        let out = run(
            gpufleet().args([
                "nodes",
                "--selector",
                selector,
                "--collector",
                "http://127.0.0.1:1",
            ]),
            false,
        );
        assert_eq!(out.status.code(), Some(2), "{selector:?}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains("--selector"), "{selector:?}: {err}");
        assert!(err.contains(why), "{selector:?}: {err}");
        assert!(err.contains("write e.g."), "{selector:?}: {err}");
    }
}

#[test]
fn an_agent_with_a_bad_label_stops_at_once_naming_it() {
    // (--label flags, GPUFLEET_LABELS, what the error must say)
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (&["pool=two words"], None, "label pool: value \"two words\""),
        (&["pool"], None, "label \"pool\": write key=value"),
        (&[], Some("rack=r12,-bad=x"), "label key \"-bad\""),
        (&["pool=a"], Some("pool=b"), "label \"pool\" is given twice"),
    ];
    for (flags, env, want) in cases {
        // Nothing listens on port 1: an agent that got past its labels would keep retrying.
        let mut cmd = labelled_agent("bad-labels", "http://127.0.0.1:1", flags);
        if let Some(env) = env {
            cmd.env(LABELS_ENV, env);
        }
        let mut p = Proc::spawn(cmd, "agent with a bad label");
        let status = p.wait_exit(Duration::from_secs(20));
        let log = p.log();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{flags:?} {env:?}: {status:?}\n{log}"
        );
        assert!(log.contains(want), "{flags:?} {env:?}: {log}");
        assert!(log.contains("--label"), "{flags:?} {env:?}: {log}");
    }
}

#[test]
fn probe_shows_the_labels_run_would_send() {
    let out = run(
        agent()
            .args([
                "probe",
                "--simulate",
                "1",
                "--window",
                "100ms",
                "--json",
                "--label",
                "pool=training",
            ])
            .env(LABELS_ENV, "rack=r12"),
        true,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["labels"],
        serde_json::json!({"pool": "training", "rack": "r12"})
    );
    let out = run(
        agent()
            .args([
                "probe",
                "--simulate",
                "1",
                "--window",
                "100ms",
                "--label",
                "pool=training",
            ])
            .env_remove(LABELS_ENV),
        true,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Labels pool=training\n"), "{text}");
}
