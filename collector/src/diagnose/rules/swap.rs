//! `host.memory.swapping`: the host is pushing memory out to swap, and more every minute —
//! whatever touches the swapped pages (data loaders, pinned-buffer staging) stalls on disk.
//! `host.memory.swap_thrashing`: swap use stays flat but pages keep coming back in from it
//! (`/proc/vmstat` pswpin) — the working set no longer fits, and each page fault waits on disk.

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

const THRASHING: Cause = Cause {
    id: "host.memory.swap_thrashing",
    title: "Host thrashing on swap",
    severity: Severity::Warning,
    detects: "Pages swapped in from swap at more than 64 MiB per minute (pswpin in \
              `/proc/vmstat`) over the last 5 minutes, in several separate intervals, while swap \
              use itself is not growing (that is `host.memory.swapping`).",
    action: "The processes' working set no longer fits in RAM: `vmstat 1` (si/so columns) and \
             `smem -s swap` name who is paged; reduce dataloader workers, cache sizes or \
             pinned buffers, or move work off the node. `swapoff -a` after freeing memory ends \
             the thrashing.",
};

static INFO: RuleInfo = RuleInfo {
    id: SWAPPING.id,
    title: SWAPPING.title,
    catalog: &[SWAPPING, THRASHING],
};

/// Bytes per page as `/proc/vmstat` counts swap (4 KiB on x86-64 and most arm64 kernels).
const PAGE_BYTES: f64 = 4096.0;

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
        let growing = (latest.host.swap_used_bytes > 0)
            .then(|| {
                growth(&node.history, RATE_WINDOW_MS, |s| {
                    Some(s.host.swap_used_bytes)
                })
            })
            .flatten()
            .filter(|g| g.sustained(GROWTH_BYTES_PER_MINUTE, MIN_SAMPLES));
        let Some(g) = growing else {
            return self.thrashing(node, latest).into_iter().collect();
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

impl Swapping {
    fn thrashing(&self, node: &NodeState, latest: &gpufleet_model::Sample) -> Option<Finding> {
        let pages_per_minute = GROWTH_BYTES_PER_MINUTE / PAGE_BYTES;
        let g = growth(&node.history, RATE_WINDOW_MS, |s| {
            s.host.os.as_ref()?.pages_swapped_in
        })
        .filter(|g| g.sustained(pages_per_minute, MIN_SAMPLES))?;
        let mib_per_minute = g.per_minute() * PAGE_BYTES / (1u64 << 20) as f64;
        let mut f = raise(self, &THRASHING, node, g.first_rise);
        f.evidence.push(
            Evidence::new(
                "host.os.pages_swapped_in rate",
                format!("{:.0} pages/s ({mib_per_minute:.0} MiB/min)", g.per_minute() / 60.0),
                format!("{:.0} MiB/min", GROWTH_BYTES_PER_MINUTE / (1u64 << 20) as f64),
            )
            .held_for(g.rising_for_ms(latest.timestamp)),
        );
        if let Some(out) = growth(&node.history, RATE_WINDOW_MS, |s| {
            s.host.os.as_ref()?.pages_swapped_out
        }) {
            f.evidence.push(Evidence::new(
                "host.os.pages_swapped_out rate",
                format!("{:.0} pages/s", out.per_minute() / 60.0),
                "",
            ));
        }
        f.summary = format!(
            "the host is thrashing: {:.0} MiB/min paged back in from swap while swap use stays \
             at {:.1} GiB",
            mib_per_minute,
            latest.host.swap_used_bytes as f64 / (1u64 << 30) as f64
        );
        Some(f)
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    vec![
        super::testutil::trigger("swap", |i, s| {
            s.host.swap_total_bytes = 64 << 30;
            s.host.swap_used_bytes = (1 << 30) + i as u64 * (50 << 20);
        }),
        super::testutil::trigger("swap thrashing", |i, s| {
            s.host.swap_total_bytes = 64 << 30;
            s.host.swap_used_bytes = 16 << 30;
            s.host.os = Some(gpufleet_model::OsSample {
                pages_swapped_in: Some(i as u64 * 5000),
                pages_swapped_out: Some(i as u64 * 5000),
                ..Default::default()
            });
        }),
    ]
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

    #[test]
    fn thrashing_cases() {
        // (name, swap used in sample i, pages swapped in by sample i, cause wanted)
        type Read = fn(u64) -> u64;
        let cases: &[(&str, Read, Read, Option<&str>)] = &[
            ("no paging", |_| 16 << 30, |_| 100, None),
            ("a trickle of swap-ins", |_| 16 << 30, |i| i * 10, None),
            (
                "5000 pages/s in, flat use",
                |_| 16 << 30,
                |i| i * 5000,
                Some("host.memory.swap_thrashing"),
            ),
            (
                "paging in while use grows is swapping, one finding",
                |i| (1 << 30) + i * 50 * MIB,
                |i| i * 5000,
                Some("host.memory.swapping"),
            ),
        ];
        for (name, used, pages, want) in cases {
            let n = node(1, 60, |i, s| {
                s.host.swap_total_bytes = 64 << 30;
                s.host.swap_used_bytes = used(i as u64);
                s.host.os = Some(gpufleet_model::OsSample {
                    pages_swapped_in: Some(pages(i as u64)),
                    ..Default::default()
                });
            });
            let got = Swapping.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, want.iter().copied().collect::<Vec<_>>(), "{name}");
        }
        let n = node(1, 60, |i, s| {
            s.host.swap_used_bytes = 16 << 30;
            s.host.os = Some(gpufleet_model::OsSample {
                pages_swapped_in: Some(i as u64 * 5000),
                ..Default::default()
            });
        });
        let f = &Swapping.check(&n, &FleetContext::default(), NOW)[0];
        assert_eq!(f.evidence[0].value, "5000 pages/s (1172 MiB/min)");
    }
}
