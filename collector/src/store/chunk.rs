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

/// Format version written first in every chunk.
const VERSION: u64 = 1;
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
    fn take(&mut self) -> Option<i64> {
        Option::take(self).map(|v| i64::from(v.to_bits()))
    }
    fn put(&mut self, v: Option<i64>) {
        *self = v.map(|v| f32::from_bits(v as u32));
    }
}

impl Col for Option<f64> {
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

fn encode_column(key: u64, column: &[Option<i64>], out: &mut Vec<u8>) {
    let present: Vec<i64> = column.iter().flatten().copied().collect();
    let mut delta = Vec::new();
    encode_values(&present, false, &mut delta);
    let mut dod = Vec::new();
    encode_values(&present, true, &mut dod);
    let (mode, values) = if dod.len() < delta.len() {
        (DELTA_OF_DELTA, dod)
    } else {
        (DELTA, delta)
    };
    put_varint(out, key);
    if present.len() == column.len() {
        out.push(mode);
    } else {
        out.push(mode | SPARSE);
        let mut bits = vec![0u8; column.len().div_ceil(8)];
        for (i, v) in column.iter().enumerate() {
            if v.is_some() {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bits);
    }
    out.extend_from_slice(&values);
}

fn decode_column(r: &mut Reader<'_>, n: usize) -> Result<(u64, Vec<Option<i64>>), ChunkError> {
    let key = r.varint()?;
    let mode = *r.bytes(1)?.first().ok_or_else(|| bad("truncated"))?;
    if mode & !(SPARSE | DELTA_OF_DELTA) != 0 {
        return Err(bad(format!("unknown column encoding {mode}")));
    }
    let present: Vec<bool> = if mode & SPARSE != 0 {
        let bits = r.bytes(n.div_ceil(8))?;
        (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect()
    } else {
        vec![true; n]
    };
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    let mut out = Vec::with_capacity(n);
    for p in present {
        if !p {
            out.push(None);
            continue;
        }
        let w = unzigzag(r.varint()?);
        let delta = if mode & DELTA_OF_DELTA != 0 {
            prev_delta.wrapping_add(w)
        } else {
            w
        };
        let v = prev.wrapping_add(delta);
        out.push(Some(v));
        prev = v;
        prev_delta = delta;
    }
    Ok((key, out))
}

// --- a chunk -------------------------------------------------------------------------------

/// Encodes `samples` (one node's, oldest first) into one compressed chunk.
pub fn encode(samples: Vec<pb::Sample>) -> Vec<u8> {
    let n = samples.len();
    let mut raw = Vec::with_capacity(256 + n * 64);
    put_varint(&mut raw, VERSION);
    put_varint(&mut raw, n as u64);
    let times: Vec<i64> = samples.iter().map(|s| s.timestamp_unix_ms).collect();
    encode_values(&times, true, &mut raw);

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
    raw.extend_from_slice(&rests);
    // In key order, so related values sit together for the compressor.
    columns.sort_unstable_by_key(|(key, _)| *key);
    put_varint(&mut raw, columns.len() as u64);
    for (key, col) in &columns {
        encode_column(*key, col, &mut raw);
    }
    zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses any input held in memory")
}

/// Decodes a chunk written by [`encode`] back into its samples, oldest first.
pub fn decode(blob: &[u8]) -> Result<Vec<pb::Sample>, ChunkError> {
    let size = zstd::bulk::Decompressor::upper_bound(blob)
        .unwrap_or(MAX_DECODED)
        .min(MAX_DECODED);
    let raw = zstd::bulk::decompress(blob, size).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut r = Reader::new(&raw);
    let version = r.varint()?;
    if version != VERSION {
        return Err(bad(format!(
            "chunk format {version}, this gpufleet reads {VERSION}"
        )));
    }
    // Every sample takes at least one byte (its timestamp), which bounds `n` by the input.
    let n = r.len(raw.len())?;
    let mut times = Vec::with_capacity(n);
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for _ in 0..n {
        let delta = prev_delta.wrapping_add(unzigzag(r.varint()?));
        prev = prev.wrapping_add(delta);
        prev_delta = delta;
        times.push(prev);
    }
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
    for _ in 0..ncols {
        let (key, col) = decode_column(&mut r, n)?;
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
}
