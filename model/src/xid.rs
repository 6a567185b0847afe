//! NVIDIA's Xid catalog (embedded from `data/xid-catalog.tsv`) and the kernel-log line parser.
//! What NVIDIA says each Xid means; how gpufleet classes Xids into causes (and which it treats
//! as fleet-critical) is decided by the collector's `diagnose/rules/xid.rs`.

use std::collections::HashMap;
use std::sync::OnceLock;

const CATALOG_TSV: &str = include_str!("../data/xid-catalog.tsv");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidInfo {
    pub code: u32,
    pub mnemonic: &'static str,
    pub description: &'static str,
    /// NVIDIA's immediate resolution: RESTART_APP, RESET_GPU, RESTART_BM, IGNORE, ...
    pub immediate_resolution: &'static str,
    pub investigatory_resolution: &'static str,
}

fn catalog() -> &'static HashMap<u32, XidInfo> {
    static CATALOG: OnceLock<HashMap<u32, XidInfo>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        CATALOG_TSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split('\t');
                let code = f.next()?.trim().parse().ok()?;
                Some(XidInfo {
                    code,
                    mnemonic: f.next().unwrap_or(""),
                    description: f.next().unwrap_or(""),
                    immediate_resolution: f.next().unwrap_or(""),
                    investigatory_resolution: f.next().unwrap_or(""),
                })
            })
            .map(|x| (x.code, x))
            .collect()
    })
}

/// Catalog entry for an Xid code, if NVIDIA documents it.
pub fn lookup(code: u32) -> Option<&'static XidInfo> {
    catalog().get(&code)
}

/// Number of catalog entries.
pub fn catalog_len() -> usize {
    catalog().len()
}

/// An Xid (or fallen-off-the-bus) line from the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelXid {
    /// PCI address as written in the log, normalised to NVML's form `00000000:05:00.0`.
    pub pci_bus_id: String,
    /// Xid number; 79 for a fallen-off-the-bus line without an Xid.
    pub xid: u32,
    /// The rest of the line after the code.
    pub text: String,
}

/// Parses one kernel log line (`dmesg` or `/dev/kmsg` payload). Returns `None` for lines that
/// are not NVRM Xid / fallen-off-the-bus reports.
pub fn parse_kernel_line(line: &str) -> Option<KernelXid> {
    let at = line.find("NVRM: ")?;
    let rest = &line[at + 6..];
    if let Some(rest) = rest.strip_prefix("Xid (") {
        let close = rest.find(')')?;
        let addr = rest[..close].trim_start_matches("PCI:");
        let after = rest[close + 1..].trim_start_matches(':').trim_start();
        let num_end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let xid = after[..num_end].parse().ok()?;
        let text = after[num_end..].trim_start_matches(',').trim().to_string();
        return Some(KernelXid {
            pci_bus_id: normalize_pci(addr)?,
            xid,
            text,
        });
    }
    if rest.contains("fallen off the bus") {
        // `NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.` or
        // `NVRM: The NVIDIA GPU 0000:18:00.0 ... fallen off the bus ...`
        let addr = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(|w| w.trim_end_matches(':'))
            .find(|w| normalize_pci(w).is_some())?;
        return Some(KernelXid {
            pci_bus_id: normalize_pci(addr)?,
            xid: 79,
            text: "GPU has fallen off the bus".to_string(),
        });
    }
    None
}

/// `0000:05:00` / `05:00` / `0000:05:00.0` / `00000000:05:00.0` → `00000000:05:00.0`.
pub fn normalize_pci(addr: &str) -> Option<String> {
    let (main, func) = match addr.rsplit_once('.') {
        Some((m, f)) if f.len() == 1 && f.chars().all(|c| c.is_ascii_hexdigit()) => (m, f),
        _ => (addr, "0"),
    };
    let parts: Vec<&str> = main.split(':').collect();
    let (domain, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0", *b, *v),
        _ => return None,
    };
    let hex = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !(hex(domain, 8) && hex(bus, 2) && hex(dev, 2)) {
        return None;
    }
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    Some(format!("{domain:08X}:{bus:02X}:{dev:02X}.{func}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_embedded() {
        assert!(catalog_len() > 80, "{}", catalog_len());
        assert_eq!(lookup(79).unwrap().immediate_resolution, "RESTART_BM");
        assert_eq!(lookup(31).unwrap().immediate_resolution, "RESTART_APP");
        assert!(lookup(1).is_none());
    }

    #[test]
    fn parses_kernel_lines() {
        let cases: &[(&str, Option<(&str, u32)>)] = &[
            (
                "NVRM: Xid (PCI:0000:05:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
                Some(("00000000:05:00.0", 79)),
            ),
            (
                "[  12.3] NVRM: Xid (0000:03:00): 14, Channel 00000001",
                Some(("00000000:03:00.0", 14)),
            ),
            (
                "NVRM: Xid (PCI:0018:01:00): 149, NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x004505c6 0x00000000)",
                Some(("00000018:01:00.0", 149)),
            ),
            (
                "NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.",
                Some(("00000000:18:00.0", 79)),
            ),
            (
                "NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:2330) has fallen off the bus and is not responding to commands.",
                Some(("00000000:3B:00.0", 79)),
            ),
            (
                "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
                None,
            ),
            ("NVRM: Xid (garbage", None),
            ("NVRM: Xid (PCI:zz:00): 13, x", None),
            ("usb 1-1: new device", None),
        ];
        for (line, want) in cases {
            let got = parse_kernel_line(line).map(|k| (k.pci_bus_id, k.xid));
            assert_eq!(got, want.map(|(a, x)| (a.to_string(), x)), "{line}");
        }
    }
}
