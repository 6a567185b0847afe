//! Clock-event ("throttle") reason bits, as in nvml.h (`nvmlClocksEventReason*`).

pub const GPU_IDLE: u64 = 0x1;
pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
pub const SW_POWER_CAP: u64 = 0x4;
pub const HW_SLOWDOWN: u64 = 0x8;
pub const SYNC_BOOST: u64 = 0x10;
pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;

/// Every known bit with its short name.
pub const ALL: &[(u64, &str)] = &[
    (GPU_IDLE, "gpu_idle"),
    (APPLICATIONS_CLOCKS_SETTING, "applications_clocks_setting"),
    (SW_POWER_CAP, "sw_power_cap"),
    (HW_SLOWDOWN, "hw_slowdown"),
    (SYNC_BOOST, "sync_boost"),
    (SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
    (DISPLAY_CLOCK_SETTING, "display_clock_setting"),
];

/// Names of the bits set in `mask`, e.g. `["sw_power_cap", "hw_slowdown"]`; unknown bits as hex.
pub fn names(mask: u64) -> Vec<String> {
    let mut out: Vec<String> = ALL
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known = ALL.iter().fold(0, |acc, (b, _)| acc | b);
    if mask & !known != 0 {
        out.push(format!("{:#x}", mask & !known));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_known_and_unknown_bits() {
        assert_eq!(super::names(0), Vec::<String>::new());
        assert_eq!(
            super::names(0x44),
            vec!["sw_power_cap", "hw_thermal_slowdown"]
        );
        assert_eq!(super::names(0x1000 | 0x1), vec!["gpu_idle", "0x1000"]);
    }
}
