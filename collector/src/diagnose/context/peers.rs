//! Peers: what busy, unthrottled GPUs of one model look like across the fleet right now —
//! the median and spread of their SM clock and power — so a rule can single out a GPU that is
//! slow only relative to its peers.
//!
//! Statistics are robust (median and median absolute deviation): a few sick GPUs do not move
//! them, so the sick ones stand out instead of hiding in the average.

use std::collections::HashMap;

use gpufleet_model::GpuSample;

use crate::fleet::NodeState;

/// Utilization from which a GPU counts as busy: its clocks and power then reflect the work,
/// not idle power saving.
pub const BUSY_PERCENT: u32 = 80;

/// Median and median absolute deviation of one reading over a model's peers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Robust {
    pub median: f64,
    pub mad: f64,
}

impl Robust {
    /// `None` for no values. Reorders `values` in place.
    pub fn of(values: &mut [f64]) -> Option<Robust> {
        let median = median_of(values)?;
        for v in values.iter_mut() {
            *v = (*v - median).abs();
        }
        Some(Robust {
            median,
            mad: median_of(values)?,
        })
    }

    /// The MAD scaled to estimate a standard deviation (1.4826 × MAD for normal data).
    pub fn sigma(&self) -> f64 {
        1.4826 * self.mad
    }

    /// The value below which a reading is an outlier: more than `k` robust standard
    /// deviations and more than `min_fraction` of the median below the median. The fraction
    /// floor matters when most peers read the same value (MAD = 0).
    pub fn low_limit(&self, k: f64, min_fraction: f64) -> f64 {
        self.median - (k * self.sigma()).max(min_fraction * self.median)
    }
}

/// The median of `values`, found by selection (linear time; a fleet has one value per GPU),
/// leaving `values` reordered.
fn median_of(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let (below, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    Some(if n % 2 == 1 {
        mid
    } else {
        // The element just below the middle in order: the largest of those before it.
        let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(mid);
        (lower + mid) / 2.0
    })
}

/// The peers of one GPU model.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    /// Busy, unthrottled GPUs the statistics are over.
    pub gpus: usize,
    pub utilization_percent: Robust,
    pub sm_clock_mhz: Option<Robust>,
    pub power_milliwatts: Option<Robust>,
}

/// Whether `g`'s latest reading belongs in its model's peer statistics: read fine, busy, and
/// with no clock-event reason holding it back (those GPUs have their own findings).
pub fn is_peer(g: &GpuSample) -> bool {
    g.status == gpufleet_model::GpuStatus::Ok
        && g.utilization_gpu_percent.is_some_and(|u| u >= BUSY_PERCENT)
        && g.clock_event_reasons.unwrap_or(0) == 0
}

/// Per GPU product name, over the latest sample of every connected node.
pub fn by_model(nodes: &[&NodeState]) -> HashMap<String, PeerStats> {
    #[derive(Default)]
    struct Acc {
        util: Vec<f64>,
        clock: Vec<f64>,
        power: Vec<f64>,
    }
    let mut acc: Vec<(&str, Acc)> = Vec::new();
    for n in nodes.iter().filter(|n| n.connected) {
        let Some(latest) = n.latest() else {
            continue;
        };
        for (pos, g) in latest.gpus.iter().enumerate() {
            if !is_peer(g) {
                continue;
            }
            let info = match n.inventory.gpus.get(pos) {
                Some(i) if i.index == g.index => Some(i),
                _ => n.inventory.gpu(g.index),
            };
            let Some(model) = info.map(|i| i.name.as_str()).filter(|m| !m.is_empty()) else {
                continue;
            };
            let a = super::model_slot(&mut acc, model);
            a.util
                .push(f64::from(g.utilization_gpu_percent.unwrap_or(0)));
            if let Some(c) = g.sm_clock_mhz {
                a.clock.push(f64::from(c));
            }
            if let Some(p) = g.power_usage_milliwatts {
                a.power.push(f64::from(p));
            }
        }
    }
    acc.into_iter()
        .filter_map(|(model, mut a)| {
            Some((
                model.to_string(),
                PeerStats {
                    gpus: a.util.len(),
                    utilization_percent: Robust::of(&mut a.util)?,
                    sm_clock_mhz: Robust::of(&mut a.clock),
                    power_milliwatts: Robust::of(&mut a.power),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selected_median_is_the_sorted_median() {
        for n in 1..40usize {
            let values: Vec<f64> = (0..n).map(|i| ((i * 7919) % 31) as f64 * 0.5).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let want = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            };
            assert_eq!(median_of(&mut values.clone()), Some(want), "{n} values");
        }
    }

    #[test]
    fn robust_statistics() {
        assert_eq!(Robust::of(&mut []), None);
        let r = Robust::of(&mut [10.0, 1.0, 3.0, 2.0, 100.0]).unwrap();
        assert_eq!((r.median, r.mad), (3.0, 2.0));
        let r = Robust::of(&mut [1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((r.median, r.mad), (2.5, 1.0));
        // Most peers at the same clock: MAD 0, the fraction floor decides.
        let r = Robust::of(&mut [1980.0, 1980.0, 1980.0, 1965.0, 1845.0]).unwrap();
        assert_eq!(r.mad, 0.0);
        assert!((r.low_limit(5.0, 0.05) - 1881.0).abs() < 1e-9);
        let r = Robust {
            median: 100.0,
            mad: 4.0,
        };
        assert!((r.low_limit(5.0, 0.05) - (100.0 - 5.0 * 1.4826 * 4.0)).abs() < 1e-9);
    }
}
