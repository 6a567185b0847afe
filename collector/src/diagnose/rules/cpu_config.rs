//! `host.cpu.*` and `host.memory.edac`: how the host's CPUs and memory are set up. A GPU
//! server whose CPUs sit on a power-saving governor, or are capped below their top frequency,
//! feeds its GPUs slower (data loading, kernel launches, NCCL proxies) without any GPU counter
//! saying so; memory errors EDAC counts are the host RAM failing.

use gpufleet_model::{CpuConfigSample, Evidence, Finding, Sample, Severity, UnixMs};

use super::raise;
use super::window::{RATE_WINDOW_MS, growth, sustained_node};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct CpuConfig;

const GOVERNOR: Cause = Cause {
    id: "host.cpu.governor",
    title: "CPUs on a power-saving governor",
    severity: Severity::Warning,
    detects: "Most of the host's CPUs on the `powersave`, `conservative`, `ondemand` or \
              `userspace` cpufreq governor for 30 s and 3 samples (GPU servers run \
              `performance`).",
    action: "Set the performance governor: `cpupower frequency-set -g performance` (persist it \
             with tuned's `throughput-performance` profile or the distribution's cpufrequtils \
             setting), and check the BIOS power profile is set to maximum performance. With \
             intel_pstate, `powersave` still scales, but ramps up late on bursty input \
             pipelines.",
};

const CAPPED: Cause = Cause {
    id: "host.cpu.frequency_capped",
    title: "CPU frequency capped",
    severity: Severity::Warning,
    detects: "CPUs whose `scaling_max_freq` is below 90 % of `cpuinfo_max_freq` — someone or \
              something (a tuning tool, a power-capping daemon) capped them — for 30 s and 3 \
              samples.",
    action: "Find what set the cap (`cpupower frequency-info`, tuned, a power manager) and lift \
             it: `cpupower frequency-set -u <max>`. Check the BMC's power capping too.",
};

const EDAC: Cause = Cause {
    id: "host.memory.edac",
    title: "Host memory errors",
    severity: Severity::Warning,
    detects: "The host's memory controllers (EDAC) counting corrected errors at 1 per minute or \
              more over the last 5 minutes in several intervals — a DIMM degrading; critical \
              when uncorrected errors rise.",
    action: "`edac-util -v` or `ras-mc-ctl --errors` names the DIMM; schedule its replacement. \
             Uncorrected errors crash processes or the kernel: drain the node now.",
};

static INFO: RuleInfo = RuleInfo {
    id: "host.cpu",
    title: "CPU and memory configuration",
    catalog: &[GOVERNOR, CAPPED, EDAC],
};

const HOLD_MS: u64 = 30_000;
const SLOW_GOVERNORS: &[&str] = &["powersave", "conservative", "ondemand", "userspace"];
/// A cap above this share of the hardware maximum is not worth a finding.
const CAP_SHARE: f64 = 0.9;

fn cfg(s: &Sample) -> Option<&CpuConfigSample> {
    s.host.cpu_config.as_ref()
}

/// The slow governor most CPUs run, and on how many of how many.
fn slow_governor(c: &CpuConfigSample) -> Option<(&str, u32, u32)> {
    let (g, n) = c.main_governor()?;
    let total = c.cpus();
    (SLOW_GOVERNORS.contains(&g) && n * 2 > total).then_some((g, n, total))
}

fn capped(c: &CpuConfigSample) -> Option<(u64, u64)> {
    let (cap, max) = (c.scaling_max_khz?, c.freq_max_khz?);
    (c.capped_cpus > 0 && (cap as f64) < max as f64 * CAP_SHARE).then_some((cap, max))
}

fn ghz(khz: u64) -> String {
    format!("{:.2} GHz", khz as f64 / 1e6)
}

impl Rule for CpuConfig {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let Some(c) = cfg(latest) else {
            return vec![];
        };
        let mut out = Vec::new();
        if let Some((g, n, total)) = slow_governor(c)
            && let Some(held) =
                sustained_node(node, HOLD_MS, |s| cfg(s).and_then(slow_governor).is_some())
        {
            let mut f = raise(self, &GOVERNOR, node, held.since);
            f.evidence.push(
                Evidence::new("host.cpu.governor", format!("{g} on {n} of {total} CPUs"), "performance")
                    .held_for(held.held_ms),
            );
            if let Some(avg) = c.freq_avg_khz {
                f.evidence.push(Evidence::new(
                    "host.cpu.freq_avg",
                    ghz(avg),
                    c.freq_max_khz.map(|m| format!("up to {}", ghz(m))).unwrap_or_default(),
                ));
            }
            f.summary = format!(
                "{n} of {total} CPUs on the {g} governor ({}){}",
                if c.scaling_driver.is_empty() { "cpufreq" } else { &c.scaling_driver },
                c.freq_avg_khz
                    .map(|a| format!(", averaging {}", ghz(a)))
                    .unwrap_or_default()
            );
            out.push(f);
        }
        if let Some((cap, max)) = capped(c)
            && let Some(held) = sustained_node(node, HOLD_MS, |s| cfg(s).and_then(capped).is_some())
        {
            let mut f = raise(self, &CAPPED, node, held.since);
            f.evidence.push(
                Evidence::new(
                    "host.cpu.scaling_max_freq",
                    format!("{} on {} CPUs", ghz(cap), c.capped_cpus),
                    format!("{} (cpuinfo_max_freq)", ghz(max)),
                )
                .held_for(held.held_ms),
            );
            f.summary = format!(
                "{} CPUs capped at {} of their {}",
                c.capped_cpus,
                ghz(cap),
                ghz(max)
            );
            f.performance_ratio = Some(cap as f64 / max as f64);
            out.push(f);
        }
        let ue = growth(&node.history, RATE_WINDOW_MS, |s| cfg(s)?.edac_uncorrected_errors)
            .filter(|g| g.delta > 0);
        let ce = growth(&node.history, RATE_WINDOW_MS, |s| cfg(s)?.edac_corrected_errors)
            .filter(|g| g.sustained(1.0, MIN_SAMPLES));
        if ue.is_some() || ce.is_some() {
            let since = [ue, ce].iter().flatten().map(|g| g.first_rise).min();
            let mut f = raise(self, &EDAC, node, since.unwrap_or(latest.timestamp));
            let mut parts = Vec::new();
            for (what, g) in [("uncorrected", ue), ("corrected", ce)] {
                if let Some(g) = g {
                    f.evidence.push(
                        Evidence::new(
                            &format!("host.memory.edac_{what}_errors"),
                            format!("+{} in {} s ({:.1}/min)", g.delta, g.span_ms / 1000, g.per_minute()),
                            if what == "uncorrected" { "0" } else { "1/min" },
                        )
                        .held_for(g.rising_for_ms(latest.timestamp)),
                    );
                    parts.push(format!("{what} +{}", g.delta));
                }
            }
            if ue.is_some() {
                f.severity = Severity::Critical;
            }
            f.summary = format!("host memory errors rising: {}", parts.join(", "));
            out.push(f);
        }
        out
    }
}

#[cfg(test)]
fn healthy() -> CpuConfigSample {
    CpuConfigSample {
        governors: [("performance".to_string(), 224)].into(),
        scaling_driver: "intel_pstate".into(),
        freq_avg_khz: Some(3_100_000),
        freq_max_khz: Some(3_800_000),
        scaling_max_khz: Some(3_800_000),
        capped_cpus: 0,
        thp_enabled: "madvise".into(),
        edac_corrected_errors: Some(0),
        edac_uncorrected_errors: Some(0),
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    vec![
        trigger("cpu powersave", |_, s| {
            let mut c = healthy();
            c.governors = [("powersave".to_string(), 224)].into();
            s.host.cpu_config = Some(c);
        }),
        trigger("cpu capped", |_, s| {
            let mut c = healthy();
            c.scaling_max_khz = Some(1_900_000);
            c.capped_cpus = 224;
            s.host.cpu_config = Some(c);
        }),
        trigger("edac errors", |i, s| {
            let mut c = healthy();
            c.edac_corrected_errors = Some(i as u64 * 2);
            s.host.cpu_config = Some(c);
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut CpuConfigSample);
        let cases: &[(&str, Bend, &[&str])] = &[
            ("healthy", |_, _| {}, &[]),
            (
                "powersave",
                |_, c| c.governors = [("powersave".to_string(), 224)].into(),
                &["host.cpu.governor"],
            ),
            ("schedutil is fine", |_, c| c.governors = [("schedutil".to_string(), 224)].into(), &[]),
            (
                "a few CPUs on powersave",
                |_, c| {
                    c.governors =
                        [("performance".to_string(), 200), ("powersave".to_string(), 24)].into()
                },
                &[],
            ),
            (
                "powersave for 10 s only",
                |i, c| {
                    if i >= 50 {
                        c.governors = [("powersave".to_string(), 224)].into();
                    }
                },
                &[],
            ),
            (
                "capped at half",
                |_, c| {
                    c.scaling_max_khz = Some(1_900_000);
                    c.capped_cpus = 224;
                },
                &["host.cpu.frequency_capped"],
            ),
            (
                "a slight cap is not news",
                |_, c| {
                    c.scaling_max_khz = Some(3_600_000);
                    c.capped_cpus = 224;
                },
                &[],
            ),
            (
                "corrected errors rising",
                |i, c| c.edac_corrected_errors = Some(i as u64 * 2),
                &["host.memory.edac"],
            ),
            ("old corrected errors", |_, c| c.edac_corrected_errors = Some(50), &[]),
            (
                "one uncorrected error",
                |i, c| c.edac_uncorrected_errors = Some(u64::from(i >= 55)),
                &["host.memory.edac"],
            ),
        ];
        for (name, bend, want) in cases {
            let n = node(8, 60, |i, s| {
                let mut c = healthy();
                bend(i, &mut c);
                s.host.cpu_config = Some(c);
            });
            let got = CpuConfig.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn findings_say_what_and_how_much() {
        let n = node(8, 60, |i, s| {
            let mut c = healthy();
            c.governors = [("powersave".to_string(), 224)].into();
            c.freq_avg_khz = Some(1_500_000);
            c.edac_uncorrected_errors = Some(u64::from(i >= 55));
            s.host.cpu_config = Some(c);
        });
        let got = CpuConfig.check(&n, &FleetContext::default(), NOW);
        assert_eq!(
            got[0].summary,
            "224 of 224 CPUs on the powersave governor (intel_pstate), averaging 1.50 GHz"
        );
        assert_eq!(got[1].severity, Severity::Critical);
        assert!(got[1].summary.contains("uncorrected +1"), "{}", got[1].summary);
    }

    #[test]
    fn a_host_without_cpufreq_is_not_judged() {
        let n = node(8, 60, |_, s| s.host.cpu_config = None);
        assert!(CpuConfig.check(&n, &FleetContext::default(), NOW).is_empty());
    }
}
