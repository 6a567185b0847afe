//! Fault kinds: their catalog (names, parameters, defaults), validation, and what each one
//! does to a simulated GPU's state ([`FaultKind::apply_gpu`]). Host effects, and counter-like
//! effects (replays, ECC counts, NVLink and NIC errors: functions of how long a fault has been
//! on), are read from the fault list by `host.rs` and `gpu.rs`.

use gpufleet_model::clock_events as ce;

use super::gpu::Live;
use super::models::GpuModelProfile;

/// Where a fault kind acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One GPU (`gpu = N`) or, without `gpu`, every GPU of the node.
    Gpu,
    /// The node as a whole; `gpu` is not accepted.
    Node,
}

/// A fault kind's catalog entry: documentation, validation and the diagnosis it should lead to.
#[derive(Debug)]
pub struct FaultKindInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub scope: Scope,
    /// Optional parameters the kind takes (beyond kind/node/gpu/start/end).
    pub params: &'static [&'static str],
    pub summary: &'static str,
    /// The rule-id prefix a diagnosis should name for it (used by `scenarios/faults/*.toml`).
    pub cause: &'static str,
}

macro_rules! kind {
    ($name:literal, $aliases:expr, $scope:ident, [$($p:literal),*], $cause:literal, $summary:literal) => {
        FaultKindInfo { name: $name, aliases: $aliases, scope: Scope::$scope, params: &[$($p),*], summary: $summary, cause: $cause }
    };
}

static KINDS: &[FaultKindInfo] = &[
    kind!(
        "thermal_throttle",
        &[],
        Gpu,
        ["target_celsius", "ramp", "sm_clock_percent"],
        "gpu.thermal",
        "temperature climbs to above the slowdown threshold; thermal clock-event bits, clocks drop"
    ),
    kind!(
        "power_cap",
        &[],
        Gpu,
        ["limit_watts"],
        "gpu.power",
        "enforced power limit lowered; power pinned at it, SW power cap bit, clocks reduced"
    ),
    kind!(
        "power_brake",
        &[],
        Gpu,
        ["sm_clock_percent"],
        "gpu.power",
        "external power brake asserted: HW power brake + HW slowdown bits, clocks very low"
    ),
    kind!(
        "hw_slowdown",
        &[],
        Gpu,
        ["sm_clock_percent"],
        "gpu.clocks",
        "HW slowdown bit alone, clocks halved"
    ),
    kind!(
        "clocks_locked",
        &["applications_clocks"],
        Gpu,
        ["sm_clock_mhz", "memory_clock_mhz"],
        "gpu.clocks",
        "application clocks set below max; applications-clocks bit"
    ),
    kind!(
        "pcie_downtrain",
        &[],
        Gpu,
        ["gen", "width", "per_minute"],
        "gpu.pcie",
        "PCIe link trained below max generation/width; replay counter rising"
    ),
    kind!(
        "pcie_replays",
        &[],
        Gpu,
        ["per_minute"],
        "gpu.pcie",
        "PCIe replay counter rising fast at full link speed"
    ),
    kind!(
        "ecc_uncorrectable",
        &[],
        Gpu,
        ["count", "xid"],
        "gpu.ecc",
        "uncorrectable ECC errors; row remap pending; an Xid (48 by default)"
    ),
    kind!(
        "row_remap_failure",
        &[],
        Gpu,
        [],
        "gpu.row_remap",
        "row remapping failed; Xid 64"
    ),
    kind!(
        "xid",
        &[],
        Gpu,
        ["xid", "repeat", "interval"],
        "gpu.xid",
        "Xid events delivered through events()"
    ),
    kind!(
        "fallen_off_bus",
        &[],
        Gpu,
        [],
        "gpu.lost",
        "GPU lost (Xid 79); it leaves the inventory"
    ),
    kind!(
        "nvlink_down",
        &[],
        Gpu,
        ["link"],
        "gpu.nvlink",
        "one NVLink inactive; Xid 74"
    ),
    kind!(
        "nvlink_errors",
        &[],
        Gpu,
        ["link", "per_minute"],
        "gpu.nvlink",
        "NVLink CRC/replay/recovery counters rising"
    ),
    kind!(
        "driver_change",
        &[],
        Gpu,
        ["driver_version", "vbios_version"],
        "drift",
        "inventory reports another driver (node) or VBIOS (GPU)"
    ),
    kind!(
        "persistence_off",
        &[],
        Gpu,
        [],
        "gpu.persistence",
        "persistence mode reported off"
    ),
    kind!(
        "fan_failure",
        &[],
        Gpu,
        ["fan_percent", "ramp"],
        "gpu.fan",
        "fan stuck (0 % by default) while the GPU heats up to thermal slowdown; models with fans only"
    ),
    kind!(
        "memory_full",
        &[],
        Gpu,
        [],
        "gpu.memory",
        "framebuffer memory used ≈ total"
    ),
    kind!(
        "gpu_hung",
        &[],
        Gpu,
        [],
        "gpu.hung",
        "utilization 100 % with no process"
    ),
    kind!(
        "idle_with_process",
        &[],
        Gpu,
        [],
        "gpu.idle",
        "a process holds the GPU but utilization is 0 %"
    ),
    kind!(
        "gpu_straggler",
        &[],
        Gpu,
        ["slowdown_percent"],
        "gpu.straggler",
        "slower clocks and lower power than its peers, no clock-event bit"
    ),
    kind!(
        "host_cpu_saturated",
        &[],
        Node,
        [],
        "host.cpu",
        "CPU 98–100 %, load above the core count; GPUs starve (20–40 % utilization)"
    ),
    kind!(
        "host_ram_pressure",
        &[],
        Node,
        [],
        "host.memory",
        "available RAM below 3 %, swap use growing"
    ),
    kind!(
        "disk_full",
        &[],
        Node,
        ["mount"],
        "host.disk",
        "a filesystem has less than 2 % available"
    ),
    kind!(
        "nic_saturated",
        &[],
        Node,
        ["nic", "direction"],
        "host.nic",
        "a NIC at ≥ 97 % of its link speed; GPUs wait on communication"
    ),
    kind!(
        "nic_errors",
        &[],
        Node,
        ["nic", "per_minute"],
        "host.nic",
        "a NIC's receive errors and drops rising"
    ),
    kind!(
        "kernel_change",
        &[],
        Node,
        ["kernel_version"],
        "drift",
        "the node reboots into another kernel"
    ),
];

/// Every fault kind, in documentation order.
pub fn fault_kinds() -> &'static [FaultKindInfo] {
    KINDS
}

/// Catalog entry for a kind name or alias.
pub fn fault_kind(name: &str) -> Option<&'static FaultKindInfo> {
    KINDS
        .iter()
        .find(|k| k.name == name || k.aliases.contains(&name))
}

/// Which NIC traffic direction `nic_saturated` fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rx,
    Tx,
    Both,
}

/// A fault kind with its parameters, defaults applied where they do not depend on the model
/// (model-dependent defaults are `None` and resolved by the `*_for` helpers).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    ThermalThrottle {
        target_celsius: Option<i32>,
        ramp_ms: u64,
        sm_clock_percent: u32,
    },
    PowerCap {
        limit_watts: Option<u32>,
    },
    PowerBrake {
        sm_clock_percent: u32,
    },
    HwSlowdown {
        sm_clock_percent: u32,
    },
    ClocksLocked {
        sm_clock_mhz: Option<u32>,
        /// Memory application clock, when it is locked too (default: left at max).
        memory_clock_mhz: Option<u32>,
    },
    PcieDowntrain {
        link_gen: u32,
        width: u32,
        per_minute: u32,
    },
    PcieReplays {
        per_minute: u32,
    },
    EccUncorrectable {
        count: u32,
        xid: Option<u32>,
    },
    RowRemapFailure,
    Xid {
        xid: u32,
        repeat: u32,
        interval_ms: u64,
    },
    FallenOffBus,
    NvlinkDown {
        link: u32,
    },
    NvlinkErrors {
        link: Option<u32>,
        per_minute: u32,
    },
    DriverChange {
        driver_version: Option<String>,
        vbios_version: Option<String>,
    },
    PersistenceOff,
    FanFailure {
        fan_percent: u32,
        ramp_ms: u64,
    },
    MemoryFull,
    GpuHung,
    IdleWithProcess,
    GpuStraggler {
        slowdown_percent: u32,
    },
    HostCpuSaturated,
    HostRamPressure,
    DiskFull {
        mount: String,
    },
    NicSaturated {
        nic: Option<String>,
        direction: Direction,
    },
    NicErrors {
        nic: Option<String>,
        per_minute: u32,
    },
    KernelChange {
        kernel_version: String,
    },
}

/// One fault of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Node name; `None` = every node the scenario runs on.
    pub node: Option<String>,
    /// GPU index; `None` = every GPU (for GPU-scoped kinds).
    pub gpu: Option<u32>,
    /// Offset from the virtual time origin, ms.
    pub start_ms: u64,
    /// Offset at which the fault clears; `None` = never.
    pub end_ms: Option<u64>,
    /// Line of the fault's `kind` in its scenario file (0 when unknown), for messages.
    pub line: usize,
}

/// The parameters a `[[fault]]` table may carry, before they are checked against its kind.
#[derive(Debug, Default, Clone)]
pub(super) struct FaultParams {
    pub target_celsius: Option<i32>,
    pub ramp_ms: Option<u64>,
    pub sm_clock_percent: Option<u32>,
    pub limit_watts: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub link_gen: Option<u32>,
    pub width: Option<u32>,
    pub per_minute: Option<u32>,
    pub count: Option<u32>,
    pub xid: Option<u32>,
    pub repeat: Option<u32>,
    pub interval_ms: Option<u64>,
    pub link: Option<u32>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub fan_percent: Option<u32>,
    pub slowdown_percent: Option<u32>,
    pub mount: Option<String>,
    pub nic: Option<String>,
    pub direction: Option<String>,
    pub kernel_version: Option<String>,
}

impl FaultParams {
    /// Names of the parameters that were given.
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("target_celsius", self.target_celsius.is_some()),
            ("ramp", self.ramp_ms.is_some()),
            ("sm_clock_percent", self.sm_clock_percent.is_some()),
            ("limit_watts", self.limit_watts.is_some()),
            ("sm_clock_mhz", self.sm_clock_mhz.is_some()),
            ("memory_clock_mhz", self.memory_clock_mhz.is_some()),
            ("gen", self.link_gen.is_some()),
            ("width", self.width.is_some()),
            ("per_minute", self.per_minute.is_some()),
            ("count", self.count.is_some()),
            ("xid", self.xid.is_some()),
            ("repeat", self.repeat.is_some()),
            ("interval", self.interval_ms.is_some()),
            ("link", self.link.is_some()),
            ("driver_version", self.driver_version.is_some()),
            ("vbios_version", self.vbios_version.is_some()),
            ("fan_percent", self.fan_percent.is_some()),
            ("slowdown_percent", self.slowdown_percent.is_some()),
            ("mount", self.mount.is_some()),
            ("nic", self.nic.is_some()),
            ("direction", self.direction.is_some()),
            ("kernel_version", self.kernel_version.is_some()),
        ];
        flags
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect()
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if v < lo || v > hi {
        Err(format!("{name} = {v} is out of range ({lo}..={hi})"))
    } else {
        Ok(v)
    }
}

/// Xid numbers are small positive integers; codes missing from the embedded catalog (e.g. 13,
/// 43) are still real, so only the range is checked.
fn xid_number(xid: u32) -> Result<u32, String> {
    in_range("xid", xid, 1, 999)
}

fn non_empty(name: &str, v: Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.trim().is_empty() => Err(format!("{name} must not be empty")),
        v => Ok(v),
    }
}

impl FaultKind {
    /// Builds a kind from its name and parameters, rejecting parameters it does not take.
    pub(super) fn build(name: &str, gpu: Option<u32>, p: FaultParams) -> Result<FaultKind, String> {
        let info = fault_kind(name).ok_or_else(|| {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            format!(
                "unknown fault kind `{name}`; known kinds: {}",
                names.join(", ")
            )
        })?;
        for given in p.given() {
            if !info.params.contains(&given) {
                let takes = if info.params.is_empty() {
                    "no parameters".to_string()
                } else {
                    format!("only {}", info.params.join(", "))
                };
                return Err(format!(
                    "{} does not take `{given}` (it takes {takes})",
                    info.name
                ));
            }
        }
        if info.scope == Scope::Node && gpu.is_some() {
            return Err(format!(
                "{} acts on the whole node; remove `gpu`",
                info.name
            ));
        }
        let pct = |v: Option<u32>, default: u32| {
            in_range("sm_clock_percent", v.unwrap_or(default), 5, 99)
        };
        let per_minute =
            |default: u32| in_range("per_minute", p.per_minute.unwrap_or(default), 1, 6_000_000);
        Ok(match info.name {
            "thermal_throttle" => FaultKind::ThermalThrottle {
                target_celsius: p
                    .target_celsius
                    .map(|t| in_range("target_celsius", t, 30, 150))
                    .transpose()?,
                ramp_ms: p.ramp_ms.unwrap_or(30_000),
                sm_clock_percent: pct(p.sm_clock_percent, 60)?,
            },
            "power_cap" => FaultKind::PowerCap {
                limit_watts: p.limit_watts,
            },
            "power_brake" => FaultKind::PowerBrake {
                sm_clock_percent: pct(p.sm_clock_percent, 25)?,
            },
            "hw_slowdown" => FaultKind::HwSlowdown {
                sm_clock_percent: pct(p.sm_clock_percent, 50)?,
            },
            "clocks_locked" => FaultKind::ClocksLocked {
                sm_clock_mhz: p.sm_clock_mhz,
                memory_clock_mhz: p.memory_clock_mhz,
            },
            "pcie_downtrain" => {
                let link_gen = in_range("gen", p.link_gen.unwrap_or(3), 1, 6)?;
                let width = p.width.unwrap_or(8);
                if ![1, 2, 4, 8, 16, 32].contains(&width) {
                    return Err(format!(
                        "width = {width} is not a PCIe link width (1, 2, 4, 8, 16, 32)"
                    ));
                }
                FaultKind::PcieDowntrain {
                    link_gen,
                    width,
                    per_minute: per_minute(30)?,
                }
            }
            "pcie_replays" => FaultKind::PcieReplays {
                per_minute: per_minute(600)?,
            },
            "ecc_uncorrectable" => FaultKind::EccUncorrectable {
                count: in_range("count", p.count.unwrap_or(1), 1, 100_000)?,
                xid: match p.xid.unwrap_or(48) {
                    0 => None,
                    x => Some(xid_number(x)?),
                },
            },
            "row_remap_failure" => FaultKind::RowRemapFailure,
            "xid" => {
                let xid = xid_number(p.xid.ok_or("xid needs `xid = <number>`")?)?;
                let repeat = in_range("repeat", p.repeat.unwrap_or(1), 1, 1_000_000)?;
                let interval_ms = p.interval_ms.unwrap_or(10_000);
                if repeat > 1 && interval_ms == 0 {
                    return Err("interval must be positive when repeat > 1".into());
                }
                FaultKind::Xid {
                    xid,
                    repeat,
                    interval_ms,
                }
            }
            "fallen_off_bus" => FaultKind::FallenOffBus,
            "nvlink_down" => FaultKind::NvlinkDown {
                link: p.link.unwrap_or(0),
            },
            "nvlink_errors" => FaultKind::NvlinkErrors {
                link: p.link,
                per_minute: per_minute(120)?,
            },
            "driver_change" => {
                let driver_version = non_empty("driver_version", p.driver_version)?;
                let vbios_version = non_empty("vbios_version", p.vbios_version)?;
                if driver_version.is_some() && gpu.is_some() {
                    return Err(
                        "the driver is per node: remove `gpu`, or change `vbios_version` instead"
                            .into(),
                    );
                }
                match (driver_version, vbios_version) {
                    (None, None) => FaultKind::DriverChange {
                        driver_version: Some("550.90.07".into()),
                        vbios_version: None,
                    },
                    (d, v) => FaultKind::DriverChange {
                        driver_version: d,
                        vbios_version: v,
                    },
                }
            }
            "persistence_off" => FaultKind::PersistenceOff,
            "fan_failure" => FaultKind::FanFailure {
                fan_percent: in_range("fan_percent", p.fan_percent.unwrap_or(0), 0, 100)?,
                ramp_ms: p.ramp_ms.unwrap_or(60_000),
            },
            "memory_full" => FaultKind::MemoryFull,
            "gpu_hung" => FaultKind::GpuHung,
            "idle_with_process" => FaultKind::IdleWithProcess,
            "gpu_straggler" => FaultKind::GpuStraggler {
                slowdown_percent: in_range(
                    "slowdown_percent",
                    p.slowdown_percent.unwrap_or(17),
                    1,
                    60,
                )?,
            },
            "host_cpu_saturated" => FaultKind::HostCpuSaturated,
            "host_ram_pressure" => FaultKind::HostRamPressure,
            "disk_full" => FaultKind::DiskFull {
                mount: p.mount.unwrap_or_else(|| "/".into()),
            },
            "nic_saturated" => FaultKind::NicSaturated {
                nic: p.nic,
                direction: match p.direction.as_deref().unwrap_or("rx") {
                    "rx" => Direction::Rx,
                    "tx" => Direction::Tx,
                    "both" => Direction::Both,
                    other => {
                        return Err(format!(
                            "direction = \"{other}\": use \"rx\", \"tx\" or \"both\""
                        ));
                    }
                },
            },
            "nic_errors" => FaultKind::NicErrors {
                nic: p.nic,
                per_minute: per_minute(600)?,
            },
            "kernel_change" => FaultKind::KernelChange {
                kernel_version: non_empty("kernel_version", p.kernel_version)?
                    .unwrap_or_else(|| "5.15.0-113-generic".into()),
            },
            other => unreachable!("fault kind {other} is in the catalog but not built"),
        })
    }

    /// Canonical kind name, as in the catalog.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ThermalThrottle { .. } => "thermal_throttle",
            FaultKind::PowerCap { .. } => "power_cap",
            FaultKind::PowerBrake { .. } => "power_brake",
            FaultKind::HwSlowdown { .. } => "hw_slowdown",
            FaultKind::ClocksLocked { .. } => "clocks_locked",
            FaultKind::PcieDowntrain { .. } => "pcie_downtrain",
            FaultKind::PcieReplays { .. } => "pcie_replays",
            FaultKind::EccUncorrectable { .. } => "ecc_uncorrectable",
            FaultKind::RowRemapFailure => "row_remap_failure",
            FaultKind::Xid { .. } => "xid",
            FaultKind::FallenOffBus => "fallen_off_bus",
            FaultKind::NvlinkDown { .. } => "nvlink_down",
            FaultKind::NvlinkErrors { .. } => "nvlink_errors",
            FaultKind::DriverChange { .. } => "driver_change",
            FaultKind::PersistenceOff => "persistence_off",
            FaultKind::FanFailure { .. } => "fan_failure",
            FaultKind::MemoryFull => "memory_full",
            FaultKind::GpuHung => "gpu_hung",
            FaultKind::IdleWithProcess => "idle_with_process",
            FaultKind::GpuStraggler { .. } => "gpu_straggler",
            FaultKind::HostCpuSaturated => "host_cpu_saturated",
            FaultKind::HostRamPressure => "host_ram_pressure",
            FaultKind::DiskFull { .. } => "disk_full",
            FaultKind::NicSaturated { .. } => "nic_saturated",
            FaultKind::NicErrors { .. } => "nic_errors",
            FaultKind::KernelChange { .. } => "kernel_change",
        }
    }

    pub fn info(&self) -> &'static FaultKindInfo {
        fault_kind(self.name()).expect("every kind is in the catalog")
    }

    /// Whether the kind changes what the node's GPUs read (host faults that starve GPUs count).
    pub(super) fn touches_gpus(&self) -> bool {
        self.info().scope == Scope::Gpu
            || matches!(
                self,
                FaultKind::HostCpuSaturated | FaultKind::NicSaturated { .. }
            )
    }

    /// Checks the parameters against a GPU model and GPU count; `Err` says what is wrong.
    pub(super) fn validate_for(
        &self,
        gpu: Option<u32>,
        p: &GpuModelProfile,
        gpu_count: u32,
    ) -> Result<(), String> {
        if let Some(g) = gpu
            && g >= gpu_count
        {
            return Err(format!(
                "gpu = {g}, but the node has {gpu_count} GPUs (0..={})",
                gpu_count.saturating_sub(1)
            ));
        }
        let host = p.host;
        match self {
            FaultKind::ThermalThrottle {
                target_celsius: Some(t),
                ..
            } if *t >= p.temperature_shutdown_celsius => Err(format!(
                "target_celsius = {t} is at or above the {} shutdown temperature ({} °C)",
                p.id, p.temperature_shutdown_celsius
            )),
            FaultKind::PowerCap {
                limit_watts: Some(w),
            } => {
                let (lo, hi) = (p.power_limit_min_mw / 1000, p.power_limit_max_mw / 1000);
                in_range("limit_watts", *w, lo, hi)
                    .map(|_| ())
                    .map_err(|e| format!("{e} for {}", p.id))
            }
            FaultKind::ClocksLocked {
                memory_clock_mhz: Some(m),
                ..
            } if *m >= p.memory_clock_max_mhz || *m < p.memory_clock_max_mhz / 4 => Err(format!(
                "memory_clock_mhz = {m} must lie below the {} MHz max and above a quarter of it for {}",
                p.memory_clock_max_mhz, p.id
            )),
            FaultKind::ClocksLocked {
                sm_clock_mhz: Some(m),
                ..
            } => in_range(
                "sm_clock_mhz",
                *m,
                p.sm_clock_idle_mhz,
                p.sm_clock_max_mhz - p.clock_step_mhz,
            )
            .map(|_| ())
            .map_err(|e| format!("{e} for {}", p.id)),
            FaultKind::PcieDowntrain {
                link_gen, width, ..
            } => {
                if *link_gen > p.pcie_gen_max || *width > p.pcie_width_max {
                    Err(format!(
                        "gen {link_gen} x{width} is above the {} link (gen {} x{})",
                        p.id, p.pcie_gen_max, p.pcie_width_max
                    ))
                } else if *link_gen == p.pcie_gen_max && *width == p.pcie_width_max {
                    Err(format!(
                        "gen {link_gen} x{width} is the {} full link; lower gen or width",
                        p.id
                    ))
                } else {
                    Ok(())
                }
            }
            FaultKind::RowRemapFailure if !p.row_remapping => Err(format!(
                "{} retires pages instead of remapping rows; row_remap_failure needs Ampere or later",
                p.id
            )),
            FaultKind::NvlinkDown { link: l } | FaultKind::NvlinkErrors { link: Some(l), .. }
                if *l >= p.nvlink_count =>
            {
                if p.nvlink_count == 0 {
                    Err(format!("{} has no NVLink", p.id))
                } else {
                    Err(format!(
                        "link = {l}, but {} has {} NVLinks (0..={})",
                        p.id,
                        p.nvlink_count,
                        p.nvlink_count - 1
                    ))
                }
            }
            FaultKind::NvlinkErrors { link: None, .. } if p.nvlink_count == 0 => {
                Err(format!("{} has no NVLink", p.id))
            }
            FaultKind::FanFailure { .. } if !p.has_fans() => Err(format!(
                "{} has no fans; fan_failure needs an actively cooled model (e.g. rtx-6000-ada)",
                p.id
            )),
            FaultKind::DiskFull { mount } if !host.disks.iter().any(|d| d.mount_point == mount) => {
                let mounts: Vec<&str> = host.disks.iter().map(|d| d.mount_point).collect();
                Err(format!(
                    "mount = \"{mount}\" is not a filesystem of the simulated host ({})",
                    mounts.join(", ")
                ))
            }
            FaultKind::NicSaturated { nic: Some(n), .. }
            | FaultKind::NicErrors { nic: Some(n), .. }
                if !host.nics.iter().any(|x| x.name == n) =>
            {
                let nics: Vec<&str> = host.nics.iter().map(|x| x.name).collect();
                Err(format!(
                    "nic = \"{n}\" is not a NIC of the simulated host ({})",
                    nics.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// What the fault does to one GPU's state while it is active.
    pub(super) fn apply_gpu(&self, l: &mut Live, c: &GpuCtx) {
        let p = c.profile;
        match self {
            FaultKind::ThermalThrottle {
                target_celsius,
                ramp_ms,
                sm_clock_percent,
            } => {
                let target = target_celsius.unwrap_or(p.temperature_slowdown_celsius + 2);
                thermal(l, c, f64::from(target), *ramp_ms, *sm_clock_percent);
            }
            FaultKind::FanFailure {
                fan_percent,
                ramp_ms,
            } => {
                l.fan_pin = Some(f64::from(*fan_percent));
                thermal(
                    l,
                    c,
                    f64::from(p.temperature_slowdown_celsius + 2),
                    *ramp_ms,
                    60,
                );
            }
            FaultKind::PowerCap { limit_watts } => {
                l.limit_w = l.limit_w.min(f64::from(power_cap_watts(*limit_watts, p)));
            }
            FaultKind::PowerBrake { sm_clock_percent } => {
                l.sm_ratio = l.sm_ratio.min(f64::from(*sm_clock_percent) / 100.0);
                l.reasons |= ce::HW_POWER_BRAKE_SLOWDOWN | ce::HW_SLOWDOWN;
            }
            FaultKind::HwSlowdown { sm_clock_percent } => {
                l.sm_ratio = l.sm_ratio.min(f64::from(*sm_clock_percent) / 100.0);
                l.reasons |= ce::HW_SLOWDOWN;
            }
            FaultKind::ClocksLocked {
                sm_clock_mhz,
                memory_clock_mhz,
            } => {
                l.app_mem_mhz = *memory_clock_mhz;
                // Only the memory clock given: the SM clock stays free, and (as with memory
                // locked clocks) no clock-event bit says so.
                if sm_clock_mhz.is_none() && memory_clock_mhz.is_some() {
                    return;
                }
                let mhz = locked_clock_mhz(*sm_clock_mhz, p);
                l.app_sm_mhz = Some(mhz);
                l.sm_ratio = l
                    .sm_ratio
                    .min(f64::from(mhz) / f64::from(p.sm_clock_max_mhz));
                l.reasons |= ce::APPLICATIONS_CLOCKS_SETTING;
            }
            FaultKind::PcieDowntrain {
                link_gen, width, ..
            } => {
                l.pcie_gen = l.pcie_gen.min(*link_gen);
                l.pcie_width = l.pcie_width.min(*width);
            }
            FaultKind::FallenOffBus => l.lost = true,
            FaultKind::MemoryFull => l.memory_full = true,
            FaultKind::GpuHung => {
                l.util = 100.0;
                l.mem_util = 0.0;
                l.process = false;
                l.power_mult *= 0.45;
            }
            FaultKind::IdleWithProcess => {
                l.util = 0.0;
                l.mem_util = 0.0;
                l.idle_clocks = true;
                l.reasons |= ce::GPU_IDLE;
                l.power_mult *= 1.25;
                l.traffic *= 0.01;
            }
            FaultKind::GpuStraggler { slowdown_percent } => {
                let s = f64::from(*slowdown_percent) / 100.0;
                // Clocks drop by 40 % of the slowdown (17 % → ~7 %, still above a "90 % of max"
                // threshold); power by the full slowdown. Only fleet statistics single it out.
                let r = 1.0 - 0.4 * s;
                l.sm_ratio = l.sm_ratio.min(r);
                l.power_mult *= (1.0 - s) / r.powf(1.5);
            }
            FaultKind::HostCpuSaturated => {
                l.util = l.util.min(30.0);
                l.mem_util *= 0.3;
                l.traffic *= 0.3;
            }
            FaultKind::NicSaturated { .. } => {
                l.util = l.util.min(88.0);
                l.mem_util *= 0.9;
            }
            FaultKind::PcieReplays { .. }
            | FaultKind::EccUncorrectable { .. }
            | FaultKind::RowRemapFailure
            | FaultKind::Xid { .. }
            | FaultKind::NvlinkDown { .. }
            | FaultKind::NvlinkErrors { .. }
            | FaultKind::DriverChange { .. }
            | FaultKind::PersistenceOff
            | FaultKind::HostRamPressure
            | FaultKind::DiskFull { .. }
            | FaultKind::NicErrors { .. }
            | FaultKind::KernelChange { .. } => {}
        }
    }

    /// Times (ms after the fault's start) at which its GPU effect changes while active, so
    /// that counters integrate exactly between them.
    pub(super) fn gpu_breakpoints(&self, c: &GpuCtx) -> [Option<i64>; 2] {
        let p = c.profile;
        let (target, ramp_ms) = match self {
            FaultKind::ThermalThrottle {
                target_celsius,
                ramp_ms,
                ..
            } => (
                f64::from(target_celsius.unwrap_or(p.temperature_slowdown_celsius + 2)),
                *ramp_ms,
            ),
            FaultKind::FanFailure { ramp_ms, .. } => {
                (f64::from(p.temperature_slowdown_celsius + 2), *ramp_ms)
            }
            _ => return [None, None],
        };
        let cross = |thr: i32| {
            let thr = f64::from(thr);
            (target >= thr).then(|| crossing_ms(c.temp_base, target, ramp_ms, thr))
        };
        [
            cross(p.temperature_max_operating_celsius),
            cross(p.temperature_slowdown_celsius),
        ]
    }
}

/// What `apply_gpu` needs to know about the GPU and the fault's age.
pub(super) struct GpuCtx {
    pub profile: &'static GpuModelProfile,
    /// Milliseconds since the fault started (≥ 0 while active).
    pub elapsed_ms: i64,
    /// The GPU's noise-free temperature under the workload, °C.
    pub temp_base: f64,
}

/// Default enforced limit for `power_cap`: 60 % of the default limit, at least the minimum.
pub(super) fn power_cap_watts(limit_watts: Option<u32>, p: &GpuModelProfile) -> u32 {
    limit_watts.unwrap_or_else(|| {
        (p.power_limit_default_mw / 1000 * 6 / 100 * 10).max(p.power_limit_min_mw / 1000)
    })
}

/// Default locked application clock: 70 % of max, on the model's clock step.
pub(super) fn locked_clock_mhz(sm_clock_mhz: Option<u32>, p: &GpuModelProfile) -> u32 {
    sm_clock_mhz.unwrap_or(p.sm_clock_max_mhz * 7 / 10 / p.clock_step_mhz * p.clock_step_mhz)
}

fn ramp_temp(c: &GpuCtx, target: f64, ramp_ms: u64) -> f64 {
    let progress = if ramp_ms == 0 {
        1.0
    } else {
        (c.elapsed_ms as f64 / ramp_ms as f64).clamp(0.0, 1.0)
    };
    c.temp_base + (target - c.temp_base) * progress
}

/// Milliseconds after the start at which a linear ramp from `base` to `target` reaches `thr`.
fn crossing_ms(base: f64, target: f64, ramp_ms: u64, thr: f64) -> i64 {
    if thr <= base || target <= base {
        0
    } else {
        (ramp_ms as f64 * (thr - base) / (target - base)).ceil() as i64
    }
}

/// Temperature ramps to `target`; above max operating the SW thermal bit is set and clocks
/// drop half-way to `pct`; above slowdown the HW thermal bit too and clocks drop to `pct`.
fn thermal(l: &mut Live, c: &GpuCtx, target: f64, ramp_ms: u64, pct: u32) {
    let p = c.profile;
    let temp = ramp_temp(c, target, ramp_ms);
    l.temp_pin = Some(temp);
    let floor = f64::from(pct) / 100.0;
    let cross = |thr: i32| {
        c.elapsed_ms >= crossing_ms(c.temp_base, target, ramp_ms, f64::from(thr))
            && target >= f64::from(thr)
    };
    if cross(p.temperature_slowdown_celsius) {
        l.reasons |= ce::SW_THERMAL_SLOWDOWN | ce::HW_THERMAL_SLOWDOWN;
        l.sm_ratio = l.sm_ratio.min(floor);
    } else if cross(p.temperature_max_operating_celsius) {
        l.reasons |= ce::SW_THERMAL_SLOWDOWN;
        l.sm_ratio = l.sm_ratio.min(1.0 - (1.0 - floor) * 0.5);
    }
}

impl Fault {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the fault acts on `node`.
    pub fn applies_to_node(&self, node: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
    }

    /// Whether the fault acts on GPU `index` (node-scoped faults act on none by index).
    pub fn applies_to_gpu(&self, index: u32) -> bool {
        self.gpu.is_none_or(|g| g == index)
    }

    /// Whether the fault is on at `t_ms` after the origin.
    #[inline]
    pub fn active_at(&self, t_ms: i64) -> bool {
        t_ms >= self.start_ms as i64 && self.end_ms.is_none_or(|e| t_ms < e as i64)
    }

    /// Milliseconds the fault has been on by `t_ms` (0 before it starts; stops at `end`).
    #[inline]
    pub fn on_for_ms(&self, t_ms: i64) -> u64 {
        let until = self.end_ms.map_or(t_ms, |e| t_ms.min(e as i64));
        until.saturating_sub(self.start_ms as i64).max(0) as u64
    }

    /// Whether the fault has started by `t_ms` (it may have ended since).
    #[inline]
    pub fn started_by(&self, t_ms: i64) -> bool {
        t_ms >= self.start_ms as i64
    }
}

/// `count` events per minute over `on_ms`, as a whole count.
#[inline]
pub(super) fn per_minute_count(per_minute: u32, on_ms: u64) -> u64 {
    u64::from(per_minute) * on_ms / 60_000
}

#[cfg(test)]
mod tests {
    use super::super::models::model_by_name;
    use super::*;

    fn build(name: &str, gpu: Option<u32>, p: FaultParams) -> Result<FaultKind, String> {
        FaultKind::build(name, gpu, p)
    }

    #[test]
    fn catalog_names_are_unique_and_buildable() {
        let mut seen = std::collections::HashSet::new();
        for k in fault_kinds() {
            for n in std::iter::once(k.name).chain(k.aliases.iter().copied()) {
                assert!(seen.insert(n), "duplicate kind name {n}");
            }
            let params = if k.name == "xid" {
                FaultParams {
                    xid: Some(79),
                    ..Default::default()
                }
            } else {
                FaultParams::default()
            };
            let built = build(k.name, None, params).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            assert_eq!(built.name(), k.name);
        }
        assert_eq!(
            build("applications_clocks", Some(0), FaultParams::default())
                .unwrap()
                .name(),
            "clocks_locked"
        );
    }

    #[test]
    fn build_rejects_bad_parameters() {
        let cases: &[(&str, Option<u32>, FaultParams, &str)] = &[
            (
                "thermal",
                None,
                FaultParams::default(),
                "unknown fault kind `thermal`",
            ),
            (
                "thermal_throttle",
                None,
                FaultParams {
                    link_gen: Some(3),
                    ..Default::default()
                },
                "does not take `gen`",
            ),
            (
                "fallen_off_bus",
                None,
                FaultParams {
                    link: Some(1),
                    ..Default::default()
                },
                "takes no parameters",
            ),
            (
                "host_cpu_saturated",
                Some(1),
                FaultParams::default(),
                "remove `gpu`",
            ),
            ("xid", None, FaultParams::default(), "needs `xid"),
            (
                "xid",
                None,
                FaultParams {
                    xid: Some(1000),
                    ..Default::default()
                },
                "out of range",
            ),
            (
                "pcie_downtrain",
                None,
                FaultParams {
                    width: Some(3),
                    ..Default::default()
                },
                "not a PCIe link width",
            ),
            (
                "hw_slowdown",
                None,
                FaultParams {
                    sm_clock_percent: Some(100),
                    ..Default::default()
                },
                "out of range",
            ),
            (
                "driver_change",
                Some(2),
                FaultParams {
                    driver_version: Some("535.1".into()),
                    ..Default::default()
                },
                "per node",
            ),
            (
                "nic_saturated",
                None,
                FaultParams {
                    direction: Some("up".into()),
                    ..Default::default()
                },
                "direction",
            ),
            (
                "kernel_change",
                None,
                FaultParams {
                    kernel_version: Some(" ".into()),
                    ..Default::default()
                },
                "must not be empty",
            ),
        ];
        for (name, gpu, params, want) in cases {
            let err = build(name, *gpu, params.clone()).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn validate_for_checks_the_model() {
        let h100 = model_by_name("h100").unwrap();
        let t4 = model_by_name("t4").unwrap();
        let l40s = model_by_name("l40s").unwrap();
        let k = |name: &str, p: FaultParams| build(name, None, p).unwrap();
        let cases: Vec<(FaultKind, Option<u32>, &GpuModelProfile, Option<&str>)> = vec![
            (
                k("thermal_throttle", FaultParams::default()),
                Some(7),
                h100,
                None,
            ),
            (
                k("thermal_throttle", FaultParams::default()),
                Some(8),
                h100,
                Some("has 8 GPUs"),
            ),
            (
                k(
                    "thermal_throttle",
                    FaultParams {
                        target_celsius: Some(95),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("shutdown"),
            ),
            (
                k(
                    "power_cap",
                    FaultParams {
                        limit_watts: Some(150),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("out of range"),
            ),
            (
                k(
                    "power_cap",
                    FaultParams {
                        limit_watts: Some(300),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                None,
            ),
            (
                k(
                    "pcie_downtrain",
                    FaultParams {
                        link_gen: Some(5),
                        width: Some(16),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("full link"),
            ),
            (
                k(
                    "pcie_downtrain",
                    FaultParams {
                        link_gen: Some(4),
                        ..Default::default()
                    },
                ),
                None,
                t4,
                Some("above"),
            ),
            (
                k("row_remap_failure", FaultParams::default()),
                None,
                t4,
                Some("retires pages"),
            ),
            (
                k(
                    "nvlink_down",
                    FaultParams {
                        link: Some(18),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("18 NVLinks"),
            ),
            (
                k("nvlink_errors", FaultParams::default()),
                None,
                l40s,
                Some("no NVLink"),
            ),
            (
                k("fan_failure", FaultParams::default()),
                None,
                h100,
                Some("no fans"),
            ),
            (
                k("fan_failure", FaultParams::default()),
                None,
                model_by_name("rtx-6000-ada").unwrap(),
                None,
            ),
            (
                k(
                    "disk_full",
                    FaultParams {
                        mount: Some("/data".into()),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("not a filesystem"),
            ),
            (
                k(
                    "nic_errors",
                    FaultParams {
                        nic: Some("eth9".into()),
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("not a NIC"),
            ),
            (
                k(
                    "clocks_locked",
                    FaultParams {
                        sm_clock_mhz: Some(1980),
                        memory_clock_mhz: None,
                        ..Default::default()
                    },
                ),
                None,
                h100,
                Some("out of range"),
            ),
        ];
        for (kind, gpu, model, want) in cases {
            let got = kind.validate_for(gpu, model, 8);
            match want {
                None => assert!(got.is_ok(), "{kind:?}: {got:?}"),
                Some(w) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(w)),
                    "{kind:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn fault_windows() {
        let f = Fault {
            kind: FaultKind::GpuHung,
            node: None,
            gpu: None,
            start_ms: 1_000,
            end_ms: Some(3_000),
            line: 0,
        };
        for (t, active, on) in [
            (0, false, 0),
            (999, false, 0),
            (1_000, true, 0),
            (2_500, true, 1_500),
            (3_000, false, 2_000),
            (9_000, false, 2_000),
        ] {
            assert_eq!(f.active_at(t), active, "{t}");
            assert_eq!(f.on_for_ms(t), on, "{t}");
        }
        assert_eq!(per_minute_count(600, 30_000), 300);
        let h100 = model_by_name("h100").unwrap();
        assert_eq!(power_cap_watts(None, h100), 420);
        assert_eq!(power_cap_watts(None, model_by_name("t4").unwrap()), 60);
        assert_eq!(locked_clock_mhz(None, h100), 1380);
    }
}
