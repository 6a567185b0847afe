//! The NVIDIA driver stack beyond NVML: which kernel modules are loaded and at which version,
//! which user-space libraries the loader finds, whether the driver's daemons run, and Fabric
//! Manager on NVSwitch systems. Real layouts, each read under its root:
//!
//! ```text
//! PROC/modules                      nvidia_uvm 1753088 0 - Live 0x0000000000000000
//!                                   (name size refcount deps state offset)
//! PROC/driver/nvidia/version        NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 …
//! PROC/PID/comm                     nvidia-persistenced, nv-fabricmanager
//! SYS/module/nvidia_uvm/version     550.54.15
//! SYS/bus/pci/devices/*/vendor      0x10de  (with class 0x068000: an NVSwitch)
//! ROOT/usr/lib/x86_64-linux-gnu/libcuda.so.1 -> libcuda.so.550.54.15   (also lib64, aarch64)
//! ROOT/var/lib/dpkg/status          Package: nvidia-fabricmanager-550 … Version: 550.54.15-1
//! ```
//!
//! Read-only, and every file fails alone: a module without a `version` file has version `""`,
//! a library that is not installed reads `""`. The part as a whole is unavailable only when
//! `/proc/modules` cannot be read (no procfs, or not Linux), which `probe` shows. Comparing the
//! versions is diagnosis's job (`driver.*` rules), not the agent's.

use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{
    DriverDaemons, DriverStackInfo, HostInfo, HostSample, KernelModuleInfo, UnixMs,
};

use super::{HostPart, HostRoots};

/// Library directories searched in order, relative to the host root: Debian/Ubuntu x86_64 and
/// arm64, then RHEL-style.
pub const LIBRARY_DIRS: &[&str] = &[
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib64",
    "usr/lib",
];

/// Process names (`comm`, at most 15 characters) of the driver's daemons.
pub const PERSISTENCED: &str = "nvidia-persistenced";
pub const FABRICMANAGER: &str = "nv-fabricmanager";

pub struct DriverStack {
    roots: HostRoots,
    /// The daemons' PIDs found by the last full scan of the process list: while the ones this
    /// node needs still carry their names, a sample reads one or two `comm` files instead of
    /// every process's.
    pids: (Option<String>, Option<String>),
    /// NVSwitches at the last inventory read: without them Fabric Manager is not needed.
    nvswitches: u32,
}

impl DriverStack {
    pub fn new(roots: &HostRoots) -> Self {
        DriverStack {
            roots: roots.clone(),
            pids: (None, None),
            nvswitches: 0,
        }
    }

    /// The daemons the node needs still run under the PIDs the last scan found: what they
    /// read, or `None` when the process list must be scanned again.
    fn still_running(&self) -> Option<DriverDaemons> {
        let comm = |pid: &Option<String>, name: &str| {
            pid.as_ref().is_some_and(|p| {
                read(&self.roots.procfs.join(p).join("comm")).as_deref() == Some(name)
            })
        };
        let persistenced = comm(&self.pids.0, PERSISTENCED);
        let fabricmanager = comm(&self.pids.1, FABRICMANAGER);
        (persistenced && (fabricmanager || self.nvswitches == 0)).then_some(DriverDaemons {
            persistenced,
            fabricmanager,
        })
    }

    fn proc_modules(&self) -> Result<String, String> {
        let path = self.roots.procfs.join("modules");
        fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {} ({e}): kernel modules unknown (is procfs mounted? use --procfs-root)",
                path.display()
            )
        })
    }
}

impl HostPart for DriverStack {
    fn name(&self) -> &'static str {
        "driver-stack"
    }

    fn info(&mut self, info: &mut HostInfo) -> Result<(), String> {
        let modules = parse_proc_modules(&self.proc_modules()?)
            .into_iter()
            .filter(|(name, _)| is_nvidia_module(name))
            .map(|(name, state)| KernelModuleInfo {
                version: read(&self.roots.sysfs.join("module").join(&name).join("version"))
                    .unwrap_or_default(),
                name,
                state,
            })
            .collect();
        let root = &self.roots.root;
        info.driver_stack = Some(DriverStackInfo {
            modules,
            kernel_driver_version: read(&self.roots.procfs.join("driver/nvidia/version"))
                .and_then(|t| parse_nvrm_version(&t))
                .unwrap_or_default(),
            libcuda_version: library_version(root, "libcuda.so").unwrap_or_default(),
            libnvidia_ml_version: library_version(root, "libnvidia-ml.so").unwrap_or_default(),
            fabricmanager_version: fs::read_to_string(root.join("var/lib/dpkg/status"))
                .ok()
                .and_then(|t| parse_dpkg_version(&t, "nvidia-fabricmanager"))
                .unwrap_or_default(),
            nvswitch_count: nvswitch_count(&self.roots.sysfs),
        });
        self.nvswitches = info.driver_stack.as_ref().map_or(0, |d| d.nvswitch_count);
        Ok(())
    }

    fn sample(&mut self, _now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        let dir = &self.roots.procfs;
        // In a PID namespace of its own (a container without hostPID) the agent sees only its
        // container's processes: the host's daemons would all read "not running".
        if let Some(ns) = fs::read_to_string(dir.join("self/status"))
            .ok()
            .and_then(|t| nested_pid_namespace(&t))
        {
            return Err(format!(
                "the agent runs in its own PID namespace ({ns}): the host's daemons are not visible (run the container with hostPID)"
            ));
        }
        if let Some(d) = self.still_running() {
            sample.driver_daemons = Some(d);
            return Ok(());
        }
        let entries = fs::read_dir(dir).map_err(|e| {
            format!(
                "cannot list processes in {} ({e}): driver daemons unknown",
                dir.display()
            )
        })?;
        let (mut persistenced, mut fabricmanager) = (None, None);
        for e in entries.flatten() {
            let Some(pid) = e
                .file_name()
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
            else {
                continue;
            };
            // A process that exits between listing and reading is simply not there.
            match read(&e.path().join("comm")).as_deref() {
                Some(PERSISTENCED) => persistenced = Some(pid),
                Some(FABRICMANAGER) => fabricmanager = Some(pid),
                _ => {}
            }
        }
        sample.driver_daemons = Some(DriverDaemons {
            persistenced: persistenced.is_some(),
            fabricmanager: fabricmanager.is_some(),
        });
        self.pids = (persistenced, fabricmanager);
        Ok(())
    }
}

/// `NSpid:\t4321\t17` in `/proc/self/status` (more than one id: a nested PID namespace) →
/// a description; `NSpid:\t4321` (the host's namespace) → `None`.
pub fn nested_pid_namespace(status: &str) -> Option<String> {
    let ids: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .collect();
    (ids.len() > 1).then(|| format!("NSpid {}", ids.join(" ")))
}

/// `nvidia`, `nvidia_uvm`, `nvidia_modeset`, `nvidia_drm`, `nvidia_peermem`, and Mellanox's
/// legacy `nv_peer_mem` (GPUDirect RDMA before `nvidia_peermem`).
pub fn is_nvidia_module(name: &str) -> bool {
    name == "nvidia" || name.starts_with("nvidia_") || name == "nv_peer_mem"
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `/proc/modules`: `name size refcount deps state offset` per line → `(name, state)`, sorted
/// by name. Lines with fewer fields are skipped.
pub fn parse_proc_modules(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[0].to_string(), f[4].to_string()))
        })
        .collect();
    out.sort();
    out
}

/// `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024`
/// (also `NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build …`) → the
/// first token after "Module" that looks like a driver version.
pub fn parse_nvrm_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|t| looks_like_version(t))
        .map(str::to_string)
}

/// `550.54.15`, `535.104.05`, `570.86.10`: digits and dots, at least one dot.
fn looks_like_version(s: &str) -> bool {
    s.contains('.')
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The version of the library `stem` (`libcuda.so`) the dynamic loader would pick: the file
/// `stem.1` resolves to (`libcuda.so.1 -> libcuda.so.550.54.15`), else the only versioned
/// file in the first library directory that has one.
pub fn library_version(root: &Path, stem: &str) -> Option<String> {
    for dir in LIBRARY_DIRS.iter().map(|d| root.join(d)) {
        if let Ok(target) = fs::read_link(dir.join(format!("{stem}.1"))) {
            let name = target.file_name()?.to_str()?.to_string();
            if let Some(v) = version_suffix(&name, stem) {
                return Some(v);
            }
        }
        let mut found: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| version_suffix(e.file_name().to_str()?, stem))
            .collect();
        found.sort();
        found.dedup();
        if found.len() == 1 {
            return found.pop();
        }
    }
    None
}

/// `libcuda.so.550.54.15` → `550.54.15`; `libcuda.so.1` (the soname) is not a version.
fn version_suffix(file: &str, stem: &str) -> Option<String> {
    let v = file.strip_prefix(stem)?.strip_prefix('.')?;
    looks_like_version(v).then(|| v.to_string())
}

/// The version of the installed package whose name starts with `prefix` in a dpkg status
/// file (`nvidia-fabricmanager-550` … `Version: 550.54.15-1` → `550.54.15`). Packages marked
/// anything but `install ok installed` are ignored.
pub fn parse_dpkg_version(text: &str, prefix: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':').map(str::trim))
        };
        let package = field("Package")?;
        if !package.starts_with(prefix) || field("Status") != Some("install ok installed") {
            return None;
        }
        let v = field("Version")?;
        // Debian revision (`-1`) and epoch (`1:`) are the packager's, not NVIDIA's.
        let v = v.rsplit_once(':').map_or(v, |(_, v)| v);
        let v = v.split_once('-').map_or(v, |(v, _)| v);
        Some(v.to_string())
    })
}

/// NVSwitches on the PCI bus: NVIDIA devices (vendor `0x10de`) of class bridge/other
/// (`0x0680xx`), as `lspci` shows them on HGX and DGX boards.
pub fn nvswitch_count(sysfs_root: &Path) -> u32 {
    let dir: PathBuf = sysfs_root.join("bus/pci/devices");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let p = e.path();
            read(&p.join("vendor")).as_deref() == Some("0x10de")
                && read(&p.join("class")).is_some_and(|c| c.starts_with("0x0680"))
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> HostRoots {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        HostRoots {
            sysfs: base.join("sysfs/hgx-h100-8x-ndr"),
            procfs: base.join("procfs/hgx-h100"),
            root: base.join("rootfs/hgx-h100"),
            watch_mounts: Vec::new(),
            kmsg: "/nonexistent".into(),
        }
    }

    #[test]
    fn parsers_read_the_kernels_formats() {
        let modules = "nvidia_uvm 1753088 4 - Live 0x0000000000000000 (POE)\n\
            nvidia_peermem 16384 0 - Live 0x0000000000000000 (POE)\n\
            ib_core 397312 9 nvidia_peermem,rdma_cm, Live 0x0000000000000000\n\
            nvidia 8617984 142 nvidia_uvm,nvidia_peermem,nvidia_modeset, Live 0x0000000000000000 (POE)\n\
            short line\n";
        let got = parse_proc_modules(modules);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ib_core", "nvidia", "nvidia_peermem", "nvidia_uvm"]);
        assert!(got.iter().all(|(_, s)| s == "Live"));

        for (name, want) in [
            ("nvidia", true),
            ("nvidia_uvm", true),
            ("nvidia_peermem", true),
            ("nv_peer_mem", true),
            ("nvidiafb", false),
            ("nvme", false),
            ("ib_core", false),
        ] {
            assert_eq!(is_nvidia_module(name), want, "{name}");
        }

        for (text, want) in [
            (
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n\
                 GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n",
                Some("550.54.15"),
            ),
            (
                "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16-T02-35-3)  Sat Aug 19 01:13:50 UTC 2023\n",
                Some("535.104.05"),
            ),
            ("GCC version: 12.3.0\n", None),
            ("NVRM version: garbage\n", None),
            ("", None),
        ] {
            assert_eq!(parse_nvrm_version(text).as_deref(), want, "{text}");
        }

        for (file, want) in [
            ("libcuda.so.550.54.15", Some("550.54.15")),
            ("libcuda.so.1", None),
            ("libcuda.so", None),
            ("libcudart.so.12.4.99", None),
            ("libcuda.so.550.x", None),
        ] {
            assert_eq!(
                version_suffix(file, "libcuda.so").as_deref(),
                want,
                "{file}"
            );
        }

        let dpkg = "Package: nvidia-fabricmanager-535\nStatus: deinstall ok config-files\nVersion: 535.104.05-1\n\n\
            Package: nvidia-fabricmanager-550\nStatus: install ok installed\nPriority: optional\nVersion: 550.54.15-1\n\n\
            Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.11.dfsg-2ubuntu9.2\n";
        assert_eq!(
            parse_dpkg_version(dpkg, "nvidia-fabricmanager").as_deref(),
            Some("550.54.15")
        );
        assert_eq!(
            parse_dpkg_version(dpkg, "zlib1g").as_deref(),
            Some("1.2.11.dfsg")
        );
        assert_eq!(parse_dpkg_version(dpkg, "cuda-drivers"), None);

        for (status, nested) in [
            ("Name:\tgpufleet-agent\nNSpid:\t4321\n", false),
            ("Name:\tgpufleet-agent\nNSpid:\t4321\t17\n", true),
            ("Name:\told-kernel\n", false),
        ] {
            assert_eq!(nested_pid_namespace(status).is_some(), nested, "{status}");
        }
    }

    #[test]
    fn reads_an_hgx_node() {
        let mut part = DriverStack::new(&fixture());
        let mut info = HostInfo::default();
        part.info(&mut info).unwrap();
        let d = info.driver_stack.unwrap();
        let modules: Vec<(&str, &str)> = d
            .modules
            .iter()
            .map(|m| (m.name.as_str(), m.version.as_str()))
            .collect();
        assert_eq!(
            modules,
            [
                ("nvidia", "550.54.15"),
                ("nvidia_drm", "550.54.15"),
                ("nvidia_modeset", "550.54.15"),
                ("nvidia_peermem", "550.54.15"),
                ("nvidia_uvm", "550.54.15"),
            ]
        );
        assert_eq!(d.kernel_driver_version, "550.54.15");
        assert_eq!(d.kernel_version(), "550.54.15");
        assert_eq!(d.libcuda_version, "550.54.15");
        assert_eq!(d.libnvidia_ml_version, "550.54.15");
        assert_eq!(d.fabricmanager_version, "550.54.15");
        assert_eq!(d.nvswitch_count, 4);

        let mut s = HostSample::default();
        part.sample(UnixMs(1), &mut s).unwrap();
        assert_eq!(
            s.driver_daemons,
            Some(DriverDaemons {
                persistenced: true,
                fabricmanager: true
            })
        );
    }

    #[test]
    fn a_daemon_that_stops_or_changes_pid_is_seen_at_the_next_sample() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots {
            procfs: dir.path().to_path_buf(),
            ..fixture()
        };
        let comm = |pid: &str, name: &str| {
            fs::create_dir_all(dir.path().join(pid)).unwrap();
            fs::write(dir.path().join(pid).join("comm"), format!("{name}\n")).unwrap();
        };
        comm("1", "systemd");
        comm("2231", PERSISTENCED);
        comm("2290", FABRICMANAGER);
        fs::write(dir.path().join("modules"), "nvidia 1 0 - Live 0x0\n").unwrap();
        let mut part = DriverStack::new(&roots);
        // The fixture's sysfs has four NVSwitches: Fabric Manager is watched too.
        part.info(&mut HostInfo::default()).unwrap();
        let mut read = || {
            let mut s = HostSample::default();
            part.sample(UnixMs(1), &mut s).unwrap();
            let d = s.driver_daemons.unwrap();
            (d.persistenced, d.fabricmanager)
        };
        assert_eq!(read(), (true, true));
        assert_eq!(read(), (true, true));
        fs::remove_dir_all(dir.path().join("2290")).unwrap();
        assert_eq!(read(), (true, false));
        // Restarted under another PID; its old PID reused by something else.
        comm("2290", "python3");
        comm("4410", FABRICMANAGER);
        assert_eq!(read(), (true, true));
        fs::write(dir.path().join("2231/comm"), "bash\n").unwrap();
        assert_eq!(read(), (false, true));
    }

    #[test]
    fn a_machine_without_procfs_says_so_and_missing_files_read_empty() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots {
            sysfs: dir.path().join("sys"),
            procfs: dir.path().join("proc"),
            root: dir.path().to_path_buf(),
            watch_mounts: Vec::new(),
            kmsg: dir.path().join("kmsg"),
        };
        let mut part = DriverStack::new(&roots);
        let e = part.info(&mut HostInfo::default()).unwrap_err();
        assert!(e.contains("modules") && e.contains("--procfs-root"), "{e}");
        assert!(part.sample(UnixMs(1), &mut HostSample::default()).is_err());

        // Modules listed but nothing else readable: versions are empty, not an error.
        fs::create_dir_all(&roots.procfs).unwrap();
        fs::write(roots.procfs.join("modules"), "nvidia 1 0 - Live 0x0\n").unwrap();
        let mut info = HostInfo::default();
        part.info(&mut info).unwrap();
        let d = info.driver_stack.unwrap();
        assert_eq!(d.modules.len(), 1);
        assert_eq!(d.modules[0].version, "");
        assert_eq!((d.libcuda_version.as_str(), d.nvswitch_count), ("", 0));
        let mut s = HostSample::default();
        part.sample(UnixMs(1), &mut s).unwrap();
        assert_eq!(s.driver_daemons, Some(DriverDaemons::default()));
    }
}
