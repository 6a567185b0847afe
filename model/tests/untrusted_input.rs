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
    fn converted_samples_hold_only_possible_readings(
        clock in any::<u32>(), temp in any::<i32>(), util in any::<u32>(),
        counter in any::<u64>(), load in any::<f64>(), cpu in any::<f32>(),
    ) {
        let mut s: pb::Sample = gpufleet_model::Sample {
            timestamp: gpufleet_model::UnixMs(1),
            ..Default::default()
        }
        .into();
        s.gpus.push(pb::GpuSample {
            sm_clock_mhz: Some(clock),
            temperature_gpu_celsius: Some(temp),
            utilization_gpu_percent: Some(util),
            pcie_replay_count: Some(counter),
            ..Default::default()
        });
        let h = s.host.get_or_insert_with(Default::default);
        h.load_average_1m = Some(load);
        h.cpu_percent = Some(cpu);
        let got = gpufleet_model::Sample::try_from(s).expect("one GPU, sane sizes");
        let g = &got.gpus[0];
        prop_assert!(g.sm_clock_mhz.is_none_or(|c| c <= 20_000));
        prop_assert!(g.temperature_gpu_celsius.is_none_or(|t| (-60..=200).contains(&t)));
        prop_assert!(g.utilization_gpu_percent.is_none_or(|u| u <= 100));
        prop_assert!(g.pcie_replay_count.is_none_or(|c| c < u64::MAX));
        prop_assert!(got.host.load_average_1m.is_none_or(|l| l.is_finite() && l >= 0.0));
        prop_assert!(got.host.cpu_percent.is_none_or(|c| c.is_finite() && (0.0..=100.0).contains(&c)));
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
