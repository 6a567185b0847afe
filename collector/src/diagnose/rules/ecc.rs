//! `gpu.ecc.uncorrectable`, `gpu.ecc.retired_pages`: GPU memory errors that ECC could not
//! correct, and (before Ampere) memory pages retired because of them.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, RATE_WINDOW_MS, Recent, gpu_reader, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct EccErrors;

const UNCORRECTABLE: Cause = Cause {
    id: "gpu.ecc.uncorrectable",
    title: "Uncorrectable ECC errors",
    severity: Severity::Critical,
    detects: "A volatile uncorrectable ECC count above zero (errors since the last reset), or \
              the aggregate uncorrectable count rising within the last 5 minutes.",
    action: "The process that touched the bad memory was killed or got corrupt data. Drain the \
             GPU and reset it (`nvidia-smi -r`) or reboot, which clears the volatile count and \
             applies the pending row remap or page retirement; run `dcgmi diag -r 3` before \
             returning it. If uncorrectable errors come back after the reset, open an RMA.",
};

const RETIRED_PAGES: Cause = Cause {
    id: "gpu.ecc.retired_pages",
    title: "Memory pages retired",
    severity: Severity::Warning,
    detects: "On GPUs that retire pages (before Ampere): a page retirement waiting for a reboot, \
              or 63 or more retired pages, DCGM's limit for replacing the board.",
    action: "A pending retirement takes effect at the next GPU reset or reboot: drain the node and \
             reboot it at the next opportunity. At the retired-page limit the board cannot \
             retire more memory: open an RMA.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.ecc",
    title: "ECC errors",
    catalog: &[UNCORRECTABLE, RETIRED_PAGES],
};

/// Retired pages (single- plus double-bit) at which the board is due for replacement: DCGM's
/// health check limit (`DCGM_LIMIT_MAX_RETIRED_PAGES`, matching NVIDIA's field diagnostic).
const RETIRED_PAGES_LIMIT: u32 = 63;

fn retired(g: &GpuSample) -> Option<u32> {
    match (g.retired_pages_single_bit, g.retired_pages_double_bit) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

impl Rule for EccErrors {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let recent = Recent::of(node);
        let still = recent.counters_still();
        let first = recent.first();
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let at = gpu_reader(pos, g.index);

            // Uncorrectable: the volatile count, or the aggregate that rose inside the window
            // (for GPUs that only offer the aggregate, and to see errors a reset already cleared).
            // (No counter moved in the window: its first reading is this one, unread.)
            let agg_before = if still {
                g.ecc_uncorrected_aggregate
            } else {
                first.and_then(at).and_then(|x| x.ecc_uncorrected_aggregate)
            };
            let errors = |x: &GpuSample| {
                x.ecc_uncorrected_volatile.is_some_and(|v| v > 0)
                    || matches!((x.ecc_uncorrected_aggregate, agg_before), (Some(a), Some(b)) if a > b)
            };
            if let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, 0, errors)
            {
                let mut f = raise(self, &UNCORRECTABLE, node, since);
                f.gpu_index = Some(g.index);
                f.gpu_uuid = g.uuid.clone();
                if let Some(v) = g.ecc_uncorrected_volatile {
                    f.evidence
                        .push(Evidence::new("ecc_uncorrected_volatile", v, "0").held_for(dur));
                }
                if let Some(a) = g.ecc_uncorrected_aggregate {
                    let rose = agg_before.map(|b| a.saturating_sub(b)).unwrap_or(0);
                    f.evidence.push(
                        Evidence::new(
                            "ecc_uncorrected_aggregate",
                            format!("{a} (+{rose} in the last {} min)", RATE_WINDOW_MS / 60_000),
                            "",
                        )
                        .held_for(dur),
                    );
                }
                if g.remapped_rows_pending == Some(true) || g.retired_pages_pending == Some(true) {
                    f.evidence
                        .push(Evidence::new("repair pending", "true", "needs a GPU reset"));
                }
                f.summary = format!(
                    "GPU {} has {} uncorrectable ECC error(s) since its last reset{}",
                    g.index,
                    g.ecc_uncorrected_volatile.unwrap_or(0),
                    match (g.ecc_uncorrected_aggregate, agg_before) {
                        (Some(a), Some(b)) if a > b => format!(
                            " and {} new in the last {} min",
                            a - b,
                            RATE_WINDOW_MS / 60_000
                        ),
                        _ => String::new(),
                    }
                );
                out.push(f);
            }

            // Retired pages: pending retirement, or at the limit.
            let pending = |x: &GpuSample| x.retired_pages_pending == Some(true);
            let at_limit = |x: &GpuSample| retired(x).is_some_and(|r| r >= RETIRED_PAGES_LIMIT);
            let cond = |x: &GpuSample| pending(x) || at_limit(x);
            if let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, 0, cond)
            {
                let mut f = raise(self, &RETIRED_PAGES, node, since);
                f.gpu_index = Some(g.index);
                f.gpu_uuid = g.uuid.clone();
                let total = retired(g).unwrap_or(0);
                f.evidence.push(
                    Evidence::new(
                        "retired_pages",
                        format!(
                            "{total} ({} single-bit, {} double-bit)",
                            g.retired_pages_single_bit.unwrap_or(0),
                            g.retired_pages_double_bit.unwrap_or(0)
                        ),
                        format!("{RETIRED_PAGES_LIMIT}"),
                    )
                    .held_for(dur),
                );
                f.evidence
                    .push(Evidence::new("retired_pages_pending", pending(g), "false"));
                if at_limit(g) {
                    f.severity = Severity::Critical;
                    f.summary = format!(
                        "GPU {} has retired {total} memory pages, at the limit of {RETIRED_PAGES_LIMIT}: the board is due for replacement",
                        g.index
                    );
                    f.action =
                        "Drain the GPU and open an RMA: it cannot retire more memory.".into();
                } else {
                    f.summary = format!(
                        "GPU {} has a memory page retirement pending ({total} retired so far); it applies at the next reset",
                        g.index
                    );
                }
                out.push(f);
            }
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("ecc", |_, s| {
        s.gpus[0].ecc_uncorrected_volatile = Some(1);
        s.gpus[1].retired_pages_single_bit = Some(2);
        s.gpus[1].retired_pages_double_bit = Some(1);
        s.gpus[1].retired_pages_pending = Some(true);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut GpuSample);
        let base = |_: usize, g: &mut GpuSample| {
            g.ecc_uncorrected_volatile = Some(0);
            g.ecc_uncorrected_aggregate = Some(2);
        };
        type Case = (&'static str, Bend, &'static [(&'static str, Severity)]);
        let cases: &[Case] = &[
            ("healthy (old aggregate errors)", |_, _| {}, &[]),
            (
                "volatile errors",
                |i, g| {
                    if i >= 20 {
                        g.ecc_uncorrected_volatile = Some(1);
                        g.ecc_uncorrected_aggregate = Some(3);
                        g.remapped_rows_pending = Some(true);
                    }
                },
                &[("gpu.ecc.uncorrectable", Severity::Critical)],
            ),
            (
                "aggregate rose, volatile not offered",
                |i, g| {
                    g.ecc_uncorrected_volatile = None;
                    if i >= 20 {
                        g.ecc_uncorrected_aggregate = Some(3);
                    }
                },
                &[("gpu.ecc.uncorrectable", Severity::Critical)],
            ),
            (
                "one noisy sample does not fire",
                |i, g| {
                    if i == 29 {
                        g.ecc_uncorrected_volatile = Some(1);
                    }
                },
                &[],
            ),
            (
                "retirement pending",
                |i, g| {
                    g.retired_pages_single_bit = Some(2);
                    g.retired_pages_double_bit = Some(1);
                    g.retired_pages_pending = Some(i >= 20);
                },
                &[("gpu.ecc.retired_pages", Severity::Warning)],
            ),
            (
                "retired pages at the limit",
                |_, g| {
                    g.retired_pages_single_bit = Some(40);
                    g.retired_pages_double_bit = Some(23);
                    g.retired_pages_pending = Some(false);
                },
                &[("gpu.ecc.retired_pages", Severity::Critical)],
            ),
        ];
        for (name, bend, want) in cases {
            let n = node(2, 30, |i, s| {
                base(i, &mut s.gpus[0]);
                bend(i, &mut s.gpus[0]);
            });
            let got = EccErrors.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<(&str, Severity)> = got
                .iter()
                .map(|f| (f.rule_id.as_str(), f.severity))
                .collect();
            assert_eq!(ids, *want, "{name}");
            for f in &got {
                assert_eq!(f.gpu_index, Some(0), "{name}");
            }
        }
    }
}
