//! Nodes per compliance status: against the policy in force (`serve --policy`), else against
//! the fleet majority per GPU model, as `gpufleet audit` judges them.

use gpufleet_model::exposition::LabelSet;
use gpufleet_model::{Selector, UnixMs};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::compliance::audit::{self, Against, AuditSummary, DEFAULT_STALE_AFTER, Status};
use crate::compliance::policy::Policy;
use crate::fleet::NodeState;

/// The audit's counts (it needs the nodes' full state: taken under the fleet's lock).
pub fn summary(nodes: &[&NodeState], policy: Option<&Policy>, now: UnixMs) -> AuditSummary {
    let against = policy.map_or(Against::FleetMajority, Against::Policy);
    audit::audit(
        nodes,
        against,
        &Selector::default(),
        now,
        DEFAULT_STALE_AFTER,
    )
    .summary
}

pub fn encode(enc: &mut DescriptorEncoder, s: &AuditSummary) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(
        "gpufleet_compliance_nodes",
        "Nodes by compliance status (against the policy in force, else the fleet majority).",
        None,
        MetricType::Gauge,
    )?;
    for (status, n) in [
        (Status::Compliant, s.compliant),
        (Status::Violating, s.violating),
        (Status::Stale, s.stale),
        (Status::NeverReported, s.never_reported),
    ] {
        family
            .encode_family(&LabelSet([("status", status.as_str())]))?
            .encode_gauge(&i64::from(n))?;
    }
    Ok(())
}
