//! Silences: "don't page about node N (GPU G, causes starting with P) until T". A silenced
//! alert is still recorded in the delivery log, just not sent. Stored (`alert_silences`), so
//! a restart keeps them; expired ones stop matching on their own.

use gpufleet_model::UnixMs;
use serde::{Deserialize, Serialize};

use super::alert::Alert;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    pub node: String,
    /// Only this GPU; `None`: the whole node.
    pub gpu: Option<u32>,
    /// Only causes starting with this; empty: every cause.
    pub cause_prefix: String,
    pub comment: String,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
}

/// What `silence add` asks for (the store gives it an id).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub node: String,
    pub gpu: Option<u32>,
    pub cause_prefix: String,
    pub comment: String,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
}

impl Silence {
    pub fn active(&self, now: UnixMs) -> bool {
        now < self.expires_at
    }

    /// Whether this silence, at `now`, holds back an alert about `node`/`gpu`/`cause`.
    pub fn matches(&self, node: &str, gpu: Option<u32>, cause: &str, now: UnixMs) -> bool {
        self.active(now)
            && self.node == node
            && (self.gpu.is_none() || self.gpu == gpu)
            && cause.starts_with(self.cause_prefix.as_str())
    }

    pub fn matches_alert(&self, a: &Alert, now: UnixMs) -> bool {
        self.matches(&a.node, a.gpu, &a.cause, now)
    }
}

/// The first silence holding back `a` at `now`.
pub fn silencing<'a>(silences: &'a [Silence], a: &Alert, now: UnixMs) -> Option<&'a Silence> {
    silences.iter().find(|s| s.matches_alert(a, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_matches_its_node_gpu_and_cause_prefix_until_it_expires() {
        let s = Silence {
            id: 1,
            node: "n1".into(),
            gpu: Some(3),
            cause_prefix: "gpu.thermal".into(),
            comment: "fan swap".into(),
            created_at: UnixMs(0),
            expires_at: UnixMs(10_000),
        };
        type Case = (&'static str, Option<u32>, &'static str, i64, bool);
        let cases: &[Case] = &[
            ("n1", Some(3), "gpu.thermal.hw_slowdown", 5_000, true),
            ("n1", Some(3), "gpu.thermal.hw_slowdown", 10_000, false), // expired
            ("n1", Some(2), "gpu.thermal.hw_slowdown", 5_000, false),  // other GPU
            ("n1", None, "gpu.thermal.hw_slowdown", 5_000, false),     // node-wide alert
            ("n2", Some(3), "gpu.thermal.hw_slowdown", 5_000, false),  // other node
            ("n1", Some(3), "gpu.pcie.link_degraded", 5_000, false),   // other cause
        ];
        for (node, gpu, cause, now, want) in cases {
            assert_eq!(
                s.matches(node, *gpu, cause, UnixMs(*now)),
                *want,
                "{node} {gpu:?} {cause} at {now}"
            );
        }
        let whole = Silence {
            gpu: None,
            cause_prefix: String::new(),
            ..s
        };
        assert!(whole.matches("n1", None, "node.agent_offline", UnixMs(1)));
        assert!(whole.matches("n1", Some(7), "gpu.lost", UnixMs(1)));
    }
}
