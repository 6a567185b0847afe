//! `libnvidia_ml.so`, a stand-in for NVIDIA's NVML library in tests. It exports, with nvml.h's
//! C ABI and struct layouts (the types come from `nvml-wrapper-sys`), every NVML function
//! gpufleet-agent calls, and answers them from a JSON fixture:
//!
//! - `FAKE_NVML_FIXTURE=path.json` names the fixture (unset: one default H100). Its format is in
//!   [`fixture`]; `tests/fixtures/nvml/*.json` are examples. A fixture that does not parse makes
//!   `nvmlInit` fail with `NVML_ERROR_UNKNOWN` and a message on stderr.
//! - `FAKE_NVML_CALL_LOG=path` appends the name of every exported function called, one per line.
//!
//! It also exports NVML's state-changing functions (`nvmlDeviceSet*`, `Reset*`, `Clear*`, ...)
//! as stubs that only log their call and succeed, so a test can prove the agent never calls one.
//! `implemented.txt` lists the functions answered from fixture data; a unit test keeps it true.
//!
//! Nothing here may panic across the C boundary: every export runs under `catch_unwind` and
//! turns a panic into `NVML_ERROR_UNKNOWN`.

// Exported names, parameters and struct fields follow nvml.h.
#![allow(non_snake_case, non_upper_case_globals)]

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int, c_uint, c_ulonglong};
use std::fs::File;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nvml_wrapper_sys::bindings::*;

mod device;
pub mod fixture;
mod gpm;
mod setters;

use fixture::{Fixture, Gpu, Ret};

/// Defines exported NVML functions. Each one logs its call, runs its body (which returns
/// `Result<(), Ret>`) with panics caught, and is listed in the module's `EXPORTED`. A
/// compile-time check assigns each function to the matching field of `nvml-wrapper-sys`'s
/// `NvmlLib`, so a signature that differs from nvml.h does not build.
macro_rules! nvml_exports {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $body:block )*) => {
        $(
            /// # Safety
            /// Pointer arguments must be valid for writes (or null), as nvml.h requires.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> nvmlReturn_t {
                $crate::guarded(stringify!($name), move || {
                    // SAFETY: the caller keeps nvml.h's contract for the pointer arguments;
                    // every write goes through `put`/`put_str`, which check for null.
                    #[allow(unused_unsafe)]
                    unsafe { $body }
                })
            }
        )*

        /// The functions this module exports.
        pub const EXPORTED: &[&str] = &[$(stringify!($name)),*];

        #[allow(dead_code)]
        fn abi_matches_nvml_h(lib: &mut nvml_wrapper_sys::bindings::NvmlLib) {
            $( lib.$name = Ok($name); )*
        }
    };
}
pub(crate) use nvml_exports;

/// The fake driver: reference-counted like NVML's `nvmlInit`/`nvmlShutdown`.
struct Driver {
    refs: u32,
    fixture: Option<Fixture>,
    /// Event sets by handle number (index + 1); `None` once freed.
    sets: Vec<Option<EventSet>>,
}

#[derive(Default)]
struct EventSet {
    /// (GPU index, registered event types)
    registered: Vec<(usize, u64)>,
    waits: u64,
    /// (GPU index, event index) already delivered through this set.
    delivered: Vec<(usize, usize)>,
}

static DRIVER: Mutex<Driver> = Mutex::new(Driver {
    refs: 0,
    fixture: None,
    sets: Vec::new(),
});
static CALL_LOG: Mutex<Option<File>> = Mutex::new(None);

thread_local! {
    /// The exported function running on this thread (for `lost_counting`).
    static CURRENT: Cell<&'static str> = const { Cell::new("") };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn log_call(name: &str) {
    if let Some(file) = lock(&CALL_LOG).as_mut() {
        let _ = writeln!(file, "{name}");
    }
}

/// Runs one exported function: logs it, catches panics, maps `Ok` to `NVML_SUCCESS`.
fn guarded(name: &'static str, body: impl FnOnce() -> Result<(), Ret>) -> Ret {
    log_call(name);
    CURRENT.with(|c| c.set(name));
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => nvmlReturn_enum_NVML_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            eprintln!("fake-nvml: {name} panicked; returning NVML_ERROR_UNKNOWN");
            nvmlReturn_enum_NVML_ERROR_UNKNOWN
        }
    }
}

const DEVICE_BASE: usize = 0x4e56_0000;
const SET_BASE: usize = 0x4553_0000;
const HANDLE_STRIDE: usize = 0x10;

fn device_handle(index: usize) -> nvmlDevice_t {
    std::ptr::without_provenance_mut(DEVICE_BASE + index * HANDLE_STRIDE)
}

fn device_index(device: nvmlDevice_t) -> Option<usize> {
    let offset = (device as usize).checked_sub(DEVICE_BASE)?;
    (offset % HANDLE_STRIDE == 0).then_some(offset / HANDLE_STRIDE)
}

fn set_index(set: nvmlEventSet_t) -> Option<usize> {
    let offset = (set as usize).checked_sub(SET_BASE)?;
    (offset % HANDLE_STRIDE == 0).then_some(offset / HANDLE_STRIDE)
}

/// Runs `f` on the initialised driver's event sets and fixture.
fn with_driver<T>(
    f: impl FnOnce(&mut Vec<Option<EventSet>>, &mut Fixture) -> Result<T, Ret>,
) -> Result<T, Ret> {
    let mut guard = lock(&DRIVER);
    let Driver { fixture, sets, .. } = &mut *guard;
    let fixture = fixture
        .as_mut()
        .ok_or(nvmlReturn_enum_NVML_ERROR_UNINITIALIZED)?;
    f(sets, fixture)
}

/// Runs `f` on the GPU behind `device`, after counting the call toward `lost_after_calls`.
fn with_gpu<T>(device: nvmlDevice_t, f: impl FnOnce(&mut Gpu) -> Result<T, Ret>) -> Result<T, Ret> {
    with_driver(|_, fixture| {
        let gpu = device_index(device)
            .and_then(|i| fixture.gpus.get_mut(i))
            .ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
        gpu.call(CURRENT.with(Cell::get))?;
        f(gpu)
    })
}

/// Writes `v` through `p`.
///
/// # Safety
/// `p` must be null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), Ret> {
    if p.is_null() {
        return Err(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: not null; valid by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Copies `s` and a terminating NUL into the caller's buffer of `len` bytes.
///
/// # Safety
/// `buf` must be null or valid for writes of `len` bytes.
unsafe fn put_str(buf: *mut c_char, len: c_uint, s: &str) -> Result<(), Ret> {
    if buf.is_null() {
        return Err(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    }
    if s.len() + 1 > len as usize {
        return Err(nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `buf` holds at least `len` > `s.len()` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
        buf.add(s.len()).write(0);
    }
    Ok(())
}

fn init() -> Result<(), Ret> {
    let mut driver = lock(&DRIVER);
    if driver.refs > 0 {
        driver.refs += 1;
        return Ok(());
    }
    let text = match std::env::var_os("FAKE_NVML_FIXTURE") {
        None => None,
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "fake-nvml: cannot read FAKE_NVML_FIXTURE={}: {e}",
                    path.to_string_lossy()
                );
                return Err(nvmlReturn_enum_NVML_ERROR_UNKNOWN);
            }
        },
    };
    let fixture = fixture::parse(text.as_deref()).map_err(|msg| {
        eprintln!("fake-nvml: bad fixture (FAKE_NVML_FIXTURE): {msg}");
        nvmlReturn_enum_NVML_ERROR_UNKNOWN
    })?;
    *lock(&CALL_LOG) = std::env::var_os("FAKE_NVML_CALL_LOG").and_then(|path| {
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .inspect_err(|e| {
                eprintln!("fake-nvml: cannot open FAKE_NVML_CALL_LOG={path:?}: {e}");
            })
            .ok()
    });
    // The log opens here, after `guarded` tried to log this call.
    log_call(CURRENT.with(Cell::get));
    driver.refs = 1;
    driver.fixture = Some(fixture);
    driver.sets.clear();
    Ok(())
}

nvml_exports! {
    fn nvmlInit_v2() { init() }

    fn nvmlInitWithFlags(_flags: c_uint) { init() }

    fn nvmlShutdown() {
        let mut driver = lock(&DRIVER);
        match driver.refs {
            0 => Err(nvmlReturn_enum_NVML_ERROR_UNINITIALIZED),
            1 => {
                driver.refs = 0;
                driver.fixture = None;
                driver.sets.clear();
                gpm::reset();
                *lock(&CALL_LOG) = None;
                Ok(())
            }
            _ => {
                driver.refs -= 1;
                Ok(())
            }
        }
    }

    fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) {
        let v = with_driver(|_, f| f.system.string("driver_version"))?;
        put_str(version, length, &v)
    }

    fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) {
        let v = with_driver(|_, f| f.system.string("nvml_version"))?;
        put_str(version, length, &v)
    }

    fn nvmlSystemGetCudaDriverVersion(cuda_driver_version: *mut c_int) {
        let v = with_driver(|_, f| f.system.u64("cuda_driver_version"))?;
        put(cuda_driver_version, v as c_int)
    }

    fn nvmlSystemGetCudaDriverVersion_v2(cuda_driver_version: *mut c_int) {
        let v = with_driver(|_, f| f.system.u64("cuda_driver_version"))?;
        put(cuda_driver_version, v as c_int)
    }

    fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) {
        let n = with_driver(|_, f| {
            let forced = f.system.u64("device_count")? as i64;
            Ok(if forced >= 0 { forced as usize } else { f.gpus.len() })
        })?;
        put(device_count, n as c_uint)
    }

    fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) {
        with_driver(|_, f| {
            let gpu = f
                .gpus
                .get_mut(index as usize)
                .ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
            gpu.call(CURRENT.with(Cell::get))?;
            gpu.bool("handle")?;
            Ok(())
        })?;
        put(device, device_handle(index as usize))
    }

    fn nvmlDeviceGetSupportedEventTypes(device: nvmlDevice_t, event_types: *mut c_ulonglong) {
        let v = with_gpu(device, |g| g.u64("supported_event_types"))?;
        put(event_types, v)
    }

    fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) {
        let index = with_driver(|sets, f| {
            f.system.bool("event_set")?;
            sets.push(Some(EventSet::default()));
            Ok(sets.len() - 1)
        })?;
        put(set, std::ptr::without_provenance_mut(SET_BASE + index * HANDLE_STRIDE))
    }

    fn nvmlEventSetFree(set: nvmlEventSet_t) {
        with_driver(|sets, _| {
            let slot = set_index(set)
                .and_then(|i| sets.get_mut(i))
                .ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
            slot.take().map(drop).ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)
        })
    }

    fn nvmlDeviceRegisterEvents(device: nvmlDevice_t, event_types: c_ulonglong, set: nvmlEventSet_t) {
        let supported = with_gpu(device, |g| g.u64("supported_event_types"))?;
        if event_types & !supported != 0 {
            return Err(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
        }
        with_driver(|sets, _| {
            let gpu = device_index(device).ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
            let state = set_index(set)
                .and_then(|i| sets.get_mut(i))
                .and_then(Option::as_mut)
                .ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
            state.registered.push((gpu, event_types));
            Ok(())
        })
    }

    // Never sleeps: an event is either due by the wait count or the call times out at once.
    fn nvmlEventSetWait_v2(set: nvmlEventSet_t, data: *mut nvmlEventData_t, _timeoutms: c_uint) {
        let (gpu, event) = with_driver(|sets, f| {
            let state = set_index(set)
                .and_then(|i| sets.get_mut(i))
                .and_then(Option::as_mut)
                .ok_or(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT)?;
            let waits_before = state.waits;
            state.waits += 1;
            for &(gpu, mask) in &state.registered {
                let Some(g) = f.gpus.get(gpu) else { continue };
                for (i, e) in g.events.iter().enumerate() {
                    let due = e.after_waits <= waits_before;
                    if due && mask & e.event_type != 0 && !state.delivered.contains(&(gpu, i)) {
                        state.delivered.push((gpu, i));
                        return Ok((gpu, e.clone()));
                    }
                }
            }
            Err(nvmlReturn_enum_NVML_ERROR_TIMEOUT)
        })?;
        put(
            data,
            nvmlEventData_t {
                device: device_handle(gpu),
                eventType: event.event_type,
                eventData: event.data,
                gpuInstanceId: 0,
                computeInstanceId: 0,
            },
        )
    }
}

/// `nvmlErrorString`: nvml.h's text for a return code. Returns a static string, never null.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    log_call("nvmlErrorString");
    static TEXTS: OnceLock<Vec<(Ret, CString)>> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        let mut t: Vec<(Ret, CString)> = fixture::ERRORS
            .iter()
            .filter_map(|(_, code, text)| Some((*code, CString::new(*text).ok()?)))
            .collect();
        t.push((nvmlReturn_enum_NVML_SUCCESS, c"Success".to_owned()));
        t
    });
    texts
        .iter()
        .find(|(code, _)| *code == result)
        .map_or(c"Unknown Error".as_ptr(), |(_, text)| text.as_ptr())
}

/// Every function answered from fixture data (not the state-changing stubs).
pub fn implemented() -> Vec<&'static str> {
    let mut all: Vec<&str> = EXPORTED
        .iter()
        .chain(device::EXPORTED)
        .chain(gpm::EXPORTED)
        .copied()
        .collect();
    all.push("nvmlErrorString");
    all.sort_unstable();
    all
}

/// The state-changing functions exported as logging stubs.
pub fn state_changing() -> &'static [&'static str] {
    setters::EXPORTED
}

#[cfg(test)]
mod tests {
    #[test]
    fn implemented_txt_lists_the_implemented_functions() {
        let listed: Vec<&str> = include_str!("../implemented.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let want = super::implemented();
        assert_eq!(
            listed,
            want,
            "tests/fake-nvml/implemented.txt is stale; it should read:\n{}",
            want.join("\n")
        );
    }

    #[test]
    fn stubs_are_all_state_changing() {
        for name in super::state_changing() {
            let changing = [
                "Set", "Reset", "Clear", "Freeze", "Modify", "Remove", "Create", "Destroy",
                "Validate",
            ]
            .iter()
            .any(|w| name.contains(w));
            assert!(changing, "{name}");
            assert!(!super::implemented().contains(name), "{name}");
        }
    }
}
