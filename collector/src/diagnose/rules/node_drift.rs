//! `drift.node.*`: what the node's own agent saw change — its driver, kernel or a GPU's
//! firmware or mode against the node's baseline, or GPUs of the node that disagree. The agent
//! reports each change once, as a drift event; this rule keeps it visible for a while.

use gpufleet_model::{Event, EventKind, Evidence, Finding, Severity, UnixMs};

use super::raise;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct NodeDrift;

const DRIVER: Cause = Cause {
    id: "drift.node.driver_version",
    title: "Driver changed on this node",
    severity: Severity::Warning,
    detects: "A drift event from the node's agent in the last 30 min: the driver version (or the \
              CUDA/NVML version or GSP firmware that come with it) differs from the node's \
              baseline.",
    action: "If nobody upgraded the driver on purpose, find who did (package manager log, \
             configuration management) and bring the node back to the fleet's standard driver; \
             drain it first — jobs spanning nodes with different drivers fail or slow down.",
};

const KERNEL: Cause = Cause {
    id: "drift.node.kernel_version",
    title: "Kernel changed on this node",
    severity: Severity::Info,
    detects: "A drift event from the node's agent in the last 30 min: the node booted another \
              kernel than its baseline.",
    action: "Confirm the reboot into the new kernel was intended and that the NVIDIA module was \
             built for it (DKMS); otherwise reboot into the fleet's standard kernel.",
};

const OS: Cause = Cause {
    id: "drift.node.os_version",
    title: "OS release changed on this node",
    severity: Severity::Info,
    detects: "A drift event from the node's agent in the last 30 min: the OS release differs \
              from the node's baseline.",
    action: "Confirm the upgrade was intended; otherwise re-image the node with the fleet's \
             standard image.",
};

const FIRMWARE: Cause = Cause {
    id: "drift.node.firmware",
    title: "GPU firmware changed",
    severity: Severity::Warning,
    detects: "A drift event from the node's agent in the last 30 min: a GPU's VBIOS or InfoROM \
              version changed (the board was flashed or swapped).",
    action: "Check that the flash or board swap was planned and that the new firmware is the \
             fleet's standard for this model; flash the standard VBIOS during maintenance if \
             not.",
};

const GPU_MODE: Cause = Cause {
    id: "drift.node.gpu_mode",
    title: "GPU mode changed",
    severity: Severity::Warning,
    detects: "A drift event from the node's agent in the last 30 min: a GPU's persistence mode, \
              compute mode, MIG mode or ECC mode changed.",
    action: "Find who changed it (a job prolog, an operator) and restore the fleet's standard: \
             ECC on, MIG as provisioned, compute mode as scheduled, persistence on. ECC and MIG \
             changes need a GPU reset to apply.",
};

const GPUS_DISAGREE: Cause = Cause {
    id: "drift.node.gpus_disagree",
    title: "GPUs of this node disagree",
    severity: Severity::Warning,
    detects: "A drift event from the node's agent in the last 30 min: GPUs of one model inside \
              the node differ in VBIOS, InfoROM, GSP firmware or a mode.",
    action: "Bring the odd GPU in line with the others of the node (flash the same VBIOS, set the \
             same mode); a GPU that came back from repair often carries other firmware.",
};

const OTHER: Cause = Cause {
    id: "drift.node.other",
    title: "Inventory changed on this node",
    severity: Severity::Info,
    detects: "A drift event from the node's agent in the last 30 min for any other field it \
              watches (for example a GPU's product name at the same UUID).",
    action: "Compare the node's inventory history (`gpufleet node <name>`) with what was \
             planned; re-image or replace hardware that changed unexpectedly.",
};

static INFO: RuleInfo = RuleInfo {
    id: "drift.node",
    title: "Drift seen by the node's agent",
    catalog: &[DRIVER, KERNEL, OS, FIRMWARE, GPU_MODE, GPUS_DISAGREE, OTHER],
};

/// A drift stays visible this long after the agent reported it: long enough for on-call to see
/// it, short enough that a deliberate change stops being news.
const RECENT_MS: u64 = 30 * 60 * 1000;

/// The cause for a drift event's code (`drift.<field>` or `drift.intra_node.<field>`), and
/// whether it is about the node as a whole.
fn cause_of(code: &str) -> (&'static Cause, bool) {
    let field = code.strip_prefix("drift.").unwrap_or(code);
    if field.starts_with("intra_node.") {
        return (&GPUS_DISAGREE, false);
    }
    match field {
        // The GSP firmware ships with the driver: one driver change, not one finding per GPU.
        "driver_version" | "cuda_driver_version" | "nvml_version" | "gsp_firmware_version" => {
            (&DRIVER, true)
        }
        "kernel_version" => (&KERNEL, true),
        "os_name" => (&OS, true),
        "vbios_version" | "inforom_image_version" => (&FIRMWARE, false),
        "persistence_mode" | "compute_mode" | "mig_enabled" | "ecc_enabled" => (&GPU_MODE, false),
        _ => (&OTHER, false),
    }
}

/// One field's change within a group: first baseline, latest value, how many events.
struct Change<'a> {
    field: &'a str,
    from: &'a str,
    to: &'a str,
    events: usize,
}

struct Group<'a> {
    cause: &'static Cause,
    gpu: Option<u32>,
    first: &'a Event,
    severity: Severity,
    changes: Vec<Change<'a>>,
}

fn detail<'a>(e: &'a Event, key: &str) -> &'a str {
    e.details.get(key).map(String::as_str).unwrap_or("")
}

impl Rule for NodeDrift {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, _fleet: &FleetContext, now: UnixMs) -> Vec<Finding> {
        let mut groups: Vec<Group> = Vec::new();
        let recent = node
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Drift && now.since(e.timestamp) <= RECENT_MS);
        for e in recent {
            let (cause, node_wide) = cause_of(&e.code);
            let gpu = if node_wide { None } else { e.gpu_index };
            let i = match groups
                .iter()
                .position(|g| g.cause.id == cause.id && g.gpu == gpu)
            {
                Some(i) => i,
                None => {
                    groups.push(Group {
                        cause,
                        gpu,
                        first: e,
                        severity: e.severity,
                        changes: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let g = &mut groups[i];
            g.severity = g.severity.max(e.severity);
            let field = match detail(e, "field") {
                "" => e.code.rsplit('.').next().unwrap_or(""),
                f => f,
            };
            let (from, to) = (detail(e, "baseline"), detail(e, "current"));
            match g.changes.iter_mut().find(|c| c.field == field) {
                Some(c) => {
                    c.to = to;
                    c.events += 1;
                }
                None => g.changes.push(Change {
                    field,
                    from,
                    to,
                    events: 1,
                }),
            }
        }
        groups.iter().map(|g| self.report(node, g)).collect()
    }
}

impl NodeDrift {
    fn report(&self, node: &NodeState, g: &Group) -> Finding {
        let mut f = raise(self, g.cause, node, g.first.timestamp);
        f.severity = g.severity;
        f.gpu_index = g.gpu;
        if g.gpu.is_some() {
            f.gpu_uuid = g.first.gpu_uuid.clone();
        }
        for c in &g.changes {
            let field = if c.events > 1 && g.gpu.is_none() && c.field == "gsp_firmware_version" {
                format!("{} ({} GPUs)", c.field, c.events)
            } else {
                c.field.to_string()
            };
            f.evidence.push(Evidence::new(
                &field,
                c.to,
                if g.cause.id == GPUS_DISAGREE.id {
                    format!("the node's other GPUs: {}", c.from)
                } else {
                    format!("baseline {}", c.from)
                },
            ));
        }
        // The summary names the field the cause is about, else the first one.
        let main = [
            "driver_version",
            "kernel_version",
            "os_name",
            "vbios_version",
        ];
        let c = g
            .changes
            .iter()
            .find(|c| main.contains(&c.field))
            .or(g.changes.first());
        let gpu = g.gpu.map(|i| format!("GPU {i} ")).unwrap_or_default();
        f.summary = match c {
            Some(c) if g.cause.id == GPUS_DISAGREE.id => format!(
                "{gpu}has {} {} while the node's other GPUs have {}",
                c.field, c.to, c.from
            ),
            Some(c) if c.from == c.to => format!(
                "{gpu}{} changed {} times in the last {} min and is back at {} on this node",
                c.field,
                c.events,
                RECENT_MS / 60_000,
                c.to
            ),
            Some(c) => format!(
                "{gpu}{} changed from {} to {} on this node",
                c.field, c.from, c.to
            ),
            None => g.first.message.clone(),
        };
        f
    }
}

/// Nodes that fire each cause of this rule, for the catalog tests in `rules/mod.rs`.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("node drift", |_, _| {});
    for (gpu, field) in [
        (None, "driver_version"),
        (None, "kernel_version"),
        (None, "os_name"),
        (Some(0), "vbios_version"),
        (Some(1), "ecc_enabled"),
        (Some(2), "intra_node.vbios_version"),
        (Some(3), "name"),
    ] {
        let mut e = Event::new(
            UnixMs(95_000),
            EventKind::Drift,
            Severity::Warning,
            format!("drift.{field}"),
            format!("{field} changed"),
        )
        .detail("field", field.rsplit('.').next().unwrap_or(field))
        .detail("baseline", "a")
        .detail("current", "b");
        if let Some(g) = gpu {
            e = e.on_gpu(g, &format!("GPU-{g}"));
        }
        n.1.events.push_back(e);
    }
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{NOW, node};

    fn drift(t: i64, field: &str, from: &str, to: &str, gpu: Option<u32>, sev: Severity) -> Event {
        let mut e = Event::new(
            UnixMs(t),
            EventKind::Drift,
            sev,
            format!("drift.{field}"),
            format!("{field} changed from {from} to {to}"),
        )
        .from_source("local-detection")
        .detail("field", field.rsplit('.').next().unwrap_or(field))
        .detail("baseline", from)
        .detail("current", to);
        if let Some(i) = gpu {
            e = e.on_gpu(i, &format!("GPU-{i}"));
        }
        e
    }

    #[test]
    fn cases() {
        let w = Severity::Warning;
        let driver_change = || {
            let mut v = vec![
                drift(
                    90_000,
                    "nvml_version",
                    "12.550.54.15",
                    "12.550.90.07",
                    None,
                    w,
                ),
                drift(90_000, "driver_version", "550.54.15", "550.90.07", None, w),
            ];
            v.extend((0..4).map(|i| {
                drift(
                    90_000,
                    "gsp_firmware_version",
                    "550.54.15",
                    "550.90.07",
                    Some(i),
                    w,
                )
            }));
            v
        };
        // (name, events, want (id, gpu, severity), summary of the first)
        type Case = (
            &'static str,
            Vec<Event>,
            Vec<(&'static str, Option<u32>, Severity)>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("nothing", vec![], vec![], ""),
            (
                "driver change is one node-level finding",
                driver_change(),
                vec![("drift.node.driver_version", None, w)],
                "driver_version changed from 550.54.15 to 550.90.07 on this node",
            ),
            (
                "kernel change keeps the event's severity",
                vec![drift(
                    95_000,
                    "kernel_version",
                    "5.15.0-105-generic",
                    "5.15.0-113-generic",
                    None,
                    Severity::Info,
                )],
                vec![("drift.node.kernel_version", None, Severity::Info)],
                "kernel_version changed from 5.15.0-105-generic to 5.15.0-113-generic on this node",
            ),
            (
                "vbios on one GPU",
                vec![drift(
                    95_000,
                    "vbios_version",
                    "96.00.89.00.01",
                    "96.00.61.00.01",
                    Some(2),
                    w,
                )],
                vec![("drift.node.firmware", Some(2), w)],
                "GPU 2 vbios_version changed from 96.00.89.00.01 to 96.00.61.00.01 on this node",
            ),
            (
                "GPUs disagree",
                vec![drift(
                    95_000,
                    "intra_node.vbios_version",
                    "96.00.89.00.01",
                    "96.00.61.00.01",
                    Some(1),
                    w,
                )],
                vec![("drift.node.gpus_disagree", Some(1), w)],
                "GPU 1 has vbios_version 96.00.61.00.01 while the node's other GPUs have 96.00.89.00.01",
            ),
            (
                "changed and back",
                vec![
                    drift(60_000, "driver_version", "550.54.15", "550.90.07", None, w),
                    drift(95_000, "driver_version", "550.90.07", "550.54.15", None, w),
                ],
                vec![("drift.node.driver_version", None, w)],
                "driver_version changed 2 times in the last 30 min and is back at 550.54.15 on this node",
            ),
            (
                "old drift has expired",
                vec![drift(
                    NOW.0 - RECENT_MS as i64 - 1,
                    "driver_version",
                    "a",
                    "b",
                    None,
                    w,
                )],
                vec![],
                "",
            ),
            (
                "unknown field",
                vec![drift(95_000, "name", "A", "B", Some(0), Severity::Info)],
                vec![("drift.node.other", Some(0), Severity::Info)],
                "GPU 0 name changed from A to B on this node",
            ),
        ];
        for (name, events, want, summary) in cases {
            let mut n = node(4, 1, |_, _| {});
            n.events.extend(events);
            let got = NodeDrift.check(&n, &FleetContext::default(), NOW);
            let ids: Vec<(&str, Option<u32>, Severity)> = got
                .iter()
                .map(|f| (f.rule_id.as_str(), f.gpu_index, f.severity))
                .collect();
            assert_eq!(ids, want, "{name}");
            if let Some(f) = got.first() {
                assert_eq!(f.summary, summary, "{name}");
            }
        }
        let mut n = node(4, 1, |_, _| {});
        n.events.extend(driver_change());
        let f = &NodeDrift.check(&n, &FleetContext::default(), NOW)[0];
        let fields: Vec<&str> = f.evidence.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "nvml_version",
                "driver_version",
                "gsp_firmware_version (4 GPUs)"
            ]
        );
        assert_eq!(f.since, UnixMs(90_000));
    }
}
