//! `gpu.xid.*`: Xid errors the driver reported, classified with NVIDIA's catalog into what
//! on-call must do (restart the app, reset the GPU, reboot, RMA).

use std::collections::BTreeMap;

use gpufleet_model::{Event, EventKind, Evidence, Finding, Severity, UnixMs, xid};

use crate::diagnose::{FleetContext, Rule, finding};
use crate::fleet::NodeState;

pub struct XidErrors;

/// An Xid keeps its finding this long after the last occurrence.
const RECENT_MS: u64 = 30 * 60 * 1000;

fn classify(code: u32) -> (&'static str, Severity, String) {
    let info = xid::lookup(code);
    let res = info.map(|i| i.immediate_resolution).unwrap_or("");
    let inv = info.map(|i| i.investigatory_resolution).unwrap_or("");
    let (class, sev, action) = match res {
        "IGNORE" => (
            "informational",
            Severity::Info,
            "No action needed now; watch for repeats.".to_string(),
        ),
        "RESTART_APP" => (
            "application",
            Severity::Warning,
            "Restart the application; if it repeats on this GPU only, suspect the hardware."
                .to_string(),
        ),
        "RESET_GPU" => (
            "gpu_reset",
            Severity::Critical,
            "Drain the GPU and reset it (nvidia-smi -r) or reboot the node.".to_string(),
        ),
        "RESTART_BM" => (
            "reboot",
            Severity::Critical,
            "Drain and reboot the node.".to_string(),
        ),
        "RESTART_VM" => ("reboot", Severity::Critical, "Restart the VM.".to_string()),
        "CHECK_MECHANICALS" => (
            "hardware",
            Severity::Critical,
            "Check the GPU's power cables and seating.".to_string(),
        ),
        r if r.starts_with("WORKFLOW") => (
            "workflow",
            Severity::Critical,
            format!("Follow NVIDIA's {r} procedure."),
        ),
        "" => (
            "unknown",
            Severity::Warning,
            "Xid not in NVIDIA's catalog: check the driver release notes.".to_string(),
        ),
        other => (
            "other",
            Severity::Warning,
            format!("NVIDIA recommends {other}."),
        ),
    };
    let action = if inv == "CONTACT_SUPPORT" {
        format!("{action} If it repeats, contact NVIDIA support / open an RMA.")
    } else {
        action
    };
    (class, sev, action)
}

impl Rule for XidErrors {
    fn id(&self) -> &'static str {
        "gpu.xid"
    }

    fn title(&self) -> &'static str {
        "Xid error"
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        // Group by (gpu, xid): count, first and last time.
        let mut groups: BTreeMap<(Option<u32>, u32), Vec<&Event>> = BTreeMap::new();
        for e in node.events.iter().filter(|e| e.kind == EventKind::Xid) {
            if let Some(code) = e.xid
                && now.since(e.timestamp) <= RECENT_MS
            {
                groups.entry((e.gpu_index, code)).or_default().push(e);
            }
        }
        let mut out = Vec::new();
        for ((gpu, code), events) in groups {
            let (class, severity, action) = classify(code);
            let first = events.first().expect("group is not empty");
            let last = events.last().expect("group is not empty");
            let desc = xid::lookup(code)
                .map(|i| i.description)
                .unwrap_or("unknown Xid");
            let mut f = finding(self, node, severity, first.timestamp);
            f.rule_id = format!("gpu.xid.{class}");
            f.title = format!("Xid {code}: {desc}");
            f.gpu_index = gpu;
            f.gpu_uuid = first.gpu_uuid.clone();
            f.evidence.push(Evidence::new("xid", code, ""));
            f.evidence
                .push(Evidence::new("occurrences", events.len(), ""));
            f.evidence
                .push(Evidence::new("last_seen", last.timestamp, ""));
            if !last.message.is_empty() {
                f.evidence.push(Evidence::new("message", &last.message, ""));
            }
            f.summary = format!(
                "{}Xid {code} ({desc}) seen {} time(s), last at {}",
                gpu.map(|g| format!("GPU {g}: ")).unwrap_or_default(),
                events.len(),
                last.timestamp
            );
            f.action = action;
            out.push(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn xid_event(code: u32, t: i64) -> Event {
        let mut e = Event::new(
            UnixMs(t),
            EventKind::Xid,
            Severity::Critical,
            format!("xid.{code}"),
            "x",
        )
        .on_gpu(2, "GPU-2");
        e.xid = Some(code);
        e
    }

    #[test]
    fn classifies_by_catalog() {
        let cases: &[(u32, &str, Severity)] = &[
            (79, "gpu.xid.reboot", Severity::Critical),
            (31, "gpu.xid.application", Severity::Warning),
            (63, "gpu.xid.informational", Severity::Info),
            (48, "gpu.xid.workflow", Severity::Critical),
            (9999, "gpu.xid.unknown", Severity::Warning),
        ];
        for (code, id, sev) in cases {
            let mut n = node(4, 1, |_, _| {});
            n.events.push_back(xid_event(*code, 90_000));
            n.events.push_back(xid_event(*code, 95_000));
            let f = XidErrors.check(&n, &FleetContext::default(), NOW);
            assert_eq!(f.len(), 1, "{code}");
            assert_eq!(
                (f[0].rule_id.as_str(), f[0].severity, f[0].gpu_index),
                (*id, *sev, Some(2)),
                "{code}"
            );
            assert_eq!(f[0].evidence[1].value, "2");
        }
    }

    #[test]
    fn old_xids_expire() {
        let mut n = node(4, 1, |_, _| {});
        n.events.push_back(xid_event(79, 1_000));
        let later = UnixMs(1_000 + RECENT_MS as i64 + 1);
        assert!(
            XidErrors
                .check(&n, &FleetContext::default(), later)
                .is_empty()
        );
    }
}
