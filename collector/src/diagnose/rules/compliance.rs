//! `compliance.<field>`: a node or GPU breaks a constraint of the compliance policy in force
//! (`gpufleet serve --policy`). One finding per broken constraint, with the policy rule, what
//! it allows and what the node reports; nothing without a policy (the fleet-majority
//! comparison is `drift.fleet.*`).

use gpufleet_model::{Evidence, Finding, Severity, UnixMs};

use super::raise;
use crate::compliance::audit::policy_violations;
use crate::diagnose::{Cause, FleetContext, Rule, RuleInfo};
use crate::fleet::NodeState;

pub struct Compliance;

const ACTION: &str = "Bring the node in line with the policy at its next drain (install the \
                      approved driver or firmware, or fix the mode), or change the policy if the \
                      fleet moved on deliberately; `gpufleet audit` lists every violation.";

/// One cause per policy field (`compliance::fields::FIELDS`, checked by a test).
macro_rules! causes {
    ($($field:literal => $title:literal),+ $(,)?) => {
        &[$(Cause {
            id: concat!("compliance.", $field),
            title: $title,
            severity: Severity::Warning,
            detects: concat!(
                "The node's `", $field,
                "` breaks a constraint of the compliance policy the collector runs with."
            ),
            action: ACTION,
        }),+]
    };
}

static INFO: RuleInfo = RuleInfo {
    id: "compliance",
    title: "Compliance policy",
    catalog: causes![
        "driver_version" => "Driver version not approved",
        "cuda_driver_version" => "CUDA driver version not approved",
        "kernel_version" => "Kernel not approved",
        "os_name" => "OS release not approved",
        "gpu_count" => "GPU count differs from the policy",
        "vbios_version" => "VBIOS not approved",
        "inforom_version" => "InfoROM not approved",
        "gsp_firmware_version" => "GSP firmware not approved",
        "ecc_enabled" => "ECC mode differs from the policy",
        "persistence_mode" => "Persistence mode differs from the policy",
        "mig_enabled" => "MIG mode differs from the policy",
        "compute_mode" => "Compute mode differs from the policy",
        "pcie_gen_max" => "PCIe generation differs from the policy",
        "pcie_width_max" => "PCIe width differs from the policy",
        "power_limit_watts" => "Power limit differs from the policy",
    ],
};

impl Rule for Compliance {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, node: &NodeState, fleet: &FleetContext, _now: UnixMs) -> Vec<Finding> {
        let Some(policy) = &fleet.policy else {
            return Vec::new();
        };
        let since = node.first_seen.max(node.inventory.read_at);
        let (_, violations) = policy_violations(node, policy);
        violations
            .into_iter()
            .filter_map(|v| {
                let cause = INFO
                    .catalog
                    .iter()
                    .find(|c| c.id.strip_prefix("compliance.") == Some(v.field.as_str()))?;
                let mut f = raise(self, cause, node, since);
                if let Some(i) = v.gpu_index {
                    f.gpu_index = Some(i);
                    f.gpu_uuid = node
                        .inventory
                        .gpu(i)
                        .map(|g| g.uuid.clone())
                        .unwrap_or_default();
                }
                f.summary = format!(
                    "{}{} is {}; policy rule {:?} allows {}",
                    v.gpu_index.map(|i| format!("GPU {i} ")).unwrap_or_default(),
                    v.field,
                    v.actual,
                    v.rule,
                    v.expected
                );
                f.evidence.push(Evidence::new(
                    &v.field,
                    &v.actual,
                    format!("{} ({} in {})", v.expected, v.rule, policy.origin),
                ));
                Some(f)
            })
            .collect()
    }
}

/// A node the trigger policy (`testutil::trigger_policy`) selects: it breaks every field.
#[cfg(test)]
pub(super) fn triggers() -> Vec<(&'static str, NodeState)> {
    let mut n = super::testutil::trigger("compliance", |_, _| {});
    n.1.labels = [("trigger".to_string(), "compliance".to_string())].into();
    vec![n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fields::FIELDS;
    use crate::compliance::policy::Policy;
    use crate::diagnose::rules::testutil::{NOW, node};

    #[test]
    fn one_cause_per_policy_field() {
        let ids: Vec<&str> = INFO.catalog.iter().map(|c| c.id).collect();
        let want: Vec<String> = FIELDS
            .iter()
            .map(|f| format!("compliance.{}", f.name))
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn findings_follow_the_policy_in_force() {
        let mut n = node(8, 3, |_, _| {});
        n.inventory.gpus[5].vbios_version = "96.00.A5.00.01".into();
        let policy = Policy::parse(
            "[[rule]]\nname = \"std\"\ndriver_version = \">=550, <560\"\nvbios_version = \"96.00.89.00.01\"\n",
            "p.toml",
        )
        .unwrap();
        let mut ctx = FleetContext::from_nodes(&[&n]);
        assert!(Compliance.check(&n, &ctx, NOW).is_empty(), "no policy, no finding");
        ctx.policy = Some(std::sync::Arc::new(policy));
        let got = Compliance.check(&n, &ctx, NOW);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].rule_id.as_str(), got[0].gpu_index),
            ("compliance.vbios_version", Some(5))
        );
        assert_eq!(
            got[0].summary,
            "GPU 5 vbios_version is 96.00.A5.00.01; policy rule \"std\" allows 96.00.89.00.01"
        );
        n.inventory.driver.driver_version = "570.86.10".into();
        assert_eq!(Compliance.check(&n, &ctx, NOW).len(), 2);
    }
}
