//! The rules against the simulator: every scenario file in `scenarios/` is played through the
//! agent's own pipeline (simulated sources → local detection → samples, events, inventory) in
//! virtual time, into the same per-node window the collector keeps, and every rule runs over
//! the fleet every few seconds. Each `[[expect]]` must be named on its node (and GPU) early
//! enough for the engine to fire it by its deadline; nodes without faults must stay silent, and
//! a GPU fault must not be blamed on the node's other GPUs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpufleet_agent::detect::{Detector, saturation::Thresholds};
use gpufleet_agent::sampler::NodeAgent;
use gpufleet_agent::sources::simulated::{Scenario, simulated_node};
use gpufleet_model::{Finding, NodeIdentity, UnixMs};

use crate::diagnose::FleetContext;
use crate::fleet::{NodeState, Window};

/// Virtual origin: 2026-01-01T00:00:00Z.
const ORIGIN: UnixMs = UnixMs(1_767_225_600_000);
/// The agent's default sample interval.
const INTERVAL_MS: i64 = 1_000;
/// How often the rules run (the collector's evaluator runs about this often).
const EVALUATE_EVERY_MS: i64 = 5_000;
/// A non-critical finding is pending this long before it fires (the engine's default), so a
/// rule must name the cause this much before the scenario's deadline.
const PENDING_MS: u64 = 10_000;

struct Sim {
    agent: NodeAgent,
    state: NodeState,
}

/// What one scenario run found: per evaluation, the findings of every rule.
struct Run {
    scenario: Arc<Scenario>,
    /// (evaluation time, finding)
    findings: Vec<(UnixMs, Finding)>,
}

fn play(path: &Path, until_ms: Option<u64>, window: Window) -> Run {
    let scenario = Arc::new(Scenario::load(path).expect("scenario parses"));
    let until_ms = until_ms
        .or(scenario.expect.iter().map(|e| e.within_ms).max())
        .or(scenario.duration_ms)
        .unwrap_or(120_000);
    let mut sims: Vec<Sim> = scenario
        .sim_configs(ORIGIN)
        .into_iter()
        .map(|cfg| {
            let name = cfg.node_name.clone();
            let (gpus, host) = simulated_node(cfg).expect("simulated node");
            let identity = NodeIdentity {
                hostname: name,
                ..Default::default()
            };
            let (agent, events) = NodeAgent::new(
                identity.clone(),
                Box::new(gpus),
                Box::new(host),
                Detector::new(None, Thresholds::default(), 3),
                ORIGIN,
            )
            .expect("agent starts");
            let state = NodeState {
                identity,
                inventory: agent.inventory().clone(),
                first_seen: ORIGIN,
                last_seen: ORIGIN,
                connected: true,
                events: events.into(),
                ..Default::default()
            };
            Sim { agent, state }
        })
        .collect();
    let rules = super::all();
    let mut findings = Vec::new();
    let mut t = 0;
    while t < until_ms as i64 {
        t += INTERVAL_MS;
        let now = ORIGIN.plus_ms(t);
        for s in &mut sims {
            let tick = s.agent.tick(now);
            let n = &mut s.state;
            n.last_seen = now;
            if let Some(inv) = tick.inventory {
                n.inventory = inv;
            }
            n.history.push_back(tick.sample);
            while n.history.len() > window.samples {
                n.history.pop_front();
            }
            n.events.extend(tick.events);
            while n.events.len() > window.events {
                n.events.pop_front();
            }
        }
        if t % EVALUATE_EVERY_MS == 0 {
            let nodes: Vec<&NodeState> = sims.iter().map(|s| &s.state).collect();
            let ctx = FleetContext::from_nodes(&nodes);
            for n in &nodes {
                for r in &rules {
                    findings.extend(r.check(n, &ctx, now).into_iter().map(|f| (now, f)));
                }
            }
        }
    }
    Run { scenario, findings }
}

fn scenario_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("faults"))
        .expect("scenarios/faults")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.push(root.join("demo.toml"));
    files
}

fn describe(f: &Finding) -> String {
    format!(
        "{} GPU {:?} {}: {}",
        f.node, f.gpu_index, f.rule_id, f.summary
    )
}

/// Everything wrong with one fault scenario's run, as lines.
fn problems(run: &Run) -> Vec<String> {
    let s = &run.scenario;
    let mut out = Vec::new();
    for e in &s.expect {
        let deadline = ORIGIN.plus_ms(e.within_ms.saturating_sub(PENDING_MS) as i64);
        let named = run.findings.iter().any(|(at, f)| {
            *at <= deadline
                && f.node == e.node
                && (e.gpu.is_none() || f.gpu_index == e.gpu)
                && f.rule_id.starts_with(&e.cause)
        });
        if !named {
            out.push(format!(
                "expected {} on {} GPU {:?} by {} s, not named",
                e.cause,
                e.node,
                e.gpu,
                e.within_ms.saturating_sub(PENDING_MS) / 1000
            ));
        }
    }
    let mut unexpected = BTreeSet::new();
    for (_, f) in &run.findings {
        let on_node: Vec<_> = s
            .faults
            .iter()
            .filter(|x| x.node.as_deref().is_none_or(|n| n == f.node))
            .collect();
        let ok = if on_node.is_empty() {
            // A node without faults must stay silent.
            false
        } else {
            // A GPU-level finding must be about a GPU a fault acts on.
            f.gpu_index.is_none()
                || on_node
                    .iter()
                    .any(|x| x.gpu.is_none_or(|g| Some(g) == f.gpu_index))
        };
        if !ok {
            unexpected.insert(format!("{} GPU {:?} {}", f.node, f.gpu_index, f.rule_id));
        }
    }
    for u in unexpected {
        let example = run
            .findings
            .iter()
            .map(|(_, f)| f)
            .find(|f| format!("{} GPU {:?} {}", f.node, f.gpu_index, f.rule_id) == u)
            .map(describe)
            .unwrap_or_default();
        out.push(format!("unexpected finding: {example}"));
    }
    out
}

#[test]
fn fault_scenarios_are_named_and_nothing_else() {
    let files = scenario_files();
    // Two threads: the machine this runs on has two cores.
    let (a, b): (Vec<_>, Vec<_>) = files.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let work = |files: Vec<(usize, &PathBuf)>| {
        files
            .into_iter()
            .flat_map(|(_, p)| {
                let run = play(p, None, Window::default());
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                problems(&run)
                    .into_iter()
                    .map(move |line| format!("{name}: {line}"))
            })
            .collect::<Vec<String>>()
    };
    let failures: Vec<String> = std::thread::scope(|scope| {
        let other = scope.spawn(|| work(b));
        let mut mine = work(a);
        mine.extend(other.join().expect("scenario thread"));
        mine
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn healthy_fleet_stays_silent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let run = play(&root.join("healthy.toml"), None, Window::default());
    assert!(run.scenario.healthy);
    let lines: BTreeSet<String> = run.findings.iter().map(|(_, f)| describe(f)).collect();
    assert!(
        lines.is_empty(),
        "\n{}",
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// 1,000 healthy nodes (8,000 GPUs): the fleet statistics behind `gpu.straggler` must not turn
/// healthy noise into stragglers at fleet scale. Slow in debug builds (about a minute); run it
/// with `cargo test -p gpufleet-collector --lib healthy_large -- --ignored`.
#[test]
#[ignore]
fn healthy_large_fleet_stays_silent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    // 50 s of samples: enough for every hold (the longest is 30 s) while keeping the memory of
    // 8,000 GPUs' windows small.
    let started = std::time::Instant::now();
    let run = play(
        &root.join("healthy-large.toml"),
        Some(50_000),
        Window {
            samples: 50,
            events: 50,
        },
    );
    eprintln!(
        "healthy-large: 50 s of 1,000 nodes in {:?}",
        started.elapsed()
    );
    let lines: BTreeSet<String> = run.findings.iter().map(|(_, f)| describe(f)).collect();
    assert!(
        lines.is_empty(),
        "\n{}",
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
}
