//! GPM (GPU Performance Monitoring, nvmlGpm*): sample buffers the caller allocates, fills from
//! a GPU and frees; metrics between two filled samples of the same GPU come from the GPU's
//! `gpm_*` fixture fields. A GPU whose `gpm_supported` is false (a pre-Hopper GPU) or whose
//! `mig_mode` is on (GPM is then sampled per GPU instance, which the agent does not do)
//! answers NOT_SUPPORTED to nvmlGpmSampleGet. (nvmlGpmSetStreamingEnabled changes state: it
//! is a logging stub in `setters.rs`.)

use std::ffi::{CStr, c_char, c_uint};
use std::sync::Mutex;

use nvml_wrapper_sys::bindings::*;

use crate::fixture::Ret;
use crate::{device_index, lock, nvml_exports, put, with_driver, with_gpu};

const INVALID: Ret = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;

const SAMPLE_BASE: usize = 0x4750_0000;
const STRIDE: usize = 0x10;

/// One allocated sample: which GPU filled it, and when (a fill count, to order two samples).
#[derive(Debug, Clone, Copy, Default)]
struct Buffer {
    filled: Option<(usize, u64)>,
}

/// Sample buffers by handle number; `None` once freed.
static SAMPLES: Mutex<(Vec<Option<Buffer>>, u64)> = Mutex::new((Vec::new(), 0));

/// Forgets every buffer (at the last nvmlShutdown).
pub fn reset() {
    *lock(&SAMPLES) = (Vec::new(), 0);
}

fn buffer_index(h: nvmlGpmSample_t) -> Option<usize> {
    let offset = (h as usize).checked_sub(SAMPLE_BASE)?;
    (offset % STRIDE == 0).then_some(offset / STRIDE)
}

/// Metric ids the fake answers, the fixture field that holds each, and nvml.h's names.
const METRICS: &[(c_uint, &str, &CStr, &CStr)] = &[
    (1, "gpm_graphics_util", c"gr_util", c"%"),
    (2, "gpm_sm_util", c"sm_util", c"%"),
    (3, "gpm_sm_occupancy", c"sm_occupancy", c"%"),
    (5, "gpm_any_tensor_util", c"any_tensor_util", c"%"),
    (10, "gpm_dram_bw_util", c"dram_bw_util", c"%"),
    (11, "gpm_fp64_util", c"fp64_util", c"%"),
    (12, "gpm_fp32_util", c"fp32_util", c"%"),
    (13, "gpm_fp16_util", c"fp16_util", c"%"),
    (20, "gpm_pcie_tx_per_sec", c"pcie_tx_per_sec", c"MiB/sec"),
    (21, "gpm_pcie_rx_per_sec", c"pcie_rx_per_sec", c"MiB/sec"),
    (
        60,
        "gpm_nvlink_total_rx_per_sec",
        c"nvlink_total_rx_per_sec",
        c"MiB/sec",
    ),
    (
        61,
        "gpm_nvlink_total_tx_per_sec",
        c"nvlink_total_tx_per_sec",
        c"MiB/sec",
    ),
];

fn name_ptr(s: &'static CStr) -> *mut c_char {
    s.as_ptr().cast_mut()
}

nvml_exports! {
    fn nvmlGpmQueryDeviceSupport(device: nvmlDevice_t, gpm_support: *mut nvmlGpmSupport_t) {
        if gpm_support.is_null() {
            return Err(INVALID);
        }
        if (*gpm_support).version != NVML_GPM_SUPPORT_VERSION {
            return Err(nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let on = with_gpu(device, |g| g.bool("gpm_supported"))?;
        (*gpm_support).isSupportedDevice = c_uint::from(on);
        Ok(())
    }

    fn nvmlGpmSampleAlloc(gpm_sample: *mut nvmlGpmSample_t) {
        with_driver(|_, _| Ok(()))?;
        let index = {
            let mut samples = lock(&SAMPLES);
            samples.0.push(Some(Buffer::default()));
            samples.0.len() - 1
        };
        put(gpm_sample, std::ptr::without_provenance_mut(SAMPLE_BASE + index * STRIDE))
    }

    fn nvmlGpmSampleFree(gpm_sample: nvmlGpmSample_t) {
        let mut samples = lock(&SAMPLES);
        buffer_index(gpm_sample)
            .and_then(|i| samples.0.get_mut(i))
            .and_then(Option::take)
            .map(drop)
            .ok_or(INVALID)
    }

    fn nvmlGpmSampleGet(device: nvmlDevice_t, gpm_sample: nvmlGpmSample_t) {
        if !with_gpu(device, |g| Ok(g.bool("gpm_supported")? && !g.bool("mig_mode")?))? {
            return Err(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
        }
        let gpu = device_index(device).ok_or(INVALID)?;
        let mut samples = lock(&SAMPLES);
        let (buffers, fills) = &mut *samples;
        let buffer = buffer_index(gpm_sample)
            .and_then(|i| buffers.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(INVALID)?;
        *fills += 1;
        buffer.filled = Some((gpu, *fills));
        Ok(())
    }

    // Both samples filled from the same GPU, the second after the first, as NVML requires.
    fn nvmlGpmMetricsGet(metrics_get: *mut nvmlGpmMetricsGet_t) {
        if metrics_get.is_null() {
            return Err(INVALID);
        }
        let req = &mut *metrics_get;
        if req.version != NVML_GPM_METRICS_GET_VERSION {
            return Err(nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let n = req.numMetrics as usize;
        if n > req.metrics.len() {
            return Err(INVALID);
        }
        let (first, second) = {
            let samples = lock(&SAMPLES);
            let filled = |h| {
                buffer_index(h)
                    .and_then(|i| samples.0.get(i).copied().flatten())
                    .and_then(|b| b.filled)
            };
            (filled(req.sample1).ok_or(INVALID)?, filled(req.sample2).ok_or(INVALID)?)
        };
        if first.0 != second.0 || first.1 >= second.1 {
            return Err(INVALID);
        }
        with_driver(|_, f| {
            let g = f.gpus.get_mut(first.0).ok_or(INVALID)?;
            g.call("nvmlGpmMetricsGet")?;
            for m in &mut req.metrics[..n] {
                let Some(&(_, key, short, unit)) = METRICS.iter().find(|(id, ..)| *id == m.metricId) else {
                    m.nvmlReturn = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
                    continue;
                };
                match g.f64(key) {
                    Ok(v) => {
                        m.value = v;
                        m.nvmlReturn = nvmlReturn_enum_NVML_SUCCESS;
                        m.metricInfo.shortName = name_ptr(short);
                        m.metricInfo.longName = name_ptr(short);
                        m.metricInfo.unit = name_ptr(unit);
                    }
                    Err(code) => m.nvmlReturn = code,
                }
            }
            Ok(())
        })
    }
}
