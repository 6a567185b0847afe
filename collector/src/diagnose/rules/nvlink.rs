//! `gpu.nvlink.down`, `gpu.nvlink.errors`: an NVLink that should be up is inactive, or links
//! keep replaying and recovering — GPU-to-GPU traffic slows down or falls back to PCIe.

use gpufleet_model::{Evidence, Finding, GpuSample, NvLinkSample, Sample, Severity, UnixMs};

use super::raise;
use super::window::{Held, Recent, gpu_reader, sustained_gpu};
use crate::diagnose::{Cause, FleetContext, MIN_SAMPLES, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct NvLink;

const DOWN: Cause = Cause {
    id: "gpu.nvlink.down",
    title: "NVLink down",
    severity: Severity::Critical,
    detects: "An NVLink that the GPU's inventory counts reads inactive for several samples.",
    action: "Drain the node (collectives over this GPU are slow or fail); check `nvidia-smi \
             nvlink --status` and the kernel log for Xid 74; reset the GPUs of the NVLink domain \
             or reboot, and on NVSwitch systems check the Fabric Manager log. If the link stays \
             down, open an RMA for the GPU or baseboard.",
};

const ERRORS: Cause = Cause {
    id: "gpu.nvlink.errors",
    title: "NVLink errors rising",
    severity: Severity::Warning,
    detects: "NVLink replay or recovery errors rising over the last 5 minutes (in several \
              separate intervals), or CRC errors above 100 per second.",
    action: "The link corrects errors by retransmitting, which costs bandwidth. Check `nvidia-smi \
             nvlink -e` for the worst links; reset the GPUs at the next drain; if errors continue \
             after the reset, reseat or RMA the GPU or baseboard.",
};

static INFO: RuleInfo = RuleInfo {
    id: "gpu.nvlink",
    title: "NVLink",
    catalog: &[DOWN, ERRORS],
};

/// Replay plus recovery errors per minute that count: DCGM treats any increase as a warning
/// (`DCGM_LIMIT_MAX_NVLINK_ERROR` is 1); requiring several separate rises keeps one recovered
/// glitch from firing.
const REPLAY_RECOVERY_PER_MINUTE: f64 = 1.0;
/// CRC errors per minute that count: NVIDIA's driver team told DCGM that CRC errors only
/// matter from 100 per second (`DCGM_LIMIT_MAX_NVLINK_CRC_ERROR`).
const CRC_PER_MINUTE: f64 = 100.0 * 60.0;

pub(super) fn counted(g: &GpuSample, links: u32) -> impl Iterator<Item = &NvLinkSample> {
    g.nvlinks.iter().filter(move |l| l.link < links)
}

fn replay_recovery(l: &NvLinkSample) -> u64 {
    l.replay_errors.unwrap_or(0) + l.recovery_errors.unwrap_or(0)
}

fn crc(l: &NvLinkSample) -> u64 {
    l.crc_flit_errors.unwrap_or(0) + l.crc_data_errors.unwrap_or(0)
}

impl Rule for NvLink {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let recent = Recent::of(node);
        let first = recent.first();
        let mut out = Vec::new();
        for (pos, g) in latest.gpus.iter().enumerate() {
            let links = node.inventory.gpu(g.index).map_or(0, |i| i.nvlink_count);
            if links == 0 || g.nvlinks.is_empty() {
                continue;
            }
            let at = gpu_reader(pos, g.index);

            let down = |x: &GpuSample| counted(x, links).any(|l| l.active == Some(false));
            if let Some(Held {
                since,
                held_ms: dur,
            }) = sustained_gpu(node, pos, g.index, 0, down)
            {
                let ids: Vec<String> = counted(g, links)
                    .filter(|l| l.active == Some(false))
                    .map(|l| l.link.to_string())
                    .collect();
                let mut f = raise(self, &DOWN, node, since);
                f.gpu_index = Some(g.index);
                f.gpu_uuid = g.uuid.clone();
                f.evidence.push(
                    Evidence::new(
                        "nvlink.active",
                        format!("false on link {}", ids.join(", ")),
                        format!("all {links} links active"),
                    )
                    .held_for(dur),
                );
                f.performance_ratio = Some((links as usize - ids.len()) as f64 / links as f64);
                f.summary = format!(
                    "GPU {}: NVLink {} of its {links} link(s) down",
                    g.index,
                    ids.join(", ")
                );
                // The NVSwitch side of the same links, from the kernel log.
                if let Some(sxid) = super::kernel_log::latest_sxid(node, latest.timestamp) {
                    f.evidence.push(Evidence::new(
                        "kernel_log.sxid",
                        &sxid.message,
                        "no SXid in the last 30 min",
                    ));
                    f.summary.push_str(&format!(
                        "; NVSwitch {} logged SXid {}{}",
                        sxid.details.get("nvswitch").map_or("?", String::as_str),
                        sxid.details.get("sxid").map_or("?", String::as_str),
                        if sxid.details.get("fatal").is_some_and(|v| v == "true") {
                            " (fatal)"
                        } else {
                            ""
                        }
                    ));
                }
                out.push(f);
            }

            if recent.counters_still() {
                continue; // no error counter moved: neither sum grew
            }
            let sum = |s: &Sample, of: fn(&NvLinkSample) -> u64| {
                at(s).map(|x| counted(x, links).map(of).sum::<u64>())
            };
            let rr = recent.growth(|s| sum(s, replay_recovery));
            let cr = recent.growth(|s| sum(s, crc));
            let rr_bad = rr.filter(|r| r.sustained(REPLAY_RECOVERY_PER_MINUTE, MIN_SAMPLES));
            let crc_bad = cr.filter(|r| r.sustained(CRC_PER_MINUTE, MIN_SAMPLES));
            if rr_bad.is_none() && crc_bad.is_none() {
                continue;
            }
            let since = [rr_bad, crc_bad]
                .iter()
                .flatten()
                .map(|r| r.first_rise)
                .min()
                .unwrap_or(latest.timestamp);
            let mut f = raise(self, &ERRORS, node, since);
            f.gpu_index = Some(g.index);
            f.gpu_uuid = g.uuid.clone();
            for (field, r, limit) in [
                (
                    "nvlink replay+recovery errors",
                    rr,
                    REPLAY_RECOVERY_PER_MINUTE,
                ),
                ("nvlink CRC errors", cr, CRC_PER_MINUTE),
            ] {
                if let Some(r) = r.filter(|r| r.delta > 0) {
                    f.evidence.push(
                        Evidence::new(
                            field,
                            format!(
                                "+{} in {} s ({:.0}/min)",
                                r.delta,
                                r.span_ms / 1000,
                                r.per_minute()
                            ),
                            format!("{limit:.0}/min"),
                        )
                        .held_for(r.rising_for_ms(latest.timestamp)),
                    );
                }
            }
            // Which links: compare the window's first reading with the latest.
            let before = first.and_then(at);
            let worst: Vec<String> = counted(g, links)
                .filter_map(|l| {
                    let old = before
                        .and_then(|b| b.nvlinks.iter().find(|x| x.link == l.link))
                        .map_or(0, |o| replay_recovery(o) + crc(o));
                    let new = replay_recovery(l) + crc(l);
                    (new > old).then(|| format!("link {} +{}", l.link, new - old))
                })
                .collect();
            if !worst.is_empty() {
                f.evidence
                    .push(Evidence::new("links with errors", worst.join(", "), ""));
            }
            f.summary = format!(
                "GPU {}: NVLink errors rising on {} link(s) ({})",
                g.index,
                worst.len(),
                [
                    rr_bad.map(|r| format!("{:.0} replay/recovery per min", r.per_minute())),
                    crc_bad.map(|r| format!("{:.0} CRC per min", r.per_minute()))
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
            );
            out.push(f);
        }
        out
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("nvlink", |i, s| {
        for g in &mut s.gpus {
            g.nvlinks = (0..4)
                .map(|link| NvLinkSample {
                    link,
                    active: Some(!(g.index == 0 && link == 2)),
                    replay_errors: Some(if g.index == 1 { i as u64 } else { 0 }),
                    recovery_errors: Some(0),
                    crc_flit_errors: Some(0),
                    crc_data_errors: Some(0),
                })
                .collect();
        }
    });
    // Only the links the inventory counts are expected up.
    n.1.inventory.gpus.iter_mut().for_each(|g| g.nvlink_count = 4);
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn links(active: bool, errors: u64) -> Vec<NvLinkSample> {
        (0..4)
            .map(|link| NvLinkSample {
                link,
                active: Some(active || link != 1),
                replay_errors: Some(if link == 2 { errors / 2 } else { 0 }),
                recovery_errors: Some(0),
                crc_flit_errors: Some(if link == 2 { errors } else { 0 }),
                crc_data_errors: Some(0),
            })
            .collect()
    }

    #[test]
    fn cases() {
        // (name, link 1 active, errors of link 2 in sample i, bent samples at the end, want)
        type Errors = fn(usize) -> u64;
        let cases: &[(&str, bool, Errors, usize, &[&str])] = &[
            ("healthy", true, |_| 0, 30, &[]),
            ("link down", false, |_| 0, 30, &["gpu.nvlink.down"]),
            ("one noisy sample does not fire", false, |_| 0, 1, &[]),
            (
                "errors rising",
                true,
                |i| i as u64 * 4,
                30,
                &["gpu.nvlink.errors"],
            ),
            ("old errors, flat", true, |_| 5_000, 30, &[]),
            (
                "one burst",
                true,
                |i| if i >= 28 { 100 } else { 0 },
                30,
                &[],
            ),
        ];
        for (name, up, errors, last_n, want) in cases {
            let mut n = node(2, 30, |i, s| {
                s.gpus[1].nvlinks = if i >= 30 - last_n {
                    links(*up, errors(i))
                } else {
                    links(true, errors(i))
                };
                s.gpus[0].nvlinks = links(true, 0);
            });
            for g in &mut n.inventory.gpus {
                g.nvlink_count = 4;
            }
            let got = NvLink.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}");
            for f in &got {
                assert_eq!(f.gpu_index, Some(1), "{name}");
            }
        }
        // A link beyond what the inventory counts is not expected to be up.
        let mut n = node(1, 10, |_, s| s.gpus[0].nvlinks = links(false, 0));
        n.inventory.gpus[0].nvlink_count = 1;
        assert!(NvLink.check(&n, &FleetContext::default(), NOW).is_empty());
    }
}
