//! `gpu.row_remap.pending`, `gpu.row_remap.failure`: row remapping (Ampere and later) replaces
//! a bad memory row with a spare one at the next GPU reset — or could not.

use gpufleet_model::{Evidence, Finding, GpuSample, Severity, UnixMs};

use super::raise;
use super::window::{Held, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct RowRemap;

/// A cause and the per-sample condition behind it.
type Check = (&'static Cause, fn(&GpuSample) -> bool);

const PENDING: Cause = Cause {
    id: "gpu.row_remap.pending",
    title: "Row remap pending",
    severity: Severity::Warning,
    detects: "remapped_rows_pending: a memory row was marked for remapping after an ECC error, \
              and the remap only takes effect at the next GPU reset.",
    action: "Drain the GPU at the next opportunity and reset it (`nvidia-smi -r`) or reboot the \
             node, so the spare row replaces the bad one; until then the bad row stays mapped \
             and can fail again.",
};

const FAILURE: Cause = Cause {
    id: "gpu.row_remap.failure",
    title: "Row remapping failed",
    severity: Severity::Critical,
    detects: "remapped_rows_failure: the GPU could not remap a bad memory row (no spare rows left \
              in that bank, or the remap failed).",
    action: "Drain the GPU and keep it out of service: it cannot repair its memory any more. Run \
             `dcgmi diag -r 3` to confirm, then open an RMA.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.row_remap",
    title: "Row remapping",
    catalog: &[PENDING, FAILURE],
};

impl Rule for RowRemap {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let checks: [Check; 2] = [
                (&FAILURE, |x| x.remapped_rows_failure == Some(true)),
                (&PENDING, |x| x.remapped_rows_pending == Some(true)),
            ];
            for (cause, cond) in checks {
                let Some(Held {
                    since,
                    held_ms: dur,
                }) = sustained_gpu(node, pos, g.index, 0, cond)
                else {
                    continue;
                };
                let mut f = raise(self, cause, node, since);
                f.gpu_index = Some(g.index);
                f.gpu_uuid = g.uuid.clone();
                let field = if cause.id == FAILURE.id {
                    "remapped_rows_failure"
                } else {
                    "remapped_rows_pending"
                };
                f.evidence
                    .push(Evidence::new(field, "true", "false").held_for(dur));
                f.evidence.push(Evidence::new(
                    "remapped_rows",
                    format!(
                        "{} uncorrectable, {} correctable",
                        g.remapped_rows_uncorrectable.unwrap_or(0),
                        g.remapped_rows_correctable.unwrap_or(0)
                    ),
                    "",
                ));
                f.summary = if cause.id == FAILURE.id {
                    format!(
                        "GPU {} failed to remap a bad memory row: it cannot repair its memory",
                        g.index
                    )
                } else {
                    format!(
                        "GPU {} has a memory row remap waiting for a GPU reset ({} rows remapped after uncorrectable errors)",
                        g.index,
                        g.remapped_rows_uncorrectable.unwrap_or(0)
                    )
                };
                out.push(f);
            }
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("row remap", |_, s| {
        s.gpus[0].remapped_rows_pending = Some(true);
        s.gpus[1].remapped_rows_failure = Some(true);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(&mut GpuSample);
        // (name, bend of GPU 3, how many of the last samples are bent, want)
        let cases: &[(&str, Bend, usize, &[&str])] = &[
            ("healthy", |_| {}, 10, &[]),
            (
                "pending",
                |g| {
                    g.remapped_rows_pending = Some(true);
                    g.remapped_rows_uncorrectable = Some(1);
                },
                10,
                &["gpu.row_remap.pending"],
            ),
            (
                "failure",
                |g| g.remapped_rows_failure = Some(true),
                10,
                &["gpu.row_remap.failure"],
            ),
            (
                "one noisy sample does not fire",
                |g| g.remapped_rows_failure = Some(true),
                1,
                &[],
            ),
        ];
        for (name, bend, last_n, want) in cases {
            let n = node(4, 10, |i, s| {
                s.gpus[3].remapped_rows_pending = Some(false);
                s.gpus[3].remapped_rows_failure = Some(false);
                if i >= 10 - last_n {
                    bend(&mut s.gpus[3]);
                }
            });
            let got = RowRemap.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
            for f in &got {
                assert_eq!(f.gpu_index, Some(3), "{name}");
            }
        }
    }
}
