//! The agent's own `/metrics` (`--metrics-listen`, off by default), for teams that scrape
//! nodes directly: this node's GPUs under dcgm-exporter's names, its Xid counts, the uplink's
//! counters and the process's CPU and memory.
//!
//! The sampler thread hands every reading to [`NodeExposition::update`]; a scrape renders
//! that copy. Serving a scrape never calls NVML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use gpufleet_model::exposition::dcgm::{self, GpuView};
use gpufleet_model::exposition::{Format, process};
use gpufleet_model::{Event, Inventory, Sample};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::uplink::UplinkStats;

#[derive(Debug, Default)]
struct State {
    hostname: String,
    inventory: Inventory,
    sample: Option<Sample>,
    xid_events: BTreeMap<u32, u64>,
    last_xid: BTreeMap<u32, u32>,
}

/// What the last reading said, kept for scrapes.
#[derive(Debug, Default)]
pub struct NodeExposition {
    state: RwLock<State>,
    stats: RwLock<Option<Arc<UplinkStats>>>,
}

impl NodeExposition {
    pub fn new(hostname: &str, inventory: &Inventory) -> NodeExposition {
        NodeExposition {
            state: RwLock::new(State {
                hostname: hostname.to_string(),
                inventory: inventory.clone(),
                ..State::default()
            }),
            stats: RwLock::default(),
        }
    }

    /// The uplink whose counters to serve.
    pub fn set_uplink(&self, stats: Arc<UplinkStats>) {
        *self.stats.write().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// One tick's reading (and the inventory when it changed).
    pub fn update(&self, sample: &Sample, events: &[Event], inventory: Option<&Inventory>) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(inv) = inventory {
            s.inventory = inv.clone();
        }
        for e in events {
            if let (Some(xid), Some(gpu)) = (e.xid, e.gpu_index) {
                *s.xid_events.entry(gpu).or_default() += 1;
                s.last_xid.insert(gpu, xid);
            }
        }
        s.sample = Some(sample.clone());
    }

    pub fn render(self: &Arc<Self>, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Series {
            node: self.clone(),
            format,
        }));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!("rendering /metrics failed: {e}");
        }
        format.finish(out)
    }
}

#[derive(Debug)]
struct Series {
    node: Arc<NodeExposition>,
    format: Format,
}

impl Collector for Series {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let s = self.node.state.read().unwrap_or_else(|p| p.into_inner());
            let gpus: Vec<GpuView> = s
                .inventory
                .gpus
                .iter()
                .map(|info| GpuView {
                    hostname: &s.hostname,
                    info,
                    driver_version: &s.inventory.driver.driver_version,
                    sample: s.sample.as_ref().and_then(|x| x.gpu(info.index)),
                    last_xid: s.last_xid.get(&info.index).copied().unwrap_or(0),
                    xid_events: s.xid_events.get(&info.index).copied().unwrap_or(0),
                })
                .collect();
            dcgm::encode(&mut enc, &gpus, self.format)?;
        }
        let stats = self
            .node
            .stats
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stats = stats.unwrap_or_default();
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, v) in [
            (
                "gpufleet_agent_uplink_connects",
                "Streams opened to the collector.",
                stats.connects.load(Relaxed),
            ),
            (
                "gpufleet_agent_uplink_batches_sent",
                "Batches sent to the collector (resends included).",
                stats.batches_sent.load(Relaxed),
            ),
            (
                "gpufleet_agent_dropped_samples",
                "Samples dropped because the buffer for an unreachable collector was full.",
                stats.dropped_samples.load(Relaxed),
            ),
            (
                "gpufleet_agent_samples",
                "Samples taken since the agent started.",
                stats.samples.load(Relaxed),
            ),
            (
                "gpufleet_agent_spool_errors",
                "Spool writes that failed; the spool is off until the agent restarts.",
                stats.spool_errors.load(Relaxed),
            ),
        ] {
            enc.encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        for (name, help, v) in [
            (
                "gpufleet_agent_spool_bytes",
                "Bytes the on-disk spool holds (batches the collector has not acknowledged).",
                stats.spool_bytes.load(Relaxed) as i64,
            ),
            (
                "gpufleet_agent_buffered_samples",
                "Samples held for the collector, not yet acknowledged.",
                stats.buffered_samples.load(Relaxed) as i64,
            ),
            (
                "gpufleet_agent_spool_recovered_batches",
                "Batches read back from the spool when the agent started.",
                stats.spool_recovered_batches.load(Relaxed) as i64,
            ),
        ] {
            enc.encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&v)?;
        }
        process::encode(&mut enc)
    }
}

/// Binds `addr` and serves `GET /metrics` until the runtime ends.
pub async fn serve(addr: SocketAddr, node: Arc<NodeExposition>) -> anyhow::Result<SocketAddr> {
    use axum::http::header;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for /metrics on {addr}: {e} (another exporter on that port? pass \
             --metrics-listen ADDR, or leave it off)"
        )
    })?;
    let at = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let node = node.clone();
            async move {
                let format =
                    Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                (
                    [(header::CONTENT_TYPE, format.content_type())],
                    node.render(format),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the /metrics listener stopped: {e}");
        }
    });
    tracing::info!(addr = %at, "serving /metrics");
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{EventKind, GpuInfo, GpuSample, Severity, UnixMs};

    #[test]
    fn renders_the_last_reading_and_counts_xids() {
        let inv = Inventory {
            gpus: vec![GpuInfo {
                index: 0,
                uuid: "GPU-1".into(),
                name: "NVIDIA L40S".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let node = Arc::new(NodeExposition::new("n1", &inv));
        let before = node.render(Format::Prometheus);
        assert!(
            before.contains("gpufleet_gpu_xid_events_total{gpu=\"0\""),
            "{before}"
        );
        assert!(
            !before.contains("DCGM_FI_DEV_GPU_TEMP"),
            "no reading yet: {before}"
        );
        let sample = Sample {
            timestamp: UnixMs(1),
            gpus: vec![GpuSample {
                index: 0,
                uuid: "GPU-1".into(),
                temperature_gpu_celsius: Some(55),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut xid = Event::new(UnixMs(1), EventKind::Xid, Severity::Critical, "xid.13", "x")
            .on_gpu(0, "GPU-1");
        xid.xid = Some(13);
        node.update(&sample, &[xid], None);
        let text = node.render(Format::Prometheus);
        assert!(text.contains("Hostname=\"n1\""), "{text}");
        assert!(text.contains("DCGM_FI_DEV_GPU_TEMP{gpu=\"0\""), "{text}");
        assert!(text.contains("DCGM_FI_DRIVER_VERSION=\"\"} 13\n"), "{text}");
        assert!(
            text.contains("gpufleet_agent_dropped_samples_total 0\n"),
            "{text}"
        );
        assert!(node.render(Format::OpenMetrics).ends_with("# EOF\n"));
    }
}
