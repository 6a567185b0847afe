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
