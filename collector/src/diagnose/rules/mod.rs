//! The catalog of causes. A rule is one file here — its [`Cause`] entries and `RuleInfo`, a
//! pure `check`, its table tests and `triggers()`, nodes that fire each of its causes — plus
//! one line in the `rules!` list below, which declares the module and registers the rule in
//! [`all`] and in the catalog tests, in catalog order. `docs/causes.md` is generated from the
//! catalogs (see [`causes_markdown`]).
//!
//! Rules stay cheap: the engine runs every rule over every node (~1,000 nodes × 8 GPUs × 300
//! samples). A rule looks at the latest sample first and walks the history only while its
//! condition holds ([`window::sustained`] and its per-GPU and node-level forms) or a counter
//! moved ([`window::growth`]), once per GPU, without allocating per sample.

mod window;

#[cfg(test)]
pub(crate) mod testutil;

use std::fmt::Write as _;

use gpufleet_model::{Finding, UnixMs};

use super::{Cause, Rule, finding};
use crate::fleet::NodeState;

/// Declares each rule's module and registers the rule, in catalog order, in [`all`] and in the
/// catalog tests' fleet of triggers (so a rule without `triggers()` does not compile).
macro_rules! rules {
    ($($module:ident::$rule:ident),+ $(,)?) => {
        $(mod $module;)+

        /// Every rule, in catalog order.
        pub fn all() -> Vec<Box<dyn Rule>> {
            vec![$(Box::new($module::$rule)),+]
        }

        /// Every rule with its trigger nodes, in catalog order.
        #[cfg(test)]
        fn triggers_by_rule() -> Vec<(Box<dyn Rule>, Vec<(&'static str, NodeState)>)> {
            vec![$((Box::new($module::$rule) as Box<dyn Rule>, $module::triggers())),+]
        }
    };
}

rules! {
    offline::AgentOffline,
    gpu_lost::GpuLost,
    xid::XidErrors,
    thermal::ThermalSlowdown,
    power::PowerLimited,
    clocks::ClocksHeldDown,
    straggler::Straggler,
    pcie::PcieDowntrained,
    pcie_replays::PcieReplays,
    pcie_host::PcieHost,
    ecc::EccErrors,
    row_remap::RowRemap,
    nvlink::NvLink,
    fan::FanFailure,
    memory::MemoryExhausted,
    hung::GpuHung,
    idle::IdleWithProcess,
    tensor_idle::TensorCoresIdle,
    persistence::PersistenceOff,
    driver_stack::DriverStack,
    version_drift::VersionDrift,
    node_drift::NodeDrift,
    host::HostSaturation,
    nic_errors::NicErrors,
    ethernet::Ethernet,
    infiniband::InfiniBand,
    cpu_config::CpuConfig,
    storage::Storage,
    swap::Swapping,
    os::OsHealth,
    kernel_log::KernelLog,
    compliance::Compliance,
}

/// Starts a finding for one catalog entry: its id, title, usual severity and action (a rule
/// may sharpen the severity or action for the case at hand).
pub(crate) fn raise(rule: &dyn Rule, cause: &Cause, node: &NodeState, since: UnixMs) -> Finding {
    let mut f = finding(rule, node, cause.severity, since);
    f.rule_id = cause.id.to_string();
    f.title = cause.title.to_string();
    f.action = cause.action.to_string();
    f
}

/// [`raise`] for a finding about one GPU.
pub(crate) fn raise_on_gpu(
    rule: &dyn Rule,
    cause: &Cause,
    node: &NodeState,
    gpu: &gpufleet_model::GpuSample,
    since: UnixMs,
) -> Finding {
    let mut f = raise(rule, cause, node, since);
    f.gpu_index = Some(gpu.index);
    f.gpu_uuid = gpu.uuid.clone();
    f
}

/// `docs/causes.md`: every rule's catalog as Markdown.
pub fn causes_markdown(rules: &[Box<dyn Rule>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "# Causes\n\n\
         > Generated from the rules' catalogs (the `Cause` entries in \
         `collector/src/diagnose/rules/`) by the test `causes_doc_is_current`, which fails when \
         this file is stale. Do not edit it by hand; regenerate it with\n\
         > `UPDATE_DOCS=1 cargo test -p gpufleet-collector --lib causes_doc_is_current`.\n\n\
         Every finding gpufleet reports names one of these causes by its id. A scenario's \
         `[[expect]]` `cause` matches ids by prefix (`gpu.thermal` matches \
         `gpu.thermal.hw_slowdown`). Severity is the usual one; some findings escalate (for \
         example retired pages at the replacement limit are critical). Conditions must hold \
         for several consecutive samples before a rule reports them, and the engine adds its \
         own pending → firing → resolved lifecycle on top.\n\n\
         **Fleet-wide.** When one cause holds on at least half of the nodes of a group (and on \
         at least 3 nodes) — a group is the nodes of one GPU model, or of one value of a \
         grouping label such as `rack` — it is also named once for the group, with the same id, \
         `node` set to its scope (`fleet:gpu_model=NVIDIA H100 80GB HBM3`, `fleet:rack=r12`), \
         the affected nodes and GPUs as evidence, and ranked first. The per-node findings stay, \
         each marked `folded_into` that scope: `gpufleet diagnose` counts them under it, \
         `gpufleet diagnose NODE` lists them, and alerting tells only the fleet-wide one. Larger \
         groups are judged first, so a power cap on every GPU of a model is one finding, not one \
         per rack (`collector/src/diagnose/fleet_scope.rs`).\n",
    );
    let total: usize = rules.iter().map(|r| r.catalog().len()).sum();
    let _ = writeln!(out, "\n{} causes from {} rules.\n", total, rules.len());
    for r in rules {
        let _ = writeln!(out, "## {} (`{}`)\n", r.title(), r.id());
        out.push_str("| id | title | severity | detects | action |\n");
        out.push_str("|---|---|---|---|---|\n");
        for c in r.catalog() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                c.id,
                cell(c.title),
                c.severity,
                cell(c.detects),
                cell(c.action)
            );
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::testutil::{NOW, trigger};
    use super::*;

    /// A healthy node and every rule's triggers: together one fleet of 8-GPU nodes, so the
    /// fleet rules have peers and a majority.
    fn triggers() -> Vec<(&'static str, NodeState)> {
        let mut out = vec![trigger("healthy", |_, _| {})];
        out.extend(triggers_by_rule().into_iter().flat_map(|(_, t)| t));
        out
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut ids: Vec<&str> = all().iter().map(|r| r.id()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn catalogs_are_complete_and_ids_unique() {
        let mut seen = BTreeSet::new();
        for r in all() {
            assert!(!r.catalog().is_empty(), "{} has an empty catalog", r.id());
            for c in r.catalog() {
                assert!(seen.insert(c.id), "cause {} is listed twice", c.id);
                assert!(
                    c.id.split('.').count() >= 2
                        && c.id
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch == '.' || ch == '_'),
                    "{}: ids are dotted lowercase",
                    c.id
                );
                assert!(!c.title.is_empty(), "{}", c.id);
                for text in [c.detects, c.action] {
                    assert!(
                        text.len() > 20 && text.ends_with('.') && !text.contains("  "),
                        "{}: {text:?}",
                        c.id
                    );
                }
            }
        }
    }

    /// Every cause can fire, and every finding names a cause of its own rule's catalog; the
    /// healthy node stays silent; no two findings of one node share an identity.
    #[test]
    fn triggers_cover_every_cause() {
        let nodes = triggers();
        let refs: Vec<&NodeState> = nodes.iter().map(|(_, n)| n).collect();
        let ctx = testutil::trigger_context(&refs);
        let rules = all();
        let mut fired: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, node) in &nodes {
            let mut keys = BTreeSet::new();
            for r in &rules {
                for f in r.check(node, &ctx, NOW) {
                    assert!(
                        r.catalog().iter().any(|c| c.id == f.rule_id),
                        "{name}: {} emitted {}, which is not in its catalog",
                        r.id(),
                        f.rule_id
                    );
                    assert!(
                        keys.insert((f.rule_id.clone(), f.gpu_index)),
                        "{name}: two findings {} on GPU {:?}",
                        f.rule_id,
                        f.gpu_index
                    );
                    assert!(!f.summary.is_empty() && !f.action.is_empty(), "{name}");
                    assert!(
                        !f.evidence.is_empty(),
                        "{name}: {} has no evidence",
                        f.rule_id
                    );
                    assert_eq!(f.node, node.name());
                    let id = rules
                        .iter()
                        .flat_map(|r| r.catalog())
                        .find(|c| c.id == f.rule_id)
                        .map(|c| c.id)
                        .unwrap_or("?");
                    fired.entry(id).or_default().push(name);
                }
            }
            if *name == "healthy" {
                assert!(keys.is_empty(), "the healthy node fired {keys:?}");
            }
        }
        let missing: Vec<&str> = rules
            .iter()
            .flat_map(|r| r.catalog())
            .map(|c| c.id)
            .filter(|id| !fired.contains_key(id))
            .collect();
        assert!(missing.is_empty(), "no trigger fires {missing:?}");
    }

    /// A rule's own triggers fire every cause of its catalog (in the fleet of all triggers), so
    /// each trigger sits beside the rule it is for.
    #[test]
    fn each_rules_triggers_fire_its_causes() {
        let nodes = triggers();
        let refs: Vec<&NodeState> = nodes.iter().map(|(_, n)| n).collect();
        let ctx = testutil::trigger_context(&refs);
        for (rule, own) in triggers_by_rule() {
            let fired: BTreeSet<String> = own
                .iter()
                .flat_map(|(_, n)| rule.check(n, &ctx, NOW))
                .map(|f| f.rule_id)
                .collect();
            for c in rule.catalog() {
                assert!(
                    fired.contains(c.id),
                    "{}: its triggers do not fire {}",
                    rule.id(),
                    c.id
                );
            }
        }
    }

    #[test]
    fn causes_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/causes.md");
        let want = causes_markdown(&all());
        if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &want).expect("writing docs/causes.md");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/causes.md is out of date with the rules' catalogs; regenerate it with\n  \
             UPDATE_DOCS=1 cargo test -p gpufleet-collector --lib causes_doc_is_current"
        );
    }
}
