//! Storage as the jobs see it: the mounts they read datasets from and write checkpoints to,
//! and the node's NVMe controllers. Real layouts, each read under its root:
//!
//! ```text
//! PROC/self/mountinfo   36 25 0:52 / /datasets rw,relatime shared:30 - nfs4 storage01:/export/datasets rw,vers=4.2,…
//!                       (id parent major:minor root mount-point per-mount-options optional… - fstype source super-options; proc(5))
//! statvfs(ROOT/datasets)  size and space available, on a worker thread, bounded by a time-out
//! SYS/class/nvme/nvme0/{model,serial,firmware_rev,transport,address,state}
//! SYS/class/nvme/nvme0/hwmon3/{name,temp1_input,temp1_max,temp1_crit,temp1_alarm}
//!                       (the kernel's nvme hwmon device, millidegrees Celsius; under
//!                        nvme0/device/ on kernels before 5.6)
//! ```
//!
//! Watched mounts are the configured ones (`watch_mounts`, `--watch-mount`) or, by default,
//! `/` and every network or parallel filesystem mounted (NFS, Lustre, GPFS, BeeGFS, CIFS,
//! Weka, CephFS, JuiceFS and other FUSE network filesystems, [`is_network_fs`]) — once seen, a
//! mount stays watched, so one that goes away is reported as not mounted.
//!
//! A statfs on a hung NFS or Lustre mount blocks in the kernel, maybe for ever. So each watched
//! mount has its own worker thread; the sampler waits for all of them together at most
//! [`STATFS_TIMEOUT`], and a statfs still pending at the next sample is not started again (the
//! mount reads `unresponsive` at once, without waiting). The sampler is held up at most once
//! per hang, never for longer than the time-out.
//!
//! The NVMe SMART log (media errors, spare, wear) needs an admin ioctl on `/dev/nvmeN`, which
//! this read-only, file-reading part does not issue: only the controller state and the hwmon
//! temperature and alarm are read. A machine without NVMe has no `class/nvme`: no controllers,
//! not an error. The part is unavailable only when mountinfo cannot be read.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gpufleet_model::{
    HostInfo, HostSample, StorageInfo, StorageMountSample, StorageNvmeInfo, StorageNvmeSample,
    StorageSample, UnixMs,
};

use super::{HostPart, HostRoots};

/// How long the sampler waits for the statfs of the watched mounts.
pub const STATFS_TIMEOUT: Duration = Duration::from_secs(2);

/// Watched when nothing is configured, beside the network filesystems.
pub const DEFAULT_WATCH: &str = "/";

/// Kernel filesystems that live on another machine (or many).
const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "lustre",
    "gpfs",
    "beegfs",
    "cifs",
    "smb3",
    "ceph",
    "glusterfs",
    "wekafs",
    "virtiofs",
];

/// FUSE subtypes (`fuse.NAME` in mountinfo) of network filesystems.
const FUSE_NETWORK: &[&str] = &[
    "juicefs",
    "weka",
    "wekafs",
    "ceph-fuse",
    "glusterfs",
    "gcsfuse",
    "s3fs",
    "mountpoint-s3",
    "blobfuse2",
    "alluxio-fuse",
    "rclone",
    "sshfs",
];

/// A network or parallel filesystem: where a dataset or checkpoint mount lives, and where a
/// statfs can hang.
pub fn is_network_fs(fstype: &str) -> bool {
    NETWORK_FS.contains(&fstype)
        || fstype
            .strip_prefix("fuse.")
            .is_some_and(|sub| FUSE_NETWORK.contains(&sub))
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// `ro` in the superblock options: the filesystem itself is read-only.
    pub read_only: bool,
    /// `ro` in the per-mount options: read-only in this mount namespace's view only.
    pub view_read_only: bool,
}

/// `\040` (space), `\011` (tab), `\012` (newline), `\134` (backslash), as the kernel escapes
/// paths in mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(c) = u8::try_from(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/mountinfo` (proc(5)): `id parent major:minor root mount-point options
/// [optional fields…] - fstype source super-options`. Lines without the `-` separator or
/// with too few fields are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
            let (fstype, source) = (f.get(sep + 1)?, f.get(sep + 2)?);
            let ro = |opts: Option<&&str>| opts.is_some_and(|o| o.split(',').any(|x| x == "ro"));
            Some(MountEntry {
                mount_point: unescape(f.get(4)?),
                fstype: fstype.to_string(),
                source: unescape(source),
                read_only: ro(f.get(sep + 3)),
                view_read_only: ro(f.get(5)),
            })
        })
        .collect()
}

/// `/datasets/` → `/datasets`; `/` stays.
pub fn normalize(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

/// The result of one statfs.
type Outcome = (Result<(u64, u64), String>, Duration);

/// One watched mount's statfs worker: a thread started at the first request, which answers
/// one request at a time.
struct Prober {
    path: PathBuf,
    tx: Option<mpsc::Sender<()>>,
    rx: Option<mpsc::Receiver<Outcome>>,
    /// A request the worker has not answered yet.
    pending: bool,
}

impl Prober {
    fn new(path: PathBuf) -> Self {
        Prober {
            path,
            tx: None,
            rx: None,
            pending: false,
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let (req_tx, req_rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel::<Outcome>();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("gpufleet-statfs".into())
            .spawn(move || {
                while req_rx.recv().is_ok() {
                    let t = Instant::now();
                    let r = rustix::fs::statvfs(&path)
                        .map(|s| {
                            (
                                s.f_frsize.saturating_mul(s.f_blocks),
                                s.f_frsize.saturating_mul(s.f_bavail),
                            )
                        })
                        .map_err(|e| std::io::Error::from(e).to_string());
                    if res_tx.send((r, t.elapsed())).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a statfs thread: {e}"))?;
        self.tx = Some(req_tx);
        self.rx = Some(res_rx);
        Ok(())
    }

    /// A late answer to the last request, if it came: the worker is free again.
    fn collect_late(&mut self) {
        if self.pending && self.rx.as_ref().is_some_and(|rx| rx.try_recv().is_ok()) {
            self.pending = false;
        }
    }

    /// Sends a request; false when the worker could not take it.
    fn kick(&mut self) -> Result<(), String> {
        if self.tx.is_none() {
            self.start()?;
        }
        match self.tx.as_ref().map(|tx| tx.send(())) {
            Some(Ok(())) => {
                self.pending = true;
                Ok(())
            }
            _ => {
                // The worker is gone (it cannot panic, but be sure): start afresh next time.
                self.tx = None;
                self.rx = None;
                Err("the statfs thread stopped".into())
            }
        }
    }

    fn wait(&mut self, deadline: Instant) -> Option<Outcome> {
        let rx = self.rx.as_ref()?;
        let r = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        self.pending = false;
        Some(r)
    }
}

struct Watched {
    mount_point: String,
    was_writable: bool,
    prober: Prober,
}

pub struct Storage {
    mountinfo: PathBuf,
    host_root: PathBuf,
    nvme_class: PathBuf,
    /// Configured mount points; empty: `/` and the network filesystems.
    configured: Vec<String>,
    watched: Vec<Watched>,
    timeout: Duration,
}

impl Storage {
    pub fn new(roots: &HostRoots) -> Self {
        let mut configured: Vec<String> = roots
            .watch_mounts
            .iter()
            .map(|p| normalize(&p.to_string_lossy()))
            .collect();
        configured.dedup();
        Storage {
            mountinfo: roots.procfs.join("self/mountinfo"),
            host_root: roots.root.clone(),
            nvme_class: roots.sysfs.join("class/nvme"),
            configured,
            watched: Vec::new(),
            timeout: STATFS_TIMEOUT,
        }
    }

    /// A shorter time-out, for tests.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A mount point as the host sees it: inside a container that mounts the host's root at
    /// `/host`, the agent's mountinfo lists `/host/datasets` for the host's `/datasets`.
    fn host_view(&self, mount_point: &str) -> String {
        if self.host_root != Path::new("/")
            && let Ok(rest) = Path::new(mount_point).strip_prefix(&self.host_root)
        {
            return normalize(&format!("/{}", rest.to_string_lossy()));
        }
        mount_point.to_string()
    }

    fn watch(&mut self, mount_point: &str) {
        if self.watched.iter().any(|w| w.mount_point == mount_point) {
            return;
        }
        let path = self.host_root.join(mount_point.trim_start_matches('/'));
        self.watched.push(Watched {
            mount_point: mount_point.to_string(),
            was_writable: false,
            prober: Prober::new(path),
        });
    }

    fn mounts(&mut self) -> Result<Vec<StorageMountSample>, String> {
        let text = fs::read_to_string(&self.mountinfo).map_err(|e| {
            format!(
                "cannot read {} ({e}): watched mounts unknown (is procfs mounted? use --procfs-root)",
                self.mountinfo.display()
            )
        })?;
        // The last entry for a mount point is the one on top, the one paths resolve to.
        let mut entries: Vec<(String, MountEntry)> = Vec::new();
        for e in parse_mountinfo(&text) {
            let at = self.host_view(&e.mount_point);
            entries.retain(|(p, _)| *p != at);
            entries.push((at, e));
        }
        if self.configured.is_empty() {
            self.watch(DEFAULT_WATCH);
            let network: Vec<String> = entries
                .iter()
                .filter(|(_, e)| is_network_fs(&e.fstype))
                .map(|(p, _)| p.clone())
                .collect();
            for p in network {
                self.watch(&p);
            }
        } else {
            for p in self.configured.clone() {
                self.watch(&p);
            }
        }

        let mut out: Vec<StorageMountSample> = Vec::with_capacity(self.watched.len());
        let mut kicked = Vec::new();
        for (i, w) in self.watched.iter_mut().enumerate() {
            let entry = entries
                .iter()
                .find(|(p, _)| *p == w.mount_point)
                .map(|x| &x.1);
            let mut m = StorageMountSample {
                mount_point: w.mount_point.clone(),
                mounted: entry.is_some(),
                ..Default::default()
            };
            if let Some(e) = entry {
                m.fstype = e.fstype.clone();
                m.source = e.source.clone();
                m.read_only = e.read_only;
                m.view_read_only = e.view_read_only;
                w.was_writable |= !e.read_only;
                // Not mounted: a statfs would read the filesystem underneath, not this one.
                w.prober.collect_late();
                if w.prober.pending {
                    m.unresponsive = true;
                } else {
                    match w.prober.kick() {
                        Ok(()) => kicked.push(i),
                        Err(why) => m.statfs_error = why,
                    }
                }
            }
            m.was_writable = w.was_writable;
            out.push(m);
        }
        let deadline = Instant::now() + self.timeout;
        for i in kicked {
            let m = &mut out[i];
            match self.watched[i].prober.wait(deadline) {
                Some((Ok((total, avail)), took)) => {
                    m.statfs_latency_ms = Some(took.as_secs_f64() * 1000.0);
                    m.total_bytes = Some(total);
                    m.available_bytes = Some(avail);
                }
                Some((Err(why), _)) => m.statfs_error = why,
                None => m.unresponsive = true,
            }
        }
        Ok(out)
    }

    fn controllers(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = fs::read_dir(&self.nvme_class)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("nvme")?.parse::<u32>().ok()?;
                Some((name, e.path()))
            })
            .collect();
        out.sort_by_key(|(n, _)| n[4..].parse::<u32>().unwrap_or(u32::MAX));
        out
    }
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn number(path: &Path) -> Option<i64> {
    read(path)?.parse().ok()
}

/// The controller's hwmon directory: `nvmeN/hwmonM` (or `nvmeN/device/hwmonM` before Linux
/// 5.6) whose `name` is `nvme`.
fn hwmon(ctrl: &Path) -> Option<PathBuf> {
    [ctrl.to_path_buf(), ctrl.join("device")]
        .into_iter()
        .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("hwmon"))
        })
        .map(|e| e.path())
        .find(|p| read(&p.join("name")).as_deref() == Some("nvme"))
}

fn read_nvme(name: &str, dir: &Path) -> StorageNvmeSample {
    let hw = hwmon(dir);
    let temp = |f: &str| hw.as_ref().and_then(|h| number(&h.join(f)));
    StorageNvmeSample {
        name: name.to_string(),
        state: read(&dir.join("state")).unwrap_or_default(),
        temperature_millicelsius: temp("temp1_input"),
        temperature_max_millicelsius: temp("temp1_max"),
        temperature_crit_millicelsius: temp("temp1_crit"),
        temperature_alarm: temp("temp1_alarm").and_then(|a| match a {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
    }
}

impl HostPart for Storage {
    fn name(&self) -> &'static str {
        "storage"
    }

    fn info(&mut self, info: &mut HostInfo) -> Result<(), String> {
        let nvme = self
            .controllers()
            .into_iter()
            .map(|(name, d)| StorageNvmeInfo {
                model: read(&d.join("model")).unwrap_or_default(),
                serial: read(&d.join("serial")).unwrap_or_default(),
                firmware_rev: read(&d.join("firmware_rev")).unwrap_or_default(),
                transport: read(&d.join("transport")).unwrap_or_default(),
                address: read(&d.join("address")).unwrap_or_default(),
                name,
            })
            .collect();
        info.storage = Some(StorageInfo { nvme });
        Ok(())
    }

    fn sample(&mut self, _now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        let nvme = self
            .controllers()
            .iter()
            .map(|(name, d)| read_nvme(name, d))
            .collect();
        let mounts = self.mounts();
        sample.storage = Some(StorageSample {
            mounts: mounts.as_ref().cloned().unwrap_or_default(),
            nvme,
        });
        mounts.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_roots() -> HostRoots {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        HostRoots {
            sysfs: fx.join("sysfs/hgx-h100-8x-ndr"),
            procfs: fx.join("procfs/hgx-h100"),
            root: fx.join("rootfs/hgx-h100"),
            watch_mounts: Vec::new(),
            kmsg: "/nonexistent".into(),
        }
    }

    const LINES: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
40 22 0:52 / /datasets rw,relatime shared:30 - nfs4 storage01:/export/datasets rw,vers=4.2,hard,proto=tcp
41 22 0:53 / /checkpoints rw,relatime shared:31 - lustre 10.0.0.2@o2ib:/ckpt ro,flock
42 22 0:54 / /mnt/with\\040space ro,relatime - fuse.juicefs JuiceFS:jfs rw,user_id=0
43 22 0:55 / /weird rw master:1 propagate_from:2 - beegfs beegfs_nodev rw
garbage
44 22 0:56 / /short rw -
";

    #[test]
    fn mountinfo_parses_as_proc_5_lays_it_out() {
        let m = parse_mountinfo(LINES);
        let names: Vec<&str> = m.iter().map(|e| e.mount_point.as_str()).collect();
        assert_eq!(
            names,
            [
                "/",
                "/sys",
                "/datasets",
                "/checkpoints",
                "/mnt/with space",
                "/weird"
            ]
        );
        assert_eq!(m[2].fstype, "nfs4");
        assert_eq!(m[2].source, "storage01:/export/datasets");
        assert!(!m[2].read_only);
        // Read-only in the superblock options (a remount, ext4's errors=remount-ro): the
        // filesystem is; in the per-mount options only (a read-only bind, a sandbox such as
        // systemd's ProtectSystem=strict): the agent's view is, the filesystem is not.
        assert!(m[3].read_only && !m[3].view_read_only);
        assert!(!m[4].read_only && m[4].view_read_only);
        assert!(!m[0].read_only, "errors=remount-ro is not ro");
        assert_eq!(m[5].fstype, "beegfs");
        for (fs, net) in [
            ("nfs4", true),
            ("lustre", true),
            ("fuse.juicefs", true),
            ("wekafs", true),
            ("ext4", false),
            ("fuse.lxcfs", false),
            ("fuse.", false),
        ] {
            assert_eq!(is_network_fs(fs), net, "{fs}");
        }
        assert_eq!(normalize("/datasets/"), "/datasets");
        assert_eq!(normalize("///"), "/");
    }

    #[test]
    fn reads_an_hgx_node_with_an_nfs_and_a_lustre_mount_and_two_nvme_drives() {
        let mut st = Storage::new(&fixture_roots());
        let mut info = HostInfo::default();
        st.info(&mut info).unwrap();
        let nvme = &info.storage.as_ref().unwrap().nvme;
        assert_eq!(nvme.len(), 2);
        assert_eq!(nvme[0].name, "nvme0");
        assert_eq!(nvme[0].model, "SAMSUNG MZ1L21T9HCLS-00A07");
        assert_eq!(nvme[0].firmware_rev, "GDC7302Q");
        assert_eq!(nvme[1].transport, "pcie");

        let mut s = HostSample::default();
        st.sample(UnixMs(1), &mut s).unwrap();
        let storage = s.storage.unwrap();
        let points: Vec<&str> = storage
            .mounts
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(points, ["/", "/datasets", "/checkpoints"]);
        let ds = &storage.mounts[1];
        assert!(ds.mounted && !ds.read_only && ds.was_writable && !ds.unresponsive);
        assert_eq!(ds.fstype, "nfs4");
        assert_eq!(ds.source, "storage01:/export/datasets");
        // The fixture's directory answers statfs: a real size, a real latency.
        assert!(ds.total_bytes.is_some_and(|t| t > 0), "{ds:?}");
        assert!(ds.statfs_latency_ms.is_some(), "{ds:?}");
        assert_eq!(storage.mounts[2].fstype, "lustre");
        let n0 = &storage.nvme[0];
        assert!(n0.is_live());
        assert_eq!(n0.temperature_millicelsius, Some(36_850));
        assert_eq!(n0.temperature_crit_millicelsius, Some(84_850));
        assert_eq!(n0.temperature_alarm, Some(false));
    }

    #[test]
    fn configured_mounts_are_watched_mounted_or_not() {
        let mut roots = fixture_roots();
        roots.watch_mounts = vec!["/checkpoints/".into(), "/scratch".into()];
        let mut s = HostSample::default();
        Storage::new(&roots).sample(UnixMs(1), &mut s).unwrap();
        let m = &s.storage.unwrap().mounts;
        assert_eq!(m.len(), 2);
        assert!(m[0].mounted && m[0].mount_point == "/checkpoints");
        assert!(!m[1].mounted && m[1].mount_point == "/scratch");
        // Not mounted: no statfs of whatever lies underneath.
        assert_eq!((m[1].total_bytes, m[1].statfs_latency_ms), (None, None));
    }

    #[test]
    fn a_remount_read_only_was_writable_and_a_vanished_mount_stays_watched() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("proc/self");
        fs::create_dir_all(&proc_dir).unwrap();
        fs::create_dir_all(dir.path().join("root/datasets")).unwrap();
        let roots = HostRoots {
            sysfs: dir.path().join("sys"),
            procfs: dir.path().join("proc"),
            root: dir.path().join("root"),
            watch_mounts: Vec::new(),
            kmsg: "/nonexistent".into(),
        };
        let rw = "40 22 0:52 / /datasets rw - nfs4 s:/d rw\n";
        fs::write(proc_dir.join("mountinfo"), rw).unwrap();
        let mut st = Storage::new(&roots);
        let read = |st: &mut Storage| {
            let mut s = HostSample::default();
            st.sample(UnixMs(1), &mut s).unwrap();
            s.storage.unwrap()
        };
        let first = read(&mut st);
        // No NVMe here: none, and not an error.
        assert!(first.nvme.is_empty());
        // "/" is watched but not in this mountinfo.
        assert!(!first.mounts[0].mounted);
        // A sandbox that makes the agent's view read-only is not a remount.
        fs::write(proc_dir.join("mountinfo"), rw.replace(" rw - ", " ro - ")).unwrap();
        let m = read(&mut st).mounts[1].clone();
        assert!(!m.read_only && m.view_read_only && m.was_writable, "{m:?}");
        fs::write(
            proc_dir.join("mountinfo"),
            rw.replace(" s:/d rw", " s:/d ro"),
        )
        .unwrap();
        let m = read(&mut st).mounts[1].clone();
        assert!(m.read_only && m.was_writable, "{m:?}");
        fs::write(proc_dir.join("mountinfo"), "").unwrap();
        let m = read(&mut st).mounts[1].clone();
        assert_eq!(m.mount_point, "/datasets");
        assert!(!m.mounted);
    }

    #[test]
    fn inside_a_container_the_host_root_prefix_is_the_hosts_view() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        fs::create_dir_all(root.join("datasets")).unwrap();
        fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        fs::write(
            dir.path().join("proc/self/mountinfo"),
            format!(
                "40 22 0:52 / {}/datasets rw - nfs4 s:/d rw\n",
                root.display()
            ),
        )
        .unwrap();
        let roots = HostRoots {
            sysfs: dir.path().join("sys"),
            procfs: dir.path().join("proc"),
            root,
            watch_mounts: vec!["/datasets".into()],
            kmsg: "/nonexistent".into(),
        };
        let mut s = HostSample::default();
        Storage::new(&roots).sample(UnixMs(1), &mut s).unwrap();
        let m = &s.storage.unwrap().mounts[0];
        assert!(m.mounted && m.fstype == "nfs4", "{m:?}");
        assert!(m.total_bytes.is_some(), "{m:?}");
    }

    #[test]
    fn a_statfs_that_hangs_is_unresponsive_and_not_started_again() {
        let mut p = Prober::new("/".into());
        // A worker that never answers stands for a hung NFS mount.
        let (req_tx, _req_rx) = mpsc::channel::<()>();
        let (_res_tx, res_rx) = mpsc::channel::<Outcome>();
        p.tx = Some(req_tx);
        p.rx = Some(res_rx);
        let mut st = Storage::new(&fixture_roots()).with_timeout(Duration::from_millis(50));
        st.watch("/");
        st.watched[0].prober = p;
        // Keep the hung worker's ends alive for the test.
        let t = Instant::now();
        let mut s = HostSample::default();
        st.sample(UnixMs(1), &mut s).unwrap();
        let m = &s.storage.as_ref().unwrap().mounts[0];
        assert!(m.unresponsive && m.statfs_latency_ms.is_none(), "{m:?}");
        assert!(t.elapsed() >= Duration::from_millis(50));
        // The next sample does not wait at all: the statfs is still pending.
        let t = Instant::now();
        let mut s = HostSample::default();
        st.sample(UnixMs(2), &mut s).unwrap();
        assert!(s.storage.unwrap().mounts[0].unresponsive);
        assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
        drop(_req_rx);
        drop(_res_tx);
    }

    #[test]
    fn without_procfs_the_part_says_so_and_still_reads_nvme() {
        let dir = tempfile::tempdir().unwrap();
        let mut roots = fixture_roots();
        roots.procfs = dir.path().to_path_buf();
        let mut s = HostSample::default();
        let e = Storage::new(&roots).sample(UnixMs(1), &mut s).unwrap_err();
        assert!(
            e.contains("mountinfo") && e.contains("--procfs-root"),
            "{e}"
        );
        assert_eq!(s.storage.unwrap().nvme.len(), 2);
    }

    #[test]
    fn broken_nvme_files_are_absent_readings() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("class/nvme/nvme0");
        fs::create_dir_all(c.join("hwmon2")).unwrap();
        fs::write(c.join("state"), "dead\n").unwrap();
        fs::write(c.join("hwmon2/name"), "nvme\n").unwrap();
        fs::write(c.join("hwmon2/temp1_input"), "garbage").unwrap();
        fs::write(c.join("hwmon2/temp1_alarm"), "7").unwrap();
        fs::create_dir_all(dir.path().join("class/nvme/nvme-fabrics")).unwrap();
        let n = read_nvme("nvme0", &c);
        assert!(!n.is_live());
        assert_eq!(
            (n.temperature_millicelsius, n.temperature_alarm),
            (None, None)
        );
        let mut roots = fixture_roots();
        roots.sysfs = dir.path().to_path_buf();
        assert_eq!(
            Storage::new(&roots).controllers().len(),
            1,
            "nvme-fabrics is not a controller"
        );
    }
}
