//! `host.os.file_handles`, `host.os.stuck_processes`, `host.memory.oom_kills`: the operating
//! system failing the job from underneath. A descriptor leak makes every `open` (datasets,
//! checkpoints, sockets for NCCL) fail; processes blocked in uninterruptible sleep are waiting
//! on a hung filesystem or a wedged driver and will not come back by themselves; the OOM
//! killer ends dataloader workers or the training process itself.

use gpufleet_model::{Event, Evidence, Finding, OsSample, Sample, Severity, StuckProcess, UnixMs};

use super::raise;
use super::window::{RATE_WINDOW_MS, growth, sustained_node};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct OsHealth;

const FILE_HANDLES: Cause = Cause {
    id: "host.os.file_handles",
    title: "File handles nearly exhausted",
    severity: Severity::Warning,
    detects: "File handles allocated at 90 % or more of the kernel's limit (`fs.file-max`, \
              `/proc/sys/fs/file-nr`) for 15 s and 3 samples; critical at 98 %. Per-process \
              limits (`ulimit -n`) are not visible host-wide.",
    action: "Find the process holding the descriptors (`lsof -n | awk '{print $2}' | sort | \
             uniq -c | sort -rn | head`, or `ls /proc/PID/fd | wc -l`): a leak in a dataloader \
             or a client library. Restart it; raise `fs.file-max` only once the leak is \
             understood.",
};

const STUCK: Cause = Cause {
    id: "host.os.stuck_processes",
    title: "Processes stuck in uninterruptible sleep",
    severity: Severity::Warning,
    detects: "Processes blocked in state D without being scheduled for 60 s or more (what the \
              kernel's hung-task detector reports), in 3 samples, or the kernel's own `task … \
              blocked for more than N seconds` lines in the last 10 minutes. The kernel \
              function they wait in (wchan) names the culprit: NFS/RPC, block I/O, or the GPU \
              driver.",
    action: "`cat /proc/PID/stack` (as root) and `dmesg | grep -i 'blocked for more than'` show \
             where they hang. NFS or parallel-filesystem waits: check the mount and its server \
             (`mount | grep nfs`, `nfsstat`); block I/O: the disk or RAID (`iostat -x 1`, \
             `dmesg`); `nvidia`/`uvm` functions: the GPU driver is wedged — drain the node and \
             reboot. D-state processes cannot be killed.",
};

const OOM: Cause = Cause {
    id: "host.memory.oom_kills",
    title: "OOM killer ending processes",
    severity: Severity::Warning,
    detects: "The kernel's OOM killer ended processes in the last 5 minutes (`oom_kill` in \
              `/proc/vmstat` rising).",
    action: "`journalctl -k | grep -i 'killed process'` names each victim and its memory use; \
             a killed dataloader worker or rank fails the job. Lower the job's host-memory use \
             (workers, prefetch, pinned buffers) or give it a node with more RAM; check for a \
             leak if the same process grows every run.",
};

static INFO: RuleInfo = RuleInfo {
    id: "host.os",
    title: "Operating system health",
    catalog: &[FILE_HANDLES, STUCK, OOM],
};

const HOLD_MS: u64 = 15_000;
const FILES_WARN: f64 = 0.90;
const FILES_CRITICAL: f64 = 0.98;
/// Blocked this long is stuck: the kernel's hung-task detector waits 120 s by default, and a
/// training step stalled for a minute is already lost time.
const STUCK_SECONDS: u64 = 60;
/// How long a kernel hung-task line keeps the finding up.
const HUNG_TASK_RECENT_MS: u64 = 10 * 60 * 1000;

fn os(s: &Sample) -> Option<&OsSample> {
    s.host.os.as_ref()
}

fn file_share(o: &OsSample) -> Option<f64> {
    let (used, max) = (o.file_handles?, o.file_handles_max?);
    (max > 0).then(|| used as f64 / max as f64)
}

fn stuck(o: &OsSample) -> impl Iterator<Item = &StuckProcess> {
    o.stuck
        .iter()
        .filter(|p| p.blocked_seconds >= STUCK_SECONDS)
}

/// What a kernel wait channel points at, for the summary.
pub fn waiting_on(wchan: &str) -> Option<&'static str> {
    let w = wchan.to_ascii_lowercase();
    if ["nfs", "rpc_", "lustre", "ll_", "ptlrpc", "fuse", "cifs", "smb"]
        .iter()
        .any(|k| w.contains(k))
    {
        Some("a network or parallel filesystem")
    } else if ["nvidia", "uvm", "nv_", "os_"].iter().any(|k| w.starts_with(k)) {
        Some("the NVIDIA driver")
    } else if ["io_schedule", "blk_", "jbd2", "xfs", "ext4", "bio_", "folio_wait", "wait_on_page"]
        .iter()
        .any(|k| w.contains(k))
    {
        Some("local disk I/O")
    } else {
        None
    }
}

impl OsHealth {
    fn files(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let o = os(latest)?;
        let share = file_share(o).filter(|s| *s >= FILES_WARN)?;
        let held = sustained_node(node, HOLD_MS, |s| {
            os(s).and_then(file_share).is_some_and(|x| x >= FILES_WARN)
        })?;
        let mut f = raise(self, &FILE_HANDLES, node, held.since);
        if share >= FILES_CRITICAL {
            f.severity = Severity::Critical;
        }
        let (used, max) = (o.file_handles?, o.file_handles_max?);
        f.evidence.push(
            Evidence::new(
                "host.os.file_handles",
                format!("{used} of {max} ({:.1}%)", share * 100.0),
                format!("< {:.0}% of fs.file-max", FILES_WARN * 100.0),
            )
            .held_for(held.held_ms),
        );
        f.summary = format!(
            "{:.1}% of the kernel's file handles allocated ({used} of {max})",
            share * 100.0
        );
        Some(f)
    }

    fn stuck(&self, node: &NodeState, latest: &Sample, now: UnixMs) -> Option<Finding> {
        let Some(longest) = os(latest).and_then(|o| stuck(o).map(|p| p.blocked_seconds).max())
        else {
            return self.hung_tasks(node, now);
        };
        let o = os(latest)?;
        let held = sustained_node(node, 0, |s| os(s).is_some_and(|o| stuck(o).next().is_some()))?;
        let since = latest.timestamp.plus_ms(-((longest * 1000) as i64));
        let mut f = raise(self, &STUCK, node, since.min(held.since));
        let mut on = Vec::new();
        for p in stuck(o) {
            f.evidence.push(
                Evidence::new(
                    &format!("host.os.stuck[{}]", p.pid),
                    format!(
                        "{} blocked {} s in {}",
                        p.comm,
                        p.blocked_seconds,
                        if p.wchan.is_empty() { "?" } else { &p.wchan }
                    ),
                    format!("< {STUCK_SECONDS} s in D state"),
                )
                .held_for(p.blocked_seconds * 1000),
            );
            if let Some(w) = waiting_on(&p.wchan)
                && !on.contains(&w)
            {
                on.push(w);
            }
        }
        let n = stuck(o).count();
        let total = o.uninterruptible.unwrap_or(0).max(n as u32);
        f.summary = format!(
            "{n} process{} stuck in uninterruptible sleep for up to {longest} s ({total} in D \
             state){}",
            if n == 1 { "" } else { "es" },
            if on.is_empty() {
                String::new()
            } else {
                format!(", waiting on {}", on.join(" and "))
            }
        );
        Some(f)
    }

    /// The kernel's hung-task warnings, for hosts whose processes the agent cannot scan.
    fn hung_tasks(&self, node: &NodeState, now: UnixMs) -> Option<Finding> {
        let hung: Vec<&Event> = node
            .events
            .iter()
            .filter(|e| e.code == "kernel.hung_task" && now.since(e.timestamp) <= HUNG_TASK_RECENT_MS)
            .collect();
        let first = hung.iter().map(|e| e.timestamp).min()?;
        let mut f = raise(self, &STUCK, node, first);
        let mut names = Vec::new();
        for e in &hung {
            let who = format!(
                "{}:{}",
                e.details.get("comm").map_or("?", String::as_str),
                e.details.get("pid").map_or("?", String::as_str)
            );
            if names.contains(&who) {
                continue;
            }
            f.evidence.push(Evidence::new(
                &format!("kernel_log[hung_task {who}]"),
                &e.message,
                format!("< {STUCK_SECONDS} s in D state"),
            ));
            names.push(who);
        }
        f.summary = format!(
            "the kernel reports {} hung task{}: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        Some(f)
    }

    fn oom(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let g = growth(&node.history, RATE_WINDOW_MS, |s| os(s)?.oom_kills)
            .filter(|g| g.delta > 0)?;
        let mut f = raise(self, &OOM, node, g.first_rise);
        f.evidence.push(
            Evidence::new(
                "host.os.oom_kills",
                format!("+{} in {} s", g.delta, g.span_ms / 1000),
                "0",
            )
            .held_for(g.rising_for_ms(latest.timestamp)),
        );
        let h = &latest.host;
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
            "the OOM killer ended {} process{} in the last {} s",
            g.delta,
            if g.delta == 1 { "" } else { "es" },
            g.span_ms / 1000
        );
        Some(f)
    }
}

impl Rule for OsHealth {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        [
            self.files(node, latest),
            self.stuck(node, latest, now),
            self.oom(node, latest),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
fn healthy() -> OsSample {
    OsSample {
        file_handles: Some(18_000),
        file_handles_max: Some(i64::MAX as u64),
        pages_swapped_in: Some(0),
        pages_swapped_out: Some(0),
        oom_kills: Some(0),
        uninterruptible: Some(0),
        stuck: vec![],
    }
}

#[cfg(test)]
fn blocked(pid: u32, seconds: u64, wchan: &str) -> StuckProcess {
    StuckProcess {
        pid,
        comm: "python3".into(),
        blocked_seconds: seconds,
        wchan: wchan.into(),
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    vec![
        trigger("file handles", |_, s| {
            s.host.os = Some(OsSample {
                file_handles: Some(2_050_000),
                file_handles_max: Some(2_097_152),
                ..healthy()
            });
        }),
        trigger("stuck processes", |i, s| {
            s.host.os = Some(OsSample {
                uninterruptible: Some(1),
                stuck: vec![blocked(4242, 60 + i as u64, "nfs_wait_bit_killable")],
                ..healthy()
            });
        }),
        trigger("oom kills", |i, s| {
            s.host.os = Some(OsSample {
                oom_kills: Some(u64::from(i >= 30)),
                ..healthy()
            });
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut OsSample);
        // (name, edit of sample i of 60, causes wanted, severity of the first)
        let cases: &[(&str, Bend, &[&str], Option<Severity>)] = &[
            ("healthy", |_, _| {}, &[], None),
            (
                "handles at 95 % of a set limit",
                |_, o| (o.file_handles, o.file_handles_max) = (Some(95), Some(100)),
                &["host.os.file_handles"],
                Some(Severity::Warning),
            ),
            (
                "handles at 99 %",
                |_, o| (o.file_handles, o.file_handles_max) = (Some(99), Some(100)),
                &["host.os.file_handles"],
                Some(Severity::Critical),
            ),
            (
                "handles at 95 % only for the last 5 s",
                |i, o| {
                    if i >= 55 {
                        (o.file_handles, o.file_handles_max) = (Some(95), Some(100))
                    }
                },
                &[],
                None,
            ),
            (
                "handles at 80 %",
                |_, o| (o.file_handles, o.file_handles_max) = (Some(80), Some(100)),
                &[],
                None,
            ),
            (
                "blocked 90 s on NFS",
                |i, o| o.stuck = vec![blocked(7, 30 + i as u64, "nfs_wait_bit_killable")],
                &["host.os.stuck_processes"],
                Some(Severity::Warning),
            ),
            (
                "blocked 30 s is not yet stuck",
                |_, o| o.stuck = vec![blocked(7, 30, "io_schedule")],
                &[],
                None,
            ),
            (
                "in D state, but not blocked across scans",
                |_, o| o.uninterruptible = Some(40),
                &[],
                None,
            ),
            (
                "an OOM kill a minute ago",
                |i, o| o.oom_kills = Some(3 + u64::from(i >= 50)),
                &["host.memory.oom_kills"],
                Some(Severity::Warning),
            ),
            (
                "OOM kills long ago (the counter is flat)",
                |_, o| o.oom_kills = Some(12),
                &[],
                None,
            ),
        ];
        for (name, bend, want, severity) in cases {
            let n = node(8, 60, |i, s| {
                let mut o = healthy();
                bend(i, &mut o);
                s.host.os = Some(o);
            });
            let got = OsHealth.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
            assert_eq!(ids, *want, "{name}: {got:#?}");
            assert_eq!(got.first().map(|f| f.severity), *severity, "{name}");
        }
    }

    #[test]
    fn stuck_evidence_names_each_process_and_what_it_waits_on() {
        let n = node(8, 60, |_, s| {
            s.host.os = Some(OsSample {
                uninterruptible: Some(5),
                stuck: vec![
                    blocked(10, 300, "nfs_wait_bit_killable"),
                    blocked(11, 200, "rpc_wait_bit_killable"),
                    blocked(12, 20, "io_schedule"),
                ],
                ..healthy()
            });
        });
        let got = OsHealth.check(&n, &FleetContext::default(), NOW);
        assert_eq!(got.len(), 1);
        let f = &got[0];
        assert_eq!(
            f.summary,
            "2 processes stuck in uninterruptible sleep for up to 300 s (5 in D state), \
             waiting on a network or parallel filesystem"
        );
        assert_eq!(f.evidence.len(), 2);
        assert_eq!(f.evidence[0].field, "host.os.stuck[10]");
        assert_eq!(f.evidence[0].value, "python3 blocked 300 s in nfs_wait_bit_killable");
        assert_eq!(f.since, UnixMs(100_000 - 300_000));
    }

    #[test]
    fn the_kernels_hung_task_lines_stand_in_when_no_scan_sees_them() {
        let mut n = node(8, 10, |_, _| {});
        for at in [80_000, 95_000] {
            n.events.push_back(
                gpufleet_model::kernel_log::classify(
                    "INFO: task python3:4242 blocked for more than 120 seconds.",
                )
                .unwrap()
                .event(UnixMs(at), "kmsg"),
            );
        }
        let got = OsHealth.check(&n, &FleetContext::default(), NOW);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].rule_id, "host.os.stuck_processes");
        assert_eq!(got[0].summary, "the kernel reports 1 hung task: python3:4242");
        assert_eq!(got[0].since, UnixMs(80_000));
        let later = UnixMs(95_000 + HUNG_TASK_RECENT_MS as i64 + 1);
        assert!(OsHealth.check(&n, &FleetContext::default(), later).is_empty());
    }

    #[test]
    fn wait_channels() {
        for (w, want) in [
            ("nfs_wait_bit_killable", Some("a network or parallel filesystem")),
            ("ptlrpc_set_wait", Some("a network or parallel filesystem")),
            ("uvm_spin_loop", Some("the NVIDIA driver")),
            ("os_acquire_mutex", Some("the NVIDIA driver")),
            ("io_schedule", Some("local disk I/O")),
            ("jbd2_log_wait_commit", Some("local disk I/O")),
            ("do_select", None),
            ("", None),
        ] {
            assert_eq!(waiting_on(w), want, "{w}");
        }
    }
}
