//! PCIe link facts.

/// Usable bandwidth per lane in KB/s (after line encoding), by PCIe generation.
pub fn lane_kbps(generation: u32) -> Option<u64> {
    Some(match generation {
        1 => 250_000,
        2 => 500_000,
        3 => 984_615,
        4 => 1_969_231,
        5 => 3_938_462,
        6 => 7_563_000,
        _ => return None,
    })
}

/// Link capacity in KB/s for a generation and width.
pub fn link_kbps(generation: u32, width: u32) -> Option<u64> {
    Some(lane_kbps(generation)? * width as u64)
}

/// The ACS Control register's bits (PCIe Base Specification, ACS Extended Capability; Linux
/// `PCI_ACS_*` in `include/uapi/linux/pci_regs.h`), by the names `lspci -vvv` gives them on
/// its `ACSCtl:` line.
pub const ACS_BITS: [(u16, &str); 7] = [
    (0x0001, "SrcValid"),
    (0x0002, "TransBlk"),
    (0x0004, "ReqRedir"),
    (0x0008, "CmpltRedir"),
    (0x0010, "UpstreamFwd"),
    (0x0020, "EgressCtrl"),
    (0x0040, "DirectTrans"),
];

/// P2P Request Redirect and P2P Completion Redirect: with either set, a switch port sends
/// peer-to-peer traffic up to the root complex instead of across the switch.
pub const ACS_P2P_REDIRECT: u16 = 0x0004 | 0x0008;

/// `SrcValid+ TransBlk- ReqRedir+ …`, as `lspci -vvv` prints ACSCtl.
pub fn acs(ctl: u16) -> String {
    ACS_BITS
        .iter()
        .map(|(bit, name)| format!("{name}{}", if ctl & bit != 0 { '+' } else { '-' }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names of the bits set, e.g. `ReqRedir CmpltRedir`.
pub fn acs_set(ctl: u16) -> Vec<&'static str> {
    ACS_BITS
        .iter()
        .filter(|(bit, _)| ctl & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A PCI address in the kernel's form (`0000:1a:00.0`) from NVML's (`00000000:1A:00.0`) or
/// the kernel's own: the domain as four hex digits, lower case.
pub fn normalize_bdf(addr: &str) -> String {
    let addr = addr.trim().to_ascii_lowercase();
    match addr.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            let domain = &domain[domain.len() - 4..];
            format!("{domain}:{rest}")
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acs_bits_read_as_lspci_prints_them() {
        assert_eq!(
            acs(0x001d),
            "SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
        );
        assert_eq!(acs_set(0x000c), ["ReqRedir", "CmpltRedir"]);
        assert!(acs_set(0).is_empty());
    }

    #[test]
    fn nvml_and_kernel_addresses_compare_equal() {
        assert_eq!(normalize_bdf("00000000:1A:00.0"), "0000:1a:00.0");
        assert_eq!(normalize_bdf("0000:1a:00.0"), "0000:1a:00.0");
        assert_eq!(normalize_bdf(""), "");
    }
}
