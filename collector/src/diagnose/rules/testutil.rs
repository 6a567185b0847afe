//! Builders for rule tests: a healthy H100 node whose samples a case then bends.

use gpufleet_model::{GpuInfo, GpuSample, HostSample, Inventory, NodeIdentity, Sample, UnixMs};

use crate::fleet::NodeState;

pub fn gpu_info(index: u32) -> GpuInfo {
    GpuInfo {
        index,
        uuid: format!("GPU-{index}"),
        name: "NVIDIA H100 80GB HBM3".into(),
        vbios_version: "96.00.89.00.01".into(),
        pcie_link_gen_max: Some(5),
        pcie_link_width_max: Some(16),
        sm_clock_max_mhz: Some(1980),
        memory_clock_max_mhz: Some(2619),
        temperature_slowdown_celsius: Some(87),
        temperature_shutdown_celsius: Some(92),
        temperature_max_operating_celsius: Some(83),
        power_limit_default_milliwatts: Some(700_000),
        ..Default::default()
    }
}

pub fn healthy_gpu(index: u32) -> GpuSample {
    GpuSample {
        index,
        uuid: format!("GPU-{index}"),
        temperature_gpu_celsius: Some(65),
        power_usage_milliwatts: Some(550_000),
        power_limit_enforced_milliwatts: Some(700_000),
        utilization_gpu_percent: Some(98),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        clock_event_reasons: Some(0),
        pcie_link_gen: Some(5),
        pcie_link_width: Some(16),
        ..Default::default()
    }
}

pub fn healthy_host() -> HostSample {
    HostSample {
        cpu_percent: Some(25.0),
        memory_total_bytes: 2 << 40,
        memory_available_bytes: 1 << 40,
        memory_used_bytes: 1 << 40,
        ..Default::default()
    }
}

/// A connected node with `gpus` GPUs and `samples` healthy samples 1 s apart, ending at t=100 s;
/// `bend` edits each sample (given its index).
pub fn node(gpus: u32, samples: usize, bend: impl Fn(usize, &mut Sample)) -> NodeState {
    let mut n = NodeState {
        identity: NodeIdentity {
            hostname: "gpu-node-01".into(),
            ..Default::default()
        },
        inventory: Inventory {
            gpus: (0..gpus).map(gpu_info).collect(),
            ..Default::default()
        },
        connected: true,
        last_seen: UnixMs(100_000),
        ..Default::default()
    };
    n.inventory.driver.driver_version = "550.54.15".into();
    n.inventory.host.kernel_version = "5.15.0-105-generic".into();
    for i in 0..samples {
        let mut s = Sample {
            timestamp: UnixMs(100_000 - (samples - 1 - i) as i64 * 1000),
            gpus: (0..gpus).map(healthy_gpu).collect(),
            host: healthy_host(),
        };
        bend(i, &mut s);
        // As the fleet state adds samples, so rules see what they see in production.
        n.push_sample(s, usize::MAX);
    }
    n
}

pub const NOW: UnixMs = UnixMs(100_500);

/// A trigger for the catalog tests: an 8-GPU node of 40 samples (8 GPUs so that all triggers
/// together are a fleet with peers) named after its case.
pub fn trigger(name: &'static str, bend: impl Fn(usize, &mut Sample)) -> (&'static str, NodeState) {
    let mut n = node(8, 40, bend);
    n.identity.hostname = format!("trigger-{}", name.replace(' ', "-"));
    (name, n)
}

/// The fleet context of the catalog tests: the trigger nodes' majorities and peers, and a
/// compliance policy that only the `compliance` trigger (label `trigger=compliance`) breaks, in
/// every field.
pub fn trigger_context(nodes: &[&NodeState]) -> crate::diagnose::FleetContext {
    let mut text =
        String::from("[[rule]]\nname = \"trigger\"\nselector = \"trigger=compliance\"\n");
    for f in crate::compliance::fields::FIELDS {
        use crate::compliance::fields::Kind;
        let impossible = match f.kind {
            Kind::Version | Kind::Text => "\"0.0.0-none\"",
            Kind::Bool => "[]",
            Kind::Int => "0",
        };
        text += &format!("{} = {impossible}\n", f.name);
    }
    // An empty list is refused; booleans get the value the healthy trigger does not report.
    let text = text.replace("= []", "= false");
    let policy = crate::compliance::policy::Policy::parse(&text, "trigger policy")
        .expect("the trigger policy parses");
    let mut ctx = crate::diagnose::FleetContext::from_nodes(nodes);
    ctx.policy = Some(std::sync::Arc::new(policy));
    ctx
}
