//! Cheap reads of a node's sample window shared by the rules: a GPU's reading in a sample
//! without a search, how long a condition has held ([`sustained`] and its per-GPU and
//! node-level forms), and how a cumulative counter grew over the recent window. All run in one
//! pass without allocating per sample; a condition that does not hold now costs one call and a
//! counter that did not move two lookups, so a healthy fleet is checked in constant time per GPU.
//! [`Recent`] finds a rule's rate window once, and knows from the fleet state's counter epochs
//! (`fleet/counters.rs`) when no error counter moved in it, so a healthy node's counters are
//! judged without reading its oldest sample at all.

use std::collections::VecDeque;

use gpufleet_model::{GpuSample, Sample, UnixMs};

use crate::diagnose::{MIN_SAMPLES, held};
use crate::fleet::NodeState;

/// Counters are judged over at most this much recent history: long enough to average a rate
/// over minutes, short enough that errors which stopped soon stop being reported. (The
/// collector keeps 300 samples per node; at the default 1 s interval that is these 5 min.)
pub const RATE_WINDOW_MS: u64 = 5 * 60 * 1000;

/// GPU `index` of `s`, found first at position `pos` (agents list GPUs in index order), so the
/// usual case needs no search.
#[inline]
pub fn gpu_at(s: &Sample, pos: usize, index: u32) -> Option<&GpuSample> {
    match s.gpus.get(pos) {
        Some(g) if g.index == index => Some(g),
        _ => s.gpu(index),
    }
}

/// [`gpu_at`] as a reusable reader for one GPU.
pub fn gpu_reader(pos: usize, index: u32) -> impl Fn(&Sample) -> Option<&GpuSample> + Copy {
    move |s| gpu_at(s, pos, index)
}

/// How long a condition has held, once it has held long enough to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// When the condition started (within the window).
    pub since: UnixMs,
    /// How long it has held, ms.
    pub held_ms: u64,
}

/// Whether `cond` has held over the latest samples of `node` for at least [`MIN_SAMPLES`]
/// consecutive samples and at least `min_ms`, so one noisy sample never fires. Walks back only
/// while the condition holds: a condition that does not hold now costs one call.
pub fn sustained_node(
    node: &NodeState,
    min_ms: u64,
    cond: impl FnMut(&Sample) -> bool,
) -> Option<Held> {
    let (since, held_ms, n) = held(node.history.iter(), cond)?;
    (n >= MIN_SAMPLES && held_ms >= min_ms).then_some(Held { since, held_ms })
}

/// [`sustained_node`] for GPU `index` (at position `pos` of the latest sample): for rules
/// whose condition depends on the GPU (its inventory limits, the bit it shows now) or that
/// check several conditions per GPU.
pub fn sustained_gpu(
    node: &NodeState,
    pos: usize,
    index: u32,
    min_ms: u64,
    mut cond: impl FnMut(&GpuSample) -> bool,
) -> Option<Held> {
    sustained_node(node, min_ms, |s| {
        gpu_at(s, pos, index).is_some_and(&mut cond)
    })
}

/// A GPU of the latest sample on which a condition has held long enough to report.
pub struct Sustained<'a> {
    /// The GPU's latest reading.
    pub gpu: &'a GpuSample,
    /// When the condition started (within the window).
    pub since: UnixMs,
    /// How long it has held, ms.
    pub held_ms: u64,
}

/// [`sustained_gpu`] over every GPU of `node`'s latest sample, for one condition that means
/// the same on every GPU.
pub fn sustained<'a>(
    node: &'a NodeState,
    min_ms: u64,
    cond: impl Fn(&GpuSample) -> bool,
) -> Vec<Sustained<'a>> {
    let Some(latest) = node.latest() else {
        return Vec::new();
    };
    latest
        .gpus
        .iter()
        .enumerate()
        .filter_map(|(pos, g)| {
            let Held { since, held_ms } = sustained_gpu(node, pos, g.index, min_ms, &cond)?;
            Some(Sustained {
                gpu: g,
                since,
                held_ms,
            })
        })
        .collect()
}

/// How a cumulative counter grew over the recent window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Total increase. A decrease (driver reload, counter reset) is skipped, not subtracted.
    pub delta: u64,
    /// Time covered by the readings looked at, ms.
    pub span_ms: u64,
    /// Sample-to-sample intervals in which the counter rose: one burst is one rise.
    pub rises: usize,
    /// Sample in which the earliest rise of the window was seen.
    pub first_rise: UnixMs,
    /// The latest reading.
    pub latest: u64,
}

impl Growth {
    pub fn per_minute(&self) -> f64 {
        if self.span_ms == 0 {
            0.0
        } else {
            self.delta as f64 * 60_000.0 / self.span_ms as f64
        }
    }

    /// Rising at `per_minute` or more, in at least `rises` separate intervals (so one burst or
    /// one glitch is not a trend).
    pub fn sustained(&self, per_minute: f64, rises: usize) -> bool {
        self.rises >= rises && self.delta > 0 && self.per_minute() >= per_minute
    }

    /// How long the counter has been seen rising, ms.
    pub fn rising_for_ms(&self, latest_at: UnixMs) -> u64 {
        latest_at.since(self.first_rise)
    }
}

/// Index of the oldest sample of `history` within `window_ms` of its latest sample.
pub fn window_start(history: &VecDeque<Sample>, window_ms: u64) -> usize {
    let Some(latest) = history.back() else {
        return 0;
    };
    let from = latest
        .timestamp
        .plus_ms(-(window_ms.min(i64::MAX as u64) as i64));
    history.partition_point(|s| s.timestamp < from)
}

/// The part of a node's history that counters are judged over ([`RATE_WINDOW_MS`]), found
/// once: a rule that checks many counters (every PCIe device, port or link) shares one search.
#[derive(Clone, Copy)]
pub struct Recent<'a> {
    history: &'a VecDeque<Sample>,
    start: usize,
    /// [`NodeState::counters_still_since`] the window's start.
    still: bool,
}

impl<'a> Recent<'a> {
    pub fn of(node: &'a NodeState) -> Recent<'a> {
        let start = window_start(&node.history, RATE_WINDOW_MS);
        Recent {
            history: &node.history,
            start,
            still: node.counters_still_since(start),
        }
    }

    /// No error counter of [`crate::fleet::counters`] moved within the window: the growth of
    /// each is zero, known without reading the window's oldest sample. Only those counters may
    /// be judged by this; `false` also when the fleet state could not tell.
    pub fn counters_still(&self) -> bool {
        self.still
    }

    /// The oldest sample of the window.
    pub fn first(&self) -> Option<&'a Sample> {
        self.history.get(self.start)
    }

    /// [`growth`] over this window.
    pub fn growth(&self, read: impl FnMut(&Sample) -> Option<u64>) -> Option<Growth> {
        growth_from(self.history, self.start, read)
    }
}

/// Growth of the counter `read` over the last `window_ms` of `history`; `None` when the latest
/// sample has no reading. Samples without a reading are stepped over.
pub fn growth(
    history: &VecDeque<Sample>,
    window_ms: u64,
    read: impl FnMut(&Sample) -> Option<u64>,
) -> Option<Growth> {
    growth_from(history, window_start(history, window_ms), read)
}

/// [`growth`] from the sample at `start` on.
fn growth_from(
    history: &VecDeque<Sample>,
    start: usize,
    mut read: impl FnMut(&Sample) -> Option<u64>,
) -> Option<Growth> {
    let latest = history.back()?;
    let last = read(latest)?;
    let mut g = Growth {
        delta: 0,
        span_ms: 0,
        rises: 0,
        first_rise: latest.timestamp,
        latest: last,
    };
    // The common case: the counter did not move over the window.
    if let Some(first) = history.get(start)
        && read(first) == Some(last)
    {
        g.span_ms = latest.timestamp.since(first.timestamp);
        return Some(g);
    }
    let (mut newer, mut newer_at) = (last, latest.timestamp);
    for s in history.range(start..).rev().skip(1) {
        let Some(v) = read(s) else {
            continue;
        };
        if newer > v {
            g.delta += newer - v;
            g.rises += 1;
            g.first_rise = newer_at;
        }
        g.span_ms = latest.timestamp.since(s.timestamp);
        (newer, newer_at) = (v, s.timestamp);
    }
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(values: &[Option<u64>]) -> VecDeque<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                timestamp: UnixMs(i as i64 * 1000),
                host: gpufleet_model::HostSample {
                    swap_used_bytes: v.unwrap_or(u64::MAX),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect()
    }

    fn read(s: &Sample) -> Option<u64> {
        (s.host.swap_used_bytes != u64::MAX).then_some(s.host.swap_used_bytes)
    }

    #[test]
    fn sustained_needs_min_samples_and_min_ms() {
        use crate::diagnose::rules::testutil::node;
        // GPU 1 at 90 °C in the last `n` of 10 samples, 1 s apart, ending at t=100 s.
        let hot = |n: usize| {
            node(2, 10, move |i, s| {
                if i >= 10 - n {
                    s.gpus[1].temperature_gpu_celsius = Some(90);
                }
            })
        };
        let cond = |g: &GpuSample| g.temperature_gpu_celsius == Some(90);
        assert_eq!(sustained_gpu(&hot(MIN_SAMPLES - 1), 1, 1, 0, cond), None);
        assert_eq!(
            sustained_gpu(&hot(MIN_SAMPLES), 1, 1, 0, cond),
            Some(Held {
                since: UnixMs(98_000),
                held_ms: 2_000
            })
        );
        assert_eq!(sustained_gpu(&hot(5), 1, 1, 5_000, cond), None);
        assert_eq!(
            sustained_gpu(&hot(6), 1, 1, 5_000, cond).map(|h| h.held_ms),
            Some(5_000)
        );
        let gpus: Vec<u32> = sustained(&hot(5), 0, cond)
            .iter()
            .map(|s| s.gpu.index)
            .collect();
        assert_eq!(gpus, [1]);
        let any_hot = |s: &Sample| s.gpus.iter().any(cond);
        assert_eq!(
            sustained_node(&hot(4), 0, any_hot).map(|h| h.since),
            Some(UnixMs(97_000))
        );
        assert_eq!(sustained_node(&hot(0), 0, any_hot), None);
    }

    #[test]
    fn growth_cases() {
        // (name, readings 1 s apart, window, (delta, rises, first rise s, span s))
        type Case = (
            &'static str,
            &'static [Option<u64>],
            u64,
            (u64, usize, i64, u64),
        );
        let cases: &[Case] = &[
            ("flat", &[Some(5), Some(5), Some(5)], 60_000, (0, 0, 2, 2)),
            (
                "steady",
                &[Some(0), Some(1), Some(2), Some(3)],
                60_000,
                (3, 3, 1, 3),
            ),
            (
                "one burst",
                &[Some(0), Some(0), Some(90), Some(90)],
                60_000,
                (90, 1, 2, 3),
            ),
            (
                "reset is skipped",
                &[Some(10), Some(12), Some(0), Some(3)],
                60_000,
                (5, 2, 1, 3),
            ),
            (
                "gaps are stepped over",
                &[Some(1), None, Some(3), Some(4)],
                60_000,
                (3, 2, 2, 3),
            ),
            (
                "window",
                &[Some(0), Some(50), Some(50), Some(51)],
                2_000,
                (1, 1, 3, 2),
            ),
        ];
        for (name, values, window, (delta, rises, first, span)) in cases {
            let g = growth(&history(values), *window, read).unwrap();
            assert_eq!(
                (g.delta, g.rises, g.first_rise, g.span_ms),
                (*delta, *rises, UnixMs(first * 1000), span * 1000),
                "{name}"
            );
        }
        assert_eq!(growth(&history(&[Some(1), None]), 60_000, read), None);
        let g = growth(
            &history(&[Some(0), Some(1), Some(2), Some(3)]),
            60_000,
            read,
        )
        .unwrap();
        assert!((g.per_minute() - 60.0).abs() < 1e-9);
        assert!(g.sustained(60.0, 3) && !g.sustained(61.0, 3) && !g.sustained(1.0, 4));
    }
}
