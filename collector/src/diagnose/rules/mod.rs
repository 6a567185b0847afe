//! The catalog of causes. Adding a cause is adding one file here and one line in [`all`].

mod gpu_lost;
mod host;
mod offline;
mod pcie;
mod power;
mod thermal;
mod version_drift;
mod xid;

#[cfg(test)]
pub(crate) mod testutil;

use super::Rule;

/// Every rule, in catalog order.
pub fn all() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(offline::AgentOffline),
        Box::new(gpu_lost::GpuLost),
        Box::new(xid::XidErrors),
        Box::new(thermal::ThermalSlowdown),
        Box::new(power::PowerLimited),
        Box::new(pcie::PcieDowntrained),
        Box::new(version_drift::VersionDrift),
        Box::new(host::HostSaturation),
    ]
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
