//! Read cadences, as DCGM's per-field update frequencies: what changes fast is read every
//! sample; counters and slow-changing fields every `slow_interval`; the inventory on change or
//! every `inventory_interval` (in [`crate::sampler`]).
//!
//! - **Every sample**: temperatures, power and its limit, memory and BAR1 use, utilization,
//!   clocks, clock-event reasons, P-state, PCIe link gen/width, GPM profiling metrics.
//! - **Every `slow_interval`** (default 10 s): the energy counter, violation counters, PCIe
//!   replays, ECC, retired pages and remapped rows, NVLink state and error counters, PCIe
//!   throughput (the driver samples a ~20 ms window per direction), applications clocks, and
//!   the process list.
//!
//! A slow field not read this tick is **repeated from its last read** in the sample, so
//! nothing downstream (diagnosis, `/metrics`, storage) tells a held value from a fresh one,
//! and "absent is not zero" holds unchanged: a field whose last read failed stays `None`
//! until a later read answers. Counters therefore rise in steps of `slow_interval`, which the
//! counter rules (growth over a 5-minute window) do not mind.

use std::time::Duration;

use gpufleet_model::{GpuSample, UnixMs};

/// Default time between reads of counters and slow fields (`slow_interval`).
pub const DEFAULT_SLOW_INTERVAL: Duration = Duration::from_secs(10);

/// How often the slow fields of a GPU are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub slow_interval: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            slow_interval: DEFAULT_SLOW_INTERVAL,
        }
    }
}

/// The slow fields of one GPU as last read, and when.
#[derive(Debug, Default)]
pub struct Held {
    read_at: Option<UnixMs>,
    sample: GpuSample,
}

impl Held {
    /// Whether the slow fields are due at `now`: never read, the interval (less 5 %, so a
    /// tick a few ms early does not wait a whole extra sample) has passed, or the clock
    /// stepped back.
    pub fn due(&self, now: UnixMs, cadence: Cadence) -> bool {
        let interval = cadence.slow_interval.as_millis() as u64;
        match self.read_at {
            None => true,
            Some(at) => now < at || now.since(at) >= interval - interval / 20,
        }
    }

    /// Keeps the slow fields of a fresh reading taken at `now`.
    pub fn keep(&mut self, fresh: &GpuSample, now: UnixMs) {
        copy_slow(fresh, &mut self.sample);
        self.read_at = Some(now);
    }

    /// Puts the last slow fields into `s` (a reading that skipped them).
    pub fn restore(&self, s: &mut GpuSample) {
        copy_slow(&self.sample, s);
    }

    /// Forgets the last read, so the next sample reads every field (e.g. after a GPU came
    /// back).
    pub fn reset(&mut self) {
        self.read_at = None;
    }
}

/// The one list of slow fields.
fn copy_slow(from: &GpuSample, to: &mut GpuSample) {
    to.total_energy_millijoules = from.total_energy_millijoules;
    to.violation_power_ns = from.violation_power_ns;
    to.violation_thermal_ns = from.violation_thermal_ns;
    to.violation_sync_boost_ns = from.violation_sync_boost_ns;
    to.violation_board_limit_ns = from.violation_board_limit_ns;
    to.violation_low_utilization_ns = from.violation_low_utilization_ns;
    to.violation_reliability_ns = from.violation_reliability_ns;
    to.pcie_replay_count = from.pcie_replay_count;
    to.pcie_tx_kbps = from.pcie_tx_kbps;
    to.pcie_rx_kbps = from.pcie_rx_kbps;
    to.sm_clock_applications_mhz = from.sm_clock_applications_mhz;
    to.memory_clock_applications_mhz = from.memory_clock_applications_mhz;
    to.ecc_corrected_volatile = from.ecc_corrected_volatile;
    to.ecc_uncorrected_volatile = from.ecc_uncorrected_volatile;
    to.ecc_corrected_aggregate = from.ecc_corrected_aggregate;
    to.ecc_uncorrected_aggregate = from.ecc_uncorrected_aggregate;
    to.retired_pages_single_bit = from.retired_pages_single_bit;
    to.retired_pages_double_bit = from.retired_pages_double_bit;
    to.retired_pages_pending = from.retired_pages_pending;
    to.remapped_rows_correctable = from.remapped_rows_correctable;
    to.remapped_rows_uncorrectable = from.remapped_rows_uncorrectable;
    to.remapped_rows_pending = from.remapped_rows_pending;
    to.remapped_rows_failure = from.remapped_rows_failure;
    to.nvlinks.clone_from(&from.nvlinks);
    to.processes.clone_from(&from.processes);
}

/// Applies the cadence to readings that computed every field anyway (the simulator): a GPU
/// whose slow fields are not due gets its last ones back, as NVML readings do.
#[derive(Debug, Default)]
pub struct HoldSlow {
    pub cadence: Cadence,
    gpus: Vec<(u32, Held)>,
}

impl HoldSlow {
    pub fn apply(&mut self, samples: &mut [GpuSample], now: UnixMs) {
        for s in samples {
            let pos = match self.gpus.iter().position(|(i, _)| *i == s.index) {
                Some(p) => p,
                None => {
                    self.gpus.push((s.index, Held::default()));
                    self.gpus.len() - 1
                }
            };
            let held = &mut self.gpus[pos].1;
            if s.status != gpufleet_model::GpuStatus::Ok {
                held.reset();
            } else if held.due(now, self.cadence) {
                held.keep(s, now);
            } else {
                held.restore(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{GpuProcess, GpuStatus};

    fn reading(energy: u64, temp: i32) -> GpuSample {
        GpuSample {
            index: 0,
            total_energy_millijoules: Some(energy),
            temperature_gpu_celsius: Some(temp),
            processes: vec![GpuProcess {
                pid: energy as u32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn slow_fields_repeat_between_reads_and_fast_ones_do_not() {
        let mut h = HoldSlow::default();
        let mut seen = Vec::new();
        for t in 0..25 {
            let mut s = vec![reading(1000 + t as u64, 50 + t)];
            h.apply(&mut s, UnixMs(t as i64 * 1000));
            seen.push((
                s[0].total_energy_millijoules,
                s[0].temperature_gpu_celsius,
                s[0].processes[0].pid,
            ));
        }
        // Read at 0 s, 10 s and 20 s; held in between; temperature fresh every second.
        assert_eq!(seen[0], (Some(1000), Some(50), 1000));
        assert_eq!(seen[9], (Some(1000), Some(59), 1000));
        assert_eq!(seen[10], (Some(1010), Some(60), 1010));
        assert_eq!(seen[19], (Some(1010), Some(69), 1010));
        assert_eq!(seen[20], (Some(1020), Some(70), 1020));
    }

    #[test]
    fn a_failed_read_stays_absent_and_a_lost_gpu_reads_everything_on_return() {
        let mut h = HoldSlow::default();
        let mut first = vec![GpuSample {
            total_energy_millijoules: None,
            ..reading(0, 50)
        }];
        h.apply(&mut first, UnixMs(0));
        let mut next = vec![reading(5, 51)];
        h.apply(&mut next, UnixMs(1000));
        assert_eq!(next[0].total_energy_millijoules, None, "absent is not zero");

        let mut lost = vec![GpuSample {
            status: GpuStatus::Lost,
            ..Default::default()
        }];
        h.apply(&mut lost, UnixMs(2000));
        let mut back = vec![reading(7, 52)];
        h.apply(&mut back, UnixMs(3000));
        assert_eq!(back[0].total_energy_millijoules, Some(7));
    }

    #[test]
    fn an_interval_at_or_below_the_sample_interval_reads_every_sample() {
        let mut h = HoldSlow {
            cadence: Cadence {
                slow_interval: Duration::from_secs(1),
            },
            ..Default::default()
        };
        for t in 0..5 {
            let mut s = vec![reading(t, 50)];
            h.apply(&mut s, UnixMs(t as i64 * 1000));
            assert_eq!(s[0].total_energy_millijoules, Some(t));
        }
        // A clock that steps back reads at once.
        let mut s = vec![reading(99, 50)];
        h.apply(&mut s, UnixMs(0));
        assert_eq!(s[0].total_energy_millijoules, Some(99));
    }
}
