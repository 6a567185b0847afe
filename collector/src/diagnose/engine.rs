//! The finding lifecycle around the pure rules: a condition is *pending* until it has held
//! long enough, then *firing*, and *resolved* only after it has been absent for the clear
//! delay — so one noisy sample neither fires nor flaps. The engine is the one place findings
//! are decided; it reads no clock (`now` is an argument) and does no I/O (it returns the
//! transitions for the caller to store).

use std::collections::BTreeMap;

use gpufleet_model::{Finding, FindingRecord, FindingState, Severity, UnixMs};

use super::rank;
use crate::fleet::NodeState;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A non-critical condition fires after it has held this long (rules already require
    /// several consecutive samples; this adds a minimum duration like Prometheus' `for`).
    /// Critical conditions (GPU lost, hardware slowdown, fatal Xids) fire at once.
    pub fire_after_ms: u64,
    /// A firing finding resolves only after its condition was absent this long (hysteresis).
    pub clear_after_ms: u64,
    /// When a cause shared by many nodes is named once, fleet-wide.
    pub fleet_scope: super::FleetScopeConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            fire_after_ms: 10_000,
            clear_after_ms: 30_000,
            fleet_scope: super::FleetScopeConfig::default(),
        }
    }
}

type Key = (String, String, Option<u32>);

#[derive(Debug, Clone)]
struct Tracked {
    finding: Finding,
    state: FindingState,
    last_seen: UnixMs,
    fired_at: UnixMs,
}

#[derive(Debug, Default)]
pub struct Engine {
    config: EngineConfig,
    tracked: BTreeMap<Key, Tracked>,
}

/// What one evaluation decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub at: UnixMs,
    /// Firing findings, most impactful first.
    pub firing: Vec<Finding>,
    /// Conditions seen but not yet held long enough.
    pub pending: Vec<Finding>,
    /// Findings that started firing or resolved in this evaluation (to be stored).
    pub changes: Vec<FindingRecord>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            tracked: BTreeMap::new(),
        }
    }

    /// Takes over findings that were firing when the collector stopped, so they continue
    /// (or resolve) instead of firing a second time.
    pub fn restore(&mut self, open: Vec<FindingRecord>, now: UnixMs) {
        for r in open.into_iter().filter(|r| r.state == FindingState::Firing) {
            self.tracked.insert(
                r.finding.key(),
                Tracked {
                    finding: r.finding,
                    state: FindingState::Firing,
                    last_seen: now,
                    fired_at: r.fired_at,
                },
            );
        }
    }

    fn fire_after(&self, f: &Finding) -> u64 {
        if f.severity == Severity::Critical {
            0
        } else {
            self.config.fire_after_ms
        }
    }

    pub fn evaluate(&mut self, nodes: &[&NodeState], now: UnixMs) -> Evaluation {
        self.evaluate_with(nodes, now, None)
    }

    /// [`Engine::evaluate`] with a compliance policy in force.
    pub fn evaluate_with(
        &mut self,
        nodes: &[&NodeState],
        now: UnixMs,
        policy: Option<std::sync::Arc<crate::compliance::policy::Policy>>,
    ) -> Evaluation {
        let current = super::diagnose_with(nodes, now, policy, &self.config.fleet_scope);
        let mut changes = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for f in current {
            let key = f.key();
            seen.insert(key.clone());
            let fire_after = self.fire_after(&f);
            let t = self.tracked.entry(key).or_insert_with(|| Tracked {
                finding: f.clone(),
                state: FindingState::Pending,
                last_seen: now,
                fired_at: UnixMs(0),
            });
            // Keep the first time the condition was seen across evaluations.
            let since = t.finding.since.min(f.since);
            t.finding = f;
            t.finding.since = since;
            t.last_seen = now;
            if t.state == FindingState::Pending && now.since(since) >= fire_after {
                t.state = FindingState::Firing;
                t.fired_at = now;
                changes.push(record(t));
            }
        }
        let clear_after = self.config.clear_after_ms;
        let gone: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(k, t)| {
                !seen.contains(*k)
                    && (t.state == FindingState::Pending || now.since(t.last_seen) >= clear_after)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(mut t) = self.tracked.remove(&k)
                && t.state == FindingState::Firing
            {
                t.state = FindingState::Resolved;
                let mut r = record(&t);
                r.resolved_at = Some(now);
                changes.push(r);
            }
        }
        let mut firing: Vec<Finding> = self.list(FindingState::Firing);
        let mut pending: Vec<Finding> = self.list(FindingState::Pending);
        rank(&mut firing);
        rank(&mut pending);
        Evaluation {
            at: now,
            firing,
            pending,
            changes,
        }
    }

    fn list(&self, state: FindingState) -> Vec<Finding> {
        self.tracked
            .values()
            .filter(|t| t.state == state)
            .map(|t| t.finding.clone())
            .collect()
    }
}

fn record(t: &Tracked) -> FindingRecord {
    FindingRecord {
        finding: t.finding.clone(),
        state: t.state,
        fired_at: t.fired_at,
        resolved_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::node;
    use gpufleet_model::clock_events::SW_THERMAL_SLOWDOWN;

    /// A node whose GPU 0 has SW thermal slowdown in every sample when `hot`, healthy
    /// otherwise, with its samples ending at `now`.
    fn at(now: i64, hot: bool) -> NodeState {
        let mut n = node(1, 5, |_, s| {
            if hot {
                s.gpus[0].clock_event_reasons = Some(SW_THERMAL_SLOWDOWN);
                s.gpus[0].sm_clock_mhz = Some(1500);
            }
        });
        let shift = now - n.history.back().unwrap().timestamp.0;
        for s in &mut n.history {
            s.timestamp.0 += shift;
        }
        n.last_seen = UnixMs(now);
        n
    }

    fn states(e: &Evaluation) -> (usize, usize, Vec<FindingState>) {
        (
            e.pending.len(),
            e.firing.len(),
            e.changes.iter().map(|c| c.state).collect(),
        )
    }

    #[test]
    fn pending_then_firing_then_resolved_with_hysteresis() {
        let mut eng = Engine::new(EngineConfig {
            fire_after_ms: 10_000,
            clear_after_ms: 30_000,
            ..EngineConfig::default()
        });
        /// (time s, condition present, want (pending, firing, changes))
        type Step = (i64, bool, (usize, usize, &'static [FindingState]));
        let steps: &[Step] = &[
            (100, true, (1, 0, &[])),
            (105, true, (1, 0, &[])),
            (112, true, (0, 1, &[FindingState::Firing])),
            (113, false, (0, 1, &[])), // one clean sample: still firing (hysteresis)
            (115, true, (0, 1, &[])),  // back: no second firing
            (130, false, (0, 1, &[])),
            (146, false, (0, 0, &[FindingState::Resolved])),
            (147, false, (0, 0, &[])),
        ];
        for (t, hot, (p, f, ch)) in steps {
            let n = at(t * 1000, *hot);
            let e = eng.evaluate(&[&n], UnixMs(t * 1000));
            assert_eq!(states(&e), (*p, *f, ch.to_vec()), "at {t}s");
        }
    }

    #[test]
    fn a_condition_that_vanishes_while_pending_never_fires() {
        let mut eng = Engine::new(EngineConfig::default());
        let e = eng.evaluate(&[&at(100_000, true)], UnixMs(100_000));
        assert_eq!(e.pending.len(), 1);
        let e = eng.evaluate(&[&at(102_000, false)], UnixMs(102_000));
        assert_eq!(states(&e), (0, 0, vec![]));
    }

    #[test]
    fn restored_firing_findings_do_not_fire_twice() {
        let mut eng = Engine::new(EngineConfig::default());
        let n = at(100_000, true);
        let mut f = crate::diagnose::diagnose(&[&n], UnixMs(100_000)).remove(0);
        f.since = UnixMs(1_000);
        eng.restore(
            vec![FindingRecord {
                finding: f,
                state: FindingState::Firing,
                fired_at: UnixMs(2_000),
                resolved_at: None,
            }],
            UnixMs(100_000),
        );
        let e = eng.evaluate(&[&n], UnixMs(100_000));
        assert_eq!(states(&e), (0, 1, vec![]));
        assert_eq!(e.firing[0].since, UnixMs(1_000));
    }
}
