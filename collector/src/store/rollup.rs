//! Downsampled tiers: per node, the min, mean and max of the readings ops chart over long
//! windows (temperatures, power, utilization, clocks, memory, PCIe traffic, profiling
//! activity per GPU; CPU and memory of the host), per minute and per hour.
//!
//! Raw samples live in chunks for `retention` (a week by default); the tiers live longer
//! (`retention_1m`, `retention_1h`), so a question about last month reads a few kilobytes per
//! node instead of millions of samples. Aggregates are kept as count, min, max and mean, so two
//! partial aggregates of one bucket (a minute split across two chunks, an hour built from its
//! minutes, samples an agent replayed late) merge exactly: [`Agg::merge`].
//!
//! A blob holds any number of (series, bucket) aggregates of one node, column by column per
//! series (bucket offsets, counts, then min, max and mean as f32 bits), compressed with zstd.
//! f32 keeps 7 significant digits, which is more than any chart of these readings shows.

use std::collections::BTreeMap;

use gpufleet_proto::v1 as pb;

use super::varint::{Damaged, Reader, put_varint, unzigzag, zigzag};

/// Format version written first in every blob.
const VERSION: u64 = 1;
const ZSTD_LEVEL: i32 = 3;
/// Largest decoded blob accepted (a damaged length must not allocate without bound).
const MAX_DECODED: usize = 64 << 20;

/// One minute, the finer tier's bucket.
pub const MINUTE_MS: i64 = 60_000;
/// One hour, the coarser tier's bucket.
pub const HOUR_MS: i64 = 3_600_000;
/// One day: a 1-hour tier row holds a UTC day of buckets, a 1-minute tier row an hour.
pub const DAY_MS: i64 = 86_400_000;

/// Where a series is read: per GPU or for the host.
#[derive(Debug, Clone, Copy)]
enum Read {
    Gpu(fn(&pb::GpuSample) -> Option<f64>),
    Host(fn(&pb::HostSample) -> Option<f64>),
}

/// A rolled-up reading: its name (as `gpufleet series` takes it), unit, and how to read it.
#[derive(Debug)]
pub struct Series {
    pub name: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
    read: Read,
}

impl Series {
    pub fn per_gpu(&self) -> bool {
        matches!(self.read, Read::Gpu(_))
    }
}

macro_rules! gpu {
    ($name:literal, $unit:literal, $help:literal, |$g:ident| $e:expr) => {
        Series {
            name: $name,
            unit: $unit,
            help: $help,
            read: Read::Gpu(|$g| $e),
        }
    };
}
macro_rules! host {
    ($name:literal, $unit:literal, $help:literal, |$h:ident| $e:expr) => {
        Series {
            name: $name,
            unit: $unit,
            help: $help,
            read: Read::Host(|$h| $e),
        }
    };
}

/// Every rolled-up series. Positions are stored in blobs: append only, never reorder.
pub const SERIES: &[Series] = &[
    gpu!("temperature", "°C", "GPU core temperature", |g| g
        .temperature_gpu_celsius
        .map(f64::from)),
    gpu!("memory_temperature", "°C", "HBM temperature", |g| g
        .temperature_memory_celsius
        .map(f64::from)),
    gpu!("power", "W", "power draw", |g| g
        .power_usage_milliwatts
        .map(|v| f64::from(v) / 1000.0)),
    gpu!("power_limit", "W", "enforced power limit", |g| g
        .power_limit_enforced_milliwatts
        .map(|v| f64::from(v) / 1000.0)),
    gpu!("utilization", "%", "GPU utilization", |g| g
        .utilization_gpu_percent
        .map(f64::from)),
    gpu!(
        "memory_utilization",
        "%",
        "memory controller utilization",
        |g| g.utilization_memory_percent.map(f64::from)
    ),
    gpu!("sm_clock", "MHz", "SM clock", |g| g
        .sm_clock_mhz
        .map(f64::from)),
    gpu!("memory_clock", "MHz", "memory clock", |g| g
        .memory_clock_mhz
        .map(f64::from)),
    gpu!("memory_used", "bytes", "framebuffer memory used", |g| g
        .memory_used_bytes
        .map(|v| v as f64)),
    gpu!("fan", "%", "fan speed", |g| g
        .fan_speed_percent
        .map(f64::from)),
    gpu!("pcie_tx", "KB/s", "PCIe transmit throughput", |g| g
        .pcie_tx_kbps
        .map(f64::from)),
    gpu!("pcie_rx", "KB/s", "PCIe receive throughput", |g| g
        .pcie_rx_kbps
        .map(f64::from)),
    gpu!("sm_active", "%", "SM activity (GPM)", |g| g
        .gpm_sm_active_percent
        .map(f64::from)),
    gpu!("tensor_active", "%", "tensor core activity (GPM)", |g| g
        .gpm_tensor_active_percent
        .map(f64::from)),
    gpu!(
        "dram_active",
        "%",
        "DRAM bandwidth utilization (GPM)",
        |g| g.gpm_dram_active_percent.map(f64::from)
    ),
    host!("cpu", "%", "host CPU utilization", |h| h
        .cpu_percent
        .map(f64::from)),
    host!("load1", "", "1-minute load average", |h| h.load_average_1m),
    host!("host_memory_used", "bytes", "host RAM used", |h| Some(
        h.memory_used_bytes as f64
    )),
    host!("swap_used", "bytes", "swap used", |h| Some(
        h.swap_used_bytes as f64
    )),
];

/// The series named `name`, and its position in [`SERIES`].
pub fn series(name: &str) -> Option<(u16, &'static Series)> {
    SERIES
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .map(|(i, s)| (i as u16, s))
}

/// A GPU index, or [`HOST`] for host series.
pub const HOST: u32 = u32::MAX;

/// (series position, GPU index or [`HOST`]).
pub type Key = (u16, u32);

/// Count, min, max and mean of the readings of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: u32,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Agg {
    fn one(v: f64) -> Agg {
        Agg {
            count: 1,
            min: v,
            max: v,
            mean: v,
        }
    }

    /// The aggregate of both buckets' readings.
    pub fn merge(&mut self, o: &Agg) {
        let n = self.count as f64 + o.count as f64;
        if n > 0.0 {
            self.mean = (self.mean * self.count as f64 + o.mean * o.count as f64) / n;
        }
        self.count = self.count.saturating_add(o.count);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Aggregates of one node: per series, per bucket start (ms).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rollup {
    pub buckets: BTreeMap<Key, BTreeMap<i64, Agg>>,
}

/// `t` rounded down to a multiple of `step` (both ms, `step` > 0).
pub fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

impl Rollup {
    /// Adds one sample's readings to the buckets of `step` ms they fall in.
    pub fn add(&mut self, s: &pb::Sample, step: i64) {
        let b = floor(s.timestamp_unix_ms, step);
        let mut put = |key: Key, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                self.buckets
                    .entry(key)
                    .or_default()
                    .entry(b)
                    .and_modify(|a| a.merge(&Agg::one(v)))
                    .or_insert(Agg::one(v));
            }
        };
        for (i, series) in SERIES.iter().enumerate() {
            match series.read {
                Read::Gpu(read) => {
                    for g in &s.gpus {
                        put((i as u16, g.index), read(g));
                    }
                }
                Read::Host(read) => {
                    if let Some(h) = &s.host {
                        put((i as u16, HOST), read(h));
                    }
                }
            }
        }
    }

    /// Merges `o`'s aggregates, re-bucketed to `step` ms (a multiple of theirs).
    pub fn merge(&mut self, o: &Rollup, step: i64) {
        for (key, buckets) in &o.buckets {
            let mine = self.buckets.entry(*key).or_default();
            for (b, a) in buckets {
                mine.entry(floor(*b, step))
                    .and_modify(|m| m.merge(a))
                    .or_insert(*a);
            }
        }
    }

    /// Only the buckets starting in `[from, until)`.
    pub fn range(&self, from: i64, until: i64) -> Rollup {
        let mut out = Rollup::default();
        for (key, buckets) in &self.buckets {
            let r: BTreeMap<i64, Agg> = buckets
                .range(from..until.max(from))
                .map(|(b, a)| (*b, *a))
                .collect();
            if !r.is_empty() {
                out.buckets.insert(*key, r);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Earliest and latest bucket start.
    pub fn span(&self) -> Option<(i64, i64)> {
        let first = self
            .buckets
            .values()
            .filter_map(|b| b.keys().next())
            .min()?;
        let last = self
            .buckets
            .values()
            .filter_map(|b| b.keys().next_back())
            .max()?;
        Some((*first, *last))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, VERSION);
        put_varint(&mut out, self.buckets.len() as u64);
        let base = self.span().map_or(0, |(f, _)| f);
        for ((series, gpu), buckets) in &self.buckets {
            put_varint(&mut out, u64::from(*series));
            put_varint(&mut out, u64::from(*gpu));
            put_varint(&mut out, buckets.len() as u64);
            let mut prev = base;
            for b in buckets.keys() {
                put_varint(&mut out, zigzag(b - prev));
                prev = *b;
            }
            for a in buckets.values() {
                put_varint(&mut out, u64::from(a.count));
            }
            for f in [|a: &Agg| a.min, |a: &Agg| a.max, |a: &Agg| a.mean] {
                for a in buckets.values() {
                    out.extend_from_slice(&(f(a) as f32).to_le_bytes());
                }
            }
        }
        let mut blob = Vec::with_capacity(out.len() / 4 + 16);
        put_varint(&mut blob, zigzag(base));
        blob.extend(zstd::bulk::compress(&out, ZSTD_LEVEL).expect("zstd compresses in memory"));
        blob
    }

    pub fn decode(blob: &[u8]) -> Result<Rollup, RollupError> {
        let mut r = Reader::new(blob);
        let base = unzigzag(r.varint()?);
        let body = zstd::bulk::decompress(r.bytes(r.remaining())?, MAX_DECODED)
            .map_err(|e| RollupError(format!("zstd: {e}")))?;
        let mut r = Reader::new(&body);
        let version = r.varint()?;
        if version != VERSION {
            return Err(RollupError(format!(
                "format version {version}, this gpufleet reads {VERSION}"
            )));
        }
        let n = count(&mut r)?;
        let mut out = Rollup::default();
        for _ in 0..n {
            let series = u16::try_from(r.varint()?).map_err(|_| bad("series id"))?;
            let gpu = u32::try_from(r.varint()?).map_err(|_| bad("gpu index"))?;
            let len = count(&mut r)?;
            let mut starts = Vec::with_capacity(len);
            let mut prev = base;
            for _ in 0..len {
                prev = prev
                    .checked_add(unzigzag(r.varint()?))
                    .ok_or_else(|| bad("bucket time"))?;
                starts.push(prev);
            }
            let mut counts = Vec::with_capacity(len);
            for _ in 0..len {
                counts.push(u32::try_from(r.varint()?).map_err(|_| bad("count"))?);
            }
            let mut cols = [Vec::new(), Vec::new(), Vec::new()];
            for col in &mut cols {
                for _ in 0..len {
                    col.push(f64::from(f32_at(&mut r)?));
                }
            }
            let buckets = out.buckets.entry((series, gpu)).or_default();
            for i in 0..len {
                buckets.insert(
                    starts[i],
                    Agg {
                        count: counts[i],
                        min: cols[0][i],
                        max: cols[1][i],
                        mean: cols[2][i],
                    },
                );
            }
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rollup blob is damaged: {0}")]
pub struct RollupError(String);

fn bad(what: &str) -> RollupError {
    RollupError(format!("bad {what}"))
}

impl From<Damaged> for RollupError {
    fn from(d: Damaged) -> Self {
        RollupError(d.0)
    }
}

/// A count of items still to read: never more than bytes left, so a damaged count cannot
/// allocate without bound.
fn count(r: &mut Reader<'_>) -> Result<usize, RollupError> {
    Ok(r.len(r.remaining())?)
}

fn f32_at(r: &mut Reader<'_>) -> Result<f32, RollupError> {
    let b = r.bytes(4)?;
    Ok(f32::from_le_bytes(b.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: i64, temp: i32, cpu: f32) -> pb::Sample {
        pb::Sample {
            timestamp_unix_ms: t,
            gpus: (0..2)
                .map(|i| pb::GpuSample {
                    index: i,
                    temperature_gpu_celsius: Some(temp + i as i32),
                    power_usage_milliwatts: Some(500_000),
                    ..Default::default()
                })
                .collect(),
            host: Some(pb::HostSample {
                cpu_percent: Some(cpu),
                ..Default::default()
            }),
        }
    }

    fn temp() -> u16 {
        series("temperature").unwrap().0
    }

    #[test]
    fn minutes_hold_count_min_max_mean_per_gpu_and_host() {
        let mut r = Rollup::default();
        for (i, t) in [60, 70, 80, 50].iter().enumerate() {
            r.add(&sample(i as i64 * 20_000, *t, 10.0), MINUTE_MS);
        }
        // 0, 20, 40 s in minute 0; 60 s in minute 1.
        assert_eq!(
            r.buckets[&(temp(), 1)][&0],
            Agg {
                count: 3,
                min: 61.0,
                max: 81.0,
                mean: 71.0
            }
        );
        assert_eq!(r.buckets[&(temp(), 0)][&60_000].count, 1);
        let power = series("power").unwrap().0;
        assert_eq!(r.buckets[&(power, 0)][&0].mean, 500.0);
        let cpu = series("cpu").unwrap().0;
        assert_eq!(r.buckets[&(cpu, HOST)][&0].max, 10.0);
        // Readings the GPU did not give are not zeros.
        let fan = series("fan").unwrap().0;
        assert!(!r.buckets.contains_key(&(fan, 0)));
    }

    #[test]
    fn partial_buckets_merge_exactly_and_re_bucket_to_hours() {
        let samples: Vec<_> = (0..240)
            .map(|i| sample(i * 1000, (i % 7) as i32, 1.0))
            .collect();
        let mut whole = Rollup::default();
        for s in &samples {
            whole.add(s, MINUTE_MS);
        }
        // Split at 90 s: minute 1 is in both halves.
        let (mut a, mut b) = (Rollup::default(), Rollup::default());
        samples[..90].iter().for_each(|s| a.add(s, MINUTE_MS));
        samples[90..].iter().for_each(|s| b.add(s, MINUTE_MS));
        a.merge(&b, MINUTE_MS);
        for (key, buckets) in &whole.buckets {
            for (t, w) in buckets {
                let m = a.buckets[key][t];
                assert_eq!((m.count, m.min, m.max), (w.count, w.min, w.max));
                assert!((m.mean - w.mean).abs() < 1e-9);
            }
        }
        let mut hour = Rollup::default();
        hour.merge(&whole, HOUR_MS);
        let h = hour.buckets[&(temp(), 0)][&0];
        assert_eq!((h.count, h.min, h.max), (240, 0.0, 6.0));
    }

    #[test]
    fn encode_decode_round_trips_at_f32_precision() {
        let mut r = Rollup::default();
        for i in 0..600 {
            r.add(
                &sample(1_700_000_000_000 + i * 1000, 40 + (i % 13) as i32, 3.5),
                MINUTE_MS,
            );
        }
        let blob = r.encode();
        let back = Rollup::decode(&blob).unwrap();
        assert_eq!(back.buckets.len(), r.buckets.len());
        for (key, buckets) in &r.buckets {
            for (t, a) in buckets {
                let b = back.buckets[key][t];
                assert_eq!((b.count, b.min, b.max), (a.count, a.min, a.max));
                assert!((b.mean - a.mean).abs() < 1e-4 * a.mean.abs().max(1.0));
            }
        }
        assert!(
            Rollup::decode(&Rollup::default().encode())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let mut r = Rollup::default();
        r.add(&sample(0, 50, 1.0), MINUTE_MS);
        let blob = r.encode();
        for cut in 0..blob.len() {
            let _ = Rollup::decode(&blob[..cut]);
        }
        let mut flipped = blob.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = Rollup::decode(&flipped);
            flipped[i] ^= 0x5a;
        }
        assert!(Rollup::decode(b"").is_err());
    }

    #[test]
    fn series_names_are_unique() {
        let mut names: Vec<_> = SERIES.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SERIES.len());
    }
}
