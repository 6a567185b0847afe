//! The operating system's own health, from procfs (proc(5)) — what stalls a training job
//! without any GPU or NIC counter moving:
//!
//! ```text
//! sys/fs/file-nr        12096   0   9223372036854775807   allocated, unused (always 0), max
//! vmstat                pswpin 0 / pswpout 0 / oom_kill 0   pages swapped, OOM kills since boot
//! PID/stat              4242 (python3) D 1 …                state is the field after the name
//! PID/status            voluntary_ctxt_switches: 51  nonvoluntary_ctxt_switches: 3
//! PID/wchan             nfs_wait_bit_killable         where a sleeping process waits
//! ```
//!
//! A process is *stuck* when it is in uninterruptible sleep (D) at two scans in a row and its
//! context-switch counts did not move in between: it was never scheduled, which is how the
//! kernel's hung-task detector (`kernel/hung_task.c`) tells a blocked task from one doing a
//! lot of short I/O. Processes are scanned at the slow cadence ([`SCAN_INTERVAL`]); the two
//! small files are read every sample. In a container without the host's PID namespace only
//! the container's processes are seen — mount the host's `/proc` and pass `--procfs-root`.
//! Each file fails alone; only a procfs where none of them can be read is unavailable.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{HostInfo, HostSample, OsSample, StuckProcess, UnixMs};

use super::HostPart;

/// How often the process list is scanned for blocked processes.
pub const SCAN_INTERVAL: std::time::Duration = super::cadence::DEFAULT_SLOW_INTERVAL;
/// Stuck processes reported per sample, longest blocked first.
pub const MAX_STUCK_REPORTED: usize = 8;
/// Processes looked at per scan: a fork bomb must not make the agent read forever.
const MAX_PROCESSES_SCANNED: usize = 200_000;

pub struct Os {
    procfs: PathBuf,
    last_scan: Option<UnixMs>,
    /// Processes in D state at the last scan, by (pid, start time): their context-switch
    /// count then, and since when they have been blocked without one.
    blocked: HashMap<(u32, u64), Blocked>,
    /// What the last scan found: processes in D, and the stuck ones.
    scanned: Option<(u32, Vec<StuckProcess>)>,
}

#[derive(Debug, Clone, Copy)]
struct Blocked {
    switches: u64,
    since: UnixMs,
}

/// One line of `PID/stat`, the parts the scan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    /// Field 22, clock ticks after boot: tells a reused pid from the process that had it.
    pub start_time: u64,
}

impl Os {
    pub fn new(procfs_root: &Path) -> Self {
        Os {
            procfs: procfs_root.to_path_buf(),
            last_scan: None,
            blocked: HashMap::new(),
            scanned: None,
        }
    }

    /// Lists the processes in D state and updates which are stuck; `None` when no process
    /// could be listed.
    fn scan(&mut self, now: UnixMs) -> Option<(u32, Vec<StuckProcess>)> {
        let entries = fs::read_dir(&self.procfs).ok()?;
        let mut blocked = HashMap::new();
        let mut in_d = 0u32;
        let mut stuck = Vec::new();
        let mut seen = 0usize;
        for e in entries.flatten().take(MAX_PROCESSES_SCANNED) {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            seen += 1;
            let dir = e.path();
            let Some(stat) = fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
            else {
                continue;
            };
            if stat.state != 'D' {
                continue;
            }
            in_d += 1;
            let Some(switches) = fs::read_to_string(dir.join("status"))
                .ok()
                .and_then(|t| context_switches(&t))
            else {
                continue;
            };
            let key = (pid, stat.start_time);
            let since = match self.blocked.get(&key) {
                Some(b) if b.switches == switches => b.since,
                _ => now,
            };
            blocked.insert(key, Blocked { switches, since });
            if since < now {
                stuck.push(StuckProcess {
                    pid,
                    comm: stat.comm,
                    blocked_seconds: now.since(since) / 1000,
                    wchan: read_wchan(&dir.join("wchan")),
                });
            }
        }
        self.blocked = blocked;
        if seen == 0 {
            // A procfs lists at least the agent itself: this is no procfs.
            return None;
        }
        stuck.sort_by_key(|s| (std::cmp::Reverse(s.blocked_seconds), s.pid));
        stuck.truncate(MAX_STUCK_REPORTED);
        Some((in_d, stuck))
    }
}

/// Parses `PID/stat`. The name is in parentheses and may hold spaces and parentheses itself,
/// so the state is the first field after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    // Fields after the name start at field 3 (state); start time is field 22.
    let start_time = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(ProcStat {
        pid,
        comm,
        state,
        start_time,
    })
}

/// Voluntary plus involuntary context switches from `PID/status`.
pub fn context_switches(status: &str) -> Option<u64> {
    let mut total = None;
    for line in status.lines() {
        if let Some((k, v)) = line.split_once(':')
            && matches!(k, "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches")
        {
            *total.get_or_insert(0u64) += v.trim().parse::<u64>().ok()?;
        }
    }
    total
}

/// `PID/wchan`: a symbol name, or `0` when the process is running or the kernel hides it.
fn read_wchan(path: &Path) -> String {
    let w = fs::read_to_string(path).unwrap_or_default();
    let w = w.trim();
    if w == "0" {
        String::new()
    } else {
        w.to_string()
    }
}

/// `sys/fs/file-nr`: allocated handles and the maximum.
pub fn parse_file_nr(text: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 3).then(|| (f[0], f[2]))
}

/// The `vmstat` counters this part reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmStat {
    pub pswpin: Option<u64>,
    pub pswpout: Option<u64>,
    pub oom_kill: Option<u64>,
}

pub fn parse_vmstat(text: &str) -> VmStat {
    let mut v = VmStat::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(n)) = (it.next(), it.next().and_then(|n| n.parse().ok())) else {
            continue;
        };
        match k {
            "pswpin" => v.pswpin = Some(n),
            "pswpout" => v.pswpout = Some(n),
            "oom_kill" => v.oom_kill = Some(n),
            _ => {}
        }
    }
    v
}

impl HostPart for Os {
    fn name(&self) -> &'static str {
        "os"
    }

    fn info(&mut self, _info: &mut HostInfo) -> Result<(), String> {
        Ok(())
    }

    fn sample(&mut self, now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        let file_nr = fs::read_to_string(self.procfs.join("sys/fs/file-nr"))
            .ok()
            .and_then(|t| parse_file_nr(&t));
        let vm = fs::read_to_string(self.procfs.join("vmstat"))
            .ok()
            .map(|t| parse_vmstat(&t));
        let due = self
            .last_scan
            .is_none_or(|at| !(0..SCAN_INTERVAL.as_millis() as i64).contains(&(now.0 - at.0)));
        if due {
            self.last_scan = Some(now);
            self.scanned = self.scan(now);
        }
        if file_nr.is_none() && vm.is_none() && self.scanned.is_none() {
            return Err(format!(
                "cannot read {}/sys/fs/file-nr, {}/vmstat or the process list (is procfs \
                 mounted there? pass --procfs-root)",
                self.procfs.display(),
                self.procfs.display()
            ));
        }
        let vm = vm.unwrap_or_default();
        let (uninterruptible, stuck) = match &self.scanned {
            Some((n, s)) => (Some(*n), s.clone()),
            None => (None, Vec::new()),
        };
        sample.os = Some(OsSample {
            file_handles: file_nr.map(|f| f.0),
            file_handles_max: file_nr.map(|f| f.1),
            pages_swapped_in: vm.pswpin,
            pages_swapped_out: vm.pswpout,
            oom_kills: vm.oom_kill,
            uninterruptible,
            stuck,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (my (odd) job) D 1 4242 4242 0 -1 4194560 155 0 0 0 7 3 0 0 20 0 1 0 \
                    987654 12345678 900 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.start_time),
            (4242, "my (odd) job", 'D', 987654)
        );
        // The short lines of a minimal fixture still give a state.
        assert_eq!(parse_stat("1 (systemd) S 1 1 1").unwrap().start_time, 0);
        for bad in ["", "garbage", "x (y) ", "1 (a"] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_file_nr_vmstat_and_switches() {
        assert_eq!(
            parse_file_nr("12096\t0\t9223372036854775807\n"),
            Some((12096, 9223372036854775807))
        );
        assert_eq!(parse_file_nr("1 2"), None);
        assert_eq!(parse_file_nr("a b c"), None);
        let v = parse_vmstat("nr_free_pages 1\npswpin 10\npswpout 20\noom_kill 2\nbad\n");
        assert_eq!(
            v,
            VmStat {
                pswpin: Some(10),
                pswpout: Some(20),
                oom_kill: Some(2)
            }
        );
        assert_eq!(parse_vmstat("pswpin x").pswpin, None);
        let status = "Name:\tpython3\nState:\tD (disk sleep)\nvoluntary_ctxt_switches:\t51\n\
                      nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(context_switches(status), Some(54));
        assert_eq!(context_switches("Name: x\n"), None);
    }

    fn proc_dir(root: &Path, pid: u32, comm: &str, state: char, switches: u64, wchan: &str) {
        let d = root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("stat"),
            format!("{pid} ({comm}) {state} 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 0 0\n"),
        )
        .unwrap();
        fs::write(
            d.join("status"),
            format!("voluntary_ctxt_switches:\t{switches}\nnonvoluntary_ctxt_switches:\t0\n"),
        )
        .unwrap();
        fs::write(d.join("wchan"), wchan).unwrap();
    }

    #[test]
    fn a_process_blocked_across_scans_is_stuck_and_one_that_ran_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sys/fs")).unwrap();
        fs::write(root.join("sys/fs/file-nr"), "900\t0\t1000\n").unwrap();
        proc_dir(root, 10, "python3", 'D', 7, "nfs_wait_bit_killable");
        proc_dir(root, 11, "dd", 'D', 100, "io_schedule");
        proc_dir(root, 12, "sshd", 'S', 5, "0");
        let mut os = Os::new(root);
        let read = |os: &mut Os, at: i64| {
            let mut s = HostSample::default();
            os.sample(UnixMs(at), &mut s).unwrap();
            s.os.unwrap()
        };
        let first = read(&mut os, 1_000);
        assert_eq!(first.uninterruptible, Some(2));
        assert!(first.stuck.is_empty(), "one scan proves nothing");
        assert_eq!(
            (first.file_handles, first.file_handles_max),
            (Some(900), Some(1000))
        );
        // dd was scheduled (its switches moved); python3 was not.
        proc_dir(root, 11, "dd", 'D', 130, "io_schedule");
        let before_due = read(&mut os, 5_000);
        assert!(
            before_due.stuck.is_empty(),
            "not rescanned before the interval"
        );
        let second = read(&mut os, 11_000);
        assert_eq!(
            second.stuck,
            vec![StuckProcess {
                pid: 10,
                comm: "python3".into(),
                blocked_seconds: 10,
                wchan: "nfs_wait_bit_killable".into()
            }]
        );
        let third = read(&mut os, 21_000);
        assert_eq!(third.stuck.len(), 2);
        assert_eq!(
            (third.stuck[0].pid, third.stuck[0].blocked_seconds),
            (10, 20)
        );
        assert_eq!(
            (third.stuck[1].pid, third.stuck[1].blocked_seconds),
            (11, 10)
        );
        // python3 woke up: no longer stuck.
        proc_dir(root, 10, "python3", 'S', 8, "0");
        let fourth = read(&mut os, 31_000);
        assert_eq!(fourth.uninterruptible, Some(1));
        assert_eq!(fourth.stuck.iter().map(|s| s.pid).collect::<Vec<_>>(), [11]);
    }

    #[test]
    fn no_procfs_is_unavailable_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut os = Os::new(&dir.path().join("nope"));
        let mut s = HostSample::default();
        let err = os.sample(UnixMs(1), &mut s).unwrap_err();
        assert!(err.contains("--procfs-root"), "{err}");
        assert_eq!(s.os, None);
    }
}
