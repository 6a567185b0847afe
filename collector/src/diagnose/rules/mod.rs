//! The catalog of causes. Adding a cause is adding one file here (its [`Cause`] entries, a pure
//! `check` and its table tests) and one line in [`all`].
//!
//! Rules stay cheap: the engine runs every rule over every node (~1,000 nodes × 8 GPUs × 300
//! samples). A rule looks at the latest sample first and walks the history only while its
//! condition holds (`held`) or a counter moved ([`window::growth`]), once per GPU, without
//! allocating per sample.

mod clocks;
mod ecc;
mod fan;
mod gpu_lost;
mod host;
mod hung;
mod idle;
mod memory;
mod nic_errors;
mod node_drift;
mod nvlink;
mod offline;
mod pcie;
mod pcie_replays;
mod persistence;
mod power;
mod row_remap;
mod straggler;
mod swap;
mod thermal;
mod version_drift;
mod window;
mod xid;

#[cfg(test)]
pub(crate) mod testutil;

use gpufleet_model::{Finding, UnixMs};

use super::{Cause, Rule, finding};
use crate::fleet::NodeState;

/// Every rule, in catalog order.
pub fn all() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(offline::AgentOffline),
        Box::new(gpu_lost::GpuLost),
        Box::new(xid::XidErrors),
        Box::new(thermal::ThermalSlowdown),
        Box::new(power::PowerLimited),
        Box::new(clocks::ClocksHeldDown),
        Box::new(straggler::Straggler),
        Box::new(pcie::PcieDowntrained),
        Box::new(pcie_replays::PcieReplays),
        Box::new(ecc::EccErrors),
        Box::new(row_remap::RowRemap),
        Box::new(nvlink::NvLink),
        Box::new(fan::FanFailure),
        Box::new(memory::MemoryExhausted),
        Box::new(hung::GpuHung),
        Box::new(idle::IdleWithProcess),
        Box::new(persistence::PersistenceOff),
        Box::new(version_drift::VersionDrift),
        Box::new(node_drift::NodeDrift),
        Box::new(host::HostSaturation),
        Box::new(nic_errors::NicErrors),
        Box::new(swap::Swapping),
    ]
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

#[cfg(test)]
mod tests {
    #[test]
    fn rule_ids_are_unique() {
        let mut ids: Vec<&str> = super::all().iter().map(|r| r.id()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
