//! Human output: tables for nodes, one node, and a diagnosis.

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use gpufleet_model::labels::format_labels;
use gpufleet_model::{Finding, GpuStatus, Labels, Selector, UnixMs, clock_events};

use crate::api::{Diagnosis, NodeDetail, NodeSummary};

pub(crate) fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if let Ok(w) = std::env::var("COLUMNS").map(|c| c.parse::<u16>().unwrap_or(160)) {
        t.set_width(w);
    } else {
        t.set_width(160);
    }
    t
}

fn or_na(s: &str) -> &str {
    if s.is_empty() { "n/a" } else { s }
}

/// Most characters the LABELS column of `gpufleet nodes` shows per node (`gpufleet node NAME`
/// shows them all).
const LABELS_CELL_CHARS: usize = 40;

/// A node's labels for the nodes table: `k=v,k2=v2` with as many whole labels as fit in
/// [`LABELS_CELL_CHARS`], then `+N` for the ones left out (a first label longer than that is
/// cut, ending in `…`); `-` when it has none.
fn labels_cell(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut width = 0;
    for (k, v) in labels {
        let item = format!("{k}={v}");
        let w = item.chars().count() + usize::from(!shown.is_empty());
        if width + w > LABELS_CELL_CHARS {
            if shown.is_empty() {
                let head = item.chars().take(LABELS_CELL_CHARS - 1);
                shown.push(head.chain(['…']).collect());
            }
            break;
        }
        width += w;
        shown.push(item);
    }
    let mut out = shown.join(",");
    if shown.len() < labels.len() {
        out += &format!(",+{}", labels.len() - shown.len());
    }
    out
}

/// What `gpufleet nodes --selector` prints when no node matches.
pub fn no_node_matches(selector: &Selector) -> String {
    format!(
        "No node matches the selector {:?}; `gpufleet nodes` lists every node with its labels.\n",
        selector.to_string()
    )
}

pub fn nodes(nodes: &[NodeSummary], now: UnixMs) -> String {
    if nodes.is_empty() {
        return "No nodes yet. Start an agent: gpufleet-agent run --collector http://<this host>:50051\n".into();
    }
    let mut t = table();
    t.set_header([
        "NODE",
        "STATUS",
        "GPUS",
        "MODEL",
        "DRIVER",
        "CUDA",
        "VBIOS",
        "KERNEL",
        "FINDINGS",
        "LAST SEEN",
        "LABELS",
    ]);
    for n in nodes {
        let status = match (n.connected, n.gpus_unhealthy) {
            (false, _) => "offline".to_string(),
            (true, 0) => "online".to_string(),
            (true, k) => format!("online, {k} GPU(s) down"),
        };
        let findings = match (n.finding_count, n.worst_severity) {
            (0, _) => "healthy".to_string(),
            (c, Some(s)) => format!("{c} ({s})"),
            (c, None) => c.to_string(),
        };
        t.add_row([
            n.name.clone(),
            status,
            n.gpu_count.to_string(),
            n.gpu_models.join(", "),
            or_na(&n.driver_version).to_string(),
            or_na(&n.cuda_driver_version).to_string(),
            n.vbios_versions.join(", "),
            or_na(&n.kernel_version).to_string(),
            findings,
            format!("{}s ago", now.since(n.last_seen) / 1000),
            labels_cell(&n.labels),
        ]);
    }
    format!("{t}\n")
}

pub fn findings_table(findings: &[Finding]) -> String {
    let mut t = table();
    t.set_header([
        "SEVERITY", "NODE", "GPU", "CAUSE", "EVIDENCE", "PERF", "ACTION",
    ]);
    for f in findings {
        let evidence: Vec<String> = f
            .evidence
            .iter()
            .map(|e| {
                let mut s = format!("{}={}", e.field, e.value);
                if !e.threshold.is_empty() {
                    s += &format!(" ({})", e.threshold);
                }
                if e.duration_ms > 0 {
                    s += &format!(" for {}s", e.duration_ms / 1000);
                }
                s
            })
            .collect();
        t.add_row([
            f.severity.to_string(),
            f.node.clone(),
            f.gpu_index
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            if f.folded_into.is_empty() {
                format!("{}\n{}\n{}", f.title, f.rule_id, f.summary)
            } else {
                format!(
                    "{}\n{}\n{}\npart of {}",
                    f.title, f.rule_id, f.summary, f.folded_into
                )
            },
            evidence.join("\n"),
            f.performance_ratio
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            f.action.clone(),
        ]);
    }
    format!("{t}\n")
}

pub fn diagnosis(d: &Diagnosis) -> String {
    let mut out = format!(
        "{} node(s), {} healthy, {} finding(s) firing, {} pending\n",
        d.nodes_total,
        d.nodes_healthy,
        d.findings.len(),
        d.pending.len()
    );
    if let Some(h) = &d.history {
        out += &history(h);
    }
    if d.findings.is_empty() {
        return out + "No cause of underperformance found.\n";
    }
    // Fleet-wide findings first, with their scope; the node findings folded under them are
    // counted, not listed, when the whole fleet is shown (`diagnose NODE` lists a node's).
    let whole_fleet = d.findings.iter().any(|f| f.fleet.is_some());
    let shown: Vec<Finding> = d
        .findings
        .iter()
        .filter(|f| !whole_fleet || f.folded_into.is_empty())
        .cloned()
        .collect();
    for f in d.findings.iter().filter(|f| f.fleet.is_some()) {
        let s = f.fleet.as_ref().expect("filtered");
        out += &format!(
            "  fleet-wide {}: {} of {} nodes of {}{}\n",
            f.rule_id,
            s.nodes.len(),
            s.group_nodes,
            s.group,
            if s.gpus > 0 {
                format!(" ({} GPUs)", s.gpus)
            } else {
                String::new()
            }
        );
    }
    let mut per_cause: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for f in shown.iter().filter(|f| f.fleet.is_none()) {
        per_cause
            .entry(f.rule_id.as_str())
            .or_default()
            .insert(f.node.as_str());
    }
    for (cause, nodes) in &per_cause {
        out += &format!(
            "  {cause}: {}\n",
            nodes.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    let folded = d.findings.len() - shown.len();
    if folded > 0 {
        out += &format!(
            "  ({folded} node finding{} folded under the fleet-wide ones; `gpufleet diagnose NODE` lists a node's)\n",
            if folded == 1 { "" } else { "s" }
        );
    }
    out + "\n" + &findings_table(&shown)
}

pub fn node(d: &NodeDetail, now: UnixMs) -> String {
    let s = &d.summary;
    let inv = &d.inventory;
    let mut out = format!(
        "Node {} ({}, agent {}, source {}, last seen {}s ago)\nDriver {}  CUDA {}  NVML {}  Kernel {}  OS {}\nLabels {}\n\n",
        s.name,
        if s.connected { "online" } else { "offline" },
        or_na(&s.agent_version),
        or_na(&s.gpu_source),
        now.since(s.last_seen) / 1000,
        or_na(&inv.driver.driver_version),
        or_na(&inv.driver.cuda_driver_version),
        or_na(&inv.driver.nvml_version),
        or_na(&inv.host.kernel_version),
        or_na(&inv.host.os_name),
        if s.labels.is_empty() {
            "none".to_string()
        } else {
            format_labels(&s.labels)
        },
    );
    if s.dropped_samples > 0 || s.dropped_events > 0 {
        out.insert_str(
            out.len() - 1,
            &format!(
                "Lost by the agent: {} samples, {} events (its buffer or spool was full while the \
                 collector was unreachable; raise buffer_samples / spool_max_bytes)\n",
                s.dropped_samples, s.dropped_events
            ),
        );
    }
    let mut t = table();
    t.set_header([
        "GPU",
        "NAME",
        "BUS ID",
        "UUID",
        "VBIOS",
        "STATUS",
        "TEMP",
        "POWER",
        "SM MHz",
        "UTIL",
        "PCIE",
        "CLOCK EVENTS",
    ]);
    for g in &inv.gpus {
        let x = d.latest.as_ref().and_then(|l| l.gpu(g.index));
        let n = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        t.add_row([
            g.index.to_string(),
            g.name.clone(),
            g.pci_bus_id.clone(),
            g.uuid.clone(),
            or_na(&g.vbios_version).to_string(),
            match x.map(|x| x.status) {
                Some(GpuStatus::Ok) => "ok".into(),
                Some(GpuStatus::Lost) => "LOST".into(),
                Some(GpuStatus::Unreadable) => "unreadable".into(),
                None => "no sample".into(),
            },
            n(x.and_then(|x| x.temperature_gpu_celsius)
                .map(|t| format!("{t} °C"))),
            n(x.and_then(|x| x.power_usage_milliwatts)
                .map(|p| format!("{:.0} W", p as f64 / 1000.0))),
            n(x.and_then(|x| x.sm_clock_mhz).map(|c| {
                format!(
                    "{c}/{}",
                    g.sm_clock_max_mhz
                        .map(|m| m.to_string())
                        .unwrap_or("?".into())
                )
            })),
            n(x.and_then(|x| x.utilization_gpu_percent)
                .map(|u| format!("{u}%"))),
            n(x.and_then(|x| Some(format!("gen{} x{}", x.pcie_link_gen?, x.pcie_link_width?)))),
            n(x.and_then(|x| x.clock_event_reasons).map(|r| {
                let v = clock_events::names(r & !clock_events::GPU_IDLE);
                if v.is_empty() {
                    "none".into()
                } else {
                    v.join(",")
                }
            })),
        ]);
    }
    out += &format!("{t}\n");
    if d.findings.is_empty() {
        out += "\nNo current findings.\n";
    } else {
        out += &format!("\nFindings\n{}", findings_table(&d.findings));
    }
    if !d.recent_changes.is_empty() {
        out += &format!(
            "\nRecent changes (`gpufleet history {}` for all)\n{}",
            d.summary.name,
            super::changes::lines(&d.recent_changes)
        );
    }
    if !d.recent_events.is_empty() {
        out += "\nRecent events\n";
        for e in d.recent_events.iter().rev().take(15) {
            let gpu = e.gpu_index.map(|g| format!(" GPU {g}")).unwrap_or_default();
            out += &format!(
                "  {} [{}]{gpu} {}: {}\n",
                e.timestamp, e.severity, e.code, e.message
            );
        }
    }
    out
}

fn history(records: &[gpufleet_model::FindingRecord]) -> String {
    if records.is_empty() {
        return "History: nothing fired in that time.\n\n".into();
    }
    let mut t = table();
    t.set_header(["FIRED", "RESOLVED", "NODE", "GPU", "CAUSE", "SUMMARY"]);
    for r in records {
        let f = &r.finding;
        t.add_row([
            r.fired_at.to_string(),
            r.resolved_at
                .map(|t| t.to_string())
                .unwrap_or_else(|| "firing".into()),
            f.node.clone(),
            f.gpu_index
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            f.rule_id.clone(),
            f.summary.clone(),
        ]);
    }
    format!("History\n{t}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[(&str, &str)]) -> Labels {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_labels_cell_shows_whole_labels_and_counts_the_rest() {
        let long = "v".repeat(60);
        let cut = format!("a={}…,+1", "v".repeat(37));
        let cases: &[(Labels, &str)] = &[
            (labels(&[]), "-"),
            (
                labels(&[("pool", "training"), ("rack", "r12")]),
                "pool=training,rack=r12",
            ),
            (
                labels(&[
                    ("pool", "training"),
                    ("rack", "r12"),
                    ("team", "research-infra"),
                    ("zone", "eu-1"),
                ]),
                "pool=training,rack=r12,+2",
            ),
            (labels(&[("a", &long), ("b", "1")]), &cut),
        ];
        for (l, want) in cases {
            assert_eq!(labels_cell(l), *want, "{l:?}");
        }
    }

    #[test]
    fn tables_show_labels() {
        let n = NodeSummary {
            name: "n1".into(),
            labels: labels(&[("pool", "training")]),
            ..Default::default()
        };
        let table = nodes(std::slice::from_ref(&n), UnixMs(0));
        assert!(
            table.contains("LABELS") && table.contains("pool=training"),
            "{table}"
        );
        let detail = NodeDetail {
            summary: n,
            ..Default::default()
        };
        assert!(node(&detail, UnixMs(0)).contains("Labels pool=training\n"));
        let bare = NodeDetail::default();
        assert!(node(&bare, UnixMs(0)).contains("Labels none\n"));
    }
}
