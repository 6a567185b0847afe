//! The columnar sample chunk: many consecutive samples of one node in one compressed blob.
//!
//! A sample as the agent sends it is a protobuf message of some 2.5 KB for an 8-GPU node; most
//! of its numbers barely move from one second to the next. A chunk turns N samples into
//! columns — one per (GPU, field), (GPU, NVLink, field), (disk, field), (NIC, field) and host
//! field — encodes each column as the delta (or delta of delta, whichever is smaller) of its
//! values in zigzag varints, keeps what is not a number (GPU identities, processes, names,
//! floats) as the protobuf of the sample with those numbers taken out, written once while it
//! does not change, and compresses the whole with zstd.
//!
//! Lossless by construction: a field missing from the column lists below stays in the
//! remainder, so a field added to the protocol is stored (less compactly) before anyone lists
//! it here. `decode(encode(samples)) == samples`, bit for bit, is tested.
//!
//! The wire type `pb::Sample` is the unit here: it is what the head table stores and what
//! decoding gives back (the store turns it into the domain type), so no field can be lost
//! between two hand-written copies.

use gpufleet_proto::v1 as pb;
use prost::Message;

use super::varint::{Damaged, Reader, put_varint, unzigzag, zigzag};

/// Format version written first in every chunk. 2: column keys as steps from the previous
/// key, and the column flags [`HUNDREDTHS`], [`STEPPED`], [`PACKED`]. Chunks of format 1 are
/// still read.
const VERSION: u64 = 2;
/// zstd level: 3 is zstd's default — most of the ratio for little CPU (chunks are compressed
/// once, in the writer thread, and rarely read).
const ZSTD_LEVEL: i32 = 3;
/// Largest decoded chunk accepted (a damaged length must not allocate without bound).
const MAX_DECODED: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
#[error("sample chunk is damaged: {0}")]
pub struct ChunkError(String);

fn bad(what: impl Into<String>) -> ChunkError {
    ChunkError(what.into())
}

impl From<Damaged> for ChunkError {
    fn from(d: Damaged) -> Self {
        ChunkError(d.0)
    }
}

/// A numeric field read into a column (`take` leaves `None`/0 behind) and written back.
trait Col {
    /// 32 or 64 for a float kept by its bits (which may also be stored as hundredths), else 0.
    const FLOAT: u8 = 0;
    fn take(&mut self) -> Option<i64>;
    fn put(&mut self, v: Option<i64>);
}

macro_rules! col_opt {
    ($($t:ty),*) => {$(
        impl Col for Option<$t> {
            fn take(&mut self) -> Option<i64> {
                Option::take(self).map(|v| v as i64)
            }
            fn put(&mut self, v: Option<i64>) {
                *self = v.map(|v| v as $t);
            }
        }
    )*};
}
col_opt!(u32, i32, u64, i64);

impl Col for Option<bool> {
    fn take(&mut self) -> Option<i64> {
        Option::take(self).map(i64::from)
    }
    fn put(&mut self, v: Option<i64>) {
        *self = v.map(|v| v != 0);
    }
}

/// Floats by their bits: exact, and for values of one sign and magnitude the bits move
/// with the value, so deltas stay smaller than the raw bits.
impl Col for Option<f32> {
    const FLOAT: u8 = 32;
    fn take(&mut self) -> Option<i64> {
        Option::take(self).map(|v| i64::from(v.to_bits()))
    }
    fn put(&mut self, v: Option<i64>) {
        *self = v.map(|v| f32::from_bits(v as u32));
    }
}

impl Col for Option<f64> {
    const FLOAT: u8 = 64;
    fn take(&mut self) -> Option<i64> {
        Option::take(self).map(|v| v.to_bits() as i64)
    }
    fn put(&mut self, v: Option<i64>) {
        *self = v.map(|v| f64::from_bits(v as u64));
    }
}

impl Col for u64 {
    fn take(&mut self) -> Option<i64> {
        Some(std::mem::take(self) as i64)
    }
    fn put(&mut self, v: Option<i64>) {
        *self = v.unwrap_or(0) as u64;
    }
}

const fn float_of<S, T: Col>(_: fn(&S) -> &T) -> u8 {
    T::FLOAT
}

/// The numeric fields of one message type that become columns, by position in the list.
macro_rules! columns {
    ($name:ident: $ty:ty { $($f:ident),* $(,)? }) => {
        mod $name {
            use super::*;
            #[allow(dead_code)]
            pub const FIELDS: &[&str] = &[$(stringify!($f)),*];
            pub fn take(s: &mut $ty, out: &mut Vec<Option<i64>>) {
                $(out.push(Col::take(&mut s.$f));)*
            }
            /// [`Col::FLOAT`] of each field, by position.
            pub const FLOATS: &[u8] = &[$(float_of(|s: &$ty| &s.$f)),*];
            pub fn put(s: &mut $ty, field: usize, v: Option<i64>) {
                let mut i = 0usize;
                $(
                    if i == field {
                        Col::put(&mut s.$f, v);
                        return;
                    }
                    i += 1;
                )*
                let _ = i;
            }
        }
    };
}

columns!(gpu_cols: pb::GpuSample {
    temperature_gpu_celsius, temperature_memory_celsius, fan_speed_percent,
    power_usage_milliwatts, power_limit_enforced_milliwatts, total_energy_millijoules,
    memory_used_bytes, memory_total_bytes, bar1_used_bytes, utilization_gpu_percent,
    utilization_memory_percent, utilization_encoder_percent, utilization_decoder_percent,
    sm_clock_mhz, memory_clock_mhz, graphics_clock_mhz, sm_clock_applications_mhz,
    memory_clock_applications_mhz, clock_event_reasons, violation_power_ns,
    violation_thermal_ns, pcie_link_gen, pcie_link_width, pcie_tx_kbps, pcie_rx_kbps,
    pcie_replay_count, ecc_corrected_volatile, ecc_uncorrected_volatile,
    ecc_corrected_aggregate, ecc_uncorrected_aggregate, retired_pages_single_bit,
    retired_pages_double_bit, retired_pages_pending, remapped_rows_correctable,
    remapped_rows_uncorrectable, remapped_rows_pending, remapped_rows_failure,
    performance_state, violation_sync_boost_ns, violation_board_limit_ns,
    violation_low_utilization_ns, violation_reliability_ns, gpm_graphics_active_percent,
    gpm_sm_active_percent, gpm_sm_occupancy_percent, gpm_tensor_active_percent,
    gpm_dram_active_percent, gpm_fp64_active_percent, gpm_fp32_active_percent,
    gpm_fp16_active_percent, gpm_pcie_tx_bytes_per_second, gpm_pcie_rx_bytes_per_second,
    gpm_nvlink_tx_bytes_per_second, gpm_nvlink_rx_bytes_per_second,
});
columns!(nvlink_cols: pb::NvLinkSample {
    active, replay_errors, recovery_errors, crc_flit_errors, crc_data_errors,
});
columns!(host_cols: pb::HostSample {
    cpu_percent, load_average_1m, load_average_5m, load_average_15m, memory_used_bytes, memory_total_bytes, memory_available_bytes, swap_used_bytes,
    swap_total_bytes, uptime_seconds,
});
columns!(disk_cols: pb::DiskSample { total_bytes, available_bytes });
columns!(ib_cols: pb::IbPortSample {
    rate_gbps, symbol_errors, link_downed, rcv_errors, xmit_discards,
    excessive_buffer_overrun_errors, link_error_recovery, local_link_integrity_errors,
    rcv_data_bytes, xmit_data_bytes,
});
columns!(cpu_config_cols: pb::CpuConfigSample {
    freq_avg_khz, freq_max_khz, scaling_max_khz, edac_corrected_errors, edac_uncorrected_errors,
});
columns!(os_cols: pb::OsSample {
    file_handles, file_handles_max, pages_swapped_in, pages_swapped_out, oom_kills,
    uninterruptible,
});
columns!(eth_cols: pb::EthernetPort { speed_mbps, carrier_changes, mtu });
columns!(pcie_cols: pb::PcieDeviceSample {
    link_speed_mts, link_width, aer_correctable, aer_nonfatal, aer_fatal,
});
columns!(storage_mount_cols: pb::StorageMountSample {
    statfs_latency_ms, total_bytes, available_bytes,
});
columns!(storage_nvme_cols: pb::StorageNvmeSample {
    temperature_millicelsius, temperature_max_millicelsius, temperature_crit_millicelsius,
    temperature_alarm,
});
columns!(nic_cols: pb::NicSample {
    rx_bytes_per_second, tx_bytes_per_second, rx_errors, tx_errors, rx_dropped, tx_dropped,
    speed_mbps,
});

/// Where a column's values go: which part of the sample, at which positions, which field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Slot {
    Host {
        field: u16,
    },
    Gpu {
        gpu: u16,
        field: u16,
    },
    NvLink {
        gpu: u16,
        link: u16,
        field: u16,
    },
    Disk {
        disk: u16,
        field: u16,
    },
    Nic {
        nic: u16,
        field: u16,
    },
    /// `cpu_per_core_percent[core]`.
    Core {
        core: u16,
    },
    /// `ib_ports[port]`.
    Ib {
        port: u16,
        field: u16,
    },
    /// `cpu_config`.
    CpuConfig {
        field: u16,
    },
    /// `os`.
    Os {
        field: u16,
    },
    /// `ethernet[port]`.
    Eth {
        port: u16,
        field: u16,
    },
    /// `pcie_devices[device]`.
    Pcie {
        device: u16,
        field: u16,
    },
    /// `storage.mounts[index]` (`list` 0) or `storage.nvme[index]` (`list` 1).
    Storage {
        list: u16,
        index: u16,
        field: u16,
    },
}

const STORAGE_MOUNTS: u16 = 0;
const STORAGE_NVME: u16 = 1;

impl Slot {
    /// The column's part, its message type's field names and [`Col::FLOAT`]s, and its field.
    fn table(self) -> (&'static str, &'static [&'static str], &'static [u8], u16) {
        match self {
            Slot::Host { field } => ("host", host_cols::FIELDS, host_cols::FLOATS, field),
            Slot::Gpu { field, .. } => ("gpu", gpu_cols::FIELDS, gpu_cols::FLOATS, field),
            Slot::NvLink { field, .. } => {
                ("nvlink", nvlink_cols::FIELDS, nvlink_cols::FLOATS, field)
            }
            Slot::Disk { field, .. } => ("disk", disk_cols::FIELDS, disk_cols::FLOATS, field),
            Slot::Nic { field, .. } => ("nic", nic_cols::FIELDS, nic_cols::FLOATS, field),
            Slot::Core { .. } => ("host", &["cpu_per_core_percent"], &[32], 0),
            Slot::Ib { field, .. } => ("ib", ib_cols::FIELDS, ib_cols::FLOATS, field),
            Slot::CpuConfig { field } => (
                "cpu_config",
                cpu_config_cols::FIELDS,
                cpu_config_cols::FLOATS,
                field,
            ),
            Slot::Os { field } => ("os", os_cols::FIELDS, os_cols::FLOATS, field),
            Slot::Eth { field, .. } => ("ethernet", eth_cols::FIELDS, eth_cols::FLOATS, field),
            Slot::Pcie { field, .. } => ("pcie", pcie_cols::FIELDS, pcie_cols::FLOATS, field),
            Slot::Storage {
                list: STORAGE_NVME,
                field,
                ..
            } => (
                "nvme",
                storage_nvme_cols::FIELDS,
                storage_nvme_cols::FLOATS,
                field,
            ),
            Slot::Storage { field, .. } => (
                "mount",
                storage_mount_cols::FIELDS,
                storage_mount_cols::FLOATS,
                field,
            ),
        }
    }

    /// The column's part and field, the same for every GPU, link or port: `gpu.sm_clock_mhz`.
    fn field_name(self) -> String {
        let (part, names, _, field) = self.table();
        let name = names.get(usize::from(field)).copied().unwrap_or("?");
        format!("{part}.{name}")
    }

    /// [`Col::FLOAT`] of the column's field.
    fn float(self) -> u8 {
        let (_, _, floats, field) = self.table();
        floats.get(usize::from(field)).copied().unwrap_or(0)
    }

    fn key(self) -> u64 {
        let (kind, a, b, f) = match self {
            Slot::Host { field } => (0u64, 0u64, 0u64, field),
            Slot::Gpu { gpu, field } => (1, gpu.into(), 0, field),
            Slot::NvLink { gpu, link, field } => (2, gpu.into(), link.into(), field),
            Slot::Disk { disk, field } => (3, disk.into(), 0, field),
            Slot::Nic { nic, field } => (4, nic.into(), 0, field),
            Slot::Core { core } => (5, core.into(), 0, 0),
            Slot::Ib { port, field } => (6, port.into(), 0, field),
            Slot::CpuConfig { field } => (7, 0, 0, field),
            Slot::Os { field } => (10, 0, 0, field),
            Slot::Eth { port, field } => (11, port.into(), 0, field),
            // 8 is another part's.
            Slot::Pcie { device, field } => (9, device.into(), 0, field),
            Slot::Storage { list, index, field } => (8, index.into(), list.into(), field),
        };
        (kind << 56) | (a << 40) | (b << 24) | u64::from(f)
    }

    fn from_key(k: u64) -> Result<Slot, ChunkError> {
        let a = ((k >> 40) & 0xffff) as u16;
        let b = ((k >> 24) & 0xffff) as u16;
        let field = (k & 0xff_ffff) as u16;
        Ok(match k >> 56 {
            0 => Slot::Host { field },
            1 => Slot::Gpu { gpu: a, field },
            2 => Slot::NvLink {
                gpu: a,
                link: b,
                field,
            },
            3 => Slot::Disk { disk: a, field },
            4 => Slot::Nic { nic: a, field },
            5 => Slot::Core { core: a },
            6 => Slot::Ib { port: a, field },
            7 => Slot::CpuConfig { field },
            10 => Slot::Os { field },
            11 => Slot::Eth { port: a, field },
            9 => Slot::Pcie { device: a, field },
            8 => Slot::Storage {
                list: b,
                index: a,
                field,
            },
            other => return Err(bad(format!("unknown column kind {other}"))),
        })
    }

    fn put(self, s: &mut pb::Sample, v: Option<i64>) -> Result<(), ChunkError> {
        let missing = || bad(format!("column {self:?} has no place in its sample"));
        match self {
            Slot::Host { field } => {
                host_cols::put(s.host.get_or_insert_with(Default::default), field.into(), v)
            }
            Slot::Gpu { gpu, field } => {
                let g = s.gpus.get_mut(usize::from(gpu)).ok_or_else(missing)?;
                gpu_cols::put(g, field.into(), v)
            }
            Slot::NvLink { gpu, link, field } => {
                let g = s.gpus.get_mut(usize::from(gpu)).ok_or_else(missing)?;
                let l = g.nvlinks.get_mut(usize::from(link)).ok_or_else(missing)?;
                nvlink_cols::put(l, field.into(), v)
            }
            Slot::Disk { disk, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let d = host.disks.get_mut(usize::from(disk)).ok_or_else(missing)?;
                disk_cols::put(d, field.into(), v)
            }
            Slot::Nic { nic, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let n = host.nics.get_mut(usize::from(nic)).ok_or_else(missing)?;
                nic_cols::put(n, field.into(), v)
            }
            Slot::Ib { port, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let p = host
                    .ib_ports
                    .get_mut(usize::from(port))
                    .ok_or_else(missing)?;
                ib_cols::put(p, field.into(), v)
            }
            Slot::CpuConfig { field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let c = host.cpu_config.as_mut().ok_or_else(missing)?;
                cpu_config_cols::put(c, field.into(), v)
            }
            Slot::Os { field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let o = host.os.as_mut().ok_or_else(missing)?;
                os_cols::put(o, field.into(), v)
            }
            Slot::Eth { port, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let p = host
                    .ethernet
                    .get_mut(usize::from(port))
                    .ok_or_else(missing)?;
                eth_cols::put(p, field.into(), v)
            }
            Slot::Pcie { device, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let d = host
                    .pcie_devices
                    .get_mut(usize::from(device))
                    .ok_or_else(missing)?;
                pcie_cols::put(d, field.into(), v)
            }
            Slot::Storage { list, index, field } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let st = host.storage.as_mut().ok_or_else(missing)?;
                let i = usize::from(index);
                match list {
                    STORAGE_MOUNTS => {
                        let m = st.mounts.get_mut(i).ok_or_else(missing)?;
                        storage_mount_cols::put(m, field.into(), v)
                    }
                    STORAGE_NVME => {
                        let n = st.nvme.get_mut(i).ok_or_else(missing)?;
                        storage_nvme_cols::put(n, field.into(), v)
                    }
                    _ => return Err(missing()),
                }
            }
            Slot::Core { core } => {
                let host = s.host.as_mut().ok_or_else(missing)?;
                let c = host
                    .cpu_per_core_percent
                    .get_mut(usize::from(core))
                    .ok_or_else(missing)?;
                let mut f = Some(*c);
                Col::put(&mut f, v);
                *c = f.unwrap_or(0.0);
            }
        }
        Ok(())
    }
}

/// Takes the column values out of `s` (leaving the remainder in it), as (slot, value) pairs.
fn split(s: &mut pb::Sample, out: &mut Vec<(Slot, Option<i64>)>) {
    let mut vals = Vec::new();
    let mut emit = |vals: &mut Vec<Option<i64>>, slot: &dyn Fn(u16) -> Slot| {
        for (f, v) in vals.drain(..).enumerate() {
            out.push((slot(f as u16), v));
        }
    };
    if let Some(h) = s.host.as_mut() {
        host_cols::take(h, &mut vals);
        emit(&mut vals, &|field| Slot::Host { field });
        for (i, d) in h.disks.iter_mut().enumerate().take(u16::MAX as usize) {
            disk_cols::take(d, &mut vals);
            emit(&mut vals, &|field| Slot::Disk {
                disk: i as u16,
                field,
            });
        }
        for (i, c) in h
            .cpu_per_core_percent
            .iter_mut()
            .enumerate()
            .take(u16::MAX as usize)
        {
            // Left as 0.0 in the remainder (the list's length stays there), the value here.
            vals.push(Col::take(&mut Some(std::mem::take(c))));
            emit(&mut vals, &|_| Slot::Core { core: i as u16 });
        }
        for (i, n) in h.nics.iter_mut().enumerate().take(u16::MAX as usize) {
            nic_cols::take(n, &mut vals);
            emit(&mut vals, &|field| Slot::Nic {
                nic: i as u16,
                field,
            });
        }
        for (i, p) in h.ib_ports.iter_mut().enumerate().take(u16::MAX as usize) {
            ib_cols::take(p, &mut vals);
            emit(&mut vals, &|field| Slot::Ib {
                port: i as u16,
                field,
            });
        }
        if let Some(c) = h.cpu_config.as_mut() {
            cpu_config_cols::take(c, &mut vals);
            emit(&mut vals, &|field| Slot::CpuConfig { field });
        }
        if let Some(o) = h.os.as_mut() {
            os_cols::take(o, &mut vals);
            emit(&mut vals, &|field| Slot::Os { field });
        }
        for (i, p) in h.ethernet.iter_mut().enumerate().take(u16::MAX as usize) {
            eth_cols::take(p, &mut vals);
            emit(&mut vals, &|field| Slot::Eth {
                port: i as u16,
                field,
            });
        }
        for (i, d) in h
            .pcie_devices
            .iter_mut()
            .enumerate()
            .take(u16::MAX as usize)
        {
            pcie_cols::take(d, &mut vals);
            emit(&mut vals, &|field| Slot::Pcie {
                device: i as u16,
                field,
            });
        }
        if let Some(st) = h.storage.as_mut() {
            for (i, m) in st.mounts.iter_mut().enumerate().take(u16::MAX as usize) {
                storage_mount_cols::take(m, &mut vals);
                emit(&mut vals, &|field| Slot::Storage {
                    list: STORAGE_MOUNTS,
                    index: i as u16,
                    field,
                });
            }
            for (i, n) in st.nvme.iter_mut().enumerate().take(u16::MAX as usize) {
                storage_nvme_cols::take(n, &mut vals);
                emit(&mut vals, &|field| Slot::Storage {
                    list: STORAGE_NVME,
                    index: i as u16,
                    field,
                });
            }
        }
    }
    for (gi, g) in s.gpus.iter_mut().enumerate().take(u16::MAX as usize) {
        gpu_cols::take(g, &mut vals);
        emit(&mut vals, &|field| Slot::Gpu {
            gpu: gi as u16,
            field,
        });
        for (li, l) in g.nvlinks.iter_mut().enumerate().take(u16::MAX as usize) {
            nvlink_cols::take(l, &mut vals);
            emit(&mut vals, &|field| Slot::NvLink {
                gpu: gi as u16,
                link: li as u16,
                field,
            });
        }
    }
}

// --- one column ----------------------------------------------------------------------------

/// Encodings of a column's present values.
const DELTA: u8 = 0;
const DELTA_OF_DELTA: u8 = 1;
/// Flag: some samples lack the value; a presence bitmap follows.
const SPARSE: u8 = 2;
/// Flag (format 2): a float column whose every value is a whole number of hundredths, stored
/// as those hundredths (GPM percentages, rates in Gb/s): a few bits of delta where the float's
/// bits would move in all 23 of their mantissa bits.
const HUNDREDTHS: u8 = 4;
/// Flag (format 2): every value is the first plus a multiple of a common step (bytes counted
/// in KiB or pages, clocks in whole MHz steps): the first value and the step follow, then the
/// multiples.
const STEPPED: u8 = 8;

/// Flag (format 2): the column's deltas (or, with [`PACKED_VALUES`], its values) are
/// bit-packed as distances from their minimum, each in the same number of bits, instead of
/// zigzag varints: for noisy readings (power, throughput, activity), whose low bits no
/// compressor can shrink, this stores exactly the bits the noise spans.
const PACKED: u8 = 16;
/// With [`PACKED`]: the values themselves are packed, not their deltas.
const PACKED_VALUES: u8 = 32;

/// `seq` as `zigzag(minimum)`, the width in bits, then each `v - minimum` in that many bits,
/// least significant first.
fn pack(seq: &[i64], out: &mut Vec<u8>) {
    let min = seq.iter().copied().min().unwrap_or(0);
    let span = seq
        .iter()
        .map(|&v| v.wrapping_sub(min) as u64)
        .max()
        .unwrap_or(0);
    let width = 64 - span.leading_zeros();
    put_varint(out, zigzag(min));
    out.push(width as u8);
    let (mut acc, mut bits) = (0u128, 0u32);
    for &v in seq {
        acc |= u128::from(v.wrapping_sub(min) as u64) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Reads `n` values written by [`pack`].
fn unpack(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>, ChunkError> {
    let min = unzigzag(r.varint()?);
    let width = u32::from(*r.bytes(1)?.first().ok_or_else(|| bad("truncated"))?);
    if width > 64 {
        return Err(bad(format!("packed width {width}")));
    }
    let bytes = r.bytes(
        (n as u128 * u128::from(width))
            .div_ceil(8)
            .min(usize::MAX as u128) as usize,
    )?;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let (mut acc, mut bits) = (0u128, 0u32);
    let mut next = bytes.iter();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        while bits < width {
            acc |= u128::from(*next.next().ok_or_else(|| bad("truncated packed values"))?) << bits;
            bits += 8;
        }
        out.push(min.wrapping_add((acc as u64 & mask) as i64));
        acc >>= width;
        bits -= width;
    }
    Ok(out)
}

/// The largest step that every value's distance from `values[0]` is a multiple of (0 when all
/// are equal, or when a distance does not fit an i64).
fn common_step(values: &[i64]) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let Some(&first) = values.first() else {
        return 0;
    };
    let mut g = 0;
    for &v in values {
        let Some(d) = v.checked_sub(first) else {
            return 0;
        };
        g = gcd(g, d.unsigned_abs());
        if g == 1 {
            return 1;
        }
    }
    g
}

fn encode_values(values: &[i64], dod: bool, out: &mut Vec<u8>) {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for &v in values {
        let delta = v.wrapping_sub(prev);
        let w = if dod {
            delta.wrapping_sub(prev_delta)
        } else {
            delta
        };
        put_varint(out, zigzag(w));
        prev = v;
        prev_delta = delta;
    }
}

/// Reads `n` values written by [`encode_values`].
fn decode_values(r: &mut Reader<'_>, n: usize, dod: bool) -> Result<Vec<i64>, ChunkError> {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let w = unzigzag(r.varint()?);
        let delta = if dod { prev_delta.wrapping_add(w) } else { w };
        prev = prev.wrapping_add(delta);
        prev_delta = delta;
        out.push(prev);
    }
    Ok(out)
}

/// The float a column value's bits stand for (`float`: 32 or 64).
fn float_value(bits: i64, float: u8) -> f64 {
    if float == 32 {
        f64::from(f32::from_bits(bits as u32))
    } else {
        f64::from_bits(bits as u64)
    }
}

/// The bits of `hundredths` / 100 as the column's float type.
fn hundredths_bits(hundredths: i64, float: u8) -> i64 {
    let v = hundredths as f64 / 100.0;
    if float == 32 {
        i64::from((v as f32).to_bits())
    } else {
        v.to_bits() as i64
    }
}

/// The column's values as hundredths, when every one of them comes back bit for bit.
fn as_hundredths(values: &[i64], float: u8) -> Option<Vec<i64>> {
    const LIMIT: f64 = (1i64 << 52) as f64;
    values
        .iter()
        .map(|&bits| {
            let h = (float_value(bits, float) * 100.0).round();
            (h.is_finite() && h.abs() < LIMIT && hundredths_bits(h as i64, float) == bits)
                .then_some(h as i64)
        })
        .collect()
}

/// Writes one column: its key (as the step from the previous column's), its mode, the
/// presence bitmap when sparse, the first value and step when stepped, and the values in the
/// smallest of four layouts.
fn encode_column(key: u64, prev_key: u64, column: &[Option<i64>], out: &mut Vec<u8>) {
    let mut present: Vec<i64> = column.iter().flatten().copied().collect();
    let mut flags = 0;
    if let Ok(slot) = Slot::from_key(key) {
        let float = slot.float();
        if float != 0
            && let Some(h) = as_hundredths(&present, float)
        {
            present = h;
            flags |= HUNDREDTHS;
        }
    }
    let mut header = Vec::new();
    let step = common_step(&present);
    if step > 1 {
        let first = present[0];
        // Exact: each distance is a multiple of `step` and fits an i64 (checked above).
        for v in &mut present {
            *v = ((*v - first).unsigned_abs() / step) as i64 * (*v - first).signum();
        }
        put_varint(&mut header, zigzag(first));
        put_varint(&mut header, step);
        flags |= STEPPED;
    }
    // The smallest of four layouts: deltas or deltas of deltas as varints (steady readings and
    // counters, where zstd then shrinks the runs of zeros), values or deltas bit-packed (noise).
    let mut values = Vec::new();
    encode_values(&present, false, &mut values);
    let mut mode = DELTA;
    let mut other = Vec::new();
    encode_values(&present, true, &mut other);
    if other.len() < values.len() {
        (mode, values) = (DELTA_OF_DELTA, std::mem::take(&mut other));
    }
    if present.len() > 1 {
        let deltas: Vec<i64> = std::iter::once(present[0])
            .chain(present.windows(2).map(|w| w[1].wrapping_sub(w[0])))
            .collect();
        for (layout, seq) in [(PACKED | PACKED_VALUES, &present), (PACKED, &deltas)] {
            other.clear();
            pack(seq, &mut other);
            if other.len() < values.len() {
                (mode, values) = (layout, std::mem::take(&mut other));
            }
        }
    }
    put_varint(out, key.wrapping_sub(prev_key));
    if present.len() == column.len() {
        out.push(mode | flags);
    } else {
        out.push(mode | flags | SPARSE);
        let mut bits = vec![0u8; column.len().div_ceil(8)];
        for (i, v) in column.iter().enumerate() {
            if v.is_some() {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bits);
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(&values);
}

/// Reads one column written by [`encode_column`] (`version` 1: absolute keys, no hundredths).
fn decode_column(
    r: &mut Reader<'_>,
    n: usize,
    version: u64,
    prev_key: u64,
) -> Result<(u64, Vec<Option<i64>>), ChunkError> {
    let key = if version >= 2 {
        prev_key.wrapping_add(r.varint()?)
    } else {
        r.varint()?
    };
    let mode = *r.bytes(1)?.first().ok_or_else(|| bad("truncated"))?;
    let known = if version >= 2 {
        SPARSE | DELTA_OF_DELTA | HUNDREDTHS | STEPPED | PACKED | PACKED_VALUES
    } else {
        SPARSE | DELTA_OF_DELTA
    };
    if mode & !known != 0 {
        return Err(bad(format!("unknown column encoding {mode}")));
    }
    let float = if mode & HUNDREDTHS != 0 {
        match Slot::from_key(key)?.float() {
            0 => return Err(bad(format!("column {key:#x} is not a float"))),
            f => f,
        }
    } else {
        0
    };
    let present: Vec<bool> = if mode & SPARSE != 0 {
        let bits = r.bytes(n.div_ceil(8))?;
        (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect()
    } else {
        vec![true; n]
    };
    let (first, step) = if mode & STEPPED != 0 {
        (unzigzag(r.varint()?), r.varint()? as i64)
    } else {
        (0, 1)
    };
    let count = present.iter().filter(|p| **p).count();
    let seq: Vec<i64> = if mode & PACKED != 0 {
        let packed = unpack(r, count)?;
        if mode & PACKED_VALUES != 0 {
            packed
        } else {
            packed
                .iter()
                .scan(0i64, |v, d| {
                    *v = v.wrapping_add(*d);
                    Some(*v)
                })
                .collect()
        }
    } else {
        decode_values(r, count, mode & DELTA_OF_DELTA != 0)?
    };
    let mut values = seq.into_iter().map(|v| {
        let value = first.wrapping_add(v.wrapping_mul(step));
        if float != 0 {
            hundredths_bits(value, float)
        } else {
            value
        }
    });
    let out = present
        .into_iter()
        .map(|p| if p { values.next() } else { None })
        .collect();
    Ok((key, out))
}

// --- a chunk -------------------------------------------------------------------------------

/// A chunk's parts before they are laid out: timestamps, each sample's remainder (0 when it
/// equals the previous one), and the columns in key order.
struct Gathered {
    times: Vec<i64>,
    rests: Vec<u8>,
    columns: Vec<(u64, Vec<Option<i64>>)>,
}

fn gather(samples: Vec<pb::Sample>) -> Gathered {
    let n = samples.len();
    let times: Vec<i64> = samples.iter().map(|s| s.timestamp_unix_ms).collect();
    // Columns by first appearance; a sample shaped like the one before (the usual case) finds
    // its columns by position, without a lookup per value.
    let mut columns: Vec<(u64, Vec<Option<i64>>)> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = Default::default();
    let mut shape: Vec<(u64, usize)> = Vec::new();
    let mut pairs = Vec::new();
    let mut prev_rest: Option<Vec<u8>> = None;
    let mut rests = Vec::new();
    for (i, mut rest) in samples.into_iter().enumerate() {
        rest.timestamp_unix_ms = 0;
        pairs.clear();
        split(&mut rest, &mut pairs);
        let same_shape = pairs.len() == shape.len()
            && pairs
                .iter()
                .zip(&shape)
                .all(|((slot, _), (k, _))| slot.key() == *k);
        if !same_shape {
            shape.clear();
            for (slot, _) in &pairs {
                let key = slot.key();
                let at = *index.entry(key).or_insert_with(|| {
                    columns.push((key, vec![None; n]));
                    columns.len() - 1
                });
                shape.push((key, at));
            }
        }
        for ((_, v), (_, at)) in pairs.iter().zip(&shape) {
            columns[*at].1[i] = *v;
        }
        let bytes = rest.encode_to_vec();
        if prev_rest.as_ref() == Some(&bytes) {
            put_varint(&mut rests, 0);
        } else {
            put_varint(&mut rests, bytes.len() as u64 + 1);
            rests.extend_from_slice(&bytes);
            prev_rest = Some(bytes);
        }
    }
    // In key order, so related values sit together for the compressor.
    columns.sort_unstable_by_key(|(key, _)| *key);
    Gathered {
        times,
        rests,
        columns,
    }
}

/// Encodes `samples` (one node's, oldest first) into one compressed chunk.
pub fn encode(samples: Vec<pb::Sample>) -> Vec<u8> {
    let n = samples.len();
    let g = gather(samples);
    let mut raw = Vec::with_capacity(256 + n * 64);
    put_varint(&mut raw, VERSION);
    put_varint(&mut raw, n as u64);
    encode_values(&g.times, true, &mut raw);
    raw.extend_from_slice(&g.rests);
    put_varint(&mut raw, g.columns.len() as u64);
    let mut prev_key = 0;
    for (key, col) in &g.columns {
        encode_column(*key, prev_key, col, &mut raw);
        prev_key = *key;
    }
    zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses any input held in memory")
}

/// What each kind of column costs in a chunk of `samples`, largest first: each column encoded
/// and compressed on its own, summed by field over GPUs, links, ports and devices, plus the
/// timestamps and the non-numeric remainder. An attribution for the storage bench (compressed
/// apart, the parts add up to more than the chunk).
pub fn column_costs(samples: Vec<pb::Sample>) -> Vec<(String, usize)> {
    let g = gather(samples);
    let zstd_len = |raw: &[u8]| {
        zstd::bulk::compress(raw, ZSTD_LEVEL)
            .expect("zstd compresses any input held in memory")
            .len()
    };
    let mut costs: std::collections::BTreeMap<String, usize> = Default::default();
    let mut t = Vec::new();
    encode_values(&g.times, true, &mut t);
    costs.insert("timestamps".into(), zstd_len(&t));
    costs.insert(
        "remainder (names, identities, processes)".into(),
        zstd_len(&g.rests),
    );
    for (key, col) in &g.columns {
        let mut raw = Vec::new();
        encode_column(*key, *key, col, &mut raw);
        let name = Slot::from_key(*key).map_or_else(|_| "unknown".into(), Slot::field_name);
        *costs.entry(name).or_default() += zstd_len(&raw);
    }
    let mut out: Vec<(String, usize)> = costs.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Decodes a chunk written by [`encode`] back into its samples, oldest first.
pub fn decode(blob: &[u8]) -> Result<Vec<pb::Sample>, ChunkError> {
    let size = zstd::bulk::Decompressor::upper_bound(blob)
        .unwrap_or(MAX_DECODED)
        .min(MAX_DECODED);
    let raw = zstd::bulk::decompress(blob, size).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut r = Reader::new(&raw);
    let version = r.varint()?;
    if !(1..=VERSION).contains(&version) {
        return Err(bad(format!(
            "chunk format {version}, this gpufleet reads 1 to {VERSION}"
        )));
    }
    // Every sample takes at least one byte (its timestamp), which bounds `n` by the input.
    let n = r.len(raw.len())?;
    let times = decode_values(&mut r, n, true)?;
    let mut samples = Vec::with_capacity(n);
    let mut last: Option<pb::Sample> = None;
    for t in times {
        let len = r.len(raw.len())?;
        let mut s = if len == 0 {
            last.clone()
                .ok_or_else(|| bad("first sample refers to a previous one"))?
        } else {
            let bytes = r.bytes(len - 1)?;
            let s = pb::Sample::decode(bytes).map_err(|e| bad(format!("sample remainder: {e}")))?;
            last = Some(s.clone());
            s
        };
        s.timestamp_unix_ms = t;
        samples.push(s);
    }
    let ncols = r.len(raw.len())?;
    let mut prev_key = 0;
    for _ in 0..ncols {
        let (key, col) = decode_column(&mut r, n, version, prev_key)?;
        prev_key = key;
        let slot = Slot::from_key(key)?;
        for (s, v) in samples.iter_mut().zip(col) {
            if v.is_some() {
                slot.put(s, v)?;
            }
        }
    }
    if r.remaining() != 0 {
        return Err(bad("trailing bytes"));
    }
    Ok(samples)
}

/// Names of the columns a chunk holds per GPU (for docs and the storage bench).
pub fn gpu_fields() -> &'static [&'static str] {
    gpu_cols::FIELDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, t: i64) -> pb::GpuSample {
        pb::GpuSample {
            index,
            uuid: format!("GPU-{index}"),
            status: pb::GpuStatus::Ok as i32,
            temperature_gpu_celsius: Some(60 + (t % 3) as i32),
            power_usage_milliwatts: Some(650_000 + (t * 7919 % 5000) as u32),
            total_energy_millijoules: Some(1_000_000_000 + t as u64 * 650_000),
            sm_clock_mhz: Some(1980),
            clock_event_reasons: Some(if t % 50 == 0 { 0x20 } else { 0 }),
            remapped_rows_pending: Some(false),
            memory_used_bytes: (t % 7 != 0).then_some(70 << 30),
            nvlinks: (0..18)
                .map(|l| pb::NvLinkSample {
                    link: l,
                    active: Some(true),
                    replay_errors: Some(u64::from(l)),
                    ..Default::default()
                })
                .collect(),
            processes: vec![pb::GpuProcess {
                pid: 4242,
                name: "python".into(),
                used_memory_bytes: Some(60 << 30),
            }],
            ..Default::default()
        }
    }

    fn sample(t: i64) -> pb::Sample {
        pb::Sample {
            timestamp_unix_ms: 1_700_000_000_000 + t * 1000 + (t % 2),
            gpus: (0..8).map(|i| gpu(i, t)).collect(),
            host: Some(pb::HostSample {
                cpu_percent: Some(12.5 + t as f32),
                cpu_per_core_percent: vec![1.5, 99.0, t as f32, f32::MAX, -0.0],
                load_average_1m: Some(3.25),
                memory_used_bytes: 100 << 30,
                memory_total_bytes: 2048 << 30,
                uptime_seconds: 1000 + t as u64,
                disks: vec![pb::DiskSample {
                    mount_point: "/".into(),
                    total_bytes: 1 << 40,
                    available_bytes: (1 << 39) - t as u64 * 4096,
                }],
                nics: vec![pb::NicSample {
                    name: "eth0".into(),
                    rx_bytes_per_second: 1_000_000 + t as u64,
                    rx_errors: Some(0),
                    speed_mbps: Some(100_000),
                    ..Default::default()
                }],
                ib_ports: (0..8)
                    .map(|i| pb::IbPortSample {
                        device: format!("mlx5_{i}"),
                        port: 1,
                        state: "ACTIVE".into(),
                        phys_state: "LinkUp".into(),
                        link_layer: "InfiniBand".into(),
                        rate_gbps: Some(400.0),
                        symbol_errors: Some(0),
                        rcv_data_bytes: Some(1 << 40 | (t as u64 * 2_000_000_000)),
                        xmit_data_bytes: Some(1 << 41 | (t as u64 * 2_000_000_000)),
                        ..Default::default()
                    })
                    .collect(),
                cpu_config: Some(pb::CpuConfigSample {
                    governors: [("performance".to_string(), 224)].into(),
                    scaling_driver: "intel_pstate".into(),
                    freq_avg_khz: Some(3_100_000 + (t as u64 % 7) * 1000),
                    freq_max_khz: Some(3_800_000),
                    thp_enabled: "madvise".into(),
                    edac_corrected_errors: Some(0),
                    ..Default::default()
                }),
                os: Some(pb::OsSample {
                    file_handles: Some(18_000 + (t as u64 % 13)),
                    file_handles_max: Some(i64::MAX as u64),
                    pages_swapped_in: Some(0),
                    pages_swapped_out: Some(t as u64 * 5),
                    oom_kills: Some(0),
                    uninterruptible: Some(u32::from(t % 10 == 0)),
                    stuck: vec![],
                }),
                ethernet: vec![pb::EthernetPort {
                    name: "eth0".into(),
                    operstate: "up".into(),
                    speed_mbps: Some(100_000),
                    duplex: "full".into(),
                    carrier_changes: Some(1),
                    pci_address: "0000:2a:00.0".into(),
                    mtu: Some(9000),
                }],
                pcie_devices: (0..40)
                    .map(|i| pb::PcieDeviceSample {
                        bdf: format!("0000:{:02x}:00.0", 0x10 + i),
                        link_speed_mts: Some(32_000),
                        link_width: Some(16),
                        aer_correctable: Some(if i == 3 { t as u64 / 7 } else { 0 }),
                        aer_nonfatal: Some(0),
                        // A kernel without AER: absent, not zero.
                        aer_fatal: (i % 5 != 0).then_some(0),
                    })
                    .collect(),
                storage: Some(pb::StorageSample {
                    mounts: ["/", "/datasets", "/checkpoints"]
                        .iter()
                        .enumerate()
                        .map(|(i, m)| pb::StorageMountSample {
                            mount_point: m.to_string(),
                            mounted: true,
                            fstype: ["ext4", "nfs4", "lustre"][i].into(),
                            was_writable: true,
                            statfs_latency_ms: Some(0.6 + (t % 5) as f64 * 0.013),
                            total_bytes: Some(1 << 50),
                            available_bytes: Some((1 << 49) - t as u64 * 1_048_576),
                            ..Default::default()
                        })
                        .collect(),
                    nvme: (0..2)
                        .map(|i| pb::StorageNvmeSample {
                            name: format!("nvme{i}"),
                            state: "live".into(),
                            temperature_millicelsius: Some(36_850 + (t % 3) * 1000),
                            temperature_max_millicelsius: Some(79_850),
                            temperature_crit_millicelsius: Some(84_850),
                            temperature_alarm: Some(false),
                        })
                        .collect(),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn samples_come_back_bit_for_bit() {
        let samples: Vec<pb::Sample> = (0..600).map(sample).collect();
        let blob = encode(samples.clone());
        assert_eq!(decode(&blob).unwrap(), samples);
        let raw: usize = samples.iter().map(|s| s.encoded_len()).sum();
        // Far smaller than the protobuf it replaces (the point of the chunk).
        assert!(blob.len() * 20 < raw, "{} vs {raw}", blob.len());
    }

    #[test]
    fn pcie_readings_are_columns_and_cost_little() {
        let with: Vec<pb::Sample> = (0..600).map(sample).collect();
        let without: Vec<pb::Sample> = with
            .iter()
            .cloned()
            .map(|mut s| {
                s.host.as_mut().unwrap().pcie_devices.clear();
                s
            })
            .collect();
        let mut rest = with[0].clone();
        let mut pairs = Vec::new();
        split(&mut rest, &mut pairs);
        let d = &rest.host.as_ref().unwrap().pcie_devices[3];
        assert_eq!(
            (d.aer_correctable, d.link_speed_mts),
            (None, None),
            "taken as columns"
        );
        let (a, b) = (encode(with.clone()).len(), encode(without).len());
        let per_sample = (a - b) as f64 / 600.0;
        // 40 devices × 5 numbers a sample (one counter rising): 1.3 bytes a sample measured.
        assert!(
            per_sample < 3.0,
            "{per_sample:.2} bytes per sample for 40 PCIe devices"
        );
        assert_eq!(decode(&encode(with.clone())).unwrap(), with);
    }

    #[test]
    fn changing_shapes_and_extremes_come_back() {
        let mut samples: Vec<pb::Sample> = (0..40).map(sample).collect();
        samples[3].gpus.truncate(3); // a GPU fell off the bus
        samples[4].host = None;
        samples[5].gpus[0].total_energy_millijoules = Some(u64::MAX);
        samples[6].gpus[0].temperature_gpu_celsius = Some(i32::MIN);
        samples[7].gpus[1].nvlinks.clear();
        samples[8].timestamp_unix_ms = i64::MIN;
        samples[9].timestamp_unix_ms = i64::MAX;
        samples[10] = pb::Sample::default();
        samples[11].host.as_mut().unwrap().ib_ports.truncate(2); // an HCA gone
        samples[12].host.as_mut().unwrap().cpu_config = None;
        samples[13].host.as_mut().unwrap().os = None;
        samples[14].host.as_mut().unwrap().ethernet.clear(); // the port unplugged from sysfs
        samples[15]
            .host
            .as_mut()
            .unwrap()
            .os
            .as_mut()
            .unwrap()
            .stuck = vec![pb::StuckProcess {
            pid: 4242,
            comm: "python3".into(),
            blocked_seconds: 70,
            wchan: "nfs_wait_bit_killable".into(),
        }];
        samples[13].host.as_mut().unwrap().pcie_devices.truncate(5); // a switch gone
        samples[14].host.as_mut().unwrap().pcie_devices[2].aer_fatal = Some(u64::MAX);
        let st = samples[16].host.as_mut().unwrap().storage.as_mut().unwrap();
        st.mounts[1] = pb::StorageMountSample {
            mount_point: "/datasets".into(),
            unresponsive: true,
            ..Default::default()
        }; // hung: no readings
        st.nvme.pop(); // a controller gone
        st.nvme[0].temperature_millicelsius = Some(i64::MIN);
        samples[17].host.as_mut().unwrap().storage = None;
        assert_eq!(decode(&encode(samples.clone())).unwrap(), samples);
        assert_eq!(
            decode(&encode(Vec::new())).unwrap(),
            Vec::<pb::Sample>::new()
        );
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let blob = encode((0..50).map(sample).collect());
        let raw = zstd::bulk::decompress(&blob, MAX_DECODED).unwrap();
        for cut in [0, 1, 5, raw.len() / 2, raw.len() - 1] {
            let damaged = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            assert!(decode(&damaged).is_err(), "cut at {cut}");
        }
        for i in (0..raw.len()).step_by(37) {
            let mut flipped = raw.clone();
            flipped[i] ^= 0x5a;
            let _ = decode(&zstd::bulk::compress(&flipped, 1).unwrap());
        }
        assert!(decode(b"not zstd").is_err());
    }

    #[test]
    fn every_numeric_gpu_field_is_a_column() {
        // A GpuSample with every field number set to 1 on the wire (prost keeps the known ones):
        // after the split, only the identity fields may be left, so a numeric field added to
        // the protocol and not listed in `gpu_cols` fails here (it would still be stored, in
        // the remainder, only less compactly).
        const NOT_NUMBERS: [u64; 6] = [1, 2, 3, 4, 48, 49];
        let mut wire = Vec::new();
        for tag in (1..=200u64).filter(|t| !NOT_NUMBERS.contains(t)) {
            // Each field in the first wire type its type accepts: varint, 32-bit, 64-bit.
            for (kind, value) in [(0u64, vec![1u8]), (5, vec![0, 0, 128, 63]), (1, vec![0; 8])] {
                let mut field = Vec::new();
                put_varint(&mut field, (tag << 3) | kind);
                field.extend_from_slice(&value);
                if pb::GpuSample::decode(field.as_slice()).is_ok() {
                    wire.extend_from_slice(&field);
                    break;
                }
            }
        }
        let mut g = pb::GpuSample::decode(wire.as_slice()).expect("every field decodes");
        let mut taken = Vec::new();
        gpu_cols::take(&mut g, &mut taken);
        assert_eq!(taken.len(), gpu_fields().len());
        assert_eq!(
            g,
            pb::GpuSample::default(),
            "a numeric GpuSample field is missing from gpu_cols"
        );
    }

    /// One GPU column through `encode` and back, and the mode it was written in.
    fn column_mode(values: &[Option<i64>]) -> (u8, Vec<Option<i64>>) {
        let key = Slot::Gpu { gpu: 0, field: 3 }.key();
        let mut out = Vec::new();
        encode_column(key, 0, values, &mut out);
        let mut r = Reader::new(&out);
        let (k, back) = decode_column(&mut r, values.len(), VERSION, 0).unwrap();
        assert_eq!((k, r.remaining()), (key, 0));
        (out[key_len(key)], back)
    }

    fn key_len(key: u64) -> usize {
        let mut v = Vec::new();
        put_varint(&mut v, key);
        v.len()
    }

    #[test]
    fn each_column_layout_comes_back_and_is_chosen_where_it_is_smaller() {
        let noise: Vec<Option<i64>> = (0..120)
            .map(|t| Some(650_000 + (t * 7919 % 5000)))
            .collect();
        let (mode, back) = column_mode(&noise);
        assert_eq!(back, noise);
        assert_eq!(
            mode & (PACKED | PACKED_VALUES),
            PACKED | PACKED_VALUES,
            "noise is packed"
        );
        let steady: Vec<Option<i64>> = (0..120).map(|_| Some(1980)).collect();
        let (mode, back) = column_mode(&steady);
        assert_eq!(back, steady);
        let counter: Vec<Option<i64>> = (0..120).map(|t| Some((1 << 40) + t * 650_000)).collect();
        let (mode_c, back) = column_mode(&counter);
        assert_eq!(back, counter);
        assert_eq!(mode_c & STEPPED, STEPPED, "a counter rising by one step");
        assert_eq!(mode & PACKED, PACKED, "a constant packs into zero bits");
        let extremes = vec![
            Some(i64::MIN),
            None,
            Some(i64::MAX),
            Some(0),
            Some(-1),
            None,
        ];
        assert_eq!(column_mode(&extremes).1, extremes);
        let walk: Vec<Option<i64>> = (0..120).map(|t| Some(60 + (t % 3))).collect();
        assert_eq!(column_mode(&walk).1, walk);
    }

    #[test]
    fn columns_of_any_values_and_gaps_come_back() {
        // A small LCG: columns of every width, sign, gap pattern and step, through every
        // layout the encoder may choose.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x
        };
        for round in 0..400 {
            let n = 1 + (next() % 130) as usize;
            let bits = (next() % 64) as u32;
            let base = next() as i64;
            let step = [1i64, 4, 1024, 3][round % 4];
            let col: Vec<Option<i64>> = (0..n)
                .map(|_| {
                    let noise = if bits == 0 {
                        0
                    } else {
                        (next() >> (64 - bits)) as i64
                    };
                    (next() % 7 != 0).then_some(base.wrapping_add(noise.wrapping_mul(step)))
                })
                .collect();
            assert_eq!(column_mode(&col).1, col, "round {round}");
            // The same values as the bits of a float column (some whole hundredths, most not).
            let field = gpu_cols::FLOATS.iter().position(|f| *f == 32).unwrap() as u16;
            let key = Slot::Gpu { gpu: 0, field }.key();
            let floats: Vec<Option<i64>> = col
                .iter()
                .map(|v| {
                    v.map(|v| match round % 3 {
                        0 => i64::from((((v % 10_000) as f64 / 100.0) as f32).to_bits()),
                        _ => i64::from(v as u32),
                    })
                })
                .collect();
            let mut out = Vec::new();
            encode_column(key, 0, &floats, &mut out);
            let mut r = Reader::new(&out);
            let (_, back) = decode_column(&mut r, n, VERSION, 0).unwrap();
            assert_eq!(back, floats, "float round {round}");
        }
    }

    #[test]
    fn floats_in_hundredths_are_stored_as_hundredths_and_others_by_their_bits() {
        let field = gpu_cols::FIELDS
            .iter()
            .position(|f| *f == "gpm_sm_active_percent")
            .unwrap() as u16;
        assert_eq!(gpu_cols::FLOATS[usize::from(field)], 32);
        let key = Slot::Gpu { gpu: 0, field }.key();
        let encode_floats = |vals: &[f32]| {
            let col: Vec<Option<i64>> = vals.iter().map(|v| Some(i64::from(v.to_bits()))).collect();
            let mut out = Vec::new();
            encode_column(key, 0, &col, &mut out);
            let mut r = Reader::new(&out);
            let (_, back) = decode_column(&mut r, col.len(), VERSION, 0).unwrap();
            assert_eq!(back, col, "bit for bit");
            out[key_len(key)]
        };
        let hundredths: Vec<f32> = (0..120)
            .map(|t| ((8725.0 + f64::from(t % 17)) / 100.0) as f32)
            .collect();
        assert_eq!(encode_floats(&hundredths) & HUNDREDTHS, HUNDREDTHS);
        let mut finer = hundredths.clone();
        finer[60] = 87.253;
        assert_eq!(
            encode_floats(&finer) & HUNDREDTHS,
            0,
            "one finer value: bits"
        );
        assert_eq!(
            encode_floats(&[f32::NAN, -0.0, f32::INFINITY, f32::MAX]) & HUNDREDTHS,
            0
        );
        // The agent's rounding gives values this mode takes.
        let agent: Vec<f32> = (0..50)
            .map(|t| gpufleet_model::hundredths(f64::from(t) * 1.234_567))
            .collect();
        assert_eq!(encode_floats(&agent) & HUNDREDTHS, HUNDREDTHS);
    }

    #[test]
    fn format_1_chunks_are_still_read() {
        // A format-1 chunk as the previous release wrote it: absolute column keys, varints only.
        let mut raw = Vec::new();
        put_varint(&mut raw, 1); // format
        put_varint(&mut raw, 2); // samples
        for w in [zigzag(1_000), zigzag(0)] {
            put_varint(&mut raw, w); // timestamps 1000, 2000 (delta of delta)
        }
        let rest = pb::Sample {
            gpus: vec![pb::GpuSample {
                index: 0,
                uuid: "GPU-0".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        put_varint(&mut raw, rest.len() as u64 + 1);
        raw.extend_from_slice(&rest);
        put_varint(&mut raw, 0); // the second sample's remainder: the same
        put_varint(&mut raw, 1); // one column
        put_varint(&mut raw, Slot::Gpu { gpu: 0, field: 0 }.key());
        raw.push(DELTA);
        for w in [zigzag(61), zigzag(2)] {
            put_varint(&mut raw, w); // temperatures 61, 63
        }
        let blob = zstd::bulk::compress(&raw, 1).unwrap();
        let back = decode(&blob).unwrap();
        assert_eq!(
            back.iter()
                .map(|s| (s.timestamp_unix_ms, s.gpus[0].temperature_gpu_celsius))
                .collect::<Vec<_>>(),
            [(1000, Some(61)), (2000, Some(63))]
        );
        // Format 2's flags mean nothing in format 1.
        let last = raw.len() - 3;
        raw[last] = PACKED;
        assert!(decode(&zstd::bulk::compress(&raw, 1).unwrap()).is_err());
    }

    #[test]
    fn column_costs_name_every_part() {
        let costs = column_costs((0..120).map(sample).collect());
        let names: Vec<&str> = costs.iter().map(|(n, _)| n.as_str()).collect();
        for part in [
            "timestamps",
            "gpu.power_usage_milliwatts",
            "nvlink.replay_errors",
            "ib.rcv_data_bytes",
        ] {
            assert!(names.contains(&part), "{part} missing from {names:?}");
        }
        assert!(costs.windows(2).all(|w| w[0].1 >= w[1].1), "largest first");
    }
}
