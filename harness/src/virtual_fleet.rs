//! A whole fleet in virtual time, in one process: simulated agents (`NodeAgent::tick`) feed
//! the collector's fleet state and diagnosis engine directly, with no network and no clock,
//! so an hour of fleet life runs in seconds. The same code paths as production from the
//! sources to the engine, with the shipped defaults; only gRPC and storage are left out.
//! Every test that plays scenarios plays them here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufleet_agent::sampler::NodeAgent;
use gpufleet_agent::sources::simulated::simulated_node;
use gpufleet_collector::diagnose::{Engine, EngineConfig};
use gpufleet_collector::evaluator::DEFAULT_EVAL_INTERVAL;
use gpufleet_collector::fleet::{Fleet, Window};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::{Finding, FindingState, NodeIdentity, UnixMs};
use gpufleet_sim::Scenario;

use crate::agents::shipped_detector;

/// Virtual time origin of every run (fixed, so runs are reproducible).
pub const ORIGIN: UnixMs = UnixMs(1_800_000_000_000);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Time between samples.
    pub step_ms: i64,
    /// Time between diagnosis evaluations (a multiple of `step_ms`).
    pub eval_every_ms: i64,
    /// How long to run (default: the scenario's duration, else 5 minutes).
    pub duration_ms: Option<i64>,
    /// Stop as soon as every expectation was met.
    pub stop_when_met: bool,
    pub window: Window,
    pub engine: EngineConfig,
    /// After the run, time each rule alone over the whole fleet ([`Outcome::rule_wall`]).
    pub time_rules: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            step_ms: gpufleet_agent::DEFAULT_SAMPLE_INTERVAL.as_millis() as i64,
            eval_every_ms: DEFAULT_EVAL_INTERVAL.as_millis() as i64,
            duration_ms: None,
            stop_when_met: true,
            window: Window::default(),
            engine: EngineConfig::default(),
            time_rules: false,
        }
    }
}

/// What happened in a run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every finding that started firing, with the virtual time (ms after the origin).
    pub fired: Vec<(i64, Finding)>,
    /// Per expectation (index into `scenario.expect`): when it was first met as the top-ranked
    /// finding of its node (and GPU), ms after the origin.
    pub met: BTreeMap<usize, i64>,
    /// Per expectation: the top-ranked firing finding of its node/GPU at the end, if any.
    pub top_at_end: BTreeMap<usize, String>,
    /// Findings (pending or firing) about a node no fault acts on, or a GPU no fault of its
    /// node acts on: a fault must not be blamed elsewhere. The first of each, by key.
    pub misplaced: BTreeMap<(String, Option<u32>, String), (i64, Finding)>,
    pub node_ticks: u64,
    pub evaluations: u64,
    /// Wall time of each diagnosis evaluation (the engine over the whole fleet).
    pub eval_wall: Vec<Duration>,
    /// With [`RunOptions::time_rules`]: each rule's wall time over every node of the final
    /// state (median of 5 passes), largest first, and the fleet context's build time.
    pub rule_wall: Vec<(&'static str, Duration)>,
    /// Wall time spent sampling and ingesting (everything but evaluations).
    pub tick_wall: Duration,
    pub virtual_ms: i64,
    pub wall: Duration,
}

/// Whether `f` is about the expectation's node and GPU.
fn about(f: &Finding, node: &str, gpu: Option<u32>) -> bool {
    f.node == node && (gpu.is_none() || f.gpu_index == gpu)
}

pub fn run(scenario: Arc<Scenario>, opts: &RunOptions) -> Outcome {
    let started = Instant::now();
    let fleet = Fleet::new(opts.window);
    let mut agents: Vec<(String, NodeAgent, u64)> = Vec::new();
    for cfg in scenario.sim_configs(ORIGIN) {
        let name = cfg.node_name.clone();
        let (gpu, host) = simulated_node(cfg).expect("scenario builds");
        let (agent, events) = NodeAgent::new(
            NodeIdentity {
                hostname: name.clone(),
                ..Default::default()
            },
            Box::new(gpu),
            Box::new(host),
            shipped_detector(),
            ORIGIN,
        )
        .expect("simulated node starts");
        fleet.on_hello(
            &Hello {
                protocol_version: gpufleet_proto::PROTOCOL_VERSION,
                node: agent.identity().clone(),
                agent_version: "virtual".into(),
                session_id: "virtual".into(),
                inventory: agent.inventory().clone(),
                gpu_source: "simulated".into(),
                labels: Default::default(),
            },
            ORIGIN,
        );
        if !events.is_empty() {
            let b = Batch {
                sequence: 1,
                events,
                ..Default::default()
            };
            fleet.on_batch(&name, &b, ORIGIN);
        }
        agents.push((name, agent, 1));
    }
    let duration = opts
        .duration_ms
        .or(scenario.duration_ms.map(|d| d as i64))
        .unwrap_or(300_000);
    let mut engine = Engine::new(opts.engine.clone());
    let mut out = Outcome::default();
    let mut t = 0;
    while t < duration {
        t += opts.step_ms;
        let now = ORIGIN.plus_ms(t);
        let ticking = Instant::now();
        for (name, agent, seq) in &mut agents {
            let tick = agent.tick(now);
            *seq += 1;
            let batch = Batch {
                sequence: *seq,
                samples: vec![tick.sample],
                events: tick.events,
                inventory: tick.inventory,
                ..Default::default()
            };
            fleet.on_batch(name, &batch, now);
            out.node_ticks += 1;
        }
        out.tick_wall += ticking.elapsed();
        if t % opts.eval_every_ms != 0 {
            continue;
        }
        let evaluating = Instant::now();
        let eval = fleet.with_nodes(|nodes| engine.evaluate(nodes, now));
        out.eval_wall.push(evaluating.elapsed());
        out.evaluations += 1;
        for c in eval
            .changes
            .iter()
            .filter(|c| c.state == FindingState::Firing)
        {
            out.fired.push((t, c.finding.clone()));
        }
        for f in eval.firing.iter().chain(&eval.pending) {
            if !explained(&scenario, f) {
                out.misplaced
                    .entry((f.node.clone(), f.gpu_index, f.rule_id.clone()))
                    .or_insert_with(|| (t, f.clone()));
            }
        }
        for (i, e) in scenario.expect.iter().enumerate() {
            // `firing` is ranked most impactful first: the first one about this node/GPU is
            // its top-1 cause.
            let top = eval.firing.iter().find(|f| about(f, &e.node, e.gpu));
            if let Some(top) = top {
                out.top_at_end.insert(i, top.rule_id.clone());
                if top.rule_id.starts_with(&e.cause) {
                    out.met.entry(i).or_insert(t);
                }
            }
        }
        if opts.stop_when_met
            && !scenario.expect.is_empty()
            && out.met.len() == scenario.expect.len()
        {
            break;
        }
    }
    out.virtual_ms = t;
    if opts.time_rules {
        out.rule_wall = fleet.with_nodes(|nodes| time_rules(nodes, ORIGIN.plus_ms(t)));
    }
    out.wall = started.elapsed();
    out
}

/// Each rule alone over `nodes` (median of 5 passes), and the fleet context's build.
fn time_rules(
    nodes: &[&gpufleet_collector::fleet::NodeState],
    now: UnixMs,
) -> Vec<(&'static str, Duration)> {
    use gpufleet_collector::diagnose::{FleetContext, rules};
    const PASSES: usize = 5;
    let median = |mut f: Box<dyn FnMut() -> usize + '_>| {
        let mut times: Vec<Duration> = (0..PASSES)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect();
        times.sort();
        times[PASSES / 2]
    };
    let ctx = FleetContext::from_nodes(nodes);
    let mut out = vec![(
        "(fleet context)",
        median(Box::new(|| FleetContext::from_nodes(nodes).nodes)),
    )];
    for rule in rules::all() {
        let d = median(Box::new(|| {
            nodes.iter().map(|n| rule.check(n, &ctx, now).len()).sum()
        }));
        out.push((rule.id(), d));
    }
    out.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    out
}

/// Whether a fault of the scenario acts where `f` points: on its node, and (for a GPU
/// finding) on its GPU or on the whole node. Healthy scenarios explain nothing.
fn explained(scenario: &Scenario, f: &Finding) -> bool {
    // A fleet-wide finding is explained when a fault acts on every node it names.
    if let Some(scope) = &f.fleet {
        return scope
            .nodes
            .iter()
            .all(|n| scenario.faults_for(n).next().is_some());
    }
    let on_node: Vec<_> = scenario.faults_for(&f.node).collect();
    !on_node.is_empty()
        && (f.gpu_index.is_none()
            || on_node
                .iter()
                .any(|x| x.gpu.is_none_or(|g| Some(g) == f.gpu_index)))
}

/// A human summary of what failed in a run of `scenario`, or `None` if it passed:
/// each expectation met as top-1 within its bound, nothing found where no fault acts, and for
/// healthy scenarios nothing fired.
pub fn verdict(scenario: &Scenario, out: &Outcome) -> Option<String> {
    let mut problems = Vec::new();
    let line = |(t, f): &(i64, Finding)| {
        format!(
            "{}s {} GPU {:?} {}: {}",
            t / 1000,
            f.node,
            f.gpu_index,
            f.rule_id,
            f.summary
        )
    };
    if scenario.healthy && !out.fired.is_empty() {
        let list: Vec<String> = out.fired.iter().take(10).map(line).collect();
        problems.push(format!(
            "{} false alarm(s), e.g.\n    {}",
            out.fired.len(),
            list.join("\n    ")
        ));
    }
    if !out.misplaced.is_empty() {
        let list: Vec<String> = out.misplaced.values().map(line).collect();
        problems.push(format!(
            "{} finding(s) where no fault acts:\n    {}",
            list.len(),
            list.join("\n    ")
        ));
    }
    for (i, e) in scenario.expect.iter().enumerate() {
        match out.met.get(&i) {
            Some(t) if *t as u64 <= e.within_ms => {}
            Some(t) => problems.push(format!(
                "{} on {} GPU {:?}: named after {}s, later than {}s",
                e.cause,
                e.node,
                e.gpu,
                t / 1000,
                e.within_ms / 1000
            )),
            None => problems.push(format!(
                "{} on {} GPU {:?}: never top-1 (top was {:?}; fired: {:?})",
                e.cause,
                e.node,
                e.gpu,
                out.top_at_end.get(&i),
                out.fired
                    .iter()
                    .filter(|(_, f)| about(f, &e.node, e.gpu))
                    .map(|(t, f)| format!("{}@{}s", f.rule_id, t / 1000))
                    .collect::<Vec<_>>()
            )),
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{} ({}):\n  {}",
            scenario.name,
            scenario.origin,
            problems.join("\n  ")
        )
    })
}
