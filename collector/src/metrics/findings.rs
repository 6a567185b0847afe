//! Findings firing in the latest evaluation: a count per catalogued cause and severity (every
//! cause present at 0), and one series per firing finding.

use std::collections::HashMap;

use gpufleet_model::Severity;
use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::diagnose::Evaluation;

const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

/// Every cause id of every registered rule, in catalog order.
pub fn catalog_causes() -> Vec<&'static str> {
    crate::diagnose::rules::all()
        .iter()
        .flat_map(|r| r.catalog().iter().map(|c| c.id))
        .collect()
}

pub fn encode(
    enc: &mut DescriptorEncoder,
    causes: &[&'static str],
    eval: &Evaluation,
) -> Result<(), std::fmt::Error> {
    let mut counts: HashMap<(&str, Severity), i64> = HashMap::new();
    for f in &eval.firing {
        *counts.entry((f.rule_id.as_str(), f.severity)).or_default() += 1;
    }
    let mut family = enc.encode_descriptor(
        "gpufleet_findings_firing",
        "Findings firing now, by cause and severity (every catalogued cause, 0 when none).",
        None,
        MetricType::Gauge,
    )?;
    for cause in causes {
        for sev in SEVERITIES {
            let n = counts.remove(&(*cause, sev)).unwrap_or(0);
            let sev = sev.to_string();
            family
                .encode_family(&LabelSet([("cause", cause), ("severity", &sev)]))?
                .encode_gauge(&n)?;
        }
    }
    // A cause outside the catalog would be a bug in a rule; count it rather than hide it.
    for ((cause, sev), n) in counts {
        let sev = sev.to_string();
        family
            .encode_family(&LabelSet([("cause", cause), ("severity", &sev)]))?
            .encode_gauge(&n)?;
    }

    let mut family = enc.encode_descriptor(
        "gpufleet_finding_firing",
        "One series per firing finding (always 1; gpu is empty for a node-wide finding).",
        None,
        MetricType::Gauge,
    )?;
    for f in &eval.firing {
        let gpu = f.gpu_index.map(|i| i.to_string()).unwrap_or_default();
        let sev = f.severity.to_string();
        family
            .encode_family(&LabelSet([
                ("Hostname", &f.node),
                ("gpu", &gpu),
                ("cause", &f.rule_id),
                ("severity", &sev),
            ]))?
            .encode_gauge(&1i64)?;
    }
    Ok(())
}
