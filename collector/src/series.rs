//! `Series`: one rolled-up reading of a node over a window, at a step that picks the tier
//! (store/rollup.rs). Pure parts here (the step for a window, the answer from a rollup); the
//! query service reads the store.

use gpufleet_proto::v1 as pb;

use crate::store::Tier;
use crate::store::rollup::{HOUR_MS, MINUTE_MS, Rollup, SERIES, Series, series};

/// Points a window is cut into when the request leaves the step to the collector.
pub const AUTO_POINTS: i64 = 300;
/// Longest window answered from raw samples (a step under a minute): a day of 1 s samples of
/// one node decodes in about a second; longer windows take whole minutes or hours.
pub const RAW_MAX_WINDOW_MS: i64 = 6 * HOUR_MS;
/// Most raw samples read for one answer.
pub const RAW_MAX_SAMPLES: usize = 200_000;
/// Most points per line in one answer.
pub const MAX_POINTS: i64 = 20_000;

/// The steps chosen automatically, finest first: whole seconds and minutes up to 6 h windows,
/// then whole hours.
const STEPS: &[i64] = &[
    1_000,
    5_000,
    10_000,
    30_000,
    MINUTE_MS,
    5 * MINUTE_MS,
    10 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    3 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    24 * HOUR_MS,
];

/// The step for a window of `window_ms`: about [`AUTO_POINTS`] points, never below a
/// minute for windows longer than [`RAW_MAX_WINDOW_MS`] and never below an hour for windows
/// longer than 10 days (so a month reads the 1-hour tier).
pub fn auto_step(window_ms: i64) -> i64 {
    let want = (window_ms / AUTO_POINTS).max(1);
    let floor = if window_ms > 10 * 24 * HOUR_MS {
        HOUR_MS
    } else if window_ms > RAW_MAX_WINDOW_MS {
        MINUTE_MS
    } else {
        1
    };
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= want && *s >= floor)
        .unwrap_or(24 * HOUR_MS)
}

/// Checks a request's window and step; returns the step to use.
pub fn plan(since: i64, until: i64, step: i64) -> Result<i64, String> {
    if until <= since {
        return Err(format!(
            "the window is empty (since {since} ms is not before until {until} ms)"
        ));
    }
    let window = until.saturating_sub(since);
    let step = if step == 0 { auto_step(window) } else { step };
    if step < 0 {
        return Err(format!("step {step} ms is negative"));
    }
    if Tier::for_step(step) == Tier::Raw && window > RAW_MAX_WINDOW_MS {
        return Err(format!(
            "a step under a minute ({} s) is answered from raw samples, for windows up to {} h; \
             this one is {} h: use a step of whole minutes (--step 1m) or leave --step out",
            step as f64 / 1000.0,
            RAW_MAX_WINDOW_MS / HOUR_MS,
            window / HOUR_MS
        ));
    }
    if window / step > MAX_POINTS {
        return Err(format!(
            "{} points per line is more than {MAX_POINTS}: use a larger step",
            window / step
        ));
    }
    Ok(step)
}

pub fn available() -> Vec<pb::SeriesInfo> {
    SERIES
        .iter()
        .map(|s| pb::SeriesInfo {
            name: s.name.into(),
            unit: s.unit.into(),
            help: s.help.into(),
            per_gpu: s.per_gpu(),
        })
        .collect()
}

/// The series named `name`, or an error listing them.
pub fn lookup(name: &str) -> Result<(u16, &'static Series), String> {
    series(name).ok_or_else(|| {
        let names: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        format!("unknown series {name:?}; there are: {}", names.join(", "))
    })
}

/// The answer for series `id` (GPU `gpu` only, when given) from a node's rollup.
pub fn answer(
    rollup: &Rollup,
    id: u16,
    gpu: Option<u32>,
    tier: Tier,
    step: i64,
) -> pb::SeriesResponse {
    let s = &SERIES[id as usize];
    let lines = rollup
        .buckets
        .iter()
        .filter(|((sid, g), _)| *sid == id && (!s.per_gpu() || gpu.is_none_or(|want| want == *g)))
        .map(|((_, g), buckets)| pb::SeriesLine {
            gpu: s.per_gpu().then_some(*g),
            points: buckets
                .iter()
                .map(|(t, a)| pb::SeriesPoint {
                    start_unix_ms: *t,
                    count: a.count,
                    min: a.min,
                    max: a.max,
                    mean: a.mean,
                })
                .collect(),
        })
        .collect();
    pb::SeriesResponse {
        series: s.name.into(),
        unit: s.unit.into(),
        step_ms: step,
        tier: tier.name().into(),
        lines,
        available: available(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_steps_pick_the_tier_for_the_window() {
        // (window, step)
        let cases = [
            (5 * MINUTE_MS, 1_000),
            (HOUR_MS, 30_000),
            (6 * HOUR_MS, 5 * MINUTE_MS),
            (24 * HOUR_MS, 5 * MINUTE_MS),
            (7 * 24 * HOUR_MS, HOUR_MS),
            (30 * 24 * HOUR_MS, 3 * HOUR_MS),
            (365 * 24 * HOUR_MS, 24 * HOUR_MS),
        ];
        for (window, step) in cases {
            assert_eq!(auto_step(window), step, "window {window}");
            assert!(plan(0, window, 0).is_ok());
        }
        assert_eq!(Tier::for_step(auto_step(24 * HOUR_MS)), Tier::Minute);
        assert_eq!(Tier::for_step(auto_step(30 * 24 * HOUR_MS)), Tier::Hour);
    }

    #[test]
    fn bad_windows_and_steps_say_what_to_do() {
        assert!(plan(10, 10, 0).unwrap_err().contains("empty"));
        assert!(plan(0, 10, -1).unwrap_err().contains("negative"));
        assert!(
            plan(0, 7 * 24 * HOUR_MS, 1_000)
                .unwrap_err()
                .contains("--step 1m")
        );
        assert!(plan(0, 24 * HOUR_MS, MINUTE_MS).is_ok());
        assert!(
            plan(0, 365 * 24 * HOUR_MS, MINUTE_MS)
                .unwrap_err()
                .contains("larger step")
        );
        assert!(lookup("temprature").unwrap_err().contains("temperature"));
        // The widest window a request can carry is refused, not an overflow.
        assert!(plan(i64::MIN, i64::MAX, 0).is_err());
        assert!(plan(i64::MIN, i64::MAX, HOUR_MS).is_err());
    }
}
