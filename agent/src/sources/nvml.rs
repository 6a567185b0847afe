//! The real GPU backend: NVML through `nvml-wrapper`, plus Xids from the kernel log.
//!
//! NVML is initialised once and kept (re-initialising can wake idle GPUs for seconds); device
//! handles are cached per index. Every field is read on its own: a field NVML refuses
//! (NotSupported, NoPermission, anything) is `None`, never `0`, and a field that is
//! NotSupported is not asked again. A GPU that NVML reports lost gets a `Lost` sample while the
//! others keep reading.
//!
//! Architecture invariant: only NVML functions that read are called here. `clippy.toml`
//! forbids the state-changing methods of `nvml-wrapper`, and `tests/tests/fake_nvml.rs` checks
//! the call log of a fake NVML library.
//!
//! - `inventory`: driver versions and one `GpuInfo` per GPU.
//! - `sample`: one `GpuSample` per GPU.
//! - `events`: NVML's event set (Xid, ECC, ...) merged with `/dev/kmsg`.

mod events;
mod gpm;
mod inventory;
pub mod kmsg;
mod sample;

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpufleet_model::{Event, GpuSample, GpuStatus, UnixMs};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::nvmlDevice_t;

use super::cadence::{Cadence, Held};
use super::{GpuInventory, GpuSource, SourceError};
use kmsg::{DEV_KMSG, GpuByPci, KmsgReader};

/// The library NVML loads when no path is given.
const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// An NVML call slower than this is logged (once per GPU and field).
const SLOW_CALL: Duration = Duration::from_millis(250);

pub struct NvmlSource {
    gpus: Vec<GpuSlot>,
    events: Option<events::EventWatch>,
    kmsg: Option<KmsgReader>,
    dedup: events::XidDedup,
    /// Which fields are read every sample and which every `slow_interval` ([`super::cadence`]).
    cadence: Cadence,
    proc_root: PathBuf,
    /// Declared last: the handles above belong to this NVML session.
    nvml: Nvml,
}

/// What the source keeps per GPU between reads.
struct GpuSlot {
    index: u32,
    handle: Option<RawDevice>,
    uuid: String,
    pci_bus_id: String,
    /// NVLinks that answer, found by the first inventory (`None`: not probed yet).
    links: Option<Vec<u32>>,
    last_info: Option<gpufleet_model::GpuInfo>,
    /// Fields NVML does not support on this GPU: never asked again.
    unsupported: KeySet,
    /// Fields whose failure or slowness was already logged.
    logged: KeySet,
    /// The slow fields as last read, repeated until they are due again.
    held: Held,
    /// GPM sample handles kept between reads.
    gpm: gpm::GpmState,
    /// Time spent in NVML calls for this GPU so far.
    nvml_time: Duration,
}

/// A field of one GPU: its name and, for per-link fields, the link.
type Key = (&'static str, u32);

/// Fields of one GPU, looked up before every NVML read (about 100 per GPU-sample): hashed
/// with FNV-1a, which costs a fraction of the default SipHash on these short keys (callgrind:
/// SipHash was the agent's largest own cost per sample). Keys are our own field names, never
/// outside input, so a DoS-resistant hash buys nothing here.
type KeySet = HashSet<Key, BuildHasherDefault<Fnv>>;

#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A device handle of this source's NVML session.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RawDevice(nvmlDevice_t);

// SAFETY: NVML device handles are plain identifiers that NVML allows any thread to use
// (nvml-wrapper's `Device` is `Send + Sync` for the same reason).
unsafe impl Send for RawDevice {}

impl NvmlSource {
    /// Loads NVML (from `lib_path`, or `libnvidia-ml.so.1` through the loader's search path),
    /// finds the GPUs, registers for NVML events, and opens `/dev/kmsg` if it is readable.
    pub fn open(lib_path: Option<&Path>) -> Result<Self, SourceError> {
        let lib = lib_path.map_or(DEFAULT_LIB.to_string(), |p| p.display().to_string());
        let nvml = match lib_path {
            Some(p) => Nvml::builder().lib_path(p.as_os_str()).init(),
            None => Nvml::init(),
        }
        .map_err(|e| init_error(&lib, e))?;
        let count = nvml.device_count().map_err(|e| SourceError::Nvml {
            call: "nvmlDeviceGetCount",
            reason: e.to_string(),
        })?;
        let mut gpus: Vec<GpuSlot> = (0..count).map(GpuSlot::new).collect();
        for slot in &mut gpus {
            slot.identify(&nvml);
        }
        let events = events::EventWatch::open(&nvml, &mut gpus);
        let kmsg = KmsgReader::open(DEV_KMSG);
        let kmsg = match kmsg.unavailable() {
            Some(why) => {
                tracing::info!("{why}");
                None
            }
            None => Some(kmsg),
        };
        tracing::info!(gpus = count, library = %lib, "NVML initialised");
        Ok(NvmlSource {
            gpus,
            events,
            kmsg,
            dedup: events::XidDedup::default(),
            cadence: Cadence::default(),
            proc_root: PathBuf::from("/proc"),
            nvml,
        })
    }

    /// Replaces the kernel log reader (`None`: no kernel log), e.g. with a file in tests.
    pub fn with_kmsg(mut self, kmsg: Option<KmsgReader>) -> Self {
        self.kmsg = kmsg;
        self
    }

    /// Number of GPUs NVML reported at start.
    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    fn gpus_by_pci(&self) -> GpuByPci {
        self.gpus
            .iter()
            .filter(|g| !g.pci_bus_id.is_empty())
            .map(|g| (g.pci_bus_id.clone(), (g.index, g.uuid.clone())))
            .collect()
    }
}

impl Drop for NvmlSource {
    fn drop(&mut self) {
        if let Some(watch) = self.events.take() {
            watch.free(&self.nvml);
        }
        for slot in &mut self.gpus {
            slot.gpm.free(&self.nvml);
        }
    }
}

impl GpuSource for NvmlSource {
    fn kind(&self) -> &'static str {
        "nvml"
    }

    fn inventory(&mut self, _now: UnixMs) -> Result<GpuInventory, SourceError> {
        let driver = inventory::driver_info(&self.nvml);
        let gpus = self
            .gpus
            .iter_mut()
            .map(|slot| inventory::read_gpu(&self.nvml, slot))
            .collect();
        Ok(GpuInventory { driver, gpus })
    }

    fn sample(&mut self, now: UnixMs) -> Vec<GpuSample> {
        self.gpus
            .iter_mut()
            .map(|slot| sample::read_gpu(&self.nvml, slot, now, self.cadence, &self.proc_root))
            .collect()
    }

    fn events(&mut self, now: UnixMs) -> Vec<Event> {
        // Kernel log first: when both report an Xid in the same poll, its record (with the
        // driver's text) is the one kept.
        let by_pci = self.gpus_by_pci();
        let mut out = match &mut self.kmsg {
            Some(k) => k.read(now, &by_pci),
            None => Vec::new(),
        };
        if let Some(watch) = &mut self.events {
            out.extend(watch.poll(&self.nvml, &self.gpus, now));
        }
        self.dedup.filter(out, now)
    }

    fn set_cadence(&mut self, cadence: Cadence) {
        self.cadence = cadence;
    }

    fn read_time(&self) -> Duration {
        self.gpus.iter().map(|g| g.nvml_time).sum()
    }
}

/// Maps a failed `nvmlInit` to what the user should do about it.
fn init_error(lib: &str, e: NvmlError) -> SourceError {
    match e {
        NvmlError::LibloadingError(_)
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::LibraryNotFound
        | NvmlError::FunctionNotFound => SourceError::LibraryMissing {
            lib: lib.to_string(),
            reason: e.to_string(),
        },
        NvmlError::DriverNotLoaded => SourceError::Nvml {
            call: "nvmlInit",
            reason: "the NVIDIA kernel driver is not loaded (is this a GPU node? try `nvidia-smi`)"
                .into(),
        },
        NvmlError::LibRmVersionMismatch => SourceError::Nvml {
            call: "nvmlInit",
            reason: "Driver/library version mismatch: the loaded NVIDIA kernel driver and \
                     libnvidia-ml are different versions (a driver upgraded without a reboot?). \
                     Compare /proc/driver/nvidia/version with the libnvidia-ml.so.* files, then \
                     reboot the node or reload the nvidia modules"
                .into(),
        },
        NvmlError::NoPermission => SourceError::Nvml {
            call: "nvmlInit",
            reason: "no permission to talk to the NVIDIA driver (check /dev/nvidia* permissions)"
                .into(),
        },
        other => SourceError::Nvml {
            call: "nvmlInit",
            reason: other.to_string(),
        },
    }
}

impl GpuSlot {
    fn new(index: u32) -> Self {
        GpuSlot {
            index,
            handle: None,
            uuid: String::new(),
            pci_bus_id: String::new(),
            links: None,
            last_info: None,
            unsupported: KeySet::default(),
            logged: KeySet::default(),
            held: Held::default(),
            gpm: gpm::GpmState::default(),
            nvml_time: Duration::ZERO,
        }
    }

    /// This GPU's handle, from the cache or from NVML.
    fn device<'n>(&mut self, nvml: &'n Nvml) -> Result<Device<'n>, NvmlError> {
        if let Some(RawDevice(raw)) = self.handle {
            // SAFETY: `raw` came from `nvml_device_by_index` on this same `Nvml`, which
            // outlives the returned `Device` (both borrow it).
            return Ok(unsafe { Device::new(raw, nvml) });
        }
        let device = nvml.device_by_index(self.index)?;
        // SAFETY: only stored, and used again only with this `Nvml` (see above).
        self.handle = Some(RawDevice(unsafe { device.handle() }));
        Ok(device)
    }

    /// Reads what events and the kernel log need to name this GPU: UUID and PCI bus id.
    fn identify(&mut self, nvml: &Nvml) {
        if let Ok(device) = self.device(nvml) {
            let mut r = Reader::new(device, self);
            let uuid = r.read("uuid", |d| d.uuid());
            let pci = r.read("pci_info", |d| d.pci_info());
            if let Some(u) = uuid {
                self.uuid = u;
            }
            if let Some(p) = pci {
                self.pci_bus_id = p.bus_id;
            }
        }
    }

    /// A sample that says why this GPU could not be read.
    fn failed(&self, e: &NvmlError) -> GpuSample {
        match e {
            NvmlError::GpuLost => GpuSample::failed(
                self.index,
                &self.uuid,
                GpuStatus::Lost,
                "NVML reports the GPU lost (fallen off the bus or inaccessible)",
            ),
            other => GpuSample::failed(
                self.index,
                &self.uuid,
                GpuStatus::Unreadable,
                format!("cannot get an NVML handle for GPU {}: {other}", self.index),
            ),
        }
    }
}

/// Reads the fields of one GPU, turning every failure into `None`: NotSupported is remembered
/// and not asked again, GpuLost stops the remaining reads, anything else is logged once.
struct Reader<'n, 's> {
    device: Device<'n>,
    slot: &'s mut GpuSlot,
    lost: bool,
}

impl<'n, 's> Reader<'n, 's> {
    fn new(device: Device<'n>, slot: &'s mut GpuSlot) -> Self {
        Reader {
            device,
            slot,
            lost: false,
        }
    }

    fn read<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&Device<'n>) -> Result<T, NvmlError>,
    ) -> Option<T> {
        self.read_at((field, 0), f)
    }

    /// Reads a per-NVLink field.
    fn read_link<T>(
        &mut self,
        field: &'static str,
        link: u32,
        f: impl FnOnce(&Device<'n>) -> Result<T, NvmlError>,
    ) -> Option<T> {
        self.read_at((field, link), f)
    }

    fn read_at<T>(
        &mut self,
        key: Key,
        f: impl FnOnce(&Device<'n>) -> Result<T, NvmlError>,
    ) -> Option<T> {
        if self.lost || self.slot.unsupported.contains(&key) {
            return None;
        }
        let started = Instant::now();
        let result = f(&self.device);
        let took = started.elapsed();
        self.slot.nvml_time += took;
        if took > SLOW_CALL && self.slot.logged.insert(key) {
            tracing::warn!(
                gpu = self.slot.index,
                field = key.0,
                ms = took.as_millis() as u64,
                "slow NVML call"
            );
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed(key, e);
                None
            }
        }
    }

    /// Reads several `nvmlDeviceGetFieldValues` fields in one call (one driver round trip
    /// instead of one per field): `(field name, NVML field id)` in, `(field name, value)` out
    /// for the fields that answered. A field NVML does not support is remembered and left out
    /// of later calls. `None` when the call as a whole failed: read the fields one by one.
    fn read_fields(&mut self, fields: &[(&'static str, u32)]) -> Option<Vec<(&'static str, i64)>> {
        let wanted: Vec<(&'static str, u32)> = fields
            .iter()
            .filter(|(name, _)| !self.slot.unsupported.contains(&(*name, 0)))
            .copied()
            .collect();
        if wanted.is_empty() {
            return Some(Vec::new());
        }
        let ids: Vec<FieldId> = wanted.iter().map(|(_, id)| FieldId(*id)).collect();
        let answers = self.read("field_values", |d| d.field_values_for(&ids))?;
        let mut out = Vec::with_capacity(wanted.len());
        for ((name, _), answer) in wanted.into_iter().zip(answers) {
            match answer.and_then(|a| a.value) {
                Ok(v) => out.push((name, sample_value(v))),
                Err(e) => self.failed((name, 0), e),
            }
        }
        Some(out)
    }

    /// Classifies a failed read: NotSupported (or a function the library lacks) is
    /// remembered, GpuLost stops further reads, anything else is logged once.
    fn failed(&mut self, key: Key, e: NvmlError) {
        match e {
            NvmlError::GpuLost => self.lost = true,
            NvmlError::NotSupported
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::FunctionNotFound => {
                self.slot.unsupported.insert(key);
            }
            e => {
                if self.slot.logged.insert(key) {
                    tracing::debug!(
                        gpu = self.slot.index,
                        field = key.0,
                        link = key.1,
                        error = %e,
                        "NVML read failed; reported as absent"
                    );
                }
            }
        }
    }
}

/// A field value as a number (NVML's field values are counters, temperatures and sizes).
fn sample_value(v: SampleValue) -> i64 {
    match v {
        SampleValue::U32(v) => i64::from(v),
        SampleValue::U64(v) => v as i64,
        SampleValue::I64(v) => v,
        SampleValue::F64(v) => v as i64,
    }
}

#[cfg(test)]
mod init_error_tests {
    use super::*;

    #[test]
    fn init_errors_say_what_to_do() {
        for (e, want) in [
            (NvmlError::LibRmVersionMismatch, "reboot the node"),
            (NvmlError::DriverNotLoaded, "kernel driver is not loaded"),
            (NvmlError::NoPermission, "/dev/nvidia*"),
            (NvmlError::LibraryNotFound, "--nvml-lib"),
        ] {
            let msg = init_error("libnvidia-ml.so.1", e).to_string();
            assert!(msg.contains(want), "{msg}");
        }
    }
}
