//! Property tests: nothing that comes from outside — wire bytes, kernel log lines, PCI
//! addresses — can make the parsers or the wire boundary panic.

use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::xid::{normalize_pci, parse_kernel_line};
use gpufleet_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn kernel_lines_never_panic(line in ".{0,200}") {
        let _ = parse_kernel_line(&line);
    }

    #[test]
    fn xid_like_lines_never_panic(
        addr in "[0-9a-fA-FxX:.]{0,20}",
        code in "[0-9]{0,12}",
        rest in ".{0,40}",
    ) {
        let line = format!("NVRM: Xid (PCI:{addr}): {code}, {rest}");
        if let Some(k) = parse_kernel_line(&line) {
            // Whatever is accepted is normalised to NVML's form.
            prop_assert_eq!(k.pci_bus_id.len(), 16);
        }
    }

    #[test]
    fn pci_addresses_never_panic(addr in ".{0,30}") {
        let _ = normalize_pci(&addr);
    }

    #[test]
    fn random_bytes_on_the_wire_are_refused_or_converted(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(b) = pb::Batch::decode(bytes.as_slice()) {
            let _ = Batch::try_from(b);
        }
        if let Ok(h) = pb::Hello::decode(bytes.as_slice()) {
            let _ = Hello::try_from(h);
        }
        if let Ok(m) = pb::AgentMessage::decode(bytes.as_slice()) {
            let _ = m.msg;
        }
    }
}
