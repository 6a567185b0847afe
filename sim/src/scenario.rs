//! Scenario files (TOML): a simulated fleet, the faults injected into it, and what a diagnosis
//! should find. The format is documented in `docs/scenarios.md`; parsing is strict (unknown
//! keys, kinds or parameters are errors that name the file and line).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use gpufleet_model::UnixMs;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::Error as SourceError;
use crate::SimConfig;
use crate::faults::{self, Fault, Ms};
use crate::models::{GpuModelProfile, model_by_name, model_list};

/// What the simulated GPUs are busy with when no fault interferes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Data-parallel training: one `python3` process per GPU, ~99 % utilization, 75–81 % of
    /// the power limit, clocks at max.
    #[default]
    Training,
    /// No process, GPUs idle at idle clocks (`gpu_idle` clock-event bit).
    Idle,
}

/// The simulated fleet a scenario runs on (`[fleet]`; every key optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSpec {
    /// Number of nodes (default 1).
    pub nodes: u32,
    /// Node names are this prefix plus a 1-based, zero-padded number: `gpu-node-01` ...
    pub node_prefix: String,
    /// GPU model of every node (default `h100-sxm-80gb`); see [`super::models`].
    pub model: String,
    /// Mixed fleet: nodes take these models in turn (node 1 the first, ...); overrides `model`.
    pub models: Vec<String>,
    pub gpus_per_node: u32,
    pub seed: u64,
    pub workload: Workload,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            nodes: 1,
            node_prefix: "gpu-node-".to_string(),
            model: "h100-sxm-80gb".to_string(),
            models: Vec::new(),
            gpus_per_node: 8,
            seed: 0,
            workload: Workload::Training,
        }
    }
}

impl FleetSpec {
    /// `gpu-node-01`, `gpu-node-02`, ... (at least two digits; more for larger fleets).
    pub fn node_names(&self) -> Vec<String> {
        let width = self.nodes.to_string().len().max(2);
        (1..=self.nodes)
            .map(|i| format!("{}{i:0width$}", self.node_prefix))
            .collect()
    }

    /// Model name of the node at `index` (0-based position in [`FleetSpec::node_names`]).
    pub fn model_for(&self, index: usize) -> &str {
        if self.models.is_empty() {
            &self.model
        } else {
            &self.models[index % self.models.len()]
        }
    }
}

/// What a diagnosis of the scenario should report (`[[expect]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub node: String,
    pub gpu: Option<u32>,
    /// A rule-id prefix, e.g. `gpu.thermal`.
    pub cause: String,
    /// How long after the virtual origin the finding must exist by, ms.
    pub within_ms: u64,
}

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Where it came from (file path or a label), for messages.
    pub origin: String,
    pub fleet: FleetSpec,
    pub faults: Vec<Fault>,
    /// How long a run of the scenario lasts, ms (`duration`).
    pub duration_ms: Option<u64>,
    /// `healthy = true`: a diagnosis must find nothing at all.
    pub healthy: bool,
    pub expect: Vec<Expectation>,
}

const DEFAULT_WITHIN_MS: u64 = 120_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default, deserialize_with = "opt_duration")]
    duration: Option<u64>,
    #[serde(default)]
    healthy: bool,
    fleet: Option<FleetSpec>,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

/// A `[[fault]]` table: the keys every fault has, and its kind's parameters (checked once the
/// kind is known), each with the span it came from.
struct RawFault {
    kind: Spanned<String>,
    node: Option<String>,
    gpu: Option<u32>,
    start: Option<u64>,
    end: Option<u64>,
    params: BTreeMap<String, Spanned<toml::Value>>,
}

impl<'de> Deserialize<'de> for RawFault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFault;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fault table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFault, A::Error> {
                let (mut kind, mut node, mut gpu, mut start, mut end) =
                    (None, None, None, None, None);
                let mut params = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let dup = |set: bool| {
                        if set {
                            Err(de::Error::custom(format!("duplicate key `{key}`")))
                        } else {
                            Ok(())
                        }
                    };
                    match key.as_str() {
                        "kind" => {
                            dup(kind.is_some())?;
                            kind = Some(map.next_value::<Spanned<String>>()?);
                        }
                        "node" => {
                            dup(node.is_some())?;
                            node = Some(map.next_value::<String>()?);
                        }
                        "gpu" => {
                            dup(gpu.is_some())?;
                            gpu = Some(map.next_value::<u32>()?);
                        }
                        "start" => {
                            dup(start.is_some())?;
                            start = Some(map.next_value::<Ms>()?.0);
                        }
                        "end" => {
                            dup(end.is_some())?;
                            end = Some(map.next_value::<Ms>()?.0);
                        }
                        _ => {
                            let v = map.next_value::<Spanned<toml::Value>>()?;
                            params.insert(key, v);
                        }
                    }
                }
                Ok(RawFault {
                    kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
                    node,
                    gpu,
                    start,
                    end,
                    params,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    node: Spanned<String>,
    gpu: Option<u32>,
    cause: String,
    #[serde(default, deserialize_with = "opt_duration")]
    within: Option<u64>,
}

/// A humantime duration string (`"30s"`, `"2m"`, `"1h 30m"`) → milliseconds.
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    match humantime::parse_duration(&s) {
        Ok(dur) => Ok(Some(dur.as_millis() as u64)),
        Err(e) => Err(serde::de::Error::custom(format!(
            "invalid duration \"{s}\": {e} (write e.g. \"500ms\", \"30s\", \"2m\", \"1h\")"
        ))),
    }
}

fn fmt_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::Scenario {
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, SourceError> {
        let err = |reason: String| SourceError::Scenario {
            path: origin.to_string(),
            reason,
        };
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        if raw.name.trim().is_empty() {
            return Err(err("`name` must not be empty".into()));
        }
        let fleet = raw.fleet.unwrap_or_default();
        let profiles = fleet_profiles(&fleet).map_err(|e| err(format!("[fleet]: {e}")))?;
        let names = fleet.node_names();

        let mut faults = Vec::with_capacity(raw.fault.len());
        for (i, f) in raw.fault.into_iter().enumerate() {
            let line = line_of(text, f.kind.span().start);
            let what = format!("line {line}: fault #{} ({})", i + 1, f.kind.get_ref());
            let fault = build_fault(f, text, line, &names, &profiles, &fleet, raw.duration)
                .map_err(|e| err(format!("{what}: {e}")))?;
            faults.push(fault);
        }

        if raw.healthy && !faults.is_empty() {
            return Err(err(
                "`healthy = true` but the scenario injects faults; a healthy scenario has none"
                    .into(),
            ));
        }
        if raw.healthy && !raw.expect.is_empty() {
            return Err(err(
                "`healthy = true` means no finding at all; remove the [[expect]] entries".into(),
            ));
        }
        let mut expect = Vec::with_capacity(raw.expect.len());
        for (i, e) in raw.expect.into_iter().enumerate() {
            let line = line_of(text, e.node.span().start);
            let at = format!("line {line}: expect #{}", i + 1);
            let node = e.node.into_inner();
            if !names.contains(&node) {
                return Err(err(format!(
                    "{at}: node `{node}` is not in the fleet ({})",
                    describe_nodes(&names)
                )));
            }
            if let Some(g) = e.gpu
                && g >= fleet.gpus_per_node
            {
                return Err(err(format!(
                    "{at}: gpu = {g}, but nodes have {} GPUs",
                    fleet.gpus_per_node
                )));
            }
            if e.cause.trim().is_empty() {
                return Err(err(format!(
                    "{at}: `cause` must name a rule-id prefix, e.g. \"gpu.thermal\""
                )));
            }
            expect.push(Expectation {
                node,
                gpu: e.gpu,
                cause: e.cause,
                within_ms: e.within.unwrap_or(DEFAULT_WITHIN_MS),
            });
        }

        Ok(Scenario {
            name: raw.name,
            description: raw.description,
            origin: origin.to_string(),
            fleet,
            faults,
            duration_ms: raw.duration,
            healthy: raw.healthy,
            expect,
        })
    }

    /// Names of the fleet's nodes: `gpu-node-01` ...
    pub fn node_names(&self) -> Vec<String> {
        self.fleet.node_names()
    }

    /// The node to play when only one is simulated (e.g. `gpufleet-agent run --scenario`):
    /// the first node a fault names, else the first node.
    pub fn primary_node(&self) -> String {
        self.faults
            .iter()
            .find_map(|f| f.node.clone())
            .unwrap_or_else(|| self.node_names().into_iter().next().unwrap_or_default())
    }

    /// Faults that act on `node`.
    pub fn faults_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults.iter().filter(move |f| f.applies_to_node(node))
    }

    /// One [`SimConfig`] per fleet node, with the fleet's models, GPU count and seed.
    pub fn sim_configs(self: &Arc<Self>, start: UnixMs) -> Vec<SimConfig> {
        self.node_names()
            .into_iter()
            .enumerate()
            .map(|(i, node_name)| SimConfig {
                node_name,
                model: self.fleet.model_for(i).to_string(),
                gpu_count: self.fleet.gpus_per_node,
                seed: self.fleet.seed,
                scenario: Some(Arc::clone(self)),
                start,
            })
            .collect()
    }
}

fn describe_nodes(names: &[String]) -> String {
    match names {
        [] => "no nodes".to_string(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} .. {last}"),
    }
}

/// Resolves the fleet's model names, checking its shape.
fn fleet_profiles(fleet: &FleetSpec) -> Result<Vec<&'static GpuModelProfile>, String> {
    if !(1..=100_000).contains(&fleet.nodes) {
        return Err(format!(
            "nodes = {} is out of range (1..=100000)",
            fleet.nodes
        ));
    }
    if !(1..=16).contains(&fleet.gpus_per_node) {
        return Err(format!(
            "gpus_per_node = {} is out of range (1..=16)",
            fleet.gpus_per_node
        ));
    }
    if fleet.node_prefix.trim().is_empty() {
        return Err("node_prefix must not be empty".into());
    }
    let names: Vec<&String> = if fleet.models.is_empty() {
        vec![&fleet.model]
    } else {
        fleet.models.iter().collect()
    };
    names
        .into_iter()
        .map(|m| {
            model_by_name(m)
                .ok_or_else(|| format!("unknown GPU model `{m}`; known models: {}", model_list()))
        })
        .collect()
}

fn build_fault(
    f: RawFault,
    text: &str,
    line: usize,
    names: &[String],
    profiles: &[&'static GpuModelProfile],
    fleet: &FleetSpec,
    duration: Option<u64>,
) -> Result<Fault, String> {
    let params = f
        .params
        .into_iter()
        .map(|(k, v)| {
            let at = line_of(text, v.span().start);
            (k, (v.into_inner(), at))
        })
        .collect();
    let (info, kind) = faults::build(f.kind.get_ref(), f.gpu, params)?;
    let start_ms = f.start.unwrap_or(0);
    if let Some(end) = f.end
        && end <= start_ms
    {
        return Err(format!(
            "end ({}) must be after start ({})",
            fmt_ms(end),
            fmt_ms(start_ms)
        ));
    }
    if let Some(d) = duration
        && start_ms >= d
    {
        return Err(format!(
            "start ({}) is not before the scenario's duration ({})",
            fmt_ms(start_ms),
            fmt_ms(d)
        ));
    }
    let fault = Fault {
        info,
        kind,
        node: f.node,
        gpu: f.gpu,
        start_ms,
        end_ms: f.end,
        line,
    };
    // Check against the model of every node the fault reaches.
    let targets: Vec<&'static GpuModelProfile> = match &fault.node {
        Some(node) => {
            let i = names.iter().position(|n| n == node).ok_or_else(|| {
                format!(
                    "node `{node}` is not in the fleet ({})",
                    describe_nodes(names)
                )
            })?;
            vec![profiles[i % profiles.len()]]
        }
        None => profiles.to_vec(),
    };
    for p in targets {
        fault.validate_for(p, fleet.gpus_per_node)?;
    }
    Ok(fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THERMAL: &str = r#"
name = "thermal-throttle"
description = "GPU 3 of gpu-node-02 overheats from 20 s"
duration = "5m"
[fleet]
nodes = 4
model = "h100-sxm-80gb"
gpus_per_node = 8
seed = 7
[[fault]]
kind = "thermal_throttle"
node = "gpu-node-02"
gpu = 3
start = "20s"
[[expect]]
node = "gpu-node-02"
gpu = 3
cause = "gpu.thermal"
within = "2m"
"#;

    #[test]
    fn parses_the_documented_example() {
        let s = Scenario::parse(THERMAL, "t.toml").unwrap();
        assert_eq!(s.name, "thermal-throttle");
        assert_eq!(s.duration_ms, Some(300_000));
        assert_eq!(
            s.node_names(),
            ["gpu-node-01", "gpu-node-02", "gpu-node-03", "gpu-node-04"]
        );
        assert_eq!(s.fleet.seed, 7);
        assert_eq!(s.faults.len(), 1);
        let f = &s.faults[0];
        assert_eq!(
            (
                f.name(),
                f.node.as_deref(),
                f.gpu,
                f.start_ms,
                f.end_ms,
                f.line
            ),
            (
                "thermal_throttle",
                Some("gpu-node-02"),
                Some(3),
                20_000,
                None,
                11
            )
        );
        assert_eq!(
            s.expect,
            [Expectation {
                node: "gpu-node-02".into(),
                gpu: Some(3),
                cause: "gpu.thermal".into(),
                within_ms: 120_000
            }]
        );
        assert_eq!(s.primary_node(), "gpu-node-02");
        assert_eq!(s.faults_for("gpu-node-02").count(), 1);
        assert_eq!(s.faults_for("gpu-node-01").count(), 0);
    }

    #[test]
    fn defaults_and_node_names() {
        let s = Scenario::parse("name = \"x\"\n", "x").unwrap();
        assert_eq!(s.fleet, FleetSpec::default());
        assert_eq!(s.node_names(), ["gpu-node-01"]);
        assert!(s.faults.is_empty() && s.expect.is_empty() && !s.healthy);
        let big = FleetSpec {
            nodes: 1000,
            ..FleetSpec::default()
        };
        let names = big.node_names();
        assert_eq!(
            (names[0].as_str(), names[999].as_str()),
            ("gpu-node-0001", "gpu-node-1000")
        );
        let mixed = Scenario::parse(
            "name = \"m\"\n[fleet]\nnodes = 3\nmodels = [\"h100\", \"A100\"]\n",
            "m",
        )
        .unwrap();
        assert_eq!(
            (
                mixed.fleet.model_for(0),
                mixed.fleet.model_for(1),
                mixed.fleet.model_for(2)
            ),
            ("h100", "A100", "h100")
        );
        let configs = Arc::new(mixed).sim_configs(UnixMs(1_000));
        assert_eq!(configs.len(), 3);
        assert_eq!(
            (
                configs[1].node_name.as_str(),
                configs[1].model.as_str(),
                configs[1].start
            ),
            ("gpu-node-02", "A100", UnixMs(1_000))
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let fault = |body: &str| format!("name = \"e\"\n[fleet]\nnodes = 2\n[[fault]]\n{body}\n");
        let cases: Vec<(String, &str)> = vec![
            (
                "name = \"e\"\nnmae = \"x\"\n".into(),
                "unknown field `nmae`",
            ),
            ("description = \"no name\"\n".into(), "missing field `name`"),
            (
                fault("kind = \"thermal\""),
                "line 5: fault #1 (thermal): unknown fault kind `thermal`",
            ),
            (
                fault("kind = \"thermal_throttle\"\ngen = 3"),
                "does not take `gen`",
            ),
            (
                fault("kind = \"thermal_throttle\"\nfoo = 3"),
                "unknown field `foo`",
            ),
            (
                fault("kind = \"thermal_throttle\"\nstart = \"20x\""),
                "invalid duration \"20x\"",
            ),
            (
                fault("kind = \"thermal_throttle\"\nstart = \"20x\""),
                "line 6",
            ),
            (
                fault("kind = \"thermal_throttle\"\ngpu = 8"),
                "gpu = 8, but the node has 8 GPUs",
            ),
            (
                fault("kind = \"thermal_throttle\"\nstart = \"1m\"\nend = \"30s\""),
                "end (30s) must be after start (1m)",
            ),
            (
                fault("kind = \"thermal_throttle\"\nnode = \"gpu-node-09\""),
                "node `gpu-node-09` is not in the fleet (gpu-node-01 .. gpu-node-02)",
            ),
            (fault("kind = \"fan_failure\""), "has no fans"),
            (fault("kind = \"xid\""), "needs `xid"),
            (
                "name = \"e\"\nhealthy = true\n[[fault]]\nkind = \"gpu_hung\"\n".into(),
                "healthy = true",
            ),
            (
                "name = \"e\"\n[fleet]\nmodel = \"h200\"\n".into(),
                "unknown GPU model `h200`",
            ),
            (
                "name = \"e\"\n[fleet]\ngpus_per_node = 0\n".into(),
                "gpus_per_node = 0",
            ),
            (
                "name = \"e\"\n[[expect]]\nnode = \"gpu-node-02\"\ncause = \"gpu\"\n".into(),
                "line 3: expect #1: node `gpu-node-02`",
            ),
            (
                "name = \"e\"\nduration = \"1m\"\n[[fault]]\nkind = \"gpu_hung\"\nstart = \"2m\"\n"
                    .into(),
                "not before the scenario's duration",
            ),
        ];
        for (text, want) in cases {
            let err = Scenario::parse(&text, "bad.toml")
                .expect_err(&text)
                .to_string();
            assert!(err.starts_with("scenario bad.toml: "), "{err}");
            assert!(err.contains(want), "want {want:?} in:\n{err}");
        }
    }

    #[test]
    fn load_reports_a_missing_file() {
        let err = Scenario::load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/x.toml") && err.contains("cannot read"),
            "{err}"
        );
    }
}
