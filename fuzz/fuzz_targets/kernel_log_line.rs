//! Kernel log text: a `/dev/kmsg` record and the NVRM Xid / fallen-off-the-bus line in it.
#![no_main]

use gpufleet_agent::sources::nvml::kmsg::parse_record;
use gpufleet_model::xid::{normalize_pci, parse_kernel_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = parse_record(text) {
        let _ = parse_kernel_line(&r.message);
    }
    if let Some(k) = parse_kernel_line(text) {
        // What is accepted is in NVML's form, and normalising it again changes nothing.
        assert_eq!(k.pci_bus_id.len(), 16, "{:?}", k.pci_bus_id);
        assert_eq!(
            normalize_pci(&k.pci_bus_id).as_deref(),
            Some(k.pci_bus_id.as_str())
        );
    }
});
