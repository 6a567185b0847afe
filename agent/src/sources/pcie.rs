//! The PCIe devices that matter to GPU work and the bridges above them, from sysfs
//! (`SYSFS/bus/pci/devices`, Documentation/ABI/testing/sysfs-bus-pci):
//!
//! ```text
//! bus/pci/devices/0000:1a:00.0 -> ../../../devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:01.0/0000:1a:00.0
//!   vendor 0x10de   class 0x030200   numa_node 0
//!   current_link_speed 32.0 GT/s PCIe   current_link_width 16   (max_link_* beside them)
//!   aer_dev_correctable   "Receiver Error 2" … "TOTAL_ERR_COR 2"   (sysfs-bus-pci-devices-aer)
//!   aer_dev_nonfatal      … "TOTAL_ERR_NONFATAL 0"
//!   aer_dev_fatal         … "TOTAL_ERR_FATAL 0"
//!   config                the config space: 4096 bytes read as root, 64 otherwise
//! ```
//!
//! Devices: NVIDIA GPUs and NVSwitches (vendor 0x10de, class 0x0302/0x0300/0x0680), Mellanox /
//! NVIDIA NICs (vendor 0x15b3, class 0x0207/0x0200), NVMe drives (class 0x0108), and every
//! bridge on their canonical sysfs paths (root ports and PCIe switch ports).
//!
//! ACS: a bridge's ACS extended capability (id 0x000D) is found by walking the extended
//! capability list from 0x100 of `config` (each header: id 16 bits, version 4, next offset 12);
//! its ACS Control register is at +6. With P2P Request or Completion Redirect set on a switch
//! port between two GPUs or NICs, peer-to-peer traffic (GPUDirect P2P and RDMA) is sent up to
//! the root complex instead of across the switch: NVIDIA's NCCL troubleshooting guide,
//! "PCI Access Control Services (ACS)"
//! (<https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html#pci-access-control-services-acs>),
//! says it causes "a significant performance reduction or even a hang" and that ACS on PCI
//! switches must be disabled (BIOS, or `setpci -s BDF ECAP_ACS+0x6.w=0000` after each boot).
//! The space past 64 bytes is readable only by root: a shorter file is ACS *unknown*, never
//! "off".
//!
//! Read-only, and every file fails alone: a missing counter is `None`. The device list and
//! ACS are inventory (read at the inventory interval); links and AER counters are read at the
//! slow cadence and repeated in between (some hundred files on an HGX node).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{
    Acs, HostInfo, HostSample, PcieDeviceInfo, PcieDeviceKind, PcieDeviceSample, UnixMs,
};

use super::HostPart;

pub struct Pcie {
    devices: PathBuf,
    /// The last reading and when it was taken ([`super::cadence::DEFAULT_SLOW_INTERVAL`]).
    last: Option<(UnixMs, Result<Vec<PcieDeviceSample>, String>)>,
}

impl Pcie {
    /// Reads `sysfs_root/bus/pci/devices` (`/sys` on a real host, a fixture tree in tests).
    pub fn new(sysfs_root: &Path) -> Self {
        Pcie {
            devices: sysfs_root.join("bus/pci/devices"),
            last: None,
        }
    }

    /// Every device on the bus: its address and its directory.
    fn all(&self) -> Result<Vec<(String, PathBuf)>, String> {
        let entries = fs::read_dir(&self.devices).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "no {} (no PCI bus visible: a container without /sys, or a VM without devices passed through)",
                    self.devices.display()
                )
            } else {
                format!("cannot list {}: {e}", self.devices.display())
            }
        })?;
        let mut out: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The devices that matter, then the bridges above them, each with its directory.
    fn interesting(&self) -> Result<Vec<(PcieDeviceInfo, PathBuf)>, String> {
        let mut ends = Vec::new();
        let mut bridges = BTreeSet::new();
        for (bdf, dir) in self.all()? {
            let vendor = hex(&dir.join("vendor"));
            let class = hex(&dir.join("class"));
            let Some(kind) = kind_of(vendor, class) else {
                continue;
            };
            let upstream = upstream(&dir, &bdf);
            bridges.extend(upstream.iter().cloned());
            ends.push((bdf, dir, kind, upstream));
        }
        let mut out: Vec<(PcieDeviceInfo, PathBuf)> = ends
            .into_iter()
            .map(|(bdf, dir, kind, upstream)| (describe(bdf, &dir, kind, upstream), dir))
            .collect();
        for bdf in bridges {
            let dir = self.devices.join(&bdf);
            let upstream = upstream(&dir, &bdf);
            let mut info = describe(bdf, &dir, PcieDeviceKind::Bridge, upstream);
            info.acs = acs(&dir.join("config"));
            out.push((info, dir));
        }
        Ok(out)
    }

    fn read_sample(&self) -> Result<Vec<PcieDeviceSample>, String> {
        Ok(self
            .interesting()?
            .into_iter()
            .map(|(info, dir)| read_device(info.bdf, &dir))
            .collect())
    }
}

impl HostPart for Pcie {
    fn name(&self) -> &'static str {
        "pcie"
    }

    fn info(&mut self, info: &mut HostInfo) -> Result<(), String> {
        info.pcie_devices = self.interesting()?.into_iter().map(|(d, _)| d).collect();
        Ok(())
    }

    fn sample(&mut self, now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        let reread = super::cadence::DEFAULT_SLOW_INTERVAL.as_millis() as i64;
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| (0..reread).contains(&(now.0 - at.0)));
        if !fresh {
            self.last = Some((now, self.read_sample()));
        }
        let (_, reading) = self.last.as_ref().expect("just read");
        sample.pcie_devices = reading.clone()?;
        Ok(())
    }
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `0x10de` → 0x10de.
fn hex(path: &Path) -> Option<u32> {
    let s = read(path)?;
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(&s), 16).ok()
}

/// Which devices matter, by vendor and class (class is 24 bits: base, sub, programming
/// interface).
pub fn kind_of(vendor: Option<u32>, class: Option<u32>) -> Option<PcieDeviceKind> {
    let class = class? >> 8;
    match (vendor, class) {
        (Some(0x10de), 0x0302 | 0x0300) => Some(PcieDeviceKind::Gpu),
        (Some(0x10de), 0x0680) => Some(PcieDeviceKind::NvSwitch),
        (Some(0x15b3), 0x0207 | 0x0200) => Some(PcieDeviceKind::Nic),
        (_, 0x0108) => Some(PcieDeviceKind::Nvme),
        _ => None,
    }
}

/// `0000:1a:00.0`-shaped: domain:bus:device.function in hex.
pub fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The bridges above a device, root port first: the BDF-named components of its canonical
/// path (`devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:01.0/0000:1a:00.0`).
fn upstream(dir: &Path, bdf: &str) -> Vec<String> {
    let Ok(real) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = real
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .skip_while(|c| !c.starts_with("pci"))
        .filter(|c| is_bdf(c))
        .map(str::to_string)
        .collect();
    if out.last().map(String::as_str) == Some(bdf) {
        out.pop();
    }
    out
}

fn describe(
    bdf: String,
    dir: &Path,
    kind: PcieDeviceKind,
    upstream: Vec<String>,
) -> PcieDeviceInfo {
    PcieDeviceInfo {
        kind,
        vendor_id: hex(&dir.join("vendor")).unwrap_or_default(),
        device_id: hex(&dir.join("device")).unwrap_or_default(),
        class_code: hex(&dir.join("class")).unwrap_or_default(),
        name: kernel_name(dir),
        // -1 is how the kernel says "no NUMA information".
        numa_node: read(&dir.join("numa_node"))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| *n >= 0),
        max_link_speed_mts: read(&dir.join("max_link_speed")).and_then(|s| parse_speed_mts(&s)),
        max_link_width: read(&dir.join("max_link_width")).and_then(|s| parse_width(&s)),
        upstream,
        acs: Acs::Unknown,
        bdf,
    }
}

/// The name the kernel gives the device's function: `infiniband/mlx5_0`, else `net/ibp24s0`,
/// else `nvme/nvme0`.
fn kernel_name(dir: &Path) -> String {
    for sub in ["infiniband", "net", "nvme"] {
        let mut names: Vec<String> = fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return n;
        }
    }
    String::new()
}

/// `32.0 GT/s PCIe` (kernels since 5.x), `8 GT/s` (older), `2.5 GT/s` → MT/s; `Unknown` →
/// `None`.
pub fn parse_speed_mts(s: &str) -> Option<u32> {
    let num = s.trim().split_once(" GT/s")?.0;
    let gts: f64 = num.trim().parse().ok()?;
    (gts.is_finite() && gts > 0.0 && gts <= 1000.0).then(|| (gts * 1000.0).round() as u32)
}

/// `16` (or `x16`) → 16; 0 is a link that is down, not a width.
pub fn parse_width(s: &str) -> Option<u32> {
    let s = s.trim();
    s.strip_prefix('x')
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|w| *w > 0)
}

/// The `TOTAL_ERR_*` line of an `aer_dev_*` file; without one (an older layout), the sum of
/// the per-error lines.
pub fn parse_aer(text: &str, total: &str) -> Option<u64> {
    let mut sum: Option<u64> = None;
    for line in text.lines() {
        let Some((name, count)) = line.trim().rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        if name.trim() == total {
            return Some(count);
        }
        sum = Some(sum.unwrap_or(0).saturating_add(count));
    }
    sum
}

/// The ACS Control register from a config-space dump: [`Acs::Unknown`] when the extended
/// space (offsets 0x100..0x1000) was not readable.
pub fn parse_acs(config: &[u8]) -> Acs {
    const ACS_ID: u32 = 0x000d;
    if config.len() < 4096 {
        return Acs::Unknown;
    }
    let dword = |at: usize| {
        config
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0x100usize;
    // A damaged list may loop: there is room for at most (4096 - 256) / 4 capabilities.
    for _ in 0..960 {
        let Some(header) = dword(at) else {
            return Acs::Unknown;
        };
        // All ones: the device is gone; all zeroes: no extended capabilities.
        if header == 0xffff_ffff {
            return Acs::Unknown;
        }
        if header == 0 {
            return Acs::NotCapable;
        }
        if header & 0xffff == ACS_ID {
            return match config.get(at + 6..at + 8) {
                Some(b) => Acs::Control(u16::from_le_bytes([b[0], b[1]])),
                None => Acs::Unknown,
            };
        }
        let next = (header >> 20) as usize & 0xffc;
        if next < 0x100 {
            return Acs::NotCapable;
        }
        at = next;
    }
    Acs::Unknown
}

fn acs(config: &Path) -> Acs {
    fs::read(config).map_or(Acs::Unknown, |b| parse_acs(&b))
}

fn read_device(bdf: String, dir: &Path) -> PcieDeviceSample {
    let aer = |file: &str, total: &str| {
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| parse_aer(&t, total))
    };
    PcieDeviceSample {
        link_speed_mts: read(&dir.join("current_link_speed")).and_then(|s| parse_speed_mts(&s)),
        link_width: read(&dir.join("current_link_width")).and_then(|s| parse_width(&s)),
        aer_correctable: aer("aer_dev_correctable", "TOTAL_ERR_COR"),
        aer_nonfatal: aer("aer_dev_nonfatal", "TOTAL_ERR_NONFATAL"),
        aer_fatal: aer("aer_dev_fatal", "TOTAL_ERR_FATAL"),
        bdf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sysfs/hgx-h100-8x-ndr")
    }

    #[test]
    fn link_speeds_widths_and_aer_files_parse_as_the_kernel_writes_them() {
        for (text, want) in [
            ("32.0 GT/s PCIe", Some(32_000)),
            ("16.0 GT/s PCIe", Some(16_000)),
            ("2.5 GT/s PCIe", Some(2_500)),
            ("8 GT/s", Some(8_000)),
            ("5.0 GT/s", Some(5_000)),
            ("Unknown", None),
            ("", None),
            ("NaN GT/s", None),
        ] {
            assert_eq!(parse_speed_mts(text), want, "{text}");
        }
        assert_eq!(parse_width("16"), Some(16));
        assert_eq!(parse_width("x8"), Some(8));
        assert_eq!(parse_width("0"), None);
        let cor = "Receiver Error 2\nBad TLP 0\nBad DLLP 1\nTOTAL_ERR_COR 3\n";
        assert_eq!(parse_aer(cor, "TOTAL_ERR_COR"), Some(3));
        // No TOTAL line: the per-error lines are summed.
        assert_eq!(
            parse_aer("Receiver Error 2\nBad TLP 5\n", "TOTAL_ERR_COR"),
            Some(7)
        );
        assert_eq!(parse_aer("garbage", "TOTAL_ERR_COR"), None);
        assert_eq!(parse_aer("", "TOTAL_ERR_FATAL"), None);
        assert!(is_bdf("0000:1a:00.0") && !is_bdf("pci0000:00") && !is_bdf("0000:1a:00.00"));
    }

    #[test]
    fn acs_is_found_by_walking_the_extended_capabilities() {
        let mut c = vec![0u8; 4096];
        // AER at 0x100 → a vendor-specific one at 0x148 → ACS at 0x200.
        c[0x100..0x104].copy_from_slice(&(0x0001u32 | 2 << 16 | 0x148 << 20).to_le_bytes());
        c[0x148..0x14c].copy_from_slice(&(0x000bu32 | 1 << 16 | 0x200 << 20).to_le_bytes());
        c[0x200..0x204].copy_from_slice(&(0x000du32 | 1 << 16).to_le_bytes());
        c[0x206..0x208].copy_from_slice(&0x001du16.to_le_bytes());
        assert_eq!(parse_acs(&c), Acs::Control(0x001d));
        // Read as a user: 64 bytes. Unknown, not off.
        assert_eq!(parse_acs(&c[..64]), Acs::Unknown);
        assert_eq!(parse_acs(&c[..256]), Acs::Unknown);
        // No ACS in the list.
        c[0x148..0x14c].copy_from_slice(&(0x000bu32 | 1 << 16).to_le_bytes());
        assert_eq!(parse_acs(&c), Acs::NotCapable);
        assert_eq!(parse_acs(&vec![0u8; 4096]), Acs::NotCapable);
        // A list pointing at itself ends, and a gone device reads all ones.
        c[0x100..0x104].copy_from_slice(&(0x0001u32 | 2 << 16 | 0x100 << 20).to_le_bytes());
        assert_eq!(parse_acs(&c), Acs::Unknown);
        assert_eq!(parse_acs(&vec![0xffu8; 4096]), Acs::Unknown);
    }

    #[test]
    fn reads_the_hgx_topology_four_switches_with_two_gpus_and_two_nics_each() {
        let mut p = Pcie::new(&fixture());
        let mut info = HostInfo::default();
        p.info(&mut info).unwrap();
        let d = &info.pcie_devices;
        let count = |k: PcieDeviceKind| d.iter().filter(|x| x.kind == k).count();
        assert_eq!(count(PcieDeviceKind::Gpu), 8);
        assert_eq!(count(PcieDeviceKind::NvSwitch), 4);
        assert_eq!(count(PcieDeviceKind::Nic), 10);
        assert_eq!(count(PcieDeviceKind::Nvme), 2);
        let gpu0 = d.iter().find(|x| x.bdf == "0000:1a:00.0").unwrap();
        assert_eq!(gpu0.kind, PcieDeviceKind::Gpu);
        assert_eq!(
            (gpu0.vendor_id, gpu0.device_id, gpu0.class_code),
            (0x10de, 0x2330, 0x030200)
        );
        assert_eq!(gpu0.numa_node, Some(0));
        assert_eq!(
            (gpu0.max_link_speed_mts, gpu0.max_link_width),
            (Some(32_000), Some(16))
        );
        assert_eq!(
            gpu0.upstream,
            ["0000:15:01.0", "0000:16:00.0", "0000:17:01.0"]
        );
        let nic0 = d.iter().find(|x| x.bdf == "0000:18:00.0").unwrap();
        assert_eq!(
            (nic0.kind, nic0.name.as_str()),
            (PcieDeviceKind::Nic, "mlx5_0")
        );
        // GPU 0 and mlx5_0 share the switch under root port 15:01.0.
        assert_eq!(nic0.upstream[..2], gpu0.upstream[..2]);
        let nvme = d.iter().find(|x| x.kind == PcieDeviceKind::Nvme).unwrap();
        assert_eq!(
            (nvme.name.as_str(), nvme.max_link_width),
            ("nvme0", Some(4))
        );
        assert_eq!(
            d.iter()
                .find(|x| x.bdf == "0000:ca:00.0")
                .unwrap()
                .numa_node,
            Some(1)
        );
        // Bridges after the endpoints: the root port has ACS on (harmless there), the switch's
        // upstream port has no ACS, its downstream ports have it off.
        let bridge = |b: &str| d.iter().find(|x| x.bdf == b).unwrap();
        assert_eq!(bridge("0000:15:01.0").acs, Acs::Control(0x001d));
        assert_eq!(bridge("0000:16:00.0").acs, Acs::NotCapable);
        assert_eq!(bridge("0000:17:01.0").acs, Acs::Control(0));
        assert_eq!(bridge("0000:17:01.0").kind, PcieDeviceKind::Bridge);
        let first_bridge = d
            .iter()
            .position(|x| x.kind == PcieDeviceKind::Bridge)
            .unwrap();
        assert!(
            d[first_bridge..]
                .iter()
                .all(|x| x.kind == PcieDeviceKind::Bridge)
        );

        let mut s = HostSample::default();
        p.sample(UnixMs(1), &mut s).unwrap();
        assert_eq!(s.pcie_devices.len(), d.len());
        let bdfs: Vec<&str> = s.pcie_devices.iter().map(|x| x.bdf.as_str()).collect();
        let want: Vec<&str> = d.iter().map(|x| x.bdf.as_str()).collect();
        assert_eq!(bdfs, want);
        let gpu3 = s
            .pcie_devices
            .iter()
            .find(|x| x.bdf == "0000:4b:00.0")
            .unwrap();
        assert_eq!(
            (gpu3.aer_correctable, gpu3.aer_nonfatal, gpu3.aer_fatal),
            (Some(3), Some(0), Some(0))
        );
        assert_eq!(
            (gpu3.link_speed_mts, gpu3.link_width),
            (Some(32_000), Some(16))
        );
    }

    #[test]
    fn a_machine_without_a_pci_bus_says_so_and_broken_files_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pcie::new(dir.path());
        let e = p.info(&mut HostInfo::default()).unwrap_err();
        assert!(e.contains("no PCI bus visible"), "{e}");

        let dev = dir
            .path()
            .join("devices/pci0000:00/0000:00:02.0/0000:03:00.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), "0x10de\n").unwrap();
        fs::write(dev.join("class"), "0x030200\n").unwrap();
        fs::write(dev.join("numa_node"), "-1\n").unwrap();
        fs::write(dev.join("current_link_speed"), "Unknown\n").unwrap();
        fs::write(dev.join("aer_dev_fatal"), "TOTAL_ERR_FATAL x\n").unwrap();
        // The root port with a 64-byte config (not root): ACS unknown.
        fs::write(
            dir.path().join("devices/pci0000:00/0000:00:02.0/config"),
            [0u8; 64],
        )
        .unwrap();
        let bus = dir.path().join("bus/pci/devices");
        fs::create_dir_all(&bus).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:02.0/0000:03:00.0",
            bus.join("0000:03:00.0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:02.0",
            bus.join("0000:00:02.0"),
        )
        .unwrap();
        let mut p = Pcie::new(dir.path());
        let mut info = HostInfo::default();
        p.info(&mut info).unwrap();
        assert_eq!(info.pcie_devices.len(), 2);
        assert_eq!(info.pcie_devices[0].numa_node, None);
        assert_eq!(info.pcie_devices[0].upstream, ["0000:00:02.0"]);
        assert_eq!(info.pcie_devices[1].acs, Acs::Unknown);
        let mut s = HostSample::default();
        p.sample(UnixMs(1), &mut s).unwrap();
        let g = &s.pcie_devices[0];
        assert_eq!(
            (g.link_speed_mts, g.aer_correctable, g.aer_fatal),
            (None, None, None)
        );
    }
}
