//! Fault kinds, one file per family. Each family file owns, for its kinds, one serde parameter
//! struct (the struct's fields are the kind's scenario keys: one spelling per parameter, with
//! defaults in its `Default`), validation ([`Params::check`], [`FaultKind::validate_for`]),
//! and its effects: on a GPU's state, its counters, inventory and Xids, or on the host, through
//! the [`FaultKind`] methods. `gpu.rs` and `host.rs` ask every fault of a node for its effect
//! and never match on kinds.
//!
//! Adding a kind: its struct, `impl FaultKind`, and a line in its family's `KINDS` (a new family
//! is one more entry in [`FAMILIES`]); then its `scenarios/faults/<kind>.toml` and its section
//! in `docs/scenarios.md` (tests check both).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::models::GpuModelProfile;
use crate::state::{
    At, GpuCounters, GpuCtx, GpuInfoEdit, GpuLive, HostLive, HostSetup, NodeInfoEdit, XidSchedule,
};

mod clocks;
mod cpu;
mod driver;
mod fabric;
mod host;
mod kernel;
mod memory;
mod nvlink;
mod os;
mod pcie;
mod pcie_host;
mod power;
mod storage;
mod thermal;
mod versions;
mod workload;
mod xid;

pub use crate::state::Direction;
pub use driver::MODULES as DRIVER_MODULES;
pub use fabric::{ALL_HCAS, hca_name};

/// Every family's kinds, in documentation order: the one list a new family joins.
static FAMILIES: &[&[FaultKindInfo]] = &[
    thermal::KINDS,
    power::KINDS,
    clocks::KINDS,
    pcie::KINDS,
    memory::KINDS,
    xid::KINDS,
    nvlink::KINDS,
    versions::KINDS,
    workload::KINDS,
    host::KINDS,
    fabric::KINDS,
    cpu::KINDS,
    driver::KINDS,
    storage::KINDS,
    os::KINDS,
    kernel::KINDS,
    pcie_host::KINDS,
];

/// Where a fault kind acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One GPU (`gpu = N`) or, without `gpu`, every GPU of the node.
    Gpu,
    /// The node as a whole; `gpu` is not accepted.
    Node,
}

/// A fault kind's catalog entry: documentation, parsing and the diagnosis it should lead to.
pub struct FaultKindInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub scope: Scope,
    pub summary: &'static str,
    /// The rule-id prefix a diagnosis should name for it (used by `scenarios/faults/*.toml`).
    pub cause: &'static str,
    params: fn() -> &'static [&'static str],
    parse: ParseFn,
}

/// Builds a kind from its parameter table and the fault's `gpu` key.
type ParseFn = fn(toml::Table, Option<u32>) -> Result<Arc<dyn FaultKind>, String>;

impl fmt::Debug for FaultKindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultKindInfo")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("params", &self.params())
            .finish()
    }
}

impl FaultKindInfo {
    /// The parameters the kind takes (beyond kind/node/gpu/start/end): the fields of its
    /// parameter struct, as written in scenario files.
    pub fn params(&self) -> &'static [&'static str] {
        (self.params)()
    }
}

/// A catalog entry for the kind whose parameters are `T`.
pub(crate) const fn kind<T: Params>(
    name: &'static str,
    aliases: &'static [&'static str],
    scope: Scope,
    cause: &'static str,
    summary: &'static str,
) -> FaultKindInfo {
    FaultKindInfo {
        name,
        aliases,
        scope,
        summary,
        cause,
        params: field_names::<T>,
        parse: parse_as::<T>,
    }
}

/// What a fault does. Every method has a neutral default, so a kind implements only the
/// effects it has. Effects are pure functions of the parameters and the instant: nothing is
/// remembered between readings.
pub trait FaultKind: fmt::Debug + Send + Sync + 'static {
    /// Checks the parameters against a GPU model (and its usual host).
    fn validate_for(&self, _p: &GpuModelProfile) -> Result<(), String> {
        Ok(())
    }

    /// A node-scoped kind that still changes what the GPUs read (a starved workload).
    fn edits_gpus(&self) -> bool {
        false
    }

    /// The GPU's state while the fault is on.
    fn gpu(&self, _l: &mut GpuLive, _c: &GpuCtx) {}

    /// Times (ms after the fault's start) at which its GPU effect changes while on, so that
    /// energy and clock-event counters integrate exactly between them.
    fn gpu_breakpoints(&self, _c: &GpuCtx) -> [Option<i64>; 2] {
        [None, None]
    }

    /// Counter-like readings (replays, ECC, NVLink): called at every instant, on or not.
    fn gpu_counters(&self, _at: &At, _c: &mut GpuCounters) {}

    /// The GPU has fallen off the bus while the fault is on.
    fn loses_gpu(&self) -> bool {
        false
    }

    /// What the GPU's inventory reports while the fault is on.
    fn gpu_info<'a>(&'a self, _g: &mut GpuInfoEdit<'a>) {}

    /// What the node's inventory reports while the fault is on.
    fn node_info<'a>(&'a self, _n: &mut NodeInfoEdit<'a>) {}

    /// The fault's start and end change the inventory (the agent re-reads it at once).
    fn changes_inventory(&self) -> bool {
        false
    }

    /// The Xid the fault raises, if any.
    fn xid(&self) -> Option<XidSchedule> {
        None
    }

    /// The kernel log lines a node-scoped fault writes (SXids, AER, storage, NIC), if any.
    fn kernel_log(&self) -> Option<crate::state::KernelLogSchedule> {
        None
    }

    /// The host's state: called at every instant, on or not (some effects outlast the fault).
    fn host<'a>(&'a self, _h: &mut HostLive<'a>, _at: &At) {}

    /// Host facts for the node's whole life.
    fn host_setup(&self, _s: &mut HostSetup) {}
}

/// A kind's parameter struct: deserialized from the `[[fault]]` keys besides
/// kind/node/gpu/start/end, with `deny_unknown_fields` and its defaults in `Default`.
pub(crate) trait Params: FaultKind + DeserializeOwned {
    /// Model-independent checks, at parse time; `gpu` is the fault's `gpu` key.
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        Ok(())
    }
}

/// Every fault kind, in documentation order.
pub fn fault_kinds() -> &'static [&'static FaultKindInfo] {
    static ALL: OnceLock<Vec<&'static FaultKindInfo>> = OnceLock::new();
    ALL.get_or_init(|| FAMILIES.iter().flat_map(|f| f.iter()).collect())
}

/// Catalog entry for a kind name or alias.
pub fn fault_kind(name: &str) -> Option<&'static FaultKindInfo> {
    fault_kinds()
        .iter()
        .copied()
        .find(|k| k.name == name || k.aliases.contains(&name))
}

/// One fault of a scenario.
#[derive(Debug, Clone)]
pub struct Fault {
    pub info: &'static FaultKindInfo,
    pub kind: Arc<dyn FaultKind>,
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

impl Fault {
    /// Canonical kind name, as in the catalog.
    pub fn name(&self) -> &'static str {
        self.info.name
    }

    /// Whether the fault acts on `node`.
    pub fn applies_to_node(&self, node: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
    }

    /// Whether the fault acts on GPU `index` (node-scoped faults act on none by index).
    pub fn applies_to_gpu(&self, index: u32) -> bool {
        self.gpu.is_none_or(|g| g == index)
    }

    /// Whether the fault changes what the node's GPUs read.
    pub fn touches_gpus(&self) -> bool {
        self.info.scope == Scope::Gpu || self.kind.edits_gpus()
    }

    /// The fault's timing at `t_ms` after the origin.
    #[inline]
    pub fn at(&self, t_ms: i64) -> At {
        At {
            t: t_ms,
            start: self.start_ms as i64,
            end: self.end_ms.map(|e| e as i64),
        }
    }

    /// Whether the fault is on at `t_ms` after the origin.
    #[inline]
    pub fn active_at(&self, t_ms: i64) -> bool {
        self.at(t_ms).active()
    }

    /// Milliseconds the fault has been on by `t_ms` (0 before it starts; stops at `end`).
    #[inline]
    pub fn on_for_ms(&self, t_ms: i64) -> u64 {
        self.at(t_ms).on_for_ms()
    }

    /// Whether the fault has started by `t_ms` (it may have ended since).
    #[inline]
    pub fn started_by(&self, t_ms: i64) -> bool {
        self.at(t_ms).started()
    }

    /// Checks the fault against a GPU model and GPU count; `Err` says what is wrong.
    pub fn validate_for(&self, p: &GpuModelProfile, gpu_count: u32) -> Result<(), String> {
        if let Some(g) = self.gpu
            && g >= gpu_count
        {
            return Err(format!(
                "gpu = {g}, but the node has {gpu_count} GPUs (0..={})",
                gpu_count.saturating_sub(1)
            ));
        }
        self.kind.validate_for(p)
    }
}

/// The keys every `[[fault]]` has, whatever its kind.
pub const COMMON_KEYS: &[&str] = &["kind", "node", "gpu", "start", "end"];

/// Builds a kind from its name and its parameter keys (with the line each is on), rejecting
/// parameters it does not take.
pub(crate) fn build(
    name: &str,
    gpu: Option<u32>,
    params: BTreeMap<String, (toml::Value, usize)>,
) -> Result<(&'static FaultKindInfo, Arc<dyn FaultKind>), String> {
    let info = fault_kind(name).ok_or_else(|| {
        let names: Vec<&str> = fault_kinds().iter().map(|k| k.name).collect();
        format!(
            "unknown fault kind `{name}`; known kinds: {}",
            names.join(", ")
        )
    })?;
    let takes = info.params();
    for (key, (_, line)) in &params {
        if takes.contains(&key.as_str()) {
            continue;
        }
        if fault_kinds()
            .iter()
            .any(|k| k.params().contains(&key.as_str()))
        {
            let takes = if takes.is_empty() {
                "no parameters".to_string()
            } else {
                format!("only {}", takes.join(", "))
            };
            return Err(format!(
                "{} does not take `{key}` (it takes {takes})",
                info.name
            ));
        }
        return Err(format!(
            "line {line}: unknown field `{key}`; a fault takes {} and the parameters of its kind ({})",
            COMMON_KEYS.join(", "),
            if takes.is_empty() {
                "none".to_string()
            } else {
                takes.join(", ")
            }
        ));
    }
    if info.scope == Scope::Node && gpu.is_some() {
        return Err(format!(
            "{} acts on the whole node; remove `gpu`",
            info.name
        ));
    }
    let table: toml::Table = params.into_iter().map(|(k, (v, _))| (k, v)).collect();
    Ok((info, (info.parse)(table, gpu)?))
}

fn parse_as<T: Params>(table: toml::Table, gpu: Option<u32>) -> Result<Arc<dyn FaultKind>, String> {
    let p: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim_end().to_string())?;
    p.check(gpu)?;
    Ok(Arc::new(p))
}

/// The field names of a parameter struct, as serde reads them (renames applied): the one
/// place a parameter's name is spelled is its field.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Grab<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Grab<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Grab(&mut fields));
    fields
}

/// A duration parameter (`"30s"`, `"2m"`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ms(pub u64);

impl<'de> serde::Deserialize<'de> for Ms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match humantime::parse_duration(&s) {
            Ok(dur) => Ok(Ms(dur.as_millis() as u64)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "invalid duration \"{s}\": {e} (write e.g. \"500ms\", \"30s\", \"2m\", \"1h\")"
            ))),
        }
    }
}

pub(crate) fn in_range<T: PartialOrd + fmt::Display + Copy>(
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
pub(crate) fn xid_number(xid: u32) -> Result<u32, String> {
    in_range("xid", xid, 1, 999)
}

pub(crate) fn non_empty(name: &str, v: Option<&str>) -> Result<(), String> {
    match v {
        Some(s) if s.trim().is_empty() => Err(format!("{name} must not be empty")),
        _ => Ok(()),
    }
}

/// A rate parameter: events per minute.
pub(crate) fn per_minute(v: u32) -> Result<u32, String> {
    in_range("per_minute", v, 1, 6_000_000)
}

/// A clock floor as a percentage of max.
pub(crate) fn sm_clock_percent(v: u32) -> Result<u32, String> {
    in_range("sm_clock_percent", v, 5, 99)
}

#[cfg(test)]
mod tests;
