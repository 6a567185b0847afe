//! `gpufleet_auth_refusals_total{reason}`: requests and connections refused by the
//! authentication layer (docs/security.md), by reason.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Metrics;
use crate::auth::refusals::Reason;

type ReasonLabel = [(&'static str, &'static str); 1];

/// Cheap to clone: every clone counts into the same series.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    refusals: Family<ReasonLabel, Counter>,
}

impl AuthMetrics {
    pub fn refused(&self, why: Reason) {
        self.refusals
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    pub fn count(&self, why: Reason) -> u64 {
        self.refusals
            .get_or_create(&[("reason", why.as_str())])
            .get()
    }

    pub fn register(&self, metrics: &Metrics) {
        for r in Reason::ALL {
            // Present at 0 from the first scrape.
            let _ = self.refusals.get_or_create(&[("reason", r.as_str())]);
        }
        metrics.register(
            "gpufleet_auth_refusals",
            "Connections and requests refused for their credentials, by reason",
            self.refusals.clone(),
        );
    }
}
