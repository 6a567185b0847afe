//! InfiniBand HCAs and RoCE NICs from sysfs (`SYSFS/class/infiniband`), the way the kernel's
//! `Documentation/ABI/stable/sysfs-class-infiniband` lays them out and node_exporter's
//! infiniband collector reads them:
//!
//! ```text
//! class/infiniband/mlx5_0/fw_ver              28.39.1002
//! class/infiniband/mlx5_0/board_id            MT_0000000838
//! class/infiniband/mlx5_0/hca_type            MT4129
//! class/infiniband/mlx5_0/device -> ../../../0000:18:00.0   (numa_node inside)
//! class/infiniband/mlx5_0/ports/1/state       4: ACTIVE
//! class/infiniband/mlx5_0/ports/1/phys_state  5: LinkUp
//! class/infiniband/mlx5_0/ports/1/rate        400 Gb/sec (4X NDR)
//! class/infiniband/mlx5_0/ports/1/link_layer  InfiniBand
//! class/infiniband/mlx5_0/ports/1/counters/symbol_error, link_downed, port_rcv_errors, …
//! ```
//!
//! Read-only, and every file fails alone: a counter the device does not expose (or that reads
//! `N/A (no PMA)`) is absent, a device that cannot be listed is skipped. A machine without
//! RDMA devices has no `class/infiniband`: the source says so ([`HostPart::sample`]'s error),
//! which `probe` shows.

use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{HostInfo, HostSample, IbDeviceInfo, IbPortSample, UnixMs};

use super::HostPart;

pub struct InfiniBand {
    class: PathBuf,
}

impl InfiniBand {
    /// Reads `sysfs_root/class/infiniband` (`/sys` on a real host, a fixture tree in tests).
    pub fn new(sysfs_root: &Path) -> Self {
        InfiniBand {
            class: sysfs_root.join("class/infiniband"),
        }
    }

    fn devices(&self) -> Result<Vec<(String, PathBuf)>, String> {
        let entries = fs::read_dir(&self.class).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "no {} (no InfiniBand or RoCE device, or the ib_core/mlx5_ib modules are not loaded)",
                    self.class.display()
                )
            } else {
                format!("cannot list {}: {e}", self.class.display())
            }
        })?;
        let mut out: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        out.sort_by_key(|a| natural(&a.0));
        Ok(out)
    }
}

/// `mlx5_10` after `mlx5_9`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0))
}

impl HostPart for InfiniBand {
    fn name(&self) -> &'static str {
        "infiniband"
    }

    fn info(&mut self, info: &mut HostInfo) -> Result<(), String> {
        for (name, dir) in self.devices()? {
            let device = dir.join("device");
            let pci_address = fs::read_link(&device)
                .ok()
                .and_then(|t| t.file_name()?.to_str().map(str::to_string))
                .unwrap_or_default();
            info.ib_devices.push(IbDeviceInfo {
                fw_version: read(&dir.join("fw_ver")).unwrap_or_default(),
                board_id: read(&dir.join("board_id")).unwrap_or_default(),
                hca_type: read(&dir.join("hca_type")).unwrap_or_default(),
                pci_address,
                // -1 is how the kernel says "no NUMA information".
                numa_node: read(&device.join("numa_node"))
                    .and_then(|v| v.parse::<i32>().ok())
                    .filter(|n| *n >= 0),
                ports: ports(&dir).len() as u32,
                name,
            });
        }
        Ok(())
    }

    fn sample(&mut self, _now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        for (name, dir) in self.devices()? {
            for (port, pdir) in ports(&dir) {
                sample.ib_ports.push(read_port(&name, port, &pdir));
            }
        }
        Ok(())
    }
}

fn ports(device: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = fs::read_dir(device.join("ports"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `4: ACTIVE` → `ACTIVE`; a bare word is kept as it is.
pub fn parse_state(s: &str) -> String {
    match s.split_once(':') {
        Some((_, name)) => name.trim().to_string(),
        None => s.trim().to_string(),
    }
}

/// `400 Gb/sec (4X NDR)` → 400; `2.5 Gb/sec (1X SDR)` → 2.5.
pub fn parse_rate_gbps(s: &str) -> Option<f64> {
    let (num, unit) = s.trim().split_once(' ')?;
    if !unit.trim_start().starts_with("Gb/sec") {
        return None;
    }
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// A counter file: a decimal number, or absent (`N/A (no PMA)`, unreadable, missing).
fn counter(dir: &Path, name: &str) -> Option<u64> {
    read(&dir.join(name))?.parse().ok()
}

fn read_port(device: &str, port: u32, dir: &Path) -> IbPortSample {
    let c = dir.join("counters");
    IbPortSample {
        device: device.to_string(),
        port,
        state: read(&dir.join("state"))
            .map(|s| parse_state(&s))
            .unwrap_or_default(),
        phys_state: read(&dir.join("phys_state"))
            .map(|s| parse_state(&s))
            .unwrap_or_default(),
        link_layer: read(&dir.join("link_layer")).unwrap_or_default(),
        rate_gbps: read(&dir.join("rate")).and_then(|s| parse_rate_gbps(&s)),
        symbol_errors: counter(&c, "symbol_error"),
        link_downed: counter(&c, "link_downed"),
        rcv_errors: counter(&c, "port_rcv_errors"),
        xmit_discards: counter(&c, "port_xmit_discards"),
        excessive_buffer_overrun_errors: counter(&c, "excessive_buffer_overrun_errors"),
        link_error_recovery: counter(&c, "link_error_recovery"),
        local_link_integrity_errors: counter(&c, "local_link_integrity_errors"),
        // The kernel counts data in 4-octet words.
        rcv_data_bytes: counter(&c, "port_rcv_data").map(|w| w.saturating_mul(4)),
        xmit_data_bytes: counter(&c, "port_xmit_data").map(|w| w.saturating_mul(4)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sysfs/hgx-h100-8x-ndr")
    }

    #[test]
    fn states_and_rates_parse_as_the_kernel_writes_them() {
        for (text, want) in [
            ("4: ACTIVE", "ACTIVE"),
            ("1: DOWN", "DOWN"),
            ("5: LinkUp", "LinkUp"),
            ("3: Disabled", "Disabled"),
            ("ACTIVE", "ACTIVE"),
        ] {
            assert_eq!(parse_state(text), want, "{text}");
        }
        for (text, want) in [
            ("400 Gb/sec (4X NDR)", Some(400.0)),
            ("200 Gb/sec (4X HDR)", Some(200.0)),
            ("2.5 Gb/sec (1X SDR)", Some(2.5)),
            ("100 Gb/sec (2X HDR)", Some(100.0)),
            ("fast", None),
            ("400 Mb/sec", None),
            ("NaN Gb/sec", None),
            ("", None),
        ] {
            assert_eq!(parse_rate_gbps(text), want, "{text}");
        }
        assert!(natural("mlx5_9") < natural("mlx5_10"));
    }

    #[test]
    fn reads_an_hgx_node_with_eight_ndr_hcas_and_two_roce_ports() {
        let mut ib = InfiniBand::new(&fixture());
        let mut info = HostInfo::default();
        ib.info(&mut info).unwrap();
        let names: Vec<&str> = info.ib_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7",
                "mlx5_8", "mlx5_9"
            ]
        );
        let d0 = &info.ib_devices[0];
        assert_eq!(d0.fw_version, "28.39.1002");
        assert_eq!(d0.hca_type, "MT4129");
        assert_eq!(d0.pci_address, "0000:18:00.0");
        assert_eq!(d0.numa_node, Some(0));
        assert_eq!(d0.ports, 1);
        assert_eq!(info.ib_devices[7].numa_node, Some(1));

        let mut s = HostSample::default();
        ib.sample(UnixMs(1), &mut s).unwrap();
        assert_eq!(s.ib_ports.len(), 10);
        let p = &s.ib_ports[0];
        assert_eq!(p.id(), "mlx5_0/1");
        assert!(p.is_up() && p.is_infiniband());
        assert_eq!(p.rate_gbps, Some(400.0));
        assert_eq!(p.symbol_errors, Some(0));
        assert_eq!(p.rcv_data_bytes, Some(4 * 8_339_456_123_904));
        let roce = &s.ib_ports[8];
        assert_eq!(roce.link_layer, "Ethernet");
        assert_eq!(roce.rate_gbps, Some(200.0));
        // The RoCE ports' PMA does not answer: absent, not zero.
        assert_eq!(roce.symbol_errors, None);
    }

    #[test]
    fn a_machine_without_rdma_devices_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut ib = InfiniBand::new(dir.path());
        let e = ib
            .sample(UnixMs(1), &mut HostSample::default())
            .unwrap_err();
        assert!(e.contains("no InfiniBand or RoCE device"), "{e}");
    }

    #[test]
    fn broken_files_are_absent_readings_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("class/infiniband/mlx5_0/ports/1");
        fs::create_dir_all(port.join("counters")).unwrap();
        fs::write(port.join("state"), "garbage").unwrap();
        fs::write(port.join("rate"), "x Gb/sec").unwrap();
        fs::write(port.join("counters/symbol_error"), "N/A (no PMA)\n").unwrap();
        fs::write(port.join("counters/link_downed"), "-3").unwrap();
        let mut s = HostSample::default();
        InfiniBand::new(dir.path())
            .sample(UnixMs(1), &mut s)
            .unwrap();
        let p = &s.ib_ports[0];
        assert_eq!(p.state, "garbage");
        assert!(!p.is_up());
        assert_eq!(
            (p.rate_gbps, p.symbol_errors, p.link_downed),
            (None, None, None)
        );
    }
}
