//! GPU model profiles: what each simulated GPU model reports through NVML. Values follow
//! NVIDIA's own NVML test double (`k8s-test-infra` `mocknvml` profiles) and `nvidia-smi -q`
//! captures from real machines; the H100's static facts are those of the real H100 80GB HBM3
//! captured in `tests/fixtures/real/` (kept equal by `tests/tests/realism.rs`); the RTX 6000 Ada
//! (the one actively cooled model, for `fan_failure`) uses its datasheet values.

use crate::hosts::{self, HostProfile};

/// One GPU model as NVML describes it, plus how it behaves under the default workload.
#[derive(Debug, PartialEq)]
pub struct GpuModelProfile {
    /// Canonical name, e.g. `h100-sxm-80gb`.
    pub id: &'static str,
    /// Other accepted names (compared case-insensitively, spaces and `_` read as `-`).
    pub aliases: &'static [&'static str],
    /// Product name as `nvmlDeviceGetName` returns it.
    pub product_name: &'static str,
    pub architecture: &'static str,
    pub cuda_compute_capability: &'static str,
    pub memory_total_bytes: u64,
    pub bar1_total_bytes: u64,
    pub vbios_version: &'static str,
    pub inforom_image_version: &'static str,
    pub board_part_number: &'static str,
    /// First digits of the 13-digit board serial.
    pub serial_prefix: &'static str,
    pub pcie_gen_max: u32,
    pub pcie_width_max: u32,
    pub sm_clock_max_mhz: u32,
    pub sm_clock_idle_mhz: u32,
    pub memory_clock_max_mhz: u32,
    /// Supported graphics clocks are multiples of this step.
    pub clock_step_mhz: u32,
    pub power_limit_default_mw: u32,
    pub power_limit_min_mw: u32,
    pub power_limit_max_mw: u32,
    pub power_idle_mw: u32,
    pub temperature_slowdown_celsius: i32,
    pub temperature_shutdown_celsius: i32,
    pub temperature_max_operating_celsius: i32,
    /// HBM models report a memory temperature and its limit; GDDR models do not.
    pub memory_temperature_max_operating_celsius: Option<i32>,
    pub nvlink_count: u32,
    pub fan_count: u32,
    pub mig_capable: bool,
    /// Ampere and later remap rows; Turing retires pages instead.
    pub row_remapping: bool,
    /// PCI bus numbers of GPUs 0..n in a typical server of this model.
    pub pci_buses: &'static [u8],
    /// The server this GPU usually sits in.
    pub host: &'static HostProfile,
    /// Typical host-to-device traffic under training, KB/s.
    pub pcie_rx_kbps: u32,
}

impl GpuModelProfile {
    /// NVML's GPM (profiling metrics) exists on Hopper and later.
    pub fn has_gpm(&self) -> bool {
        matches!(self.architecture, "Hopper" | "Blackwell")
    }

    pub fn has_fans(&self) -> bool {
        self.fan_count > 0
    }

    /// PCI bus id of GPU `index`, in NVML's form `00000000:18:00.0`.
    pub fn pci_bus_id(&self, index: u32) -> String {
        let i = index as usize;
        let bus = match self.pci_buses.get(i) {
            Some(b) => *b,
            // More GPUs than the reference board: continue above the last listed bus.
            None => self
                .pci_buses
                .last()
                .copied()
                .unwrap_or(0x10)
                .wrapping_add(((i - self.pci_buses.len() + 1) * 2) as u8),
        };
        format!("00000000:{bus:02X}:00.0")
    }
}

/// One line for listings: `h100-sxm-80gb  NVIDIA H100 80GB HBM3, 80 GiB, 700 W, 18 NVLinks (also: h100, ...)`.
impl std::fmt::Display for GpuModelProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<14} {}, {} GiB, {} W, PCIe gen{} x{}",
            self.id,
            self.product_name,
            self.memory_total_bytes.div_ceil(1 << 30),
            self.power_limit_default_mw / 1000,
            self.pcie_gen_max,
            self.pcie_width_max
        )?;
        if self.nvlink_count > 0 {
            write!(f, ", {} NVLinks", self.nvlink_count)?;
        }
        if self.fan_count > 0 {
            write!(
                f,
                ", {} fan{}",
                self.fan_count,
                if self.fan_count == 1 { "" } else { "s" }
            )?;
        }
        write!(f, " (also: {})", self.aliases.join(", "))
    }
}

const MIB: u64 = 1 << 20;

static MODELS: [GpuModelProfile; 5] = [
    GpuModelProfile {
        id: "h100-sxm-80gb",
        aliases: &[
            "h100",
            "h100-sxm",
            "h100-sxm5",
            "h100-sxm5-80gb",
            "h100-80gb-hbm3",
        ],
        product_name: "NVIDIA H100 80GB HBM3",
        architecture: "Hopper",
        cuda_compute_capability: "9.0",
        memory_total_bytes: 81_559 * MIB,
        bar1_total_bytes: 131_072 * MIB,
        vbios_version: "96.00.89.00.01",
        inforom_image_version: "G520.0200.00.05",
        board_part_number: "692-2G520-0200-000",
        serial_prefix: "1654",
        pcie_gen_max: 5,
        pcie_width_max: 16,
        sm_clock_max_mhz: 1980,
        sm_clock_idle_mhz: 345,
        memory_clock_max_mhz: 2619,
        clock_step_mhz: 15,
        power_limit_default_mw: 700_000,
        power_limit_min_mw: 200_000,
        power_limit_max_mw: 700_000,
        power_idle_mw: 73_000,
        temperature_slowdown_celsius: 89,
        temperature_shutdown_celsius: 95,
        temperature_max_operating_celsius: 87,
        memory_temperature_max_operating_celsius: Some(95),
        nvlink_count: 18,
        fan_count: 0,
        mig_capable: true,
        row_remapping: true,
        pci_buses: &[0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB],
        host: &hosts::HGX_H100,
        pcie_rx_kbps: 2_400_000,
    },
    GpuModelProfile {
        id: "a100-sxm-80gb",
        aliases: &[
            "a100",
            "a100-sxm",
            "a100-sxm4",
            "a100-sxm4-80gb",
            "a100-80gb",
        ],
        product_name: "NVIDIA A100-SXM4-80GB",
        architecture: "Ampere",
        cuda_compute_capability: "8.0",
        memory_total_bytes: 81_920 * MIB,
        bar1_total_bytes: 131_072 * MIB,
        vbios_version: "92.00.45.00.03",
        inforom_image_version: "G506.0210.00.01",
        board_part_number: "692-2G506-0210-002",
        serial_prefix: "1323",
        pcie_gen_max: 4,
        pcie_width_max: 16,
        sm_clock_max_mhz: 1410,
        sm_clock_idle_mhz: 210,
        memory_clock_max_mhz: 1593,
        clock_step_mhz: 15,
        power_limit_default_mw: 400_000,
        power_limit_min_mw: 100_000,
        power_limit_max_mw: 400_000,
        power_idle_mw: 60_000,
        temperature_slowdown_celsius: 87,
        temperature_shutdown_celsius: 92,
        temperature_max_operating_celsius: 83,
        memory_temperature_max_operating_celsius: Some(95),
        nvlink_count: 12,
        fan_count: 0,
        mig_capable: true,
        row_remapping: true,
        pci_buses: &[0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD],
        host: &hosts::DGX_A100,
        pcie_rx_kbps: 1_600_000,
    },
    GpuModelProfile {
        id: "l40s",
        aliases: &["l40s-48gb"],
        product_name: "NVIDIA L40S",
        architecture: "Ada Lovelace",
        cuda_compute_capability: "8.9",
        memory_total_bytes: 46_068 * MIB,
        bar1_total_bytes: 65_536 * MIB,
        vbios_version: "95.02.5C.00.03",
        inforom_image_version: "G133.0242.00.03",
        board_part_number: "900-2G133-A880-000",
        serial_prefix: "1322",
        pcie_gen_max: 4,
        pcie_width_max: 16,
        sm_clock_max_mhz: 2520,
        sm_clock_idle_mhz: 210,
        memory_clock_max_mhz: 9001,
        clock_step_mhz: 15,
        power_limit_default_mw: 350_000,
        power_limit_min_mw: 100_000,
        power_limit_max_mw: 350_000,
        power_idle_mw: 60_000,
        temperature_slowdown_celsius: 93,
        temperature_shutdown_celsius: 96,
        temperature_max_operating_celsius: 89,
        memory_temperature_max_operating_celsius: None,
        nvlink_count: 0,
        fan_count: 0,
        mig_capable: false,
        row_remapping: true,
        pci_buses: &[0x17, 0x18, 0x31, 0x32, 0xB1, 0xB2, 0xCA, 0xCB],
        host: &hosts::PCIE_SERVER,
        pcie_rx_kbps: 1_200_000,
    },
    GpuModelProfile {
        id: "t4",
        aliases: &["t4-16gb", "nvidia-t4"],
        product_name: "Tesla T4",
        architecture: "Turing",
        cuda_compute_capability: "7.5",
        memory_total_bytes: 15_360 * MIB,
        bar1_total_bytes: 256 * MIB,
        vbios_version: "90.04.96.00.02",
        inforom_image_version: "G183.0200.00.02",
        board_part_number: "900-2G183-A800-001",
        serial_prefix: "0324",
        pcie_gen_max: 3,
        pcie_width_max: 16,
        sm_clock_max_mhz: 1590,
        sm_clock_idle_mhz: 300,
        memory_clock_max_mhz: 5001,
        clock_step_mhz: 15,
        power_limit_default_mw: 70_000,
        power_limit_min_mw: 60_000,
        power_limit_max_mw: 70_000,
        power_idle_mw: 12_000,
        temperature_slowdown_celsius: 93,
        temperature_shutdown_celsius: 96,
        temperature_max_operating_celsius: 85,
        memory_temperature_max_operating_celsius: None,
        nvlink_count: 0,
        fan_count: 0,
        mig_capable: false,
        row_remapping: false,
        pci_buses: &[0x18, 0x3B, 0x5E, 0x86, 0xAF, 0xB0, 0xD8, 0xD9],
        host: &hosts::PCIE_SERVER,
        pcie_rx_kbps: 600_000,
    },
    GpuModelProfile {
        id: "rtx-6000-ada",
        aliases: &["rtx6000-ada", "rtx-6000-ada-generation", "rtx-6000"],
        product_name: "NVIDIA RTX 6000 Ada Generation",
        architecture: "Ada Lovelace",
        cuda_compute_capability: "8.9",
        memory_total_bytes: 49_140 * MIB,
        bar1_total_bytes: 65_536 * MIB,
        vbios_version: "95.02.4B.00.02",
        inforom_image_version: "G133.0500.00.05",
        board_part_number: "900-5G133-2550-000",
        serial_prefix: "1323",
        pcie_gen_max: 4,
        pcie_width_max: 16,
        sm_clock_max_mhz: 2505,
        sm_clock_idle_mhz: 210,
        memory_clock_max_mhz: 10001,
        clock_step_mhz: 15,
        power_limit_default_mw: 300_000,
        power_limit_min_mw: 100_000,
        power_limit_max_mw: 300_000,
        power_idle_mw: 25_000,
        temperature_slowdown_celsius: 93,
        temperature_shutdown_celsius: 96,
        temperature_max_operating_celsius: 89,
        memory_temperature_max_operating_celsius: None,
        nvlink_count: 0,
        fan_count: 1,
        mig_capable: false,
        row_remapping: true,
        pci_buses: &[0x17, 0x18, 0x31, 0x32, 0xB1, 0xB2, 0xCA, 0xCB],
        host: &hosts::PCIE_SERVER,
        pcie_rx_kbps: 1_200_000,
    },
];

/// Every simulated GPU model, default first.
pub fn models() -> &'static [GpuModelProfile] {
    &MODELS
}

/// `h100`, `H100 SXM 80GB`, `NVIDIA H100 80GB HBM3` → the H100 profile.
pub fn model_by_name(name: &str) -> Option<&'static GpuModelProfile> {
    let want = normalize(name);
    MODELS.iter().find(|m| {
        normalize(m.id) == want
            || normalize(m.product_name) == want
            || m.aliases.iter().any(|a| normalize(a) == want)
    })
}

/// One line per model for `--help` and error messages: `h100-sxm-80gb (NVIDIA H100 80GB HBM3; also h100, ...)`.
pub fn model_list() -> String {
    MODELS
        .iter()
        .map(|m| format!("{} ({})", m.id, m.product_name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively_with_aliases() {
        let cases = [
            ("h100", "h100-sxm-80gb"),
            ("h100-sxm-80gb", "h100-sxm-80gb"),
            ("H100 SXM 80GB", "h100-sxm-80gb"),
            ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
            ("A100", "a100-sxm-80gb"),
            ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
            ("l40s", "l40s"),
            ("NVIDIA L40S", "l40s"),
            ("Tesla T4", "t4"),
            ("RTX 6000 Ada", "rtx-6000-ada"),
        ];
        for (name, id) in cases {
            assert_eq!(model_by_name(name).map(|m| m.id), Some(id), "{name}");
        }
        assert!(model_by_name("h200").is_none());
    }

    #[test]
    fn display_is_one_line() {
        let line = model_by_name("h100").unwrap().to_string();
        assert_eq!(
            line,
            "h100-sxm-80gb  NVIDIA H100 80GB HBM3, 80 GiB, 700 W, PCIe gen5 x16, 18 NVLinks \
             (also: h100, h100-sxm, h100-sxm5, h100-sxm5-80gb, h100-80gb-hbm3)"
        );
        assert!(
            model_by_name("rtx-6000-ada")
                .unwrap()
                .to_string()
                .contains(", 1 fan (")
        );
    }

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in models() {
            for n in std::iter::once(m.id)
                .chain(m.aliases.iter().copied())
                .chain([m.product_name])
            {
                assert!(seen.insert(normalize(n)), "duplicate model name {n}");
            }
        }
    }

    #[test]
    fn profiles_are_consistent() {
        for m in models() {
            assert!(m.power_limit_min_mw < m.power_limit_default_mw, "{}", m.id);
            assert!(m.power_limit_default_mw <= m.power_limit_max_mw, "{}", m.id);
            assert!(m.power_idle_mw < m.power_limit_min_mw, "{}", m.id);
            assert!(
                m.temperature_max_operating_celsius < m.temperature_slowdown_celsius,
                "{}",
                m.id
            );
            assert!(
                m.temperature_slowdown_celsius < m.temperature_shutdown_celsius,
                "{}",
                m.id
            );
            assert_eq!(m.sm_clock_max_mhz % m.clock_step_mhz, 0, "{}", m.id);
            assert_eq!(m.pci_buses.len(), 8, "{}", m.id);
        }
        let h100 = model_by_name("h100").unwrap();
        assert_eq!(h100.pci_bus_id(0), "00000000:18:00.0");
        assert_eq!(h100.pci_bus_id(7), "00000000:DB:00.0");
        assert_eq!(h100.pci_bus_id(8), "00000000:DD:00.0");
    }
}
