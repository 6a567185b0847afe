//! NVML events (Xid, ECC, ...) through one event set, polled without blocking, and the merge
//! with the kernel log's Xids.
//!
//! The event set is driven through the raw functions: `nvml-wrapper`'s `register_events` frees
//! the whole set when one device refuses, which would silently drop the devices registered
//! before it, and its event-type flags leave out the newer critical types.

use std::collections::VecDeque;

use gpufleet_model::{Event, EventKind, Severity, UnixMs};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings::*;

use super::kmsg::xid_event;
use super::{GpuSlot, RawDevice};

/// Event types worth an agent's attention: errors, not state changes (P-state, clocks).
const WANTED: u64 = (nvmlEventTypeSingleBitEccError
    | nvmlEventTypeDoubleBitEccError
    | nvmlEventTypeXidCriticalError
    | nvmlEventTypeSingleBitEccErrorStorm
    | nvmlEventTypeDramRetirementEvent
    | nvmlEventTypeDramRetirementFailure
    | nvmlEventTypeNonFatalPoisonError
    | nvmlEventTypeFatalPoisonError
    | nvmlEventTypeGpuUnavailableError
    | nvmlEventTypeGpuRecoveryAction) as u64;

/// Most events taken per poll, so a misbehaving driver cannot keep a poll going.
const MAX_EVENTS_PER_POLL: usize = 1_000;

/// The same Xid seen by NVML and in the kernel log within this window is reported once.
const DEDUP_WINDOW_MS: u64 = 2_000;

/// The NVML event set, with every GPU that accepted registration.
pub(super) struct EventWatch {
    set: nvmlEventSet_t,
}

// SAFETY: the set handle is only used through `&mut self` (one thread at a time), which is
// all NVML asks of event sets.
unsafe impl Send for EventWatch {}

/// A symbol of the loaded library, or why it is missing.
fn sym<T, E: std::fmt::Display>(s: &Result<T, E>) -> Result<&T, NvmlError> {
    s.as_ref()
        .map_err(|e| NvmlError::FailedToLoadSymbol(e.to_string()))
}

impl EventWatch {
    /// Creates the event set and registers each GPU for the wanted types it supports. `None`
    /// when NVML offers no event sets (not an error: NVML events are then not reported).
    pub(super) fn open(nvml: &Nvml, gpus: &mut [GpuSlot]) -> Option<EventWatch> {
        let lib = nvml.lib();
        let mut set: nvmlEventSet_t = std::ptr::null_mut();
        // SAFETY: `set` is a valid out-pointer.
        let created = sym(&lib.nvmlEventSetCreate).and_then(|f| nvml_try(unsafe { f(&mut set) }));
        if let Err(e) = created {
            tracing::info!(error = %e, "NVML event sets unavailable; NVML events (Xid, ECC) will not be reported");
            return None;
        }
        let mut registered = 0;
        for slot in gpus.iter_mut() {
            match register(nvml, slot, set) {
                Ok(0) => {}
                Ok(_) => registered += 1,
                Err(e) => {
                    tracing::info!(gpu = slot.index, error = %e, "GPU not registered for NVML events")
                }
            }
        }
        tracing::debug!(gpus = registered, "registered for NVML events");
        Some(EventWatch { set })
    }

    /// Events waiting in the set, without blocking.
    pub(super) fn poll(&mut self, nvml: &Nvml, gpus: &[GpuSlot], now: UnixMs) -> Vec<Event> {
        let Ok(wait) = sym(&nvml.lib().nvmlEventSetWait_v2) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < MAX_EVENTS_PER_POLL {
            // SAFETY: all-zero is a valid `nvmlEventData_t` (a null handle and numbers).
            let mut data: nvmlEventData_t = unsafe { std::mem::zeroed() };
            // SAFETY: `self.set` is live until `free`; `data` is a valid out-pointer.
            let rc = unsafe { wait(self.set, &mut data, 0) };
            match nvml_try(rc) {
                Ok(()) => out.push(to_event(&data, gpus, now)),
                Err(NvmlError::Timeout) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "NVML event wait failed");
                    break;
                }
            }
        }
        out
    }

    pub(super) fn free(self, nvml: &Nvml) {
        if let Ok(free) = sym(&nvml.lib().nvmlEventSetFree) {
            // SAFETY: the set was created by this NVML session and is freed once.
            unsafe { free(self.set) };
        }
    }
}

/// Registers one GPU for the wanted event types it supports; returns the types registered.
fn register(nvml: &Nvml, slot: &mut GpuSlot, set: nvmlEventSet_t) -> Result<u64, NvmlError> {
    let lib = nvml.lib();
    let device = slot.device(nvml)?;
    // SAFETY (both calls): the handle and set belong to this NVML session; the out-pointer is
    // a valid local.
    let handle = unsafe { device.handle() };
    let mut supported: u64 = 0;
    nvml_try(unsafe { sym(&lib.nvmlDeviceGetSupportedEventTypes)?(handle, &mut supported) })?;
    let types = supported & WANTED;
    if types != 0 {
        nvml_try(unsafe { sym(&lib.nvmlDeviceRegisterEvents)?(handle, types, set) })?;
    }
    Ok(types)
}

fn to_event(data: &nvmlEventData_t, gpus: &[GpuSlot], now: UnixMs) -> Event {
    let t = data.eventType;
    let mut e = if t & nvmlEventTypeXidCriticalError as u64 != 0 {
        // The event data is the Xid number.
        xid_event(now, data.eventData as u32, "nvml")
    } else {
        let (severity, name, message) = describe(t, data.eventData);
        Event::new(
            now,
            EventKind::Nvml,
            severity,
            format!("nvml.{name}"),
            message,
        )
        .from_source("nvml")
    };
    e.nvml_event_type = Some(t);
    let raw = RawDevice(data.device);
    if let Some(slot) = gpus.iter().find(|g| g.handle == Some(raw)) {
        e = e.on_gpu(slot.index, &slot.uuid);
    }
    e
}

/// Severity, code suffix and message for a non-Xid event type.
fn describe(t: u64, data: u64) -> (Severity, &'static str, String) {
    let is = |bit: u32| t & bit as u64 != 0;
    if is(nvmlEventTypeDoubleBitEccError) {
        (
            Severity::Critical,
            "double_bit_ecc",
            "double-bit (uncorrectable) ECC error".into(),
        )
    } else if is(nvmlEventTypeFatalPoisonError) {
        (
            Severity::Critical,
            "fatal_poison",
            "fatal poison error (uncontained memory error)".into(),
        )
    } else if is(nvmlEventTypeGpuUnavailableError) {
        (
            Severity::Critical,
            "gpu_unavailable",
            "GPU became unavailable".into(),
        )
    } else if is(nvmlEventTypeDramRetirementFailure) {
        (
            Severity::Critical,
            "dram_retirement_failure",
            "DRAM row/page retirement failed".into(),
        )
    } else if is(nvmlEventTypeGpuRecoveryAction) {
        (
            Severity::Warning,
            "gpu_recovery_action",
            format!("the driver asks for recovery action {data}"),
        )
    } else if is(nvmlEventTypeNonFatalPoisonError) {
        (
            Severity::Warning,
            "nonfatal_poison",
            "non-fatal poison error (contained memory error)".into(),
        )
    } else if is(nvmlEventTypeDramRetirementEvent) {
        (
            Severity::Warning,
            "dram_retirement",
            "DRAM row/page retired".into(),
        )
    } else if is(nvmlEventTypeSingleBitEccErrorStorm) {
        (
            Severity::Warning,
            "single_bit_ecc_storm",
            "storm of single-bit (corrected) ECC errors".into(),
        )
    } else if is(nvmlEventTypeSingleBitEccError) {
        (
            Severity::Info,
            "single_bit_ecc",
            "single-bit (corrected) ECC error".into(),
        )
    } else {
        (Severity::Info, "event", format!("NVML event type {t:#x}"))
    }
}

/// Drops an Xid already reported by the other source (NVML or kernel log) for the same GPU
/// within [`DEDUP_WINDOW_MS`]. Each report matches at most one from the other source, so two
/// real Xids in a row stay two.
#[derive(Default)]
pub(super) struct XidDedup {
    /// (time, GPU, Xid, source) of recent Xid reports not yet matched.
    recent: VecDeque<(UnixMs, Option<u32>, u32, String)>,
}

impl XidDedup {
    pub(super) fn filter(&mut self, events: Vec<Event>, now: UnixMs) -> Vec<Event> {
        self.recent
            .retain(|(at, ..)| now.since(*at) <= 5 * DEDUP_WINDOW_MS);
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let Some(xid) = e.xid else {
                out.push(e);
                continue;
            };
            let matched = self.recent.iter().position(|(at, gpu, x, source)| {
                *x == xid
                    && *gpu == e.gpu_index
                    && *source != e.source
                    && at.0.abs_diff(e.timestamp.0) <= DEDUP_WINDOW_MS
            });
            match matched {
                Some(i) => {
                    self.recent.remove(i);
                }
                None => {
                    if self.recent.len() >= 256 {
                        self.recent.pop_front();
                    }
                    self.recent
                        .push_back((e.timestamp, e.gpu_index, xid, e.source.clone()));
                    out.push(e);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(at: i64, gpu: u32, code: u32, source: &str) -> Event {
        xid_event(UnixMs(at), code, source).on_gpu(gpu, "GPU-x")
    }

    #[test]
    fn dedups_an_xid_seen_by_both_sources() {
        let cases: &[(&str, Vec<Event>, usize)] = &[
            (
                "same Xid, GPU, within 2 s",
                vec![xid(1_000, 0, 79, "kmsg"), xid(2_500, 0, 79, "nvml")],
                1,
            ),
            (
                "too far apart",
                vec![xid(1_000, 0, 79, "kmsg"), xid(3_500, 0, 79, "nvml")],
                2,
            ),
            (
                "other GPU",
                vec![xid(1_000, 0, 79, "kmsg"), xid(1_000, 1, 79, "nvml")],
                2,
            ),
            (
                "other Xid",
                vec![xid(1_000, 0, 79, "kmsg"), xid(1_000, 0, 48, "nvml")],
                2,
            ),
            (
                "same source twice",
                vec![xid(1_000, 0, 13, "kmsg"), xid(1_100, 0, 13, "kmsg")],
                2,
            ),
            (
                "two of each: one to one",
                vec![
                    xid(1_000, 0, 13, "kmsg"),
                    xid(1_100, 0, 13, "kmsg"),
                    xid(1_200, 0, 13, "nvml"),
                    xid(1_300, 0, 13, "nvml"),
                ],
                2,
            ),
        ];
        for (name, events, want) in cases {
            let mut d = XidDedup::default();
            let got = d.filter(events.clone(), UnixMs(4_000));
            assert_eq!(got.len(), *want, "{name}: {got:?}");
        }
    }

    #[test]
    fn dedups_across_polls_and_passes_other_events() {
        let mut d = XidDedup::default();
        assert_eq!(
            d.filter(vec![xid(1_000, 0, 79, "nvml")], UnixMs(1_000))
                .len(),
            1
        );
        let ecc = Event::new(
            UnixMs(1_500),
            EventKind::Nvml,
            Severity::Critical,
            "nvml.double_bit_ecc",
            "x",
        );
        let got = d.filter(vec![xid(900, 0, 79, "kmsg"), ecc], UnixMs(2_000));
        assert_eq!(
            got.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
            ["nvml.double_bit_ecc"]
        );
    }

    #[test]
    fn describes_event_types() {
        let cases = [
            (
                nvmlEventTypeDoubleBitEccError,
                Severity::Critical,
                "double_bit_ecc",
            ),
            (
                nvmlEventTypeSingleBitEccError,
                Severity::Info,
                "single_bit_ecc",
            ),
            (
                nvmlEventTypeDramRetirementFailure,
                Severity::Critical,
                "dram_retirement_failure",
            ),
            (
                nvmlEventTypeGpuRecoveryAction,
                Severity::Warning,
                "gpu_recovery_action",
            ),
            (nvmlEventTypeClock, Severity::Info, "event"),
        ];
        for (t, severity, name) in cases {
            let (s, n, _) = describe(t as u64, 0);
            assert_eq!((s, n), (severity, name), "{t:#x}");
        }
    }
}
