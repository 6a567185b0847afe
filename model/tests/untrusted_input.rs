//! Property tests: nothing that comes from outside — wire bytes, kernel log lines, PCI
//! addresses, labels and selectors, `Accept` headers, config file text — can make the parsers
//! or the wire boundary panic; what is refused says why, what is accepted round-trips.

use gpufleet_model::Selector;
use gpufleet_model::config_file::ConfigFile;
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::exposition::Format;
use gpufleet_model::labels::{LabelError, check_key, check_value, format_labels, parse_labels};
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
    fn kernel_error_lines_never_panic(
        prefix in prop::sample::select(vec![
            "nvidia-nvswitch", "nvidia 0000:18:00.0: PCIe Bus Error: severity=", "I/O error, dev ",
            "critical medium error, dev ", "EXT4-fs ", "XFS ", "nvme nvme", "NETDEV WATCHDOG: ",
            "INFO: task ", "",
        ]),
        rest in ".{0,80}",
    ) {
        let line = format!("{prefix}{rest}");
        if let Some(k) = gpufleet_model::kernel_log::classify(&line) {
            // Whatever is classified becomes an event without panicking.
            let _ = k.event(gpufleet_model::UnixMs(0), "kmsg");
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

/// A label name: mostly valid, sometimes not (empty, too long, bad characters or ends).
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?",
        1 => "[a-zA-Z0-9._ /=!()-]{0,6}",
        1 => "[a-z]{64,70}",
        1 => Just(String::new()),
    ]
}

fn key_like() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z0-9]{1,6}(\\.[a-z0-9]{1,4})?|[A-Z_.]{0,4}"),
        name_like(),
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        })
}

/// Text shaped like a selector: requirements joined by commas, now and then broken.
fn selector_like() -> impl Strategy<Value = String> {
    let requirement = (
        key_like(),
        name_like(),
        prop::collection::vec(name_like(), 0..3),
        0..8u8,
    )
        .prop_map(|(k, v, set, op)| match op {
            0 => format!("{k}={v}"),
            1 => format!("{k}=={v}"),
            2 => format!("{k}!={v}"),
            3 => format!("{k} in ({})", set.join(",")),
            4 => format!("{k} notin ({})", set.join(",")),
            5 => format!("!{k}"),
            6 => format!("{k} in {}", set.join(",")),
            _ => k,
        });
    prop::collection::vec(requirement, 0..4).prop_map(|r| r.join(","))
}

/// Labels as a Hello may carry them: keys and values that are usually valid.
fn labels_like() -> impl Strategy<Value = std::collections::HashMap<String, String>> {
    prop::collection::hash_map(key_like(), name_like(), 0..6)
}

/// A Hello as a peer may send it: every part present, values anything.
fn hello_like() -> impl Strategy<Value = pb::Hello> {
    (
        any::<u32>(),
        "[a-z0-9.-]{0,12}|.{0,300}",
        ".{0,140}",
        "[0-9a-f-]{0,40}|.{0,140}",
        labels_like(),
        any::<bool>(),
    )
        .prop_map(
            |(protocol_version, hostname, agent_version, session_id, labels, inventory)| {
                pb::Hello {
                    protocol_version,
                    node: Some(pb::NodeIdentity {
                        hostname,
                        ..Default::default()
                    }),
                    agent_version,
                    session_id,
                    inventory: inventory.then(Default::default),
                    gpu_source: "simulated".into(),
                    labels,
                }
            },
        )
}

/// TOML-shaped text: keys and values of the kinds config files hold, some of them wrong.
fn toml_like() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "-?[0-9]{1,20}",
        "\"[a-z0-9 .:/_-]{0,12}\"",
        Just("true".to_string()),
        "[0-9]{1,3}(ms|s|m|h|d|x)".prop_map(|d| format!("\"{d}\"")),
        "\\[[0-9, \"a-z]{0,12}\\]",
        "[a-z\"=\\[\\]]{0,4}",
    ];
    let line = prop_oneof![
        3 => ("[a-z_]{1,12}", value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\[[a-z_.]{0,12}\\]",
        1 => "#.{0,10}",
        1 => ".{0,12}",
    ];
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_selector_text_is_refused_saying_why_or_parsed(text in ".{0,80}") {
        match Selector::parse(&text) {
            Ok(s) => prop_assert_eq!(Selector::parse(&s.to_string()), Ok(s)),
            Err(e) => prop_assert!(matches!(e, LabelError::Selector { .. }), "{e}"),
        }
    }

    #[test]
    fn selectors_print_as_text_that_parses_back(text in selector_like()) {
        match Selector::parse(&text) {
            Ok(s) => {
                let printed = s.to_string();
                prop_assert_eq!(Selector::parse(&printed), Ok(s), "{:?} printed as {:?}", text, printed);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with(&format!("selector {text:?}: ")), "{}", msg);
            }
        }
    }

    #[test]
    fn labels_round_trip_through_their_text_form(labels in labels_like()) {
        let items: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let valid = labels.len() <= gpufleet_model::labels::MAX_LABELS
            && labels.iter().all(|(k, v)| check_key(k).is_ok() && check_value(k, v).is_ok());
        let parsed = parse_labels(items.iter().map(String::as_str));
        if valid {
            let want: gpufleet_model::Labels = labels.into_iter().collect();
            prop_assert_eq!(parsed.as_ref(), Ok(&want));
        }
        if let Ok(parsed) = parsed {
            let text = format_labels(&parsed);
            prop_assert_eq!(parse_labels([text.as_str()]), Ok(parsed));
        }
    }

    #[test]
    fn arbitrary_label_text_never_panics(text in ".{0,80}") {
        if let Ok(l) = parse_labels([text.as_str()]) {
            prop_assert_eq!(parse_labels([format_labels(&l).as_str()]), Ok(l));
        }
    }

    #[test]
    fn accept_headers_pick_openmetrics_only_when_asked(
        accept in prop::option::of(".{0,80}|(application/openmetrics-text|text/plain|\\*/\\*)(;[a-z]=[0-9.]{1,4}){0,2}(, ?[a-z/*-]{1,20}){0,2}"),
    ) {
        let f = Format::from_accept(accept.as_deref());
        let asked = accept.as_deref().is_some_and(|a| a.contains("application/openmetrics-text"));
        prop_assert_eq!(f == Format::OpenMetrics, asked);
        prop_assert!(f.content_type().ends_with("charset=utf-8"));
    }

    #[test]
    fn agent_messages_from_arbitrary_bytes_are_refused_or_round_trip(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Ok(m) = pb::AgentMessage::decode(bytes.as_slice()) {
            check_agent_message(m)?;
        }
    }

    #[test]
    fn hellos_are_accepted_or_refused_naming_the_part(hello in hello_like()) {
        let has_inventory = hello.inventory.is_some();
        match Hello::try_from(hello.clone()) {
            Ok(h) => {
                prop_assert!(has_inventory);
                let wire = pb::Hello::from(h);
                prop_assert!(Hello::try_from(wire).is_ok());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    msg.contains("hello.") || msg.contains("hostname") || msg.contains("inventory"),
                    "{}", msg
                );
            }
        }
        // The same Hello as a peer sends it: wrapped and encoded.
        let m = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Hello(hello)) };
        check_agent_message(pb::AgentMessage::decode(m.encode_to_vec().as_slice()).unwrap())?;
    }

    #[test]
    fn config_text_parses_or_names_a_line_that_exists(text in toml_like()) {
        config_text_check(&text)?;
    }

    #[test]
    fn arbitrary_config_text_parses_or_names_a_line_that_exists(text in ".{0,200}") {
        config_text_check(&text)?;
    }
}

/// A decoded message's Hello or Batch is refused, or accepted and the same after a round trip
/// (compared as their Debug text: domain maps are sorted, and a NaN reading equals itself).
fn check_agent_message(m: pb::AgentMessage) -> Result<(), TestCaseError> {
    let fail = |e: gpufleet_model::convert::ConvertError| TestCaseError::fail(e.to_string());
    match m.msg {
        Some(pb::agent_message::Msg::Hello(h)) => {
            if let Ok(h) = Hello::try_from(h) {
                let again = Hello::try_from(pb::Hello::from(h.clone())).map_err(fail)?;
                prop_assert_eq!(format!("{again:?}"), format!("{h:?}"));
            }
        }
        Some(pb::agent_message::Msg::Batch(b)) => {
            if let Ok(b) = Batch::try_from(b) {
                let again = Batch::try_from(pb::Batch::from(b.clone())).map_err(fail)?;
                prop_assert_eq!(format!("{again:?}"), format!("{b:?}"));
            }
        }
        None => {}
    }
    Ok(())
}

/// Parsing config text as TOML: an error names the file and a line of it.
fn config_text_check(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = ConfigFile::parse(text, "fuzz.toml") {
        prop_assert_eq!(&e.origin, "fuzz.toml");
        prop_assert!(!e.message.is_empty());
        if let Some(line) = e.line {
            prop_assert!(
                line >= 1 && line <= text.split('\n').count(),
                "line {} of {:?}: {}",
                line,
                text,
                e
            );
        }
    }
    Ok(())
}
