//! The diagnosis scenario suite, in virtual time: every scenario file injects faults into a
//! simulated fleet and must have its expected cause named top-1 on the right node and GPU
//! within its bound; healthy scenarios must fire nothing at all.

use std::path::Path;
use std::sync::Arc;

use gpufleet_collector::fleet::Window;
use gpufleet_sim::Scenario;
use gpufleet_tests::repo_root;
use gpufleet_tests::virtual_fleet::{RunOptions, run, verdict};

fn scenarios_in(dir: &Path) -> Vec<Arc<Scenario>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| Arc::new(Scenario::load(p).unwrap_or_else(|e| panic!("{e}"))))
        .collect()
}

fn run_all(scenarios: &[Arc<Scenario>], opts: &RunOptions) {
    let mut failures = Vec::new();
    for sc in scenarios {
        let out = run(sc.clone(), opts);
        let met: Vec<String> = out.met.values().map(|t| format!("{}s", t / 1000)).collect();
        println!(
            "{:<32} {:>5} node-ticks {:>7}  virtual {:>4}s  wall {:>6.0?}  named at [{}]  fired {}",
            sc.name,
            "",
            out.node_ticks,
            out.virtual_ms / 1000,
            out.wall,
            met.join(", "),
            out.fired.len()
        );
        if let Some(v) = verdict(sc, &out) {
            failures.push(v);
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_single_fault_is_named_top1_on_the_right_gpu() {
    let all = scenarios_in(&repo_root().join("scenarios/faults"));
    assert!(
        all.len() >= 20,
        "expected a scenario per fault kind, found {}",
        all.len()
    );
    run_all(&all, &RunOptions::default());
}

#[test]
fn every_xid_class_gets_its_own_cause_and_action() {
    let all = scenarios_in(&repo_root().join("scenarios/xid"));
    assert!(all.len() >= 8);
    run_all(&all, &RunOptions::default());
}

#[test]
fn two_faults_on_different_gpus_are_both_named() {
    let all = scenarios_in(&repo_root().join("scenarios/multi"));
    assert!(!all.is_empty());
    run_all(&all, &RunOptions::default());
}

#[test]
fn the_demo_fleet_is_fully_diagnosed() {
    let demo = Arc::new(Scenario::load(&repo_root().join("scenarios/demo.toml")).unwrap());
    assert!(demo.expect.len() >= 4);
    run_all(&[demo], &RunOptions::default());
}

#[test]
fn a_healthy_fleet_fires_nothing() {
    let healthy = Arc::new(Scenario::load(&repo_root().join("scenarios/healthy.toml")).unwrap());
    assert!(healthy.healthy);
    let opts = RunOptions {
        stop_when_met: false,
        duration_ms: Some(30 * 60 * 1000),
        ..RunOptions::default()
    };
    run_all(&[healthy], &opts);
}

/// 1,000 nodes × 8 GPUs for one virtual hour with realistic noise: zero findings. Sampled
/// every 10 s (360 samples per node, 2.9 million GPU readings) to keep CI fast; the noise
/// model is per sample, so a coarser step sees the same distribution.
#[test]
fn a_large_healthy_fleet_has_no_false_alarms_for_an_hour() {
    let sc = Arc::new(Scenario::load(&repo_root().join("scenarios/healthy-large.toml")).unwrap());
    assert_eq!(sc.fleet.nodes, 1000);
    let opts = RunOptions {
        step_ms: 10_000,
        eval_every_ms: 60_000,
        duration_ms: Some(3_600_000),
        stop_when_met: false,
        window: Window {
            samples: 30,
            events: 100,
        },
        ..RunOptions::default()
    };
    run_all(&[sc], &opts);
}

#[test]
fn a_power_cap_on_every_gpu_of_the_fleet_is_one_fleet_wide_finding() {
    let sc = Arc::new(
        Scenario::load(&repo_root().join("scenarios/fleet/power-cap-everywhere.toml"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let out = run(
        sc.clone(),
        &RunOptions {
            stop_when_met: false,
            ..RunOptions::default()
        },
    );
    assert_eq!(verdict(&sc, &out), None);
    let fleet: Vec<_> = out
        .fired
        .iter()
        .filter(|(_, f)| f.fleet.is_some())
        .map(|(_, f)| f)
        .collect();
    assert_eq!(fleet.len(), 1, "one fleet-wide finding: {fleet:#?}");
    let f = fleet[0];
    let scope = f.fleet.as_ref().unwrap();
    assert_eq!(f.rule_id, "gpu.power.sw_cap");
    assert_eq!(f.node, "fleet:gpu_model=NVIDIA H100 80GB HBM3");
    assert_eq!(
        (scope.nodes.len(), scope.group_nodes, scope.gpus),
        (6, 6, 48)
    );
    // Every per-GPU finding that fired is folded under it.
    let unfolded: Vec<_> = out
        .fired
        .iter()
        .filter(|(_, f)| f.fleet.is_none() && f.rule_id == "gpu.power.sw_cap")
        .filter(|(_, f)| f.folded_into != "fleet:gpu_model=NVIDIA H100 80GB HBM3")
        .collect();
    assert!(unfolded.is_empty(), "{unfolded:#?}");
}

/// `nvidia-persistenced` down turns persistence off on every GPU: one node finding names the
/// daemon, and `gpu.persistence.off` does not repeat it per GPU.
#[test]
fn persistenced_down_is_one_node_finding_not_one_per_gpu() {
    let sc = Arc::new(
        Scenario::load(&repo_root().join("scenarios/faults/persistenced_down.toml")).unwrap(),
    );
    let out = run(sc, &RunOptions::default());
    let ids: Vec<String> = out
        .fired
        .iter()
        .map(|(_, f)| format!("{} {:?} {}", f.node, f.gpu_index, f.rule_id))
        .collect();
    assert!(
        ids.iter().all(|f| !f.contains("gpu.persistence.off")),
        "{ids:#?}"
    );
    assert!(
        ids.iter()
            .any(|f| f == "gpu-node-02 None driver.persistenced_down"),
        "{ids:#?}"
    );
}
