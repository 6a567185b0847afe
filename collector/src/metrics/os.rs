//! Per node: the operating system's own health — file handles, paging, OOM kills, processes
//! blocked in uninterruptible sleep — the readings behind `host.os.*`,
//! `host.memory.oom_kills` and `host.memory.swap_thrashing`.

use gpufleet_model::OsSample;
use gpufleet_model::exposition::LabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::fleet::NodeState;

pub fn encode(enc: &mut DescriptorEncoder, nodes: &[&NodeState]) -> Result<(), std::fmt::Error> {
    let oses: Vec<(&str, &OsSample)> = nodes
        .iter()
        .filter_map(|n| Some((n.name(), n.latest()?.host.os.as_ref()?)))
        .collect();

    let mut f = enc.encode_descriptor(
        "gpufleet_kernel_log_events",
        "Hardware and driver errors from the node's kernel log since the collector started, by type (sxid, pcie_aer, storage, nic_tx_timeout, hung_task).",
        None,
        MetricType::Counter,
    )?;
    for n in nodes {
        for (kind, v) in &n.kernel_events {
            f.encode_family(&LabelSet([("Hostname", n.name()), ("type", kind.as_str())]))?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_file_handles",
        "File handles the kernel has allocated (`allocated`) and its limit, fs.file-max (`max`).",
        None,
        MetricType::Gauge,
    )?;
    for (node, o) in &oses {
        for (which, v) in [("allocated", o.file_handles), ("max", o.file_handles_max)] {
            if let Some(v) = v {
                f.encode_family(&LabelSet([("Hostname", *node), ("which", which)]))?
                    .encode_gauge(&(v as f64))?;
            }
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_swap_pages",
        "Pages swapped in and out since boot (/proc/vmstat pswpin, pswpout).",
        None,
        MetricType::Counter,
    )?;
    for (node, o) in &oses {
        for (dir, v) in [("in", o.pages_swapped_in), ("out", o.pages_swapped_out)] {
            if let Some(v) = v {
                f.encode_family(&LabelSet([("Hostname", *node), ("direction", dir)]))?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_oom_kills",
        "Processes the kernel's OOM killer ended since boot (/proc/vmstat oom_kill).",
        None,
        MetricType::Counter,
    )?;
    for (node, o) in &oses {
        if let Some(v) = o.oom_kills {
            f.encode_family(&LabelSet([("Hostname", *node)]))?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_processes_uninterruptible",
        "Processes in uninterruptible sleep (state D) at the agent's last process scan.",
        None,
        MetricType::Gauge,
    )?;
    for (node, o) in &oses {
        if let Some(v) = o.uninterruptible {
            f.encode_family(&LabelSet([("Hostname", *node)]))?
                .encode_gauge(&i64::from(v))?;
        }
    }

    let mut f = enc.encode_descriptor(
        "gpufleet_processes_blocked_seconds_max",
        "How long the longest-blocked process has been in state D without being scheduled (0: none).",
        None,
        MetricType::Gauge,
    )?;
    for (node, o) in &oses {
        if o.uninterruptible.is_some() {
            let longest = o.stuck.iter().map(|p| p.blocked_seconds).max().unwrap_or(0);
            f.encode_family(&LabelSet([("Hostname", *node)]))?
                .encode_gauge(&(longest as f64))?;
        }
    }
    Ok(())
}
