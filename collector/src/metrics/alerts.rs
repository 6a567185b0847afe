//! Alert delivery: notifications per sink and outcome, and what waits in the outbox. Counts
//! kept by the dispatcher (no store access at scrape time); every configured sink is present
//! at 0 from the start.

use std::sync::Arc;

use gpufleet_model::exposition::LabelSet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::alerting::Alerting;

pub struct AlertSeries(pub Arc<Alerting>);

impl std::fmt::Debug for AlertSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertSeries")
    }
}

impl Collector for AlertSeries {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = self.0.counters();
        let mut f = enc.encode_descriptor(
            "gpufleet_alert_deliveries",
            "Notifications per sink by outcome: delivered, failed (given up), silenced.",
            None,
            MetricType::Counter,
        )?;
        for (sink, outcome, n) in counters.deliveries() {
            f.encode_family(&LabelSet([("sink", sink.as_str()), ("outcome", outcome)]))?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let mut f = enc.encode_descriptor(
            "gpufleet_alert_outbox_pending",
            "Notifications queued or being tried in the durable outbox.",
            None,
            MetricType::Gauge,
        )?;
        f.encode_family(&LabelSet::<0>([]))?
            .encode_gauge(&(counters.outbox_pending() as i64))?;
        Ok(())
    }
}
