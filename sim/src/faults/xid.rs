//! Xid errors: `xid` (any Xid code, once or repeated) and `fallen_off_bus` (Xid 79: the GPU
//! stops answering and leaves the inventory).

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Ms, Params, Scope, in_range, kind, xid_number};
use crate::state::XidSchedule;

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<Xid>(
        "xid",
        &[],
        Scope::Gpu,
        "gpu.xid",
        "Xid events delivered through events()",
    ),
    kind::<FallenOffBus>(
        "fallen_off_bus",
        &[],
        Scope::Gpu,
        "gpu.lost",
        "GPU lost (Xid 79); it leaves the inventory",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Xid {
    /// The Xid code (required).
    pub xid: Option<u32>,
    pub repeat: u32,
    pub interval: Ms,
}

impl Default for Xid {
    fn default() -> Self {
        Xid {
            xid: None,
            repeat: 1,
            interval: Ms(10_000),
        }
    }
}

impl Params for Xid {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        xid_number(self.xid.ok_or("xid needs `xid = <number>`")?)?;
        in_range("repeat", self.repeat, 1, 1_000_000)?;
        if self.repeat > 1 && self.interval.0 == 0 {
            return Err("interval must be positive when repeat > 1".into());
        }
        Ok(())
    }
}

impl FaultKind for Xid {
    fn xid(&self) -> Option<XidSchedule> {
        Some(XidSchedule {
            xid: self.xid?,
            repeat: self.repeat,
            interval_ms: self.interval.0.max(1) as i64,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallenOffBus {}

impl Params for FallenOffBus {}

impl FaultKind for FallenOffBus {
    fn loses_gpu(&self) -> bool {
        true
    }

    fn changes_inventory(&self) -> bool {
        true
    }

    fn xid(&self) -> Option<XidSchedule> {
        Some(XidSchedule::once(79))
    }
}
