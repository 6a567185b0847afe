//! `gpu.straggler`: a GPU that is slower than its peers — the busy GPUs of the same model
//! across the fleet — with no clock-event reason to explain it. In a synchronous job one
//! straggler sets the pace for every GPU in it. Only fleet statistics single it out: its own
//! readings look plausible.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::context::peers::{PeerStats, is_peer};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct Straggler;

const STRAGGLER: Cause = Cause {
    id: "gpu.straggler",
    title: "Slower than its peers",
    severity: Severity::Warning,
    detects: "A busy GPU with no clock-event reason whose SM clock sits more than 5 robust \
              standard deviations and 5 % below the median of busy GPUs of its model across the \
              fleet (or its power more than 5 deviations and 15 % below), for at least 30 s.",
    action: "Compare the GPU with a peer (`nvidia-smi -q -d PERFORMANCE,POWER,CLOCK,TEMPERATURE`); \
             run `dcgmi diag -r 3` and reset the GPU at the next drain. If it stays slow, take it \
             out of multi-GPU jobs and open an RMA.",
};

static INFO: RuleInfo = RuleInfo {
    id: STRAGGLER.id,
    title: STRAGGLER.title,
    catalog: &[STRAGGLER],
};

/// Fewer busy peers than this make no statistics.
const MIN_PEERS: usize = 8;
/// Robust standard deviations below the median that make an outlier.
const DEVIATIONS: f64 = 5.0;
/// Smallest clock deficit that counts: healthy boost clocks dip a step or two (15 MHz each,
/// about 2 %) now and then, and most peers sit at the same clock, so the spread can be 0.
const CLOCK_MIN_FRACTION: f64 = 0.05;
/// Smallest power deficit that counts: power differs between boards (±4 %) and samples
/// (±5 %) and follows small clock dips, so healthy GPUs reach ~13 % below the median.
const POWER_MIN_FRACTION: f64 = 0.15;
/// "Similar load": utilization at most this many points below the peers' median. A GPU that
/// works less (waiting on the network or CPU) draws less power for a reason of its own.
const SIMILAR_LOAD_POINTS: f64 = 5.0;
/// Workloads have phases; a GPU must lag for this long to be a straggler.
const HOLD_MS: u64 = 30_000;

struct Limits {
    util: f64,
    clock: Option<f64>,
    power: Option<f64>,
}

impl Limits {
    fn of(p: &PeerStats) -> Limits {
        Limits {
            util: p.utilization_percent.median - SIMILAR_LOAD_POINTS,
            clock: p
                .sm_clock_mhz
                .map(|r| r.low_limit(DEVIATIONS, CLOCK_MIN_FRACTION)),
            power: p
                .power_milliwatts
                .map(|r| r.low_limit(DEVIATIONS, POWER_MIN_FRACTION)),
        }
    }

    fn clock_low(&self, g: &GpuSample) -> bool {
        matches!((g.sm_clock_mhz, self.clock), (Some(c), Some(l)) if f64::from(c) < l)
    }

    fn power_low(&self, g: &GpuSample) -> bool {
        matches!((g.power_usage_milliwatts, self.power), (Some(p), Some(l)) if f64::from(p) < l)
    }

    /// Application clocks set that low explain a low clock (`gpu.clocks.applications`).
    fn clocks_set_low(&self, g: &GpuSample) -> bool {
        matches!((g.sm_clock_applications_mhz, self.clock), (Some(a), Some(l)) if f64::from(a) < l)
    }

    fn lags(&self, g: &GpuSample) -> bool {
        is_peer(g)
            && g.utilization_gpu_percent
                .is_some_and(|u| f64::from(u) >= self.util)
            && !self.clocks_set_low(g)
            && (self.clock_low(g) || self.power_low(g))
    }
}

impl Rule for Straggler {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let Some(info) = node.inventory.gpu(g.index) else {
                continue;
            };
            let Some(peers) = fleet.peers.get(&info.name).filter(|p| p.gpus >= MIN_PEERS) else {
                continue;
            };
            let limits = Limits::of(peers);
            let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, HOLD_MS, |x| limits.lags(x))
            else {
                continue;
            };
            let mut f = raise(self, &STRAGGLER, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            let mut lagging = Vec::new();
            if let (Some(c), Some(r), Some(l)) = (g.sm_clock_mhz, peers.sm_clock_mhz, limits.clock)
            {
                f.evidence.push(
                    Evidence::new(
                        "sm_clock_mhz",
                        format!("{c} MHz"),
                        format!("peer median {:.0} MHz, outlier below {l:.0} MHz", r.median),
                    )
                    .held_for(if limits.clock_low(g) { dur } else { 0 }),
                );
                f.performance_ratio = Some((f64::from(c) / r.median).min(1.0));
                if limits.clock_low(g) {
                    lagging.push(format!("SM clock {c} MHz vs a median {:.0} MHz", r.median));
                }
            }
            if let (Some(p), Some(r), Some(l)) = (
                g.power_usage_milliwatts,
                peers.power_milliwatts,
                limits.power,
            ) {
                f.evidence.push(
                    Evidence::new(
                        "power_usage_milliwatts",
                        format!("{:.0} W", f64::from(p) / 1000.0),
                        format!(
                            "peer median {:.0} W, outlier below {:.0} W",
                            r.median / 1000.0,
                            l / 1000.0
                        ),
                    )
                    .held_for(if limits.power_low(g) { dur } else { 0 }),
                );
                if limits.power_low(g) {
                    lagging.push(format!(
                        "power {:.0} W vs a median {:.0} W",
                        f64::from(p) / 1000.0,
                        r.median / 1000.0
                    ));
                }
            }
            f.evidence.push(Evidence::new(
                "peers",
                format!("{} busy {} GPUs", peers.gpus, info.name),
                format!("≥ {MIN_PEERS}"),
            ));
            f.evidence.push(Evidence::new(
                "clock_event_reasons",
                "none",
                "no reason explains the lag",
            ));
            f.summary = format!(
                "GPU {} lags the {} busy {} GPUs of the fleet at {}% utilization: {}, with no clock-event reason",
                g.index,
                peers.gpus,
                info.name,
                g.utilization_gpu_percent.unwrap_or(0),
                lagging.join(", ")
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    // The other triggers' busy GPUs are its peers.
    vec![super::testutil::trigger("straggler", |_, s| {
        s.gpus[3].sm_clock_mhz = Some(1800);
        s.gpus[3].power_usage_milliwatts = Some(420_000);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::node;
    use gpufleet_model::clock_events::SW_POWER_CAP;
    use gpufleet_model::{Sample, UnixMs};

    /// A fleet of 4 nodes × 8 GPUs with small, deterministic spread in clocks (a 15 MHz step
    /// now and then) and power (±4 %); `bend` changes GPU 3 of node 1 in sample `i` of 40.
    fn fleet(bend: impl Fn(usize, &mut GpuSample)) -> Vec<NodeState> {
        (0..4)
            .map(|n| {
                let mut node = node(8, 40, |i, s: &mut Sample| {
                    for g in &mut s.gpus {
                        let k = (n * 8 + g.index as usize) * 7 + i;
                        g.sm_clock_mhz = Some(1980 - 15 * (k % 5 == 0) as u32);
                        g.power_usage_milliwatts = Some(540_000 + (k % 9) as u32 * 5_000 - 20_000);
                    }
                    if n == 1 {
                        bend(i, &mut s.gpus[3]);
                    }
                });
                node.identity.hostname = format!("gpu-node-{:02}", n + 1);
                node
            })
            .collect()
    }

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut GpuSample);
        // (name, bend, want a straggler on node 2 GPU 3)
        let cases: &[(&str, Bend, bool)] = &[
            ("healthy fleet", |_, _| {}, false),
            (
                "slower clocks and less power",
                |_, g| {
                    g.sm_clock_mhz = Some(1845);
                    g.power_usage_milliwatts = Some(450_000);
                },
                true,
            ),
            (
                "much less power at full clocks",
                |_, g| g.power_usage_milliwatts = Some(400_000),
                true,
            ),
            (
                "a small clock dip is not a straggler",
                |_, g| g.sm_clock_mhz = Some(1935),
                false,
            ),
            (
                "explained by a clock-event reason",
                |_, g| {
                    g.sm_clock_mhz = Some(1500);
                    g.clock_event_reasons = Some(SW_POWER_CAP);
                },
                false,
            ),
            (
                "explained by application clocks set low",
                |_, g| {
                    g.sm_clock_mhz = Some(1500);
                    g.sm_clock_applications_mhz = Some(1500);
                },
                false,
            ),
            (
                "less work, less power",
                |_, g| {
                    g.utilization_gpu_percent = Some(85);
                    g.power_usage_milliwatts = Some(420_000);
                },
                false,
            ),
            (
                "only lately",
                |i, g| {
                    if i >= 30 {
                        g.sm_clock_mhz = Some(1845);
                    }
                },
                false,
            ),
            (
                "one noisy sample does not fire",
                |i, g| {
                    if i == 39 {
                        g.sm_clock_mhz = Some(1500);
                    }
                },
                false,
            ),
        ];
        for (name, bend, want) in cases {
            let nodes = fleet(bend);
            let refs: Vec<&NodeState> = nodes.iter().collect();
            let ctx = FleetContext::from_nodes(&refs);
            let got: Vec<(String, Option<u32>)> = nodes
                .iter()
                .flat_map(|n| Straggler.check(n, &ctx, UnixMs(100_500)))
                .map(|f| (f.node, f.gpu_index))
                .collect();
            let expected = if *want {
                vec![("gpu-node-02".to_string(), Some(3))]
            } else {
                vec![]
            };
            assert_eq!(got, expected, "{name}");
        }
        // Too few peers: no statistics, no finding.
        let mut small = fleet(|_, g| g.sm_clock_mhz = Some(1500)).swap_remove(1);
        for s in &mut small.history {
            s.gpus.truncate(4);
        }
        let ctx = FleetContext::from_nodes(&[&small]);
        assert!(Straggler.check(&small, &ctx, UnixMs(100_500)).is_empty());
    }
}
