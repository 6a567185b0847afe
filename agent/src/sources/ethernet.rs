//! Physical Ethernet ports from sysfs (`SYSFS/class/net`), as the kernel's
//! `Documentation/ABI/testing/sysfs-class-net` documents them and node_exporter's netclass
//! collector reads them:
//!
//! ```text
//! class/net/eth2 -> ../../devices/pci0000:20/0000:20:01.0/0000:2a:00.0/net/eth2
//! class/net/eth2/type              1                  (ARPHRD_ETHER; IPoIB is 32)
//! class/net/eth2/device -> ../../../0000:2a:00.0      (absent on virtual interfaces)
//! class/net/eth2/operstate         up | down | lowerlayerdown | dormant | unknown
//! class/net/eth2/speed             100000             (Mb/s; EINVAL or -1 while down)
//! class/net/eth2/duplex            full | half | unknown
//! class/net/eth2/carrier_changes   4
//! class/net/eth2/mtu               9000
//! ```
//!
//! sysinfo gives bytes and errors per interface; this part adds what says whether the link
//! itself is healthy. Virtual interfaces (bridges, veths, bonds, VLANs: no `device` link),
//! loopback and IPoIB are left out — the InfiniBand part covers the HCAs. Each file fails
//! alone: a speed that cannot be read is absent.

use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{EthernetPort, HostInfo, HostSample, UnixMs};

use super::HostPart;

/// `ARPHRD_ETHER` in `include/uapi/linux/if_arp.h`.
const ARPHRD_ETHER: u32 = 1;

pub struct Ethernet {
    class: PathBuf,
}

impl Ethernet {
    pub fn new(sysfs_root: &Path) -> Self {
        Ethernet {
            class: sysfs_root.join("class/net"),
        }
    }

    fn ports(&self) -> Result<Vec<EthernetPort>, String> {
        let entries = fs::read_dir(&self.class)
            .map_err(|e| format!("cannot list {}: {e}", self.class.display()))?;
        let mut out: Vec<EthernetPort> = entries
            .flatten()
            .filter_map(|e| read_port(&e.path(), e.file_name().to_str()?))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if out.is_empty() {
            return Err(format!(
                "no physical Ethernet port in {} (only virtual or InfiniBand interfaces)",
                self.class.display()
            ));
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// One interface, or `None` when it is not a physical Ethernet port.
fn read_port(dir: &Path, name: &str) -> Option<EthernetPort> {
    if name == "lo" {
        return None;
    }
    let kind: u32 = read(&dir.join("type"))?.parse().ok()?;
    let device = fs::read_link(dir.join("device")).ok()?;
    if kind != ARPHRD_ETHER {
        return None;
    }
    Some(EthernetPort {
        name: name.to_string(),
        operstate: read(&dir.join("operstate")).unwrap_or_default(),
        speed_mbps: read(&dir.join("speed")).and_then(|s| parse_speed(&s)),
        duplex: read(&dir.join("duplex"))
            .filter(|d| d == "full" || d == "half")
            .unwrap_or_default(),
        carrier_changes: read(&dir.join("carrier_changes")).and_then(|s| s.parse().ok()),
        pci_address: device
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string(),
        mtu: read(&dir.join("mtu")).and_then(|s| s.parse().ok()),
    })
}

/// `speed` in Mb/s; drivers write -1 (or `SPEED_UNKNOWN`, u32::MAX) when no link is up.
pub fn parse_speed(s: &str) -> Option<u64> {
    let v: i64 = s.trim().parse().ok()?;
    (v > 0 && v < u32::MAX as i64).then_some(v as u64)
}

impl HostPart for Ethernet {
    fn name(&self) -> &'static str {
        "ethernet"
    }

    fn info(&mut self, _info: &mut HostInfo) -> Result<(), String> {
        Ok(())
    }

    fn sample(&mut self, _now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        sample.ethernet = self.ports()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(root: &Path, name: &str, kind: u32, pci: Option<&str>, files: &[(&str, &str)]) {
        let real = root
            .join("devices")
            .join(pci.unwrap_or("virtual"))
            .join("net")
            .join(name);
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("type"), format!("{kind}\n")).unwrap();
        for (f, v) in files {
            fs::write(real.join(f), format!("{v}\n")).unwrap();
        }
        if let Some(pci) = pci {
            std::os::unix::fs::symlink(format!("../../../{pci}"), real.join("device")).unwrap();
        }
        fs::create_dir_all(root.join("class/net")).unwrap();
        std::os::unix::fs::symlink(&real, root.join("class/net").join(name)).unwrap();
    }

    #[test]
    fn reads_physical_ports_and_skips_virtual_loopback_and_ipoib() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        iface(
            root,
            "eth0",
            1,
            Some("0000:2a:00.0"),
            &[
                ("operstate", "up"),
                ("speed", "100000"),
                ("duplex", "full"),
                ("carrier_changes", "2"),
                ("mtu", "9000"),
            ],
        );
        iface(
            root,
            "eth1",
            1,
            Some("0000:2a:00.1"),
            &[
                ("operstate", "down"),
                ("speed", "-1"),
                ("duplex", "unknown"),
            ],
        );
        iface(root, "docker0", 1, None, &[("operstate", "up")]);
        iface(root, "lo", 772, None, &[("operstate", "unknown")]);
        iface(
            root,
            "ibp24s0",
            32,
            Some("0000:18:00.0"),
            &[("operstate", "up")],
        );
        let mut e = Ethernet::new(root);
        let mut s = HostSample::default();
        e.sample(UnixMs(1), &mut s).unwrap();
        assert_eq!(
            s.ethernet,
            vec![
                EthernetPort {
                    name: "eth0".into(),
                    operstate: "up".into(),
                    speed_mbps: Some(100_000),
                    duplex: "full".into(),
                    carrier_changes: Some(2),
                    pci_address: "0000:2a:00.0".into(),
                    mtu: Some(9000),
                },
                EthernetPort {
                    name: "eth1".into(),
                    operstate: "down".into(),
                    pci_address: "0000:2a:00.1".into(),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn speeds_and_absence() {
        assert_eq!(parse_speed("25000"), Some(25_000));
        for bad in ["-1", "0", "4294967295", "fast", ""] {
            assert_eq!(parse_speed(bad), None, "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = Ethernet::new(dir.path()).ports().unwrap_err();
        assert!(err.contains("class/net"), "{err}");
    }
}
