//! Who this node is: hostname (or `--node-name`), machine id and boot id.

use gpufleet_model::NodeIdentity;

pub fn local(node_name: Option<&str>) -> NodeIdentity {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let hostname = node_name
        .map(str::to_string)
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    NodeIdentity {
        hostname,
        machine_id: read("/etc/machine-id"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
    }
}
