//! Local detection: drift (versions/modes against this node's persisted baseline, and GPUs of
//! the node disagreeing) and saturation (a resource at its limit for several samples).
//! Findings become events in the stream and lines in `probe`; the collector decides what they
//! mean fleet-wide.

pub mod drift;
pub mod saturation;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gpufleet_model::{Event, EventKind, Inventory, Sample, Severity, UnixMs};

use drift::{Baseline, Drift};
use saturation::{Saturated, Thresholds};

const BASELINE_FILE: &str = "baseline.json";

/// Samples a saturation must hold before it is reported: the agent's `--saturation-hold`
/// default, and what every in-process harness uses.
pub const DEFAULT_SATURATION_HOLD: u32 = 5;

pub struct Detector {
    state_dir: Option<PathBuf>,
    baseline: Option<Baseline>,
    thresholds: Thresholds,
    /// Samples a saturation must hold before it is reported.
    hold_samples: u32,
    /// Per saturation key: consecutive samples seen, and whether it was reported.
    saturation: BTreeMap<String, (u32, bool, Saturated)>,
    /// Intra-node disagreements already reported (code|gpu|current).
    disagreements: BTreeSet<String>,
}

/// A condition the detector currently sees (for `probe`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LocalFinding {
    pub code: String,
    pub severity: Severity,
    pub gpu_index: Option<u32>,
    pub message: String,
}

impl Detector {
    /// `state_dir`: where the baseline is kept across restarts (`None`: in memory only).
    pub fn new(state_dir: Option<PathBuf>, thresholds: Thresholds, hold_samples: u32) -> Self {
        let baseline = state_dir.as_deref().and_then(load_baseline);
        Detector {
            state_dir,
            baseline,
            thresholds,
            hold_samples: hold_samples.max(1),
            saturation: BTreeMap::new(),
            disagreements: BTreeSet::new(),
        }
    }

    /// Compares a fresh inventory with the baseline (then adopts it as the new baseline) and
    /// looks for GPUs that disagree inside the node.
    pub fn on_inventory(&mut self, inv: &Inventory, now: UnixMs) -> Vec<Event> {
        let mut events: Vec<Event> = match &self.baseline {
            Some(b) => drift::against_baseline(b, inv)
                .into_iter()
                .map(|d| drift_event(d, now))
                .collect(),
            None => Vec::new(),
        };
        let current: Vec<Drift> = drift::intra_node(inv);
        let keys: BTreeSet<String> = current.iter().map(disagreement_key).collect();
        for d in current {
            if !self.disagreements.contains(&disagreement_key(&d)) {
                events.push(drift_event(d, now));
            }
        }
        self.disagreements = keys;
        let fresh = Baseline::from_inventory(inv);
        if self.baseline.as_ref() != Some(&fresh) {
            if let Some(dir) = &self.state_dir
                && let Err(e) = save_baseline(dir, &fresh)
            {
                tracing::warn!("cannot save drift baseline in {}: {e}", dir.display());
            }
            self.baseline = Some(fresh);
        }
        events
    }

    /// Tracks saturation across samples; returns events when one starts (after the hold) and
    /// when it ends.
    pub fn on_sample(&mut self, sample: &Sample, inv: &Inventory) -> Vec<Event> {
        let now = sample.timestamp;
        let seen = saturation::check(sample, inv, &self.thresholds);
        let mut events = Vec::new();
        let seen_keys: BTreeSet<String> = seen.iter().map(Saturated::key).collect();
        for s in seen {
            let entry = self
                .saturation
                .entry(s.key())
                .or_insert((0, false, s.clone()));
            entry.0 += 1;
            entry.2 = s;
            if entry.0 >= self.hold_samples && !entry.1 {
                entry.1 = true;
                events.push(saturation_event(&entry.2, now, false));
            }
        }
        let gone: Vec<String> = self
            .saturation
            .keys()
            .filter(|k| !seen_keys.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some((_, reported, s)) = self.saturation.remove(&k)
                && reported
            {
                events.push(saturation_event(&s, now, true));
            }
        }
        events
    }

    /// What the detector sees right now: reported saturations and intra-node disagreements.
    pub fn current(&self, inv: &Inventory) -> Vec<LocalFinding> {
        let mut out: Vec<LocalFinding> = drift::intra_node(inv)
            .into_iter()
            .map(|d| LocalFinding {
                code: d.code,
                severity: d.severity,
                gpu_index: d.gpu.map(|g| g.0),
                message: d.message,
            })
            .collect();
        out.extend(
            self.saturation
                .values()
                .filter(|(_, reported, _)| *reported)
                .map(|(_, _, s)| LocalFinding {
                    code: s.code.to_string(),
                    severity: s.severity,
                    gpu_index: s.gpu.as_ref().map(|g| g.0),
                    message: s.message(),
                }),
        );
        out
    }
}

fn disagreement_key(d: &Drift) -> String {
    format!("{}|{:?}|{}", d.code, d.gpu, d.current)
}

fn drift_event(d: Drift, now: UnixMs) -> Event {
    let mut e = Event::new(now, EventKind::Drift, d.severity, d.code, d.message)
        .from_source("local-detection")
        .detail("field", &d.field)
        .detail("baseline", &d.baseline)
        .detail("current", &d.current);
    if let Some((i, uuid)) = d.gpu {
        e = e.on_gpu(i, &uuid);
    }
    e
}

fn saturation_event(s: &Saturated, now: UnixMs, cleared: bool) -> Event {
    let (code, sev, msg) = if cleared {
        (
            format!("{}.cleared", s.code),
            Severity::Info,
            format!("{} no longer saturated", s.instance),
        )
    } else {
        (s.code.to_string(), s.severity, s.message())
    };
    let mut e = Event::new(now, EventKind::Saturation, sev, code, msg)
        .from_source("local-detection")
        .detail("instance", &s.instance)
        .detail("value", &s.value)
        .detail("limit", &s.limit);
    if let Some((i, uuid)) = &s.gpu {
        e = e.on_gpu(*i, uuid);
    }
    e
}

fn load_baseline(dir: &Path) -> Option<Baseline> {
    let path = dir.join(BASELINE_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(
                "ignoring unreadable drift baseline {} ({e}); a new one will be written",
                path.display()
            );
            None
        }
    }
}

fn save_baseline(dir: &Path, b: &Baseline) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{BASELINE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(b)?)?;
    std::fs::rename(tmp, dir.join(BASELINE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{DriverInfo, GpuSample};

    fn inv(driver: &str) -> Inventory {
        Inventory {
            driver: DriverInfo {
                driver_version: driver.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn baseline_survives_restart_and_reports_drift_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Detector::new(Some(dir.path().into()), Thresholds::default(), 1);
        assert!(d.on_inventory(&inv("550.54.15"), UnixMs(1)).is_empty());
        // A restarted agent finds the baseline and sees the upgrade.
        let mut d = Detector::new(Some(dir.path().into()), Thresholds::default(), 1);
        let ev = d.on_inventory(&inv("550.90.07"), UnixMs(2));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].code, "drift.driver_version");
        assert_eq!(ev[0].details["baseline"], "550.54.15");
        assert!(d.on_inventory(&inv("550.90.07"), UnixMs(3)).is_empty());
    }

    #[test]
    fn corrupt_baseline_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BASELINE_FILE), "{not json").unwrap();
        let mut d = Detector::new(Some(dir.path().into()), Thresholds::default(), 1);
        assert!(d.on_inventory(&inv("1"), UnixMs(1)).is_empty());
        assert!(load_baseline(dir.path()).is_some());
    }

    #[test]
    fn saturation_needs_hold_and_reports_clearing() {
        let mut d = Detector::new(None, Thresholds::default(), 3);
        let full = |t| Sample {
            timestamp: UnixMs(t),
            gpus: vec![GpuSample {
                memory_used_bytes: Some(80),
                memory_total_bytes: Some(80),
                ..Default::default()
            }],
            ..Default::default()
        };
        let inv = Inventory::default();
        assert!(d.on_sample(&full(1), &inv).is_empty());
        assert!(d.on_sample(&full(2), &inv).is_empty());
        let ev = d.on_sample(&full(3), &inv);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].code, "saturation.gpu_memory");
        assert_eq!(d.current(&inv).len(), 1);
        assert!(d.on_sample(&full(4), &inv).is_empty());
        let cleared = d.on_sample(&Sample::default(), &inv);
        assert_eq!(cleared[0].code, "saturation.gpu_memory.cleared");
    }
}
