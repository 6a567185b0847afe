//! `gpufleet audit` and `gpufleet versions` output: a table, CSV rows (the same rows JSON
//! carries, flattened: one per violation, one for a node without any) and JUnit XML (one
//! testcase per node, one failure per violation, so CI tools gate on it).

use std::io::Cursor;

use anyhow::{Context, Result};
use gpufleet_model::UnixMs;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::render::table;
use crate::compliance::audit::{Audit, NodeAudit, Status};
use crate::compliance::versions::VersionMatrix;

/// `audit -o`: the formats it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditOutput {
    Table,
    Json,
    Csv,
    Junit,
}

/// The columns of one CSV row.
pub const CSV_HEADER: [&str; 8] = [
    "node", "status", "labels", "field", "gpu", "expected", "actual", "rule",
];

fn labels_of(n: &NodeAudit) -> String {
    gpufleet_model::labels::format_labels(&n.labels)
}

/// The flat rows of an audit (what CSV prints): one per violation, one (with empty violation
/// columns) for a node without any.
pub fn rows(a: &Audit) -> Vec<[String; 8]> {
    let mut out = Vec::new();
    for n in &a.nodes {
        let base = |field: &str, gpu: String, expected: &str, actual: &str, rule: &str| {
            [
                n.node.clone(),
                n.status.as_str().to_string(),
                labels_of(n),
                field.to_string(),
                gpu,
                expected.to_string(),
                actual.to_string(),
                rule.to_string(),
            ]
        };
        if n.violations.is_empty() {
            out.push(base("", String::new(), "", "", ""));
        }
        for v in &n.violations {
            out.push(base(
                &v.field,
                v.gpu_index.map(|g| g.to_string()).unwrap_or_default(),
                &v.expected,
                &v.actual,
                &v.rule,
            ));
        }
    }
    out
}

pub fn csv(a: &Audit) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in rows(a) {
        w.write_record(&r)?;
    }
    let bytes = w.into_inner().context("writing CSV")?;
    Ok(String::from_utf8(bytes)?)
}

/// One line: `12 nodes: 9 compliant, 2 violating, 1 stale, 0 never reported (policy …)`.
pub fn summary_line(a: &Audit) -> String {
    let s = &a.summary;
    format!(
        "{} node(s): {} compliant, {} violating, {} stale, {} never reported ({})",
        s.nodes, s.compliant, s.violating, s.stale, s.never_reported, a.policy
    )
}

/// The audit as a table: a row per violation, one for a stale or never-reporting node, and,
/// with `all`, one per compliant node (without it they are counted under the table: on a
/// large fleet the nodes to act on would drown among them).
pub fn table_of(a: &Audit, now: UnixMs, all: bool) -> String {
    let hidden = if all {
        0
    } else {
        a.nodes
            .iter()
            .filter(|n| n.status == Status::Compliant)
            .count()
    };
    let footer = match hidden {
        0 => String::new(),
        n => format!(
            "{n} compliant node{} not listed (`--all` lists them)\n",
            if n == 1 { "" } else { "s" }
        ),
    };
    if hidden == a.nodes.len() {
        return format!("{footer}{}\n", summary_line(a));
    }
    let mut t = table();
    t.set_header(vec![
        "NODE", "STATUS", "LABELS", "FIELD", "GPU", "EXPECTED", "ACTUAL", "RULE",
    ]);
    for n in a
        .nodes
        .iter()
        .filter(|n| all || n.status != Status::Compliant)
    {
        let status = match n.status {
            Status::Stale => format!("stale (last seen {})", ago(now, n.last_seen)),
            s => s.as_str().to_string(),
        };
        if n.violations.is_empty() {
            t.add_row(vec![n.node.clone(), status, labels_of(n)]);
            continue;
        }
        for (i, v) in n.violations.iter().enumerate() {
            let (node, status, labels) = if i == 0 {
                (n.node.clone(), status.clone(), labels_of(n))
            } else {
                Default::default()
            };
            t.add_row(vec![
                node,
                status,
                labels,
                v.field.clone(),
                v.gpu_index.map(|g| g.to_string()).unwrap_or("-".into()),
                v.expected.clone(),
                v.actual.clone(),
                v.rule.clone(),
            ]);
        }
    }
    format!("{t}\n{footer}{}\n", summary_line(a))
}

fn ago(now: UnixMs, then: UnixMs) -> String {
    if then.0 == 0 {
        return "never".into();
    }
    let s = (now.0 - then.0).max(0) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string() + " ago"
}

/// JUnit XML: one `<testsuite>` for the audit, one `<testcase>` per node (classname = its GPU
/// model), a `<failure>` per violation, and one for a stale or never-reporting node.
pub fn junit(a: &Audit) -> Result<String> {
    let failing_cases = a
        .nodes
        .iter()
        .filter(|n| n.status != Status::Compliant)
        .count();
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut suites = BytesStart::new("testsuites");
    suites.push_attribute(("name", "gpufleet audit"));
    suites.push_attribute(("tests", a.nodes.len().to_string().as_str()));
    suites.push_attribute(("failures", failing_cases.to_string().as_str()));
    suites.push_attribute(("errors", "0"));
    suites.push_attribute(("time", "0"));
    w.write_event(Event::Start(suites))?;
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", a.policy.as_str()));
    suite.push_attribute(("tests", a.nodes.len().to_string().as_str()));
    suite.push_attribute(("failures", failing_cases.to_string().as_str()));
    suite.push_attribute(("errors", "0"));
    suite.push_attribute(("skipped", "0"));
    suite.push_attribute(("time", "0"));
    suite.push_attribute(("timestamp", rfc3339(a.evaluated_at).as_str()));
    suite.push_attribute(("hostname", "gpufleet"));
    w.write_event(Event::Start(suite))?;
    for n in &a.nodes {
        let mut case = BytesStart::new("testcase");
        case.push_attribute(("name", n.node.as_str()));
        let class = format!(
            "gpufleet.audit.{}",
            n.gpu_models.first().map_or("no-gpus", String::as_str)
        );
        case.push_attribute(("classname", class.as_str()));
        case.push_attribute(("time", "0"));
        if n.violations.is_empty() && n.status == Status::Compliant {
            w.write_event(Event::Empty(case))?;
            continue;
        }
        w.write_event(Event::Start(case))?;
        let mut fail = |kind: &str, message: String, detail: String| -> Result<()> {
            let mut f = BytesStart::new("failure");
            f.push_attribute(("type", kind));
            f.push_attribute(("message", message.as_str()));
            w.write_event(Event::Start(f))?;
            w.write_event(Event::Text(BytesText::new(&detail)))?;
            w.write_event(Event::End(BytesEnd::new("failure")))?;
            Ok(())
        };
        match n.status {
            Status::Stale => fail(
                "stale",
                format!("{} stopped reporting", n.node),
                format!(
                    "last seen {}; its inventory may be out of date",
                    rfc3339(n.last_seen)
                ),
            )?,
            Status::NeverReported => fail(
                "never_reported",
                format!("{} never reported an inventory", n.node),
                "the collector knows the node but has no inventory from it".into(),
            )?,
            _ => {}
        }
        for v in &n.violations {
            let gpu = v.gpu_index.map(|g| format!("GPU {g} ")).unwrap_or_default();
            fail(
                &v.field,
                format!("{gpu}{} is {}, expected {}", v.field, v.actual, v.expected),
                format!("rule: {}", v.rule),
            )?;
        }
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut out = String::from_utf8(w.into_inner().into_inner())?;
    out.push('\n');
    Ok(out)
}

fn rfc3339(t: UnixMs) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.0.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn versions_table(m: &VersionMatrix) -> String {
    let mut t = table();
    t.set_header(vec![
        "GPU MODEL",
        m.field.to_uppercase().as_str(),
        "NODES",
        "GPUS",
        "SHARE",
    ]);
    for r in &m.rows {
        let model_nodes: u32 = m
            .rows
            .iter()
            .filter(|x| x.gpu_model == r.gpu_model)
            .map(|x| x.nodes)
            .sum();
        let share = if model_nodes == 0 {
            0.0
        } else {
            100.0 * f64::from(r.nodes) / f64::from(model_nodes)
        };
        t.add_row(vec![
            if r.gpu_model.is_empty() {
                "(no GPUs)".into()
            } else {
                r.gpu_model.clone()
            },
            r.value.clone(),
            r.nodes.to_string(),
            r.gpus.to_string(),
            format!("{share:.0}%"),
        ]);
    }
    format!("{t}\n{} node(s)\n", m.nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::audit::{AuditSummary, NodeAudit, Violation};

    fn node(name: &str, status: Status) -> NodeAudit {
        NodeAudit {
            node: name.into(),
            status,
            labels: Default::default(),
            gpu_models: vec!["NVIDIA H100 80GB HBM3".into()],
            last_seen: UnixMs(1_000),
            rules: vec![],
            violations: match status {
                Status::Violating => vec![Violation {
                    field: "driver_version".into(),
                    gpu_index: None,
                    expected: "550.54.15".into(),
                    actual: "535.161.08".into(),
                    rule: "fleet majority".into(),
                }],
                _ => vec![],
            },
        }
    }

    fn audit(nodes: Vec<NodeAudit>) -> Audit {
        let count = |s| nodes.iter().filter(|n| n.status == s).count() as u32;
        Audit {
            policy: "fleet majority per GPU model".into(),
            evaluated_at: UnixMs(2_000),
            summary: AuditSummary {
                nodes: nodes.len() as u32,
                compliant: count(Status::Compliant),
                violating: count(Status::Violating),
                stale: count(Status::Stale),
                never_reported: count(Status::NeverReported),
            },
            nodes,
        }
    }

    #[test]
    fn the_table_lists_what_to_act_on_and_counts_the_compliant() {
        let a = audit(vec![
            node("ok-1", Status::Compliant),
            node("bad", Status::Violating),
            node("ok-2", Status::Compliant),
            node("quiet", Status::Stale),
        ]);
        let t = table_of(&a, UnixMs(61_000), false);
        assert!(t.contains("bad") && t.contains("535.161.08"), "{t}");
        assert!(t.contains("stale (last seen 1m ago)"), "{t}");
        assert!(!t.contains("ok-1") && !t.contains("ok-2"), "{t}");
        assert!(
            t.contains("2 compliant nodes not listed (`--all` lists them)"),
            "{t}"
        );
        assert!(t.ends_with(&format!("{}\n", summary_line(&a))));

        let all = table_of(&a, UnixMs(61_000), true);
        assert!(all.contains("ok-1") && all.contains("ok-2"), "{all}");
        assert!(!all.contains("not listed"));

        let fine = audit(vec![node("ok-1", Status::Compliant)]);
        let t = table_of(&fine, UnixMs(61_000), false);
        assert_eq!(
            t,
            format!(
                "1 compliant node not listed (`--all` lists them)\n{}\n",
                summary_line(&fine)
            )
        );
    }
}
