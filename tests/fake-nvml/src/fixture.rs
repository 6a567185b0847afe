//! The fixture: what the fake GPUs say. Parsed and checked once, at `nvmlInit`, so that a typo
//! in a test fixture fails loudly there instead of as a strange reading later.
//!
//! Every reading is a *field* (see [`FIELDS`]: name, kind, H100 SXM default). A field's value
//! in a fixture is one of
//! - a plain value (`45`, `"Hopper"`, `true`),
//! - an error `{"error": "NOT_SUPPORTED"}` (any `NVML_ERROR_*` name without the prefix),
//! - a list of those, consumed one per read; the last one repeats.

use std::collections::HashMap;

use nvml_wrapper_sys::bindings::*;
use serde_json::{Map, Value};

/// An NVML return code.
pub type Ret = nvmlReturn_t;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
    Str,
    /// Any JSON number (GPM metrics).
    Float,
    /// A list of `{"pid": u32, "used_memory": u64}`.
    Processes,
}

/// Every field the fake serves, with the value a healthy, busy H100 SXM 80GB gives. Static facts
/// (name, memory, limits, clocks, thresholds, firmware versions) are those of a real H100 80GB
/// HBM3 (`tests/fixtures/real/h100-sxm-580.159.04.*`; `tests/tests/realism.rs` keeps them
/// equal); readings are those of a busy GPU on an HGX board (18 NVLinks). Identity fields that
/// are empty here are derived from the GPU index.
pub const FIELDS: &[(&str, Kind, &str)] = &[
    ("handle", Kind::Bool, "true"),
    ("name", Kind::Str, r#""NVIDIA H100 80GB HBM3""#),
    ("uuid", Kind::Str, r#""""#),
    ("serial", Kind::Str, r#""""#),
    ("pci_bus_id", Kind::Str, r#""""#),
    ("pci_device_id", Kind::Int, "590352606"),
    ("pci_subsystem_id", Kind::Int, "381751518"),
    ("architecture", Kind::Str, r#""hopper""#),
    ("cuda_compute_capability", Kind::Str, r#""9.0""#),
    ("board_part_number", Kind::Str, r#""692-2G520-0200-000""#),
    ("vbios_version", Kind::Str, r#""96.00.DA.00.0C""#),
    ("inforom_image_version", Kind::Str, r#""G520.0200.00.05""#),
    ("gsp_firmware_version", Kind::Str, r#""550.163.01""#),
    ("persistence_mode", Kind::Bool, "true"),
    ("compute_mode", Kind::Str, r#""default""#),
    ("mig_mode", Kind::Bool, "false"),
    ("ecc_mode", Kind::Bool, "true"),
    ("memory_total", Kind::Int, "85520809984"),
    ("memory_reserved", Kind::Int, "503316480"),
    ("memory_used", Kind::Int, "77309411328"),
    ("bar1_total", Kind::Int, "137438953472"),
    ("bar1_used", Kind::Int, "12582912"),
    ("pcie_max_gen", Kind::Int, "5"),
    ("pcie_max_width", Kind::Int, "16"),
    ("pcie_gen", Kind::Int, "5"),
    ("pcie_width", Kind::Int, "16"),
    ("pcie_tx", Kind::Int, "412000"),
    ("pcie_rx", Kind::Int, "1250000"),
    ("pcie_replay", Kind::Int, "0"),
    ("max_clock_sm", Kind::Int, "1980"),
    ("max_clock_mem", Kind::Int, "2619"),
    ("max_clock_graphics", Kind::Int, "1980"),
    ("clock_sm", Kind::Int, "1980"),
    ("clock_mem", Kind::Int, "2619"),
    ("clock_graphics", Kind::Int, "1980"),
    ("app_clock_sm", Kind::Int, "1980"),
    ("app_clock_mem", Kind::Int, "2619"),
    ("clock_event_reasons", Kind::Int, "0"),
    ("power_limit_default", Kind::Int, "700000"),
    ("power_limit_min", Kind::Int, "200000"),
    ("power_limit_max", Kind::Int, "700000"),
    ("power_limit_enforced", Kind::Int, "700000"),
    ("power_usage", Kind::Int, "612000"),
    ("total_energy", Kind::Int, "51840000000"),
    ("temp_threshold_shutdown", Kind::Int, "95"),
    ("temp_threshold_slowdown", Kind::Int, "89"),
    ("temp_threshold_gpu_max", Kind::Int, "87"),
    ("temp_threshold_mem_max", Kind::Int, "95"),
    // nvmlDeviceGetFieldValues as a whole (set an error to refuse every field at once).
    ("field_values", Kind::Bool, "true"),
    ("temperature_gpu", Kind::Int, "52"),
    ("temperature_memory", Kind::Int, "61"),
    // SXM boards have no fans: nvidia-smi shows "Fan Speed: N/A".
    ("fan_count", Kind::Int, "0"),
    ("fan_speed", Kind::Int, r#"{"error": "NOT_SUPPORTED"}"#),
    ("utilization_gpu", Kind::Int, "98"),
    ("utilization_memory", Kind::Int, "61"),
    ("utilization_encoder", Kind::Int, "0"),
    ("utilization_decoder", Kind::Int, "0"),
    ("violation_power", Kind::Int, "1250000000"),
    ("violation_thermal", Kind::Int, "0"),
    ("violation_sync_boost", Kind::Int, "0"),
    ("violation_board_limit", Kind::Int, "0"),
    ("violation_low_utilization", Kind::Int, "0"),
    ("violation_reliability", Kind::Int, "0"),
    ("ecc_corrected_volatile", Kind::Int, "0"),
    ("ecc_uncorrected_volatile", Kind::Int, "0"),
    ("ecc_corrected_aggregate", Kind::Int, "0"),
    ("ecc_uncorrected_aggregate", Kind::Int, "0"),
    // Page retirement is pre-Ampere; Hopper remaps rows instead.
    (
        "retired_pages_sbe",
        Kind::Int,
        r#"{"error": "NOT_SUPPORTED"}"#,
    ),
    (
        "retired_pages_dbe",
        Kind::Int,
        r#"{"error": "NOT_SUPPORTED"}"#,
    ),
    (
        "retired_pages_pending",
        Kind::Bool,
        r#"{"error": "NOT_SUPPORTED"}"#,
    ),
    ("remapped_correctable", Kind::Int, "0"),
    ("remapped_uncorrectable", Kind::Int, "0"),
    ("remapped_pending", Kind::Bool, "false"),
    ("remapped_failure", Kind::Bool, "false"),
    ("performance_state", Kind::Int, "0"),
    // Links 0..nvlink_count answer; higher links are INVALID_ARGUMENT.
    ("nvlink_count", Kind::Int, "18"),
    ("nvlink_active", Kind::Bool, "true"),
    ("nvlink_replay_errors", Kind::Int, "0"),
    ("nvlink_recovery_errors", Kind::Int, "0"),
    ("nvlink_crc_flit_errors", Kind::Int, "0"),
    ("nvlink_crc_data_errors", Kind::Int, "0"),
    (
        "processes",
        Kind::Processes,
        r#"[{"pid": 4242, "used_memory": 76235669504}]"#,
    ),
    // SingleBitEcc | DoubleBitEcc | PState | XidCriticalError | Clock
    ("supported_event_types", Kind::Int, "31"),
    // GPM (nvmlGpm*): whether nvmlGpmQueryDeviceSupport says yes (false on pre-Hopper GPUs;
    // an error makes the query itself fail), then what nvmlGpmMetricsGet answers per metric
    // for a busy mixed-precision training job: percentages 0-100, traffic in MiB/s.
    ("gpm_supported", Kind::Bool, "true"),
    ("gpm_graphics_util", Kind::Float, "97.5"),
    ("gpm_sm_util", Kind::Float, "86.2"),
    ("gpm_sm_occupancy", Kind::Float, "36.4"),
    ("gpm_any_tensor_util", Kind::Float, "47.1"),
    ("gpm_dram_bw_util", Kind::Float, "44.8"),
    ("gpm_fp64_util", Kind::Float, "0.0"),
    ("gpm_fp32_util", Kind::Float, "11.3"),
    ("gpm_fp16_util", Kind::Float, "8.6"),
    ("gpm_pcie_tx_per_sec", Kind::Float, "402.0"),
    ("gpm_pcie_rx_per_sec", Kind::Float, "1220.0"),
    ("gpm_nvlink_total_rx_per_sec", Kind::Float, "81000.0"),
    ("gpm_nvlink_total_tx_per_sec", Kind::Float, "80500.0"),
];

/// System-wide fields (top level of a fixture).
const SYSTEM_FIELDS: &[(&str, Kind, &str)] = &[
    ("driver_version", Kind::Str, r#""550.163.01""#),
    ("nvml_version", Kind::Str, r#""12.550.163.01""#),
    ("cuda_driver_version", Kind::Int, "12040"),
    ("device_count", Kind::Int, "-1"),
    ("event_set", Kind::Bool, "true"),
];

/// PCI buses of the eight GPUs on an HGX H100 baseboard.
const HGX_BUSES: [u32; 8] = [0x1A, 0x1B, 0x4A, 0x4B, 0x8A, 0x8B, 0xCA, 0xCB];

/// NVML return codes by the name fixtures use (`NVML_ERROR_` left off), with nvml.h's text.
pub const ERRORS: &[(&str, Ret, &str)] = &[
    (
        "UNINITIALIZED",
        nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
        "Uninitialized",
    ),
    (
        "INVALID_ARGUMENT",
        nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        "Invalid Argument",
    ),
    (
        "NOT_SUPPORTED",
        nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        "Not Supported",
    ),
    (
        "NO_PERMISSION",
        nvmlReturn_enum_NVML_ERROR_NO_PERMISSION,
        "Insufficient Permissions",
    ),
    (
        "NOT_FOUND",
        nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
        "Not Found",
    ),
    (
        "INSUFFICIENT_SIZE",
        nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE,
        "Insufficient Size",
    ),
    (
        "INSUFFICIENT_POWER",
        nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_POWER,
        "Insufficient External Power",
    ),
    (
        "DRIVER_NOT_LOADED",
        nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED,
        "Driver Not Loaded",
    ),
    ("TIMEOUT", nvmlReturn_enum_NVML_ERROR_TIMEOUT, "Timeout"),
    (
        "IRQ_ISSUE",
        nvmlReturn_enum_NVML_ERROR_IRQ_ISSUE,
        "Interrupt request issue",
    ),
    (
        "LIBRARY_NOT_FOUND",
        nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND,
        "NVML Shared Library Not Found",
    ),
    (
        "FUNCTION_NOT_FOUND",
        nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND,
        "Function Not Found",
    ),
    (
        "CORRUPTED_INFOROM",
        nvmlReturn_enum_NVML_ERROR_CORRUPTED_INFOROM,
        "Corrupted infoROM",
    ),
    (
        "GPU_IS_LOST",
        nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
        "GPU is lost",
    ),
    (
        "RESET_REQUIRED",
        nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED,
        "GPU requires restart",
    ),
    (
        "OPERATING_SYSTEM",
        nvmlReturn_enum_NVML_ERROR_OPERATING_SYSTEM,
        "The operating system has blocked the request",
    ),
    (
        "LIB_RM_VERSION_MISMATCH",
        nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        "RM has detected an NVML/RM version mismatch",
    ),
    (
        "IN_USE",
        nvmlReturn_enum_NVML_ERROR_IN_USE,
        "In use by another client",
    ),
    (
        "MEMORY",
        nvmlReturn_enum_NVML_ERROR_MEMORY,
        "Insufficient Memory",
    ),
    ("NO_DATA", nvmlReturn_enum_NVML_ERROR_NO_DATA, "No data"),
    (
        "UNKNOWN",
        nvmlReturn_enum_NVML_ERROR_UNKNOWN,
        "Unknown Error",
    ),
];

fn error_code(name: &str) -> Option<Ret> {
    let name = name.strip_prefix("NVML_ERROR_").unwrap_or(name);
    ERRORS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, c, _)| *c)
}

/// One answer: a value, or the error code the call returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Value),
    Error(Ret),
}

/// A field's answers: always the same, or one per read (the last repeats).
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    One(Item),
    Seq(Vec<Item>),
}

/// An event waiting in the fake driver for an event set to pick it up.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEvent {
    /// `nvmlEventType*` bit.
    pub event_type: u64,
    /// For Xid events, the Xid number.
    pub data: u64,
    /// Delivered by the first wait after this many waits on the set.
    pub after_waits: u64,
}

/// One fake GPU.
#[derive(Debug, Clone)]
pub struct Gpu {
    fields: HashMap<&'static str, Spec>,
    /// Reads so far per (field, instance): sequences advance separately per NVLink.
    reads: HashMap<(&'static str, u32), usize>,
    /// Device calls counted toward `lost_after_calls`.
    calls: u64,
    lost_after_calls: Option<u64>,
    /// If set, only calls of this function count toward `lost_after_calls`.
    lost_counting: Option<String>,
    lost: bool,
    pub events: Vec<FakeEvent>,
}

/// The whole fake driver state a fixture describes.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub system: Gpu,
    pub gpus: Vec<Gpu>,
}

impl Gpu {
    /// Counts a call of `function` on this GPU and says whether the GPU is lost by now.
    pub fn call(&mut self, function: &str) -> Result<(), Ret> {
        if self.lost {
            return Err(nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
        }
        let counts = self
            .lost_counting
            .as_deref()
            .is_none_or(|counted| counted == function);
        if counts {
            self.calls += 1;
        }
        if self
            .lost_after_calls
            .is_some_and(|limit| self.calls > limit)
        {
            self.lost = true;
            return Err(nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
        }
        Ok(())
    }

    /// The next answer of `key`.
    pub fn read(&mut self, key: &'static str) -> Result<Value, Ret> {
        self.read_for(key, 0)
    }

    /// The next answer of `key` for one instance of it (an NVLink): each instance goes
    /// through a sequence on its own.
    pub fn read_for(&mut self, key: &'static str, instance: u32) -> Result<Value, Ret> {
        let Some(spec) = self.fields.get(key) else {
            eprintln!("fake-nvml: internal error: no field {key:?}");
            return Err(nvmlReturn_enum_NVML_ERROR_UNKNOWN);
        };
        let item = match spec {
            Spec::One(item) => item,
            Spec::Seq(items) => {
                let n = self.reads.entry((key, instance)).or_insert(0);
                let item = &items[(*n).min(items.len() - 1)];
                *n += 1;
                item
            }
        };
        match item {
            Item::Value(v) => Ok(v.clone()),
            Item::Error(code) => Err(*code),
        }
    }

    pub fn u64(&mut self, key: &'static str) -> Result<u64, Ret> {
        let v = self.read(key)?;
        v.as_u64()
            .or_else(|| v.as_i64().map(|i| i as u64))
            .ok_or_else(|| type_error(key, &v))
    }

    pub fn u64_for(&mut self, key: &'static str, instance: u32) -> Result<u64, Ret> {
        let v = self.read_for(key, instance)?;
        v.as_u64().ok_or_else(|| type_error(key, &v))
    }

    pub fn bool_for(&mut self, key: &'static str, instance: u32) -> Result<bool, Ret> {
        let v = self.read_for(key, instance)?;
        v.as_bool().ok_or_else(|| type_error(key, &v))
    }

    pub fn f64(&mut self, key: &'static str) -> Result<f64, Ret> {
        let v = self.read(key)?;
        v.as_f64().ok_or_else(|| type_error(key, &v))
    }

    pub fn u32(&mut self, key: &'static str) -> Result<u32, Ret> {
        Ok(self.u64(key)? as u32)
    }

    pub fn bool(&mut self, key: &'static str) -> Result<bool, Ret> {
        self.bool_for(key, 0)
    }

    pub fn string(&mut self, key: &'static str) -> Result<String, Ret> {
        let v = self.read(key)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| type_error(key, &v))
    }

    /// `(pid, used memory)` of each running compute process.
    pub fn processes(&mut self) -> Result<Vec<(u32, u64)>, Ret> {
        let v = self.read("processes")?;
        let list = v.as_array().ok_or_else(|| type_error("processes", &v))?;
        Ok(list
            .iter()
            .map(|p| {
                let pid = p.get("pid").and_then(Value::as_u64).unwrap_or(0) as u32;
                let mem = p.get("used_memory").and_then(Value::as_u64).unwrap_or(0);
                (pid, mem)
            })
            .collect())
    }
}

fn type_error(key: &str, v: &Value) -> Ret {
    eprintln!("fake-nvml: field {key:?} has a value of the wrong type: {v}");
    nvmlReturn_enum_NVML_ERROR_UNKNOWN
}

/// Parses a fixture (`None`: one default H100).
pub fn parse(text: Option<&str>) -> Result<Fixture, String> {
    let root: Value = match text {
        Some(t) => serde_json::from_str(t).map_err(|e| format!("not valid JSON: {e}"))?,
        None => serde_json::json!({ "gpus": [{}] }),
    };
    let Value::Object(mut root) = root else {
        return Err("the top level must be an object".into());
    };
    let defaults = match root.remove("defaults") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("`defaults` must be an object of fields".into()),
    };
    let gpus = match root.remove("gpus") {
        Some(Value::Array(g)) => g,
        _ => return Err("`gpus` must be a list of GPU objects".into()),
    };
    // Checked here too, so that a bad default shows even in a fixture that overrides it.
    build(FIELDS, &Map::new(), defaults.clone(), "defaults")?;
    let system = build(SYSTEM_FIELDS, &Map::new(), root, "top level")?;
    let mut out = Vec::new();
    for (index, gpu) in gpus.into_iter().enumerate() {
        let Value::Object(mut gpu) = gpu else {
            return Err(format!("gpus[{index}] must be an object"));
        };
        let lost_after_calls = match gpu.remove("lost_after_calls") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or(format!("gpus[{index}].lost_after_calls must be a number"))?,
            ),
        };
        let lost_counting = match gpu.remove("lost_counting") {
            None => None,
            Some(Value::String(s)) if s.starts_with("nvml") => Some(s),
            Some(_) => {
                return Err(format!(
                    "gpus[{index}].lost_counting must name an NVML function"
                ));
            }
        };
        let events = match gpu.remove("events") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|e| parse_event(e).map_err(|m| format!("gpus[{index}].events: {m}")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("gpus[{index}].events must be a list")),
        };
        let mut g = build(FIELDS, &defaults, gpu, &format!("gpus[{index}]"))?;
        fill_identity(&mut g, index as u32);
        g.lost_after_calls = lost_after_calls;
        g.lost_counting = lost_counting;
        g.events = events;
        out.push(g);
    }
    Ok(Fixture { system, gpus: out })
}

fn build(
    table: &[(&'static str, Kind, &str)],
    defaults: &Map<String, Value>,
    given: Map<String, Value>,
    at: &str,
) -> Result<Gpu, String> {
    for key in defaults.keys().chain(given.keys()) {
        if !table.iter().any(|(k, _, _)| k == key) {
            let known: Vec<&str> = table.iter().map(|(k, _, _)| *k).collect();
            return Err(format!(
                "{at}: unknown field {key:?}; known fields: {}",
                known.join(", ")
            ));
        }
    }
    let mut fields = HashMap::new();
    for (key, kind, default) in table {
        let spec = match given.get(*key).or_else(|| defaults.get(*key)) {
            Some(v) => parse_spec(*kind, v).map_err(|m| format!("{at}.{key}: {m}"))?,
            None => {
                let v: Value = serde_json::from_str(default).expect("built-in default is JSON");
                parse_spec(*kind, &v).expect("built-in default is valid")
            }
        };
        fields.insert(*key, spec);
    }
    Ok(Gpu {
        fields,
        reads: HashMap::new(),
        calls: 0,
        lost_after_calls: None,
        lost_counting: None,
        lost: false,
        events: Vec::new(),
    })
}

fn parse_spec(kind: Kind, v: &Value) -> Result<Spec, String> {
    let is_seq = match (kind, v) {
        (Kind::Processes, Value::Array(items)) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.is_array() || i.get("error").is_some())
        }
        (_, Value::Array(items)) => {
            if items.is_empty() {
                return Err("an empty list of values".into());
            }
            true
        }
        _ => false,
    };
    if is_seq {
        let items = v.as_array().expect("checked above");
        return Ok(Spec::Seq(
            items
                .iter()
                .map(|i| parse_item(kind, i))
                .collect::<Result<_, _>>()?,
        ));
    }
    Ok(Spec::One(parse_item(kind, v)?))
}

fn parse_item(kind: Kind, v: &Value) -> Result<Item, String> {
    if let Some(err) = v.get("error") {
        let name = err.as_str().unwrap_or("");
        let known: Vec<&str> = ERRORS.iter().map(|(n, _, _)| *n).collect();
        return error_code(name)
            .map(Item::Error)
            .ok_or_else(|| format!("unknown error {err}; use one of {}", known.join(", ")));
    }
    let ok = match kind {
        Kind::Int => v.is_u64() || v.is_i64(),
        Kind::Bool => v.is_boolean(),
        Kind::Str => v.is_string(),
        Kind::Float => v.is_number(),
        Kind::Processes => v
            .as_array()
            .is_some_and(|list| list.iter().all(|p| p.get("pid").is_some_and(Value::is_u64))),
    };
    if !ok {
        return Err(format!("expected {kind:?}, got {v}"));
    }
    Ok(Item::Value(v.clone()))
}

fn parse_event(e: &Value) -> Result<FakeEvent, String> {
    let event_type = match e.get("type") {
        Some(Value::String(s)) => u64::from(match s.as_str() {
            "single_bit_ecc" => nvmlEventTypeSingleBitEccError,
            "double_bit_ecc" => nvmlEventTypeDoubleBitEccError,
            "pstate" => nvmlEventTypePState,
            "xid" => nvmlEventTypeXidCriticalError,
            "clock" => nvmlEventTypeClock,
            other => return Err(format!("unknown event type {other:?}")),
        }),
        Some(v) if v.is_u64() => v.as_u64().unwrap_or(0),
        _ => {
            return Err(
                "an event needs a `type` (\"xid\", \"double_bit_ecc\", ... or a number)".into(),
            );
        }
    };
    let num = |key: &str| match e.get(key) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or(format!("`{key}` must be a number")),
    };
    Ok(FakeEvent {
        event_type,
        data: num("data")?,
        after_waits: num("after_waits")?,
    })
}

/// Gives a GPU without a uuid / serial / PCI address the ones of slot `index` on an HGX board.
fn fill_identity(g: &mut Gpu, index: u32) {
    let bus = HGX_BUSES
        .get(index as usize)
        .copied()
        .unwrap_or(0x10 + index);
    let generated = [
        ("uuid", format!("GPU-01000100-0000-0000-0000-{index:012}")),
        ("serial", format!("15628210839{index:02}")),
        ("pci_bus_id", format!("00000000:{bus:02X}:00.0")),
    ];
    for (key, value) in generated {
        if g.fields.get(key) == Some(&Spec::One(Item::Value(Value::String(String::new())))) {
            g.fields
                .insert(key, Spec::One(Item::Value(Value::String(value))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_an_h100() {
        let mut f = parse(None).unwrap();
        assert_eq!(f.gpus.len(), 1);
        let g = &mut f.gpus[0];
        assert_eq!(g.string("name").unwrap(), "NVIDIA H100 80GB HBM3");
        assert_eq!(g.u32("power_limit_default").unwrap(), 700_000);
        assert_eq!(
            g.u32("fan_speed"),
            Err(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED)
        );
        assert_eq!(g.string("pci_bus_id").unwrap(), "00000000:1A:00.0");
        assert_eq!(f.system.string("driver_version").unwrap(), "550.163.01");
    }

    #[test]
    fn sequences_repeat_their_last_value() {
        let mut f = parse(Some(
            r#"{"gpus": [{"power_usage": [1, {"error": "NO_PERMISSION"}, 3]}]}"#,
        ))
        .unwrap();
        let g = &mut f.gpus[0];
        let got: Vec<_> = (0..5).map(|_| g.u32("power_usage")).collect();
        let no_perm = Err(nvmlReturn_enum_NVML_ERROR_NO_PERMISSION);
        assert_eq!(got, vec![Ok(1), no_perm, Ok(3), Ok(3), Ok(3)]);
    }

    #[test]
    fn lost_after_calls_counts_the_named_function() {
        let mut f = parse(Some(
            r#"{"gpus": [{"lost_after_calls": 2, "lost_counting": "nvmlDeviceGetPowerUsage"}]}"#,
        ))
        .unwrap();
        let g = &mut f.gpus[0];
        assert!(g.call("nvmlDeviceGetName").is_ok());
        assert!(g.call("nvmlDeviceGetPowerUsage").is_ok());
        assert!(g.call("nvmlDeviceGetPowerUsage").is_ok());
        assert!(g.call("nvmlDeviceGetName").is_ok());
        assert_eq!(
            g.call("nvmlDeviceGetPowerUsage"),
            Err(nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST)
        );
        assert_eq!(
            g.call("nvmlDeviceGetName"),
            Err(nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST)
        );
    }

    #[test]
    fn processes_single_value_and_sequence() {
        let mut f = parse(Some(
            r#"{"gpus": [{"processes": []}, {"processes": [[{"pid": 1}], []]}]}"#,
        ))
        .unwrap();
        assert_eq!(f.gpus[0].processes().unwrap(), vec![]);
        assert_eq!(f.gpus[1].processes().unwrap(), vec![(1, 0)]);
        assert_eq!(f.gpus[1].processes().unwrap(), vec![]);
    }

    #[test]
    fn bad_fixtures_say_what_is_wrong() {
        let cases = [
            ("[]", "top level must be an object"),
            ("{}", "`gpus` must be a list"),
            (
                r#"{"gpus": [{"temprature_gpu": 4}]}"#,
                "unknown field \"temprature_gpu\"",
            ),
            (
                r#"{"gpus": [{"temperature_gpu": "hot"}]}"#,
                "gpus[0].temperature_gpu: expected Int",
            ),
            (
                r#"{"gpus": [{"fan_speed": {"error": "NOPE"}}]}"#,
                "unknown error",
            ),
            (
                r#"{"defaults": {"bogus": 1}, "gpus": []}"#,
                "unknown field \"bogus\"",
            ),
            (
                r#"{"gpus": [{"events": [{"type": "meteor"}]}]}"#,
                "unknown event type",
            ),
            (
                r#"{"driver_version": 5, "gpus": []}"#,
                "top level.driver_version: expected Str",
            ),
        ];
        for (text, want) in cases {
            let err = parse(Some(text)).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
