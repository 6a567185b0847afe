//! NVLink: `nvlink_down` (one link goes inactive, Xid 74) and `nvlink_errors` (CRC, replay and
//! recovery counters rising on one link or all).

use serde::Deserialize;

use super::{FaultKind, FaultKindInfo, Params, Scope, kind, per_minute};
use crate::models::GpuModelProfile;
use crate::state::{At, GpuCounters, XidSchedule};

pub(super) static KINDS: &[FaultKindInfo] = &[
    kind::<NvlinkDown>(
        "nvlink_down",
        &[],
        Scope::Gpu,
        "gpu.nvlink",
        "one NVLink inactive; Xid 74",
    ),
    kind::<NvlinkErrors>(
        "nvlink_errors",
        &[],
        Scope::Gpu,
        "gpu.nvlink",
        "NVLink CRC/replay/recovery counters rising",
    ),
];

/// `link` must be one of the model's links (or, without one, the model needs NVLink at all).
fn check_link(link: Option<u32>, p: &GpuModelProfile) -> Result<(), String> {
    match link {
        _ if p.nvlink_count == 0 => Err(format!("{} has no NVLink", p.id)),
        Some(l) if l >= p.nvlink_count => Err(format!(
            "link = {l}, but {} has {} NVLinks (0..={})",
            p.id,
            p.nvlink_count,
            p.nvlink_count - 1
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvlinkDown {
    pub link: u32,
}

impl Params for NvlinkDown {}

impl FaultKind for NvlinkDown {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_link(Some(self.link), p)
    }

    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        if let Some(l) = c.nvlinks.get_mut(self.link as usize)
            && at.started()
        {
            l.recoveries += 1;
            l.active &= !at.active();
        }
    }

    fn xid(&self) -> Option<XidSchedule> {
        Some(XidSchedule::once(74))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvlinkErrors {
    /// The link with errors (default: every link).
    pub link: Option<u32>,
    /// CRC flit errors per minute.
    pub per_minute: u32,
}

impl Default for NvlinkErrors {
    fn default() -> Self {
        NvlinkErrors {
            link: None,
            per_minute: 120,
        }
    }
}

impl Params for NvlinkErrors {
    fn check(&self, _gpu: Option<u32>) -> Result<(), String> {
        per_minute(self.per_minute).map(|_| ())
    }
}

impl FaultKind for NvlinkErrors {
    fn validate_for(&self, p: &GpuModelProfile) -> Result<(), String> {
        check_link(self.link, p)
    }

    fn gpu_counters(&self, at: &At, c: &mut GpuCounters) {
        let errors = at.per_minute(self.per_minute);
        for (i, l) in c.nvlinks.iter_mut().enumerate() {
            if self.link.is_none_or(|link| link as usize == i) {
                l.errors += errors;
            }
        }
    }
}
