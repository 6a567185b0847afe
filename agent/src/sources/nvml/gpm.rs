//! GPU Performance Monitoring (NVML's GPM, Hopper and later): SM activity and occupancy,
//! tensor, FP64/FP32/FP16 pipe activity, DRAM bandwidth, PCIe and NVLink traffic — the
//! readings DCGM's profiling module gives (`DCGM_FI_PROF_*`).
//!
//! GPM metrics are computed between two samples taken an interval apart, so each GPU keeps
//! the previous sample handle between reads; the first read after start only takes a sample.
//! The two handles per GPU are allocated once and refilled (`nvmlGpmSampleGet`), and metrics
//! are read through `nvml-wrapper-sys` on the same library handle because the safe wrapper
//! copies three strings per metric on every call. A GPU without GPM (pre-Hopper, MIG mode,
//! no permission) reads as absent, never as an error; a GPU that says NotSupported is not
//! asked again.
//!
//! Only reads: `nvmlGpmSetStreamingEnabled` is never called (`clippy.toml` forbids it).

use gpufleet_model::GpuSample;
use nvml_wrapper::Nvml;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings::{
    NVML_GPM_METRICS_GET_VERSION, nvmlGpmMetricsGet_t, nvmlGpmSample_t,
    nvmlReturn_enum_NVML_SUCCESS,
};

use super::Reader;

/// NVML's GPM metric ids (nvml.h `nvmlGpmMetricId_t`) for what [`GpuSample`] carries.
mod id {
    pub const GRAPHICS_UTIL: u32 = 1;
    pub const SM_UTIL: u32 = 2;
    pub const SM_OCCUPANCY: u32 = 3;
    pub const ANY_TENSOR_UTIL: u32 = 5;
    pub const DRAM_BW_UTIL: u32 = 10;
    pub const FP64_UTIL: u32 = 11;
    pub const FP32_UTIL: u32 = 12;
    pub const FP16_UTIL: u32 = 13;
    pub const PCIE_TX_PER_SEC: u32 = 20;
    pub const PCIE_RX_PER_SEC: u32 = 21;
    pub const NVLINK_TOTAL_RX_PER_SEC: u32 = 60;
    pub const NVLINK_TOTAL_TX_PER_SEC: u32 = 61;
}

/// The metrics asked for, in one `nvmlGpmMetricsGet` call.
const METRICS: [u32; 12] = [
    id::GRAPHICS_UTIL,
    id::SM_UTIL,
    id::SM_OCCUPANCY,
    id::ANY_TENSOR_UTIL,
    id::DRAM_BW_UTIL,
    id::FP64_UTIL,
    id::FP32_UTIL,
    id::FP16_UTIL,
    id::PCIE_TX_PER_SEC,
    id::PCIE_RX_PER_SEC,
    id::NVLINK_TOTAL_RX_PER_SEC,
    id::NVLINK_TOTAL_TX_PER_SEC,
];

/// GPM's traffic metrics are in MiB/s.
const MIB: f64 = 1024.0 * 1024.0;

/// A GPM sample handle of this source's NVML session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct RawGpmSample(nvmlGpmSample_t);

// SAFETY: a GPM sample is a buffer NVML allocated; it is used by one thread at a time (the
// sampler's), which is all NVML asks.
unsafe impl Send for RawGpmSample {}

/// What one GPU keeps for GPM between samples.
#[derive(Default)]
pub(super) struct GpmState {
    /// The sample taken at the previous read (metrics are computed against it).
    prev: Option<RawGpmSample>,
    /// A handle to refill at the next read.
    spare: Option<RawGpmSample>,
    /// `nvmlGpmQueryDeviceSupport` answered (`Some(false)`: never asked again).
    supported: Option<bool>,
    /// The `nvmlGpmMetricsGet` request (8 KiB, room for every metric NVML knows), allocated
    /// and zeroed once: zeroing it per read was the agent's largest memset.
    request: Option<Request>,
}

/// [`nvmlGpmMetricsGet_t`] on the heap; its pointers are the sample handles (see
/// [`RawGpmSample`]) and the static metric names NVML fills in.
pub(super) struct Request(Box<nvmlGpmMetricsGet_t>);

// SAFETY: as for `RawGpmSample`: used by one thread at a time.
unsafe impl Send for Request {}

impl GpmState {
    /// Frees the sample handles (at shutdown, before NVML goes).
    pub(super) fn free(&mut self, nvml: &Nvml) {
        let Ok(free) = nvml.lib().nvmlGpmSampleFree.as_ref() else {
            return;
        };
        for RawGpmSample(h) in [self.prev.take(), self.spare.take()].into_iter().flatten() {
            // SAFETY: allocated by `nvmlGpmSampleAlloc` of this library and freed only here.
            unsafe { free(h) };
        }
    }
}

/// Reads GPM into `s`: takes this interval's sample and, when a previous one exists, fills
/// the `gpm_*` fields from the metrics between the two.
pub(super) fn read(r: &mut Reader, s: &mut GpuSample) {
    if r.slot.gpm.supported.is_none() {
        let supported = r.read("gpm_support", |d| d.gpm_support());
        r.slot.gpm.supported = Some(supported.unwrap_or(false));
    }
    if r.slot.gpm.supported != Some(true) {
        return;
    }
    let cur = match r.slot.gpm.spare.take() {
        Some(h) => h,
        None => match r.read("gpm_sample_alloc", |d| alloc(d.nvml())) {
            Some(h) => h,
            None => return,
        },
    };
    if r.read("gpm_sample", |d| sample_into(d, cur)).is_none() {
        r.slot.gpm.spare = Some(cur);
        return;
    }
    let prev = r.slot.gpm.prev.replace(cur);
    r.slot.gpm.spare = prev;
    let Some(prev) = prev else { return };
    let mut req = r.slot.gpm.request.take().unwrap_or_else(|| {
        // SAFETY: plain C data (integers, doubles, null pointers) for which all-zero is valid.
        Request(Box::new(unsafe { std::mem::zeroed() }))
    });
    let values = r.read("gpm_metrics", |d| metrics(d.nvml(), &mut req.0, prev, cur));
    r.slot.gpm.request = Some(req);
    let Some(values) = values else {
        return;
    };
    let pct = |i: usize| values[i].map(gpufleet_model::hundredths);
    let bytes = |i: usize| values[i].map(|v| (v * MIB) as u64);
    s.gpm_graphics_active_percent = pct(0);
    s.gpm_sm_active_percent = pct(1);
    s.gpm_sm_occupancy_percent = pct(2);
    s.gpm_tensor_active_percent = pct(3);
    s.gpm_dram_active_percent = pct(4);
    s.gpm_fp64_active_percent = pct(5);
    s.gpm_fp32_active_percent = pct(6);
    s.gpm_fp16_active_percent = pct(7);
    s.gpm_pcie_tx_bytes_per_second = bytes(8);
    s.gpm_pcie_rx_bytes_per_second = bytes(9);
    s.gpm_nvlink_rx_bytes_per_second = bytes(10);
    s.gpm_nvlink_tx_bytes_per_second = bytes(11);
}

fn alloc(nvml: &Nvml) -> Result<RawGpmSample, NvmlError> {
    let sym = nvml
        .lib()
        .nvmlGpmSampleAlloc
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    let mut h: nvmlGpmSample_t = std::ptr::null_mut();
    // SAFETY: `h` is a valid out-pointer; the handle is freed by `GpmState::free`.
    nvml_try(unsafe { sym(&mut h) })?;
    Ok(RawGpmSample(h))
}

fn sample_into(d: &nvml_wrapper::Device, h: RawGpmSample) -> Result<(), NvmlError> {
    let sym = d
        .nvml()
        .lib()
        .nvmlGpmSampleGet
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    // SAFETY: the device handle belongs to the live session `d` borrows; `h` was allocated by
    // the same library and is not in use elsewhere.
    nvml_try(unsafe { sym(d.handle(), h.0) })
}

/// [`METRICS`] between `prev` and `cur`; a metric NVML refuses on its own is `None`.
fn metrics(
    nvml: &Nvml,
    req: &mut nvmlGpmMetricsGet_t,
    prev: RawGpmSample,
    cur: RawGpmSample,
) -> Result<[Option<f64>; METRICS.len()], NvmlError> {
    let sym = nvml
        .lib()
        .nvmlGpmMetricsGet
        .as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))?;
    req.version = NVML_GPM_METRICS_GET_VERSION;
    req.numMetrics = METRICS.len() as u32;
    req.sample1 = prev.0;
    req.sample2 = cur.0;
    for (slot, id) in req.metrics.iter_mut().zip(METRICS) {
        slot.metricId = id;
        slot.nvmlReturn = nvmlReturn_enum_NVML_SUCCESS;
        slot.value = 0.0;
    }
    // SAFETY: `req` is initialised as nvml.h asks; both samples are live handles of this
    // library, filled by `nvmlGpmSampleGet`.
    nvml_try(unsafe { sym(req) })?;
    Ok(std::array::from_fn(|i| {
        let m = &req.metrics[i];
        (m.nvmlReturn == nvmlReturn_enum_NVML_SUCCESS && m.value.is_finite()).then_some(m.value)
    }))
}
