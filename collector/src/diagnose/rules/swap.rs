//! `host.memory.swapping`: the host is pushing memory out to swap, and more every minute —
//! whatever touches the swapped pages (data loaders, pinned-buffer staging) stalls on disk.

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use super::window::{RATE_WINDOW_MS, growth};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct Swapping;

const SWAPPING: Cause = Cause {
    id: "host.memory.swapping",
    title: "Host swapping",
    severity: Severity::Warning,
    detects: "Swap in use and growing by more than 64 MiB per minute over the last 5 minutes, in \
              several separate intervals.",
    action: "Find the process whose memory grows (`top -o RES`, `smem`): dataloader workers, \
             caches or a leak. Lower its memory use or move work off the node before the OOM \
             killer ends the job; GPU nodes are usually best run without swap.",
};

static INFO: RuleInfo = RuleInfo {
    id: SWAPPING.id,
    title: SWAPPING.title,
    catalog: &[SWAPPING],
};

/// Swap growth that is real paging rather than the kernel evicting a few idle pages.
const GROWTH_BYTES_PER_MINUTE: f64 = 64.0 * (1u64 << 20) as f64;

impl Rule for Swapping {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        if latest.host.swap_used_bytes == 0 {
            return vec![];
        }
        let Some(g) = growth(&node.history, RATE_WINDOW_MS, |s| {
            Some(s.host.swap_used_bytes)
        })
        .filter(|g| g.sustained(GROWTH_BYTES_PER_MINUTE, MIN_SAMPLES)) else {
            return vec![];
        };
        let mib = |b: f64| b / (1u64 << 20) as f64;
        let mut f = raise(self, &SWAPPING, node, g.first_rise);
        f.evidence.push(
            Evidence::new(
                "host.swap_used_bytes growth",
                format!("{:.0} MiB/min", mib(g.per_minute())),
                format!("{:.0} MiB/min", mib(GROWTH_BYTES_PER_MINUTE)),
            )
            .held_for(g.rising_for_ms(latest.timestamp)),
        );
        let h = &latest.host;
        f.evidence.push(Evidence::new(
            "host.swap_used_bytes",
            if h.swap_total_bytes > 0 {
                format!(
                    "{:.1} of {:.1} GiB",
                    mib(h.swap_used_bytes as f64) / 1024.0,
                    mib(h.swap_total_bytes as f64) / 1024.0
                )
            } else {
                format!("{:.1} GiB", mib(h.swap_used_bytes as f64) / 1024.0)
            },
            "",
        ));
        if h.memory_total_bytes > 0 {
            f.evidence.push(Evidence::new(
                "host.memory_available",
                format!(
                    "{:.1}%",
                    h.memory_available_bytes as f64 * 100.0 / h.memory_total_bytes as f64
                ),
                "",
            ));
        }
        f.summary = format!(
            "the host is swapping: swap use grew {:.0} MiB in {} s ({:.0} MiB/min)",
            mib(g.delta as f64),
            g.span_ms / 1000,
            mib(g.per_minute())
        );
        vec![f]
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![super::testutil::trigger("swap", |i, s| {
        s.host.swap_total_bytes = 64 << 30;
        s.host.swap_used_bytes = (1 << 30) + i as u64 * (50 << 20);
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    const MIB: u64 = 1 << 20;

    #[test]
    fn cases() {
        // (name, swap used in sample i of 60, want)
        type Used = fn(u64) -> u64;
        let cases: &[(&str, Used, bool)] = &[
            ("healthy, no swap", |_| 0, false),
            ("swap used but stable", |_| 10 << 30, false),
            (
                "slowly evicting idle pages",
                |i| (1 << 30) + i * MIB / 4,
                false,
            ),
            ("growing 50 MiB/s", |i| (1 << 30) + i * 50 * MIB, true),
            (
                "one jump",
                |i| if i >= 55 { 8 << 30 } else { 1 << 30 },
                false,
            ),
        ];
        for (name, used, want) in cases {
            let n = node(1, 60, |i, s| {
                s.host.swap_total_bytes = 64 << 30;
                s.host.swap_used_bytes = used(i as u64);
            });
            let got = Swapping.check(&n, &FleetContext::default(), NOW);
            assert_eq!(got.len(), usize::from(*want), "{name}");
            if let Some(f) = got.first() {
                assert_eq!(f.rule_id, "host.memory.swapping");
                assert_eq!(f.evidence[0].value, "3000 MiB/min");
            }
        }
    }
}
