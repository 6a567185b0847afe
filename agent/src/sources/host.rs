//! Host readings through `sysinfo` (CPU, load, RAM, swap, disks, NICs, kernel, uptime), plus
//! NIC drop counters from `/proc/net/dev`, which sysinfo does not expose.
//!
//! Reading is kept apart from parsing (`parse_proc_net_dev`) so parsers are tested on text.

use std::collections::HashMap;
use std::path::PathBuf;

use gpufleet_model::{DiskInfo, DiskSample, HostInfo, HostSample, NicInfo, NicSample, UnixMs};
use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System,
};

use super::{HostSource, SourceError};

/// Filesystems that say nothing about a GPU server's storage health.
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "autofs",
    "efivarfs",
    "ramfs",
    "fuse.lxcfs",
];

pub struct SysinfoHost {
    system: System,
    disks: Disks,
    networks: Networks,
    proc_root: PathBuf,
    last_net_read: Option<UnixMs>,
    parts: Vec<Box<dyn super::HostPart>>,
    /// Parts that failed at the last inventory read and at the last sample, and why (kept
    /// apart so a sample does not hide why the inventory could not be read).
    unavailable: Vec<(&'static str, String)>,
    unavailable_in_sample: Vec<(&'static str, String)>,
}

impl SysinfoHost {
    /// The host through sysinfo and `/proc`, plus every [`super::host_parts`] under `roots`.
    pub fn new(roots: &super::HostRoots) -> Result<Self, SourceError> {
        let err = |what: &str, e: sysinfo::Error| {
            SourceError::Other(format!("cannot read host {what} through sysinfo: {e:?}"))
        };
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(|e| err("CPU/memory", e))?;
        Ok(SysinfoHost {
            system,
            // The list only: no statvfs until `refresh_disks` (see there).
            disks: Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing())
                .map_err(|e| err("disks", e))?,
            networks: Networks::new_with_refreshed_list().map_err(|e| err("networks", e))?,
            proc_root: roots.procfs.clone(),
            last_net_read: None,
            parts: super::host_parts(roots),
            unavailable: Vec::new(),
            unavailable_in_sample: Vec::new(),
        })
    }

    /// The mounts list again, and the size and free space of the local filesystems only: a
    /// statvfs of a hung Lustre, GPFS or FUSE mount blocks in the kernel, so network
    /// filesystems are left to the storage part, which times its statfs out on a thread of
    /// its own (sysinfo itself leaves out NFS and CIFS, but not the others).
    fn refresh_disks(&mut self) {
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing());
        for d in self.disks.iter_mut() {
            if !super::storage::is_network_fs(&d.file_system().to_string_lossy()) {
                d.refresh_specifics(DiskRefreshKind::nothing().with_storage());
            }
        }
    }

    fn real_disks(&self) -> impl Iterator<Item = &sysinfo::Disk> {
        self.disks.iter().filter(|d| {
            let fs = d.file_system().to_string_lossy();
            !PSEUDO_FS.contains(&fs.as_ref())
                && !super::storage::is_network_fs(&fs)
                && d.total_space() > 0
        })
    }

    fn real_nics(&self) -> impl Iterator<Item = (String, &sysinfo::NetworkData)> {
        self.networks
            .iter()
            .map(|(name, n)| (name.to_string_lossy().into_owned(), n))
            .filter(|(name, _)| name != "lo")
    }
}

impl HostSource for SysinfoHost {
    fn info(&mut self, _now: UnixMs) -> HostInfo {
        self.system.refresh_cpu_all();
        self.refresh_disks();
        let cpus = self.system.cpus();
        let mut info = HostInfo {
            os_name: System::long_os_version().unwrap_or_default(),
            kernel_version: System::kernel_version().unwrap_or_default(),
            cpu_model: cpus
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default(),
            cpu_logical_cores: cpus.len() as u32,
            cpu_physical_cores: System::physical_core_count().ok().map(|n| n as u32),
            memory_total_bytes: self.system.total_memory(),
            swap_total_bytes: self.system.total_swap(),
            nics: self
                .real_nics()
                .map(|(name, n)| NicInfo {
                    name,
                    mac_address: n.mac_address().to_string(),
                    speed_mbps: n.receive_link_speed().map(|bps| bps / 1_000_000),
                    mtu: u32::try_from(n.mtu()).ok(),
                })
                .collect(),
            disks: self
                .real_disks()
                .map(|d| DiskInfo {
                    mount_point: d.mount_point().to_string_lossy().into_owned(),
                    device: d.name().to_string_lossy().into_owned(),
                    filesystem: d.file_system().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                })
                .collect(),
            uptime_seconds: System::uptime().unwrap_or_default(),
            ib_devices: Vec::new(),
            driver_stack: None,
            pcie_devices: Vec::new(),
            storage: None,
        };
        self.unavailable.clear();
        for part in &mut self.parts {
            if let Err(why) = part.info(&mut info) {
                self.unavailable.push((part.name(), why));
            }
        }
        info
    }

    fn events(&mut self, now: UnixMs) -> Vec<gpufleet_model::Event> {
        self.parts.iter_mut().flat_map(|p| p.events(now)).collect()
    }

    fn unavailable(&self) -> Vec<(&'static str, String)> {
        let mut out = self.unavailable.clone();
        for u in &self.unavailable_in_sample {
            if !out.iter().any(|o| o.0 == u.0) {
                out.push(u.clone());
            }
        }
        out
    }

    fn sample(&mut self, now: UnixMs) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.refresh_disks();
        self.networks.refresh(true);
        let elapsed_s = self
            .last_net_read
            .map(|t| now.since(t) as f64 / 1000.0)
            .filter(|s| *s > 0.0);
        self.last_net_read = Some(now);
        let drops = std::fs::read_to_string(self.proc_root.join("net/dev"))
            .map(|t| parse_proc_net_dev(&t))
            .unwrap_or_default();
        let load = System::load_average().ok();
        let per_second = |bytes: u64| match elapsed_s {
            Some(s) => (bytes as f64 / s) as u64,
            None => 0,
        };
        let mut sample = HostSample {
            cpu_percent: Some(self.system.global_cpu_usage()),
            cpu_per_core_percent: self.system.cpus().iter().map(|c| c.usage()).collect(),
            load_average_1m: load.as_ref().map(|l| l.one),
            load_average_5m: load.as_ref().map(|l| l.five),
            load_average_15m: load.as_ref().map(|l| l.fifteen),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            memory_available_bytes: self.system.available_memory(),
            swap_used_bytes: self.system.used_swap(),
            swap_total_bytes: self.system.total_swap(),
            disks: self
                .real_disks()
                .map(|d| DiskSample {
                    mount_point: d.mount_point().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                    available_bytes: d.available_space(),
                })
                .collect(),
            nics: self
                .real_nics()
                .map(|(name, n)| {
                    let d = drops.get(name.as_str());
                    NicSample {
                        name: name.clone(),
                        rx_bytes_per_second: per_second(n.received()),
                        tx_bytes_per_second: per_second(n.transmitted()),
                        rx_errors: Some(n.total_errors_on_received()),
                        tx_errors: Some(n.total_errors_on_transmitted()),
                        rx_dropped: d.map(|d| d.rx_dropped),
                        tx_dropped: d.map(|d| d.tx_dropped),
                        speed_mbps: n.receive_link_speed().map(|bps| bps / 1_000_000),
                    }
                })
                .collect(),
            uptime_seconds: System::uptime().unwrap_or_default(),
            ib_ports: Vec::new(),
            cpu_config: None,
            driver_daemons: None,
            storage: None,
            os: None,
            ethernet: Vec::new(),
            pcie_devices: Vec::new(),
        };
        self.unavailable_in_sample.clear();
        for part in &mut self.parts {
            if let Err(why) = part.sample(now, &mut sample) {
                self.unavailable_in_sample.push((part.name(), why));
            }
        }
        sample
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetDevDrops {
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev`: two header lines, then
/// `iface: rx_bytes rx_packets rx_errs rx_drop ... (8 rx fields) tx_bytes tx_packets tx_errs tx_drop ...`.
/// Malformed lines are skipped.
pub fn parse_proc_net_dev(text: &str) -> HashMap<String, NetDevDrops> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            if f.len() < 16 {
                return None;
            }
            Some((
                name.trim().to_string(),
                NetDevDrops {
                    rx_dropped: f[3],
                    tx_dropped: f[11],
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  \
eth0: 99999 500 2 7 0 0 0 0 88888 400 1 9 0 0 0 0\n \
bad: 1 2 3\n \
garbage line\n";
        let got = parse_proc_net_dev(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got["eth0"],
            NetDevDrops {
                rx_dropped: 7,
                tx_dropped: 9
            }
        );
        assert!(!got.contains_key("bad"));
    }

    #[test]
    fn local_disks_are_sized_without_a_statvfs_of_network_mounts() {
        let mut h = SysinfoHost::new(&Default::default()).unwrap();
        let s = h.sample(UnixMs(1));
        for d in &s.disks {
            assert!(
                d.total_bytes > 0 && d.available_bytes <= d.total_bytes,
                "{d:?}"
            );
        }
        // A root on a local block device (as on this and most hosts) is listed with its size.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = super::super::storage::parse_mountinfo(&mountinfo)
            .into_iter()
            .rfind(|m| m.mount_point == "/");
        if root.is_some_and(|r| {
            r.source.starts_with("/dev/") && !PSEUDO_FS.contains(&r.fstype.as_str())
        }) {
            assert!(
                s.disks.iter().any(|d| d.mount_point == "/"),
                "{:?}",
                s.disks
            );
        }
        assert!(
            h.real_disks()
                .all(|d| !super::super::storage::is_network_fs(&d.file_system().to_string_lossy()))
        );
    }

    #[test]
    fn reads_this_host() {
        let mut h = SysinfoHost::new(&Default::default()).expect("sysinfo works on Linux");
        let info = h.info(UnixMs(1));
        assert!(info.cpu_logical_cores > 0);
        assert!(info.memory_total_bytes > 0);
        assert!(!info.kernel_version.is_empty());
        let s = h.sample(UnixMs(1_000));
        assert!(s.memory_total_bytes > 0);
        assert!(s.cpu_per_core_percent.len() as u32 == info.cpu_logical_cores);
    }
}
