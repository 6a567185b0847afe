//! `storage.*`: the storage jobs depend on. A training job reads its dataset from a network
//! mount and writes checkpoints to another; a mount remounted read-only, hung, gone or full
//! loses hours of work at the next checkpoint, and a local NVMe controller that died takes its
//! scratch space or RAID member with it — and no GPU counter shows any of it.
//!
//! Fullness of a mount the host's disk list already covers (`/`, local filesystems) is
//! `host.disk_full`'s; `storage.mount.full` speaks only for watched mounts outside it (the
//! network filesystems, which the agent leaves out of the disk list), so one full filesystem
//! is one finding.

use gpufleet_model::{
    Evidence, Finding, Sample, Severity, StorageMountSample, StorageNvmeSample, UnixMs,
};

use super::raise;
use super::window::{Held, sustained_node};
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct Storage;

const READ_ONLY: Cause = Cause {
    id: "storage.mount.read_only",
    title: "Storage mount went read-only",
    severity: Severity::Critical,
    detects: "A watched mount's filesystem reads `ro` in mountinfo (its superblock options: \
              not the agent's own read-only view, as systemd's ProtectSystem=strict makes it) \
              for 3 samples after the agent saw it read-write (ext4's errors=remount-ro after I/O \
              errors, a `mount -o remount,ro` by a person or a script); `/` read-only from the \
              start counts too. A mount read-only since the agent started is taken as mounted so on purpose.",
    action: "`findmnt MOUNT` and `dmesg | grep -iE 'remount|read-only|EXT4-fs error|LustreError|nfs'` \
             on the node: ext4 after I/O errors needs the disk checked (`smartctl`, `nvme \
             smart-log`) and `fsck` once unmounted; a network filesystem remounted read-only \
             needs its client logs and the storage servers checked. Remount (`mount -o remount,rw MOUNT`) \
             once fixed. Until then every checkpoint fails: drain the node.",
};

const UNRESPONSIVE: Cause = Cause {
    id: "storage.mount.unresponsive",
    title: "Storage mount not responding",
    severity: Severity::Critical,
    detects: "A watched mount's statfs timed out in the agent (2 s, the mount reads \
              `unresponsive`) or took over 1 s, in 3 consecutive samples. Critical when it \
              times out, a warning while it only answers slowly.",
    action: "`timeout 5 stat -f MOUNT`, `nfsstat -m` or `lfs check servers`, and `dmesg | grep \
             -iE 'not responding|LustreError'`: a hard NFS or Lustre mount whose servers or \
             network path stopped answering hangs every process touching it in D state (`ps \
             -eo pid,stat,cmd | awk '$2 ~ /D/'`). Fix the server or the path to it; `umount -f \
             -l MOUNT` and remount if it does not recover. The node's data loaders are stuck: \
             drain it.",
};

const MISSING: Cause = Cause {
    id: "storage.mount.missing",
    title: "Watched mount not mounted",
    severity: Severity::Warning,
    detects: "A watched mount point (configured, or a network mount the agent saw mounted) is \
              not in mountinfo for 3 samples.",
    action: "`findmnt MOUNT`, `systemctl status $(systemd-escape -p --suffix=mount MOUNT)` (or \
             autofs' `journalctl -u autofs`) and /etc/fstab: remount it (`mount MOUNT`) and \
             find why it went (the automounter's timeout, a failed remount, the server). Until \
             then jobs read an empty directory or write checkpoints onto the root disk.",
};

const FULL: Cause = Cause {
    id: "storage.mount.full",
    title: "Storage mount nearly full",
    severity: Severity::Warning,
    detects: "A watched mount outside the host's disk list (an NFS, Lustre or other network \
              filesystem) with less than 5 % of its space available for 3 samples; full local \
              filesystems are host.disk_full.",
    action: "`df -h MOUNT`, `lfs df -h MOUNT` or the NAS's own view, and `du -sh MOUNT/*`: \
             remove old checkpoints or raise the quota (`lfs quota -u USER MOUNT`) before the \
             next checkpoint fails to write.",
};

const NVME_UNHEALTHY: Cause = Cause {
    id: "storage.nvme.unhealthy",
    title: "NVMe controller unhealthy",
    severity: Severity::Critical,
    detects: "A local NVMe controller not `live` (resetting, connecting, dead, …) or with its \
              temperature alarm set (the SMART critical warning's temperature bit, hwmon \
              temp1_alarm) for 15 s and 3 samples, or a controller the inventory lists gone \
              from the samples.",
    action: "`nvme list`, `nvme smart-log /dev/NAME` (critical_warning, temperature, media \
             errors, spare) and `dmesg | grep NAME`: a controller stuck resetting or dead \
             needs a reseat or a replacement (a RAID member is gone: `cat /proc/mdstat`); a \
             temperature alarm is airflow — check the fans and the drive bay.",
};

static INFO: RuleInfo = RuleInfo {
    id: "storage",
    title: "Storage",
    catalog: &[READ_ONLY, UNRESPONSIVE, MISSING, FULL, NVME_UNHEALTHY],
};

/// A statfs slower than this is a storage problem (a healthy NFS mount answers in about 1 ms).
const SLOW_STATFS_MS: f64 = 1000.0;
/// Below this fraction free a mount is full (the same threshold as host.disk_full).
const MOUNT_FREE: f64 = 0.05;
/// A controller reset takes seconds: its state must hold this long.
const NVME_HOLD_MS: u64 = 15_000;

fn mount<'a>(s: &'a Sample, pos: usize, at: &str) -> Option<&'a StorageMountSample> {
    let m = &s.host.storage.as_ref()?.mounts;
    match m.get(pos) {
        Some(x) if x.mount_point == at => Some(x),
        _ => m.iter().find(|x| x.mount_point == at),
    }
}

fn nvme<'a>(s: &'a Sample, pos: usize, name: &str) -> Option<&'a StorageNvmeSample> {
    let n = &s.host.storage.as_ref()?.nvme;
    match n.get(pos) {
        Some(x) if x.name == name => Some(x),
        _ => n.iter().find(|x| x.name == name),
    }
}

fn slow(m: &StorageMountSample) -> bool {
    m.unresponsive || m.statfs_latency_ms.is_some_and(|l| l > SLOW_STATFS_MS)
}

fn nvme_bad(n: &StorageNvmeSample) -> bool {
    !n.is_live() || n.temperature_alarm == Some(true)
}

/// One line of a finding: when it started, its evidence, its words in the summary.
type Part = (Held, Evidence, String);

/// One finding per node and cause, with a line of evidence per mount or controller.
fn fold(rule: &Storage, cause: &Cause, node: &NodeState, parts: Vec<Part>, what: &str) -> Option<Finding> {
    let since = parts.iter().map(|p| p.0.since).min()?;
    let mut f = raise(rule, cause, node, since);
    let mut words = Vec::new();
    for (_, e, w) in parts {
        f.evidence.push(e);
        words.push(w);
    }
    f.summary = format!("{what}: {}", words.join("; "));
    Some(f)
}

impl Storage {
    fn mounts(&self, node: &NodeState, latest: &Sample) -> Vec<Finding> {
        let Some(st) = latest.host.storage.as_ref() else {
            return vec![];
        };
        let (mut ro, mut hung, mut gone, mut full) = (vec![], vec![], vec![], vec![]);
        let mut timed_out = false;
        for (pos, m) in st.mounts.iter().enumerate() {
            let at = m.mount_point.as_str();
            let held = |cond: &dyn Fn(&StorageMountSample) -> bool| {
                sustained_node(node, 0, |s| mount(s, pos, at).is_some_and(cond))
            };
            let field = |f: &str| format!("host.storage[{at}].{f}");
            if m.mounted && m.read_only && (m.was_writable || at == "/")
                && let Some(h) = held(&|x| x.mounted && x.read_only)
            {
                ro.push((
                    h,
                    Evidence::new(&field("read_only"), format!("ro ({})", m.describe()), "rw")
                        .held_for(h.held_ms),
                    format!("{at} ({}) is read-only", m.describe()),
                ));
            }
            if m.mounted && slow(m)
                && let Some(h) = held(&|x| x.mounted && slow(x))
            {
                let value = match m.statfs_latency_ms {
                    Some(l) if !m.unresponsive => format!("statfs took {:.1} s", l / 1000.0),
                    _ => "statfs timed out".to_string(),
                };
                timed_out |= m.unresponsive;
                hung.push((
                    h,
                    Evidence::new(
                        &field("statfs"),
                        &value,
                        format!("answers within {:.0} s", SLOW_STATFS_MS / 1000.0),
                    )
                    .held_for(h.held_ms),
                    format!("{at} ({}): {value}", m.describe()),
                ));
            }
            if !m.mounted
                && let Some(h) = held(&|x| !x.mounted)
            {
                gone.push((
                    h,
                    Evidence::new(&field("mounted"), "not in mountinfo", "mounted")
                        .held_for(h.held_ms),
                    format!("{at} is not mounted"),
                ));
            }
            let on_host_disks = latest.host.disks.iter().any(|d| d.mount_point == at);
            if !on_host_disks
                && m.available_fraction().is_some_and(|f| f < MOUNT_FREE)
                && let Some(h) = held(&|x| x.available_fraction().is_some_and(|f| f < MOUNT_FREE))
            {
                let free = m.available_fraction().unwrap_or(0.0) * 100.0;
                full.push((
                    h,
                    Evidence::new(
                        &field("available"),
                        format!("{free:.1}%"),
                        format!("{:.0}%", MOUNT_FREE * 100.0),
                    )
                    .held_for(h.held_ms),
                    format!("{at} ({}) has {free:.1}% free", m.describe()),
                ));
            }
        }
        let mut out: Vec<Finding> = [
            fold(self, &READ_ONLY, node, ro, "storage mount read-only"),
            fold(self, &UNRESPONSIVE, node, hung, "storage mount not responding"),
            fold(self, &MISSING, node, gone, "watched mount not mounted"),
            fold(self, &FULL, node, full, "storage mount nearly full"),
        ]
        .into_iter()
        .flatten()
        .collect();
        for f in &mut out {
            if f.rule_id == UNRESPONSIVE.id && !timed_out {
                f.severity = Severity::Warning;
            }
        }
        out
    }

    fn nvme(&self, node: &NodeState, latest: &Sample) -> Option<Finding> {
        let mut parts: Vec<Part> = Vec::new();
        let shown = latest.host.storage.as_ref().map(|s| s.nvme.as_slice()).unwrap_or_default();
        for (pos, n) in shown.iter().enumerate() {
            if !nvme_bad(n) {
                continue;
            }
            let name = n.name.as_str();
            let Some(h) = sustained_node(node, NVME_HOLD_MS, |s| {
                nvme(s, pos, name).is_some_and(nvme_bad)
            }) else {
                continue;
            };
            if !n.is_live() {
                let state = if n.state.is_empty() { "unknown" } else { &n.state };
                parts.push((
                    h,
                    Evidence::new(&format!("host.storage.nvme[{name}].state"), state, "live")
                        .held_for(h.held_ms),
                    format!("{name} is {state}"),
                ));
            }
            if n.temperature_alarm == Some(true) {
                let t = n
                    .temperature_millicelsius
                    .map_or("n/a".to_string(), |t| format!("{:.2} °C", t as f64 / 1000.0));
                let crit = n
                    .temperature_crit_millicelsius
                    .map_or("its threshold".to_string(), |c| {
                        format!("{:.2} °C critical", c as f64 / 1000.0)
                    });
                parts.push((
                    h,
                    Evidence::new(
                        &format!("host.storage.nvme[{name}].temperature_alarm"),
                        format!("alarm at {t}"),
                        crit,
                    )
                    .held_for(h.held_ms),
                    format!("{name} temperature alarm at {t}"),
                ));
            }
        }
        // A controller the inventory lists that the samples no longer show: removed by the
        // driver after a failed reset, or fallen off the bus.
        if latest.host.storage.is_some()
            && let Some(inv) = node.inventory.host.storage.as_ref()
        {
            for c in &inv.nvme {
                let name = c.name.as_str();
                if shown.iter().any(|n| n.name == name) {
                    continue;
                }
                let Some(h) = sustained_node(node, NVME_HOLD_MS, |s| {
                    s.host
                        .storage
                        .as_ref()
                        .is_some_and(|st| !st.nvme.iter().any(|n| n.name == name))
                }) else {
                    continue;
                };
                parts.push((
                    h,
                    Evidence::new(
                        &format!("host.storage.nvme[{name}]"),
                        "gone from /sys/class/nvme",
                        format!("listed in the inventory ({} {})", c.model, c.serial),
                    )
                    .held_for(h.held_ms),
                    format!("{name} ({}) is gone", c.model),
                ));
            }
        }
        fold(self, &NVME_UNHEALTHY, node, parts, "NVMe controller unhealthy")
    }
}

impl Rule for Storage {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(latest) = node.latest() else {
            return vec![];
        };
        let mut out = self.mounts(node, latest);
        out.extend(self.nvme(node, latest));
        out
    }
}

/// `/` on local NVMe, datasets on NFS, checkpoints on Lustre, and two live NVMe controllers.
#[cfg(test)]
fn healthy_storage() -> gpufleet_model::StorageSample {
    let m = |at: &str, fstype: &str, source: &str| StorageMountSample {
        mount_point: at.into(),
        mounted: true,
        fstype: fstype.into(),
        source: source.into(),
        was_writable: true,
        statfs_latency_ms: Some(0.8),
        total_bytes: Some(1 << 50),
        available_bytes: Some(1 << 49),
        ..Default::default()
    };
    gpufleet_model::StorageSample {
        mounts: vec![
            m("/", "ext4", "/dev/nvme0n1p2"),
            m("/datasets", "nfs4", "storage01:/export/datasets"),
            m("/checkpoints", "lustre", "10.0.0.2@o2ib:/ckpt"),
        ],
        nvme: (0..2)
            .map(|i| StorageNvmeSample {
                name: format!("nvme{i}"),
                state: "live".into(),
                temperature_millicelsius: Some(36_850),
                temperature_crit_millicelsius: Some(84_850),
                temperature_alarm: Some(false),
                ..Default::default()
            })
            .collect(),
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    use super::testutil::trigger;
    let with = |i: usize, s: &mut Sample, bend: fn(usize, &mut gpufleet_model::StorageSample)| {
        let mut st = healthy_storage();
        bend(i, &mut st);
        s.host.storage = Some(st);
    };
    vec![
        trigger("mount read only", move |i, s| {
            with(i, s, |i, st| st.mounts[2].read_only = i >= 20)
        }),
        trigger("mount unresponsive", move |i, s| {
            with(i, s, |_, st| {
                st.mounts[1].unresponsive = true;
                st.mounts[1].statfs_latency_ms = None;
            })
        }),
        trigger("mount missing", move |i, s| {
            with(i, s, |_, st| {
                st.mounts[1] = StorageMountSample {
                    mount_point: "/datasets".into(),
                    was_writable: true,
                    ..Default::default()
                }
            })
        }),
        trigger("mount full", move |i, s| {
            with(i, s, |_, st| st.mounts[2].available_bytes = Some(1 << 44))
        }),
        trigger("nvme unhealthy", move |i, s| {
            with(i, s, |_, st| st.nvme[1].state = "dead".into())
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};
    use gpufleet_model::{DiskSample, StorageSample};

    fn ids(fs: &[Finding]) -> Vec<&str> {
        fs.iter().map(|f| f.rule_id.as_str()).collect()
    }

    #[test]
    fn cases() {
        type Bend = fn(usize, &mut StorageSample);
        // (name, edit of the storage in sample i of 60, causes wanted)
        let cases: &[(&str, Bend, &[&str])] = &[
            ("healthy", |_, _| {}, &[]),
            (
                "checkpoints remounted read-only",
                |i, st| st.mounts[2].read_only = i >= 30,
                &["storage.mount.read_only"],
            ),
            (
                "a dataset mount read-only from the start is on purpose",
                |_, st| {
                    st.mounts[1].read_only = true;
                    st.mounts[1].was_writable = false;
                },
                &[],
            ),
            (
                "the root filesystem read-only counts even from the start",
                |_, st| {
                    st.mounts[0].read_only = true;
                    st.mounts[0].was_writable = false;
                },
                &["storage.mount.read_only"],
            ),
            (
                "read-only for 2 samples only",
                |i, st| st.mounts[2].read_only = i >= 58,
                &[],
            ),
            (
                "statfs times out",
                |i, st| {
                    if i >= 50 {
                        st.mounts[1].unresponsive = true;
                        st.mounts[1].statfs_latency_ms = None;
                    }
                },
                &["storage.mount.unresponsive"],
            ),
            (
                "statfs slow but answering",
                |_, st| st.mounts[2].statfs_latency_ms = Some(1_500.0),
                &["storage.mount.unresponsive"],
            ),
            (
                "one slow statfs now and then",
                |i, st| {
                    if i % 10 == 0 {
                        st.mounts[1].statfs_latency_ms = Some(1_800.0);
                    }
                },
                &[],
            ),
            (
                "datasets unmounted",
                |i, st| {
                    if i >= 40 {
                        st.mounts[1] = StorageMountSample {
                            mount_point: "/datasets".into(),
                            was_writable: true,
                            ..Default::default()
                        };
                    }
                },
                &["storage.mount.missing"],
            ),
            (
                "checkpoints nearly full",
                |_, st| st.mounts[2].available_bytes = Some(1 << 44),
                &["storage.mount.full"],
            ),
            (
                "a full / is host.disk_full's, not ours",
                |_, st| st.mounts[0].available_bytes = Some(1 << 40),
                &[],
            ),
            (
                "a controller dead",
                |_, st| st.nvme[1].state = "dead".into(),
                &["storage.nvme.unhealthy"],
            ),
            (
                "a controller resetting for a few seconds",
                |i, st| {
                    if i >= 52 {
                        st.nvme[0].state = "resetting".into();
                    }
                },
                &[],
            ),
            (
                "a temperature alarm",
                |_, st| {
                    st.nvme[0].temperature_alarm = Some(true);
                    st.nvme[0].temperature_millicelsius = Some(86_850);
                },
                &["storage.nvme.unhealthy"],
            ),
            (
                "unreadable temperatures are absent, not alarms",
                |_, st| {
                    for n in &mut st.nvme {
                        n.temperature_millicelsius = None;
                        n.temperature_alarm = None;
                    }
                    st.mounts[1].total_bytes = None;
                    st.mounts[1].available_bytes = None;
                    st.mounts[1].statfs_latency_ms = None;
                },
                &[],
            ),
        ];
        for (name, bend, want) in cases {
            let n = node(8, 60, |i, s| {
                let mut st = healthy_storage();
                bend(i, &mut st);
                s.host.storage = Some(st);
                s.host.disks = vec![DiskSample {
                    mount_point: "/".into(),
                    total_bytes: 1 << 50,
                    available_bytes: 1 << 49,
                }];
            });
            let got = Storage.check(&n, &FleetContext::default(), NOW);
            assert_eq!(ids(&got), *want, "{name}: {got:#?}");
        }
    }

    #[test]
    fn findings_name_the_mount_the_controller_and_the_numbers() {
        let n = node(8, 60, |i, s| {
            let mut st = healthy_storage();
            st.mounts[2].read_only = i >= 30;
            st.mounts[1].statfs_latency_ms = Some(1_500.0);
            st.nvme[0].temperature_alarm = Some(true);
            st.nvme[0].temperature_millicelsius = Some(86_850);
            s.host.storage = Some(st);
        });
        let got = Storage.check(&n, &FleetContext::default(), NOW);
        assert_eq!(
            ids(&got),
            [
                "storage.mount.read_only",
                "storage.mount.unresponsive",
                "storage.nvme.unhealthy"
            ]
        );
        assert_eq!(
            got[0].summary,
            "storage mount read-only: /checkpoints (lustre 10.0.0.2@o2ib:/ckpt) is read-only"
        );
        assert_eq!(got[0].evidence[0].field, "host.storage[/checkpoints].read_only");
        assert_eq!(got[0].severity, Severity::Critical);
        assert_eq!(got[0].since, n.history[30].timestamp);
        assert!(got[1].summary.contains("/datasets (nfs4 storage01:/export/datasets): statfs took 1.5 s"), "{}", got[1].summary);
        // Slow, not hung: a warning.
        assert_eq!(got[1].severity, Severity::Warning);
        assert_eq!(
            got[2].summary,
            "NVMe controller unhealthy: nvme0 temperature alarm at 86.85 °C"
        );
        assert_eq!(got[2].evidence[0].threshold, "84.85 °C critical");
    }

    #[test]
    fn a_controller_the_inventory_lists_but_the_samples_lost_is_unhealthy() {
        let mut n = node(8, 60, |_, s| {
            let mut st = healthy_storage();
            st.nvme.pop();
            s.host.storage = Some(st);
        });
        n.inventory.host.storage = Some(gpufleet_model::StorageInfo {
            nvme: (0..2)
                .map(|i| gpufleet_model::StorageNvmeInfo {
                    name: format!("nvme{i}"),
                    model: "SAMSUNG MZ1L21T9HCLS-00A07".into(),
                    ..Default::default()
                })
                .collect(),
        });
        let got = Storage.check(&n, &FleetContext::default(), NOW);
        assert_eq!(ids(&got), ["storage.nvme.unhealthy"]);
        assert!(got[0].summary.contains("nvme1 (SAMSUNG MZ1L21T9HCLS-00A07) is gone"), "{}", got[0].summary);
    }

    #[test]
    fn a_hung_mount_is_critical_and_several_mounts_are_one_finding() {
        let n = node(8, 60, |_, s| {
            let mut st = healthy_storage();
            for m in &mut st.mounts[1..] {
                m.unresponsive = true;
                m.statfs_latency_ms = None;
            }
            s.host.storage = Some(st);
        });
        let got = Storage.check(&n, &FleetContext::default(), NOW);
        assert_eq!(ids(&got), ["storage.mount.unresponsive"]);
        assert_eq!(got[0].severity, Severity::Critical);
        assert_eq!(got[0].evidence.len(), 2);
        assert!(got[0].summary.contains("/datasets") && got[0].summary.contains("/checkpoints"));
    }
}
