//! Per node: how its CPUs and memory are set up — governors, frequencies, caps, transparent
//! hugepages, EDAC memory errors — the readings behind `host.cpu.*` and `host.memory.edac`.

use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let cfgs: Vec<(&str, &gpufleet_model::CpuConfigSample)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?.host.cpu_config.as_ref()?)))
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_cpu_governor_cpus",
        "CPUs on each cpufreq governor.",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &cfgs {
        for (g, n) in &c.governors {
            f.encode_family(&LabelSet([("Hostname", *node), ("governor", g.as_str())]))?
                .encode_gauge(&i64::from(*n))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_cpu_frequency_hertz",
        "CPU frequency: the mean now (`avg`), the hardware's highest (`max`), the lowest cap any CPU is held to (`scaling_max`).",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &cfgs {
        for (which, khz) in [
            ("avg", c.freq_avg_khz),
            ("max", c.freq_max_khz),
            ("scaling_max", c.scaling_max_khz),
        ] {
            if let Some(khz) = khz {
                f.encode_family(&LabelSet([("Hostname", *node), ("which", which)]))?
                    .encode_gauge(&((khz * 1000) as f64))?;
            }
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_cpu_capped_cpus",
        "CPUs whose scaling_max_freq is below their cpuinfo_max_freq.",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &cfgs {
        f.encode_family(&LabelSet([("Hostname", *node)]))?
            .encode_gauge(&i64::from(c.capped_cpus))?;
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_transparent_hugepages_info",
        "The transparent hugepages mode (always, madvise, never); always 1.",
        None,
        MetricType::Gauge,
    )?;
    for (node, c) in &cfgs {
        if !c.thp_enabled.is_empty() {
            f.encode_family(&LabelSet([
                ("Hostname", *node),
                ("enabled", c.thp_enabled.as_str()),
            ]))?
            .encode_gauge(&1i64)?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_memory_edac_errors",
        "Memory errors the host's EDAC memory controllers counted since boot, by type.",
        None,
        MetricType::Counter,
    )?;
    for (node, c) in &cfgs {
        for (kind, v) in [
            ("corrected", c.edac_corrected_errors),
            ("uncorrected", c.edac_uncorrected_errors),
        ] {
            if let Some(v) = v {
                f.encode_family(&LabelSet([("Hostname", *node), ("type", kind)]))?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
    }
    Ok(())
}
