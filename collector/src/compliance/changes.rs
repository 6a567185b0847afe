//! What changed on a node and when: every version or mode of [`fields::FIELDS`] that differs
//! between two consecutive stored inventories, plus a GPU swapped at an index, plus the agent's
//! own drift reports (`drift.<field>` events, which know the node's baseline from before the
//! collector ever saw it). Pure: stored inventories and events in, changes out.

use gpufleet_model::{Event, EventKind, Inventory, UnixMs};
use serde::{Deserialize, Serialize};

use super::fields::{self, FIELDS, Read, Value};

/// The pseudo-field a GPU replaced at the same index is recorded under.
pub const GPU_UUID: &str = "gpu_uuid";

/// Shown for a value the node did not report.
const ABSENT: &str = "n/a";

/// Where a change was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Two consecutive inventories stored by the collector differ.
    Inventory,
    /// The agent's drift detection, against the baseline in its state directory.
    Agent,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Inventory => "inventory",
            Source::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "agent" => Source::Agent,
            _ => Source::Inventory,
        }
    }
}

/// One version or mode that changed on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub node: String,
    /// When the new value was first read.
    pub at: UnixMs,
    /// Policy field name (`driver_version`, `vbios_version`, …) or [`GPU_UUID`].
    pub field: String,
    pub gpu: Option<u32>,
    pub old: String,
    pub new: String,
    pub source: Source,
}

fn shown(v: Option<Value>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| ABSENT.to_string())
}

/// The changes between two consecutive inventories of `node`, stamped with `next.read_at`.
/// Per-GPU fields are compared for GPUs present in both (a GPU that appeared or vanished shows
/// as a `gpu_count` change, a GPU replaced at the same index as a [`GPU_UUID`] change).
pub fn between(node: &str, prev: &Inventory, next: &Inventory) -> Vec<Change> {
    let change = |field: &str, gpu, old: String, new: String| Change {
        node: node.to_string(),
        at: next.read_at,
        field: field.to_string(),
        gpu,
        old,
        new,
        source: Source::Inventory,
    };
    let mut out = Vec::new();
    for f in FIELDS {
        if let Read::Node(read) = f.read {
            let (old, new) = (shown(read(prev)), shown(read(next)));
            if old != new {
                out.push(change(f.name, None, old, new));
            }
        }
    }
    for g in &next.gpus {
        let Some(p) = prev.gpu(g.index) else { continue };
        if p.uuid != g.uuid && !p.uuid.is_empty() && !g.uuid.is_empty() {
            out.push(change(
                GPU_UUID,
                Some(g.index),
                p.uuid.clone(),
                g.uuid.clone(),
            ));
        }
        for f in FIELDS {
            if let Read::Gpu(read) = f.read {
                let (old, new) = (shown(read(p)), shown(read(g)));
                if old != new {
                    out.push(change(f.name, Some(g.index), old, new));
                }
            }
        }
    }
    out
}

/// Every change along a node's stored inventories (oldest first).
pub fn from_inventories(node: &str, inventories: &[Inventory]) -> Vec<Change> {
    inventories
        .windows(2)
        .flat_map(|w| between(node, &w[0], &w[1]))
        .collect()
}

/// The policy field an agent drift report names (the agent's baseline keys are the
/// inventory's own names).
fn field_of_drift(name: &str) -> Option<&'static str> {
    match name {
        "inforom_image_version" => Some("inforom_version"),
        other => fields::field(other).map(|f| f.name),
    }
}

/// The changes the agent reported as drift from its baseline (`drift.<field>` events with
/// `baseline` and `current` details), except those the inventories already show (same field,
/// GPU, old and new value) and repeats of one already listed: an agent restarted with an old
/// baseline reports the same drift again.
pub fn from_drift_events(node: &str, events: &[Event], known: &[Change]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for e in events {
        if e.kind != EventKind::Drift || e.code.starts_with("drift.intra_node.") {
            continue;
        }
        let (Some(name), Some(old), Some(new)) = (
            e.details.get("field"),
            e.details.get("baseline"),
            e.details.get("current"),
        ) else {
            continue;
        };
        let Some(field) = field_of_drift(name) else {
            continue;
        };
        let or_absent = |s: &String| {
            if s.is_empty() {
                ABSENT.to_string()
            } else {
                s.clone()
            }
        };
        let c = Change {
            node: node.to_string(),
            at: e.timestamp,
            field: field.to_string(),
            gpu: e.gpu_index,
            old: or_absent(old),
            new: or_absent(new),
            source: Source::Agent,
        };
        let same =
            |k: &Change| k.field == c.field && k.gpu == c.gpu && k.old == c.old && k.new == c.new;
        if c.old != c.new && !known.iter().any(same) && !out.iter().any(same) {
            out.push(c);
        }
    }
    out
}

/// A node's whole change history, oldest first: its stored inventories and its agent's drift
/// events (any order).
pub fn history(node: &str, inventories: &[Inventory], events: &[Event]) -> Vec<Change> {
    let mut out = from_inventories(node, inventories);
    let agent = from_drift_events(node, events, &out);
    out.extend(agent);
    sort(&mut out);
    out
}

/// Oldest first; at one time, by node, GPU and field.
pub fn sort(changes: &mut [Change]) {
    changes.sort_by(|a, b| (a.at, &a.node, a.gpu, &a.field).cmp(&(b.at, &b.node, b.gpu, &b.field)));
}

/// A GPU's identity for messages: `GPU 3`.
pub fn gpu_label(gpu: Option<u32>) -> String {
    gpu.map(|g| format!("GPU {g}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::GpuInfo;

    fn inv(at: i64, driver: &str, vbios: &[&str]) -> Inventory {
        let mut i = Inventory {
            read_at: UnixMs(at),
            ..Default::default()
        };
        i.driver.driver_version = driver.into();
        i.gpus = vbios
            .iter()
            .enumerate()
            .map(|(n, v)| GpuInfo {
                index: n as u32,
                uuid: format!("GPU-{n}"),
                vbios_version: v.to_string(),
                persistence_mode: Some(true),
                ..Default::default()
            })
            .collect();
        i
    }

    fn drift(at: i64, field: &str, gpu: Option<u32>, old: &str, new: &str) -> Event {
        let mut e = Event::new(
            UnixMs(at),
            EventKind::Drift,
            gpufleet_model::Severity::Warning,
            format!("drift.{field}"),
            "drifted",
        )
        .detail("field", field)
        .detail("baseline", old)
        .detail("current", new);
        e.gpu_index = gpu;
        e
    }

    /// `(at, field, gpu, old, new, source)`.
    type Row<'a> = (i64, &'a str, Option<u32>, &'a str, &'a str, Source);

    fn row(c: &Change) -> Row<'_> {
        (c.at.0, &c.field, c.gpu, &c.old, &c.new, c.source)
    }

    #[test]
    fn inventory_differences_are_changes() {
        use Source::Inventory as I;
        let a = inv(1, "550.54.15", &["96.00.89.00.01", "96.00.89.00.01"]);
        let b = inv(2, "570.86.15", &["96.00.89.00.01", "96.00.99.00.01"]);
        let mut c = inv(3, "570.86.15", &["96.00.89.00.01"]);
        c.gpus[0].uuid = "GPU-new".into();
        c.gpus[0].persistence_mode = None;
        let cases: &[(&[Inventory], Vec<Row>)] = &[
            (&[], vec![]),
            (std::slice::from_ref(&a), vec![]),
            (&[a.clone(), a.clone()], vec![]),
            (
                &[a.clone(), b.clone()],
                vec![
                    (2, "driver_version", None, "550.54.15", "570.86.15", I),
                    (
                        2,
                        "vbios_version",
                        Some(1),
                        "96.00.89.00.01",
                        "96.00.99.00.01",
                        I,
                    ),
                ],
            ),
            (
                &[b.clone(), c.clone()],
                vec![
                    (3, "gpu_count", None, "2", "1", I),
                    (3, GPU_UUID, Some(0), "GPU-0", "GPU-new", I),
                    (3, "persistence_mode", Some(0), "true", "n/a", I),
                ],
            ),
        ];
        for (invs, want) in cases {
            let got = from_inventories("n1", invs);
            let got: Vec<_> = got.iter().map(row).collect();
            assert_eq!(&got, want, "{} inventories", invs.len());
        }
    }

    #[test]
    fn drift_events_add_what_the_inventories_do_not_show() {
        let a = inv(10, "550.54.15", &["v1"]);
        let b = inv(20, "570.86.15", &["v1"]);
        let events = [
            // Already in the inventories.
            drift(20, "driver_version", None, "550.54.15", "570.86.15"),
            // Before the collector's first inventory: only the agent knows.
            drift(5, "inforom_image_version", Some(0), "G1", "G2"),
            // The same again after an agent restart.
            drift(30, "inforom_image_version", Some(0), "G1", "G2"),
            // Not a change over time, and not a field.
            drift(6, "intra_node.vbios_version", Some(0), "a", "b"),
            drift(7, "nvml_version", None, "12.550", "12.570"),
        ];
        let mut events = events.to_vec();
        events[3].code = "drift.intra_node.vbios_version".into();
        let got = history("n1", &[a, b], &events);
        let got: Vec<_> = got.iter().map(row).collect();
        assert_eq!(
            got,
            [
                (5, "inforom_version", Some(0), "G1", "G2", Source::Agent),
                (
                    20,
                    "driver_version",
                    None,
                    "550.54.15",
                    "570.86.15",
                    Source::Inventory
                ),
            ]
        );
    }

    #[test]
    fn drift_without_details_is_ignored_not_a_panic() {
        let mut e = drift(1, "driver_version", None, "a", "b");
        e.details.clear();
        assert!(from_drift_events("n1", &[e], &[]).is_empty());
    }
}
