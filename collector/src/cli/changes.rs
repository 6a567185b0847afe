//! Human output for `gpufleet changes`, `gpufleet history NODE` and the changes section of
//! `gpufleet node NAME`.

use gpufleet_model::UnixMs;

use super::render::table;
use crate::compliance::changes::{Change, Source};

/// Which columns a change table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Many nodes: a NODE column.
    Fleet,
    /// One node (`history`): no NODE column.
    Node,
}

/// What a change came from, for the SOURCE column.
fn source(s: Source) -> &'static str {
    match s {
        Source::Inventory => "inventory",
        Source::Agent => "agent drift",
    }
}

/// Changes as a table, oldest first; `since` names the window in the empty message.
pub fn table_of(changes: &[Change], scope: Scope, since: Option<UnixMs>) -> String {
    if changes.is_empty() {
        return match since {
            Some(t) => format!("No version or mode changed since {t}.\n"),
            None => "No version or mode changed in the stored history.\n".to_string(),
        };
    }
    let mut t = table();
    let mut header = vec!["WHEN"];
    if scope == Scope::Fleet {
        header.push("NODE");
    }
    header.extend(["GPU", "FIELD", "OLD", "NEW", "SOURCE"]);
    t.set_header(header);
    for c in changes {
        let mut row = vec![c.at.to_string()];
        if scope == Scope::Fleet {
            row.push(c.node.clone());
        }
        row.extend([
            c.gpu.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            c.field.clone(),
            c.old.clone(),
            c.new.clone(),
            source(c.source).to_string(),
        ]);
        t.add_row(row);
    }
    let nodes: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.node.as_str()).collect();
    format!(
        "{t}\n{} change{} on {} node{}\n",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
    )
}

/// One line per change for `gpufleet node NAME`, newest first.
pub fn lines(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes.iter().rev() {
        let gpu = c.gpu.map(|g| format!(" GPU {g}")).unwrap_or_default();
        out += &format!("  {}{gpu} {}: {} → {}", c.at, c.field, c.old, c.new);
        if c.source == Source::Agent {
            out += " (agent drift)";
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(node: &str, gpu: Option<u32>, source: Source) -> Change {
        Change {
            node: node.into(),
            at: UnixMs(1_764_680_000_000),
            field: "driver_version".into(),
            gpu,
            old: "550.54.15".into(),
            new: "570.86.15".into(),
            source,
        }
    }

    #[test]
    fn tables_show_old_and_new_and_count_nodes() {
        let cs = [
            change("n1", None, Source::Inventory),
            change("n2", Some(3), Source::Agent),
        ];
        let fleet = table_of(&cs, Scope::Fleet, None);
        assert!(fleet.contains("NODE") && fleet.contains("n2"), "{fleet}");
        assert!(fleet.contains("550.54.15") && fleet.contains("570.86.15"));
        assert!(fleet.contains("agent drift"));
        assert!(fleet.ends_with("2 changes on 2 nodes\n"), "{fleet}");
        let node = table_of(&cs[..1], Scope::Node, None);
        assert!(!node.contains("NODE"), "{node}");
        assert!(node.ends_with("1 change on 1 node\n"));
        assert!(table_of(&[], Scope::Fleet, Some(UnixMs(0))).starts_with("No version"));
        let l = lines(&cs);
        assert!(
            l.starts_with("  ")
                && l.contains("GPU 3 driver_version: 550.54.15 → 570.86.15 (agent drift)"),
            "{l}"
        );
    }
}
