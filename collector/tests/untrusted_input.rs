//! Property tests: what reaches the collector from outside — its config file and `[alerts]`
//! table, compliance policies (a file, or an Audit request's text), the fields of query
//! requests, and sample chunks read back from its database — never makes it panic. What is
//! refused says where and why; what is accepted round-trips.

use gpufleet_collector::alerting::config::AlertsConfig;
use gpufleet_collector::compliance::{fields, policy::Policy};
use gpufleet_collector::config::CollectorConfig;
use gpufleet_collector::query::parse_selector;
use gpufleet_collector::store::chunk;
use gpufleet_model::config_file::ConfigFile;
use gpufleet_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

/// `key = value` lines under the tables a file has, with real keys, wrong ones and junk.
fn toml_lines(
    tables: Vec<&'static str>,
    keys: Vec<&'static str>,
    values: Vec<&'static str>,
) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        4 => (prop::sample::select(keys), prop_oneof![
            3 => prop::sample::select(values).prop_map(str::to_string),
            1 => "-?[0-9]{1,20}",
            1 => "\"[a-z0-9 .:/*=,!<>()-]{0,16}\"",
        ]).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(tables).prop_map(str::to_string),
        1 => ".{0,16}",
    ];
    prop::collection::vec(line, 0..10).prop_map(|l| l.join("\n"))
}

fn collector_config_like() -> impl Strategy<Value = String> {
    toml_lines(
        vec![
            "[alerts]",
            "[alerts.delivery]",
            "[alerts.sinks.a]",
            "[[alerts.routes]]",
            "[nope]",
        ],
        vec![
            "listen",
            "data_dir",
            "sample_interval",
            "window_samples",
            "retention",
            "policy",
            "metrics_listen",
            "log_format",
            "fleet_min_share",
            "fleet_min_nodes",
            "fleet_group_labels",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "auth_tokens",
            "insecure",
            "webhooks",
            "external_url",
            "type",
            "url",
            "sinks",
            "severity",
            "cause",
            "labels",
            "timeout",
            "initial_backoff",
            "max_backoff",
            "retantion",
        ],
        vec![
            "\"0.0.0.0:50051\"",
            "\"127.0.0.1:9400\"",
            "\"off\"",
            "\"json\"",
            "\"7d\"",
            "\"1s\"",
            "\"0s\"",
            "\"/var/lib/gpufleet\"",
            "0.5",
            "1.5",
            "-0.1",
            "nan",
            "true",
            "[\"rack\"]",
            "[\"https://hooks.example.com/x\"]",
            "[\"not a url\"]",
            "\"webhook\"",
            "\"slack\"",
            "\"https://hooks.example.com/x\"",
            "[\"a\"]",
            "[\"b\"]",
            "[\"critical\"]",
            "[\"loud\"]",
            "\"pool=training,rack!=r13\"",
            "\"rack in (\"",
        ],
    )
}

fn policy_like() -> impl Strategy<Value = String> {
    toml_lines(
        vec!["[[rule]]", "[[rule]]", "[rule]", "[other]"],
        vec![
            "name",
            "gpu_model",
            "selector",
            "driver_version",
            "cuda_driver_version",
            "kernel_version",
            "os_name",
            "gpu_count",
            "vbios_version",
            "ecc_enabled",
            "power_limit_watts",
            "pcie_gen_max",
            "compute_mode",
            "driver",
            "bogus_field",
        ],
        vec![
            "\"h100\"",
            "\"NVIDIA H100*\"",
            "[\"NVIDIA A100*\", \"*\"]",
            "\"\"",
            "\"pool=training\"",
            "\"rack in (r1,\"",
            "\">=550.54.15, <560\"",
            "\">=12.4\"",
            "\"<= >=\"",
            "\">= 8\"",
            "\">=-1\"",
            "\"550.54.15\"",
            "[\"96.00.89.00.01\", \"96.00.99.00.01\"]",
            "[]",
            "true",
            "8",
            "-3",
            "9223372036854775807",
            "\"Default\"",
        ],
    )
}

fn check_collector_config(text: &str) -> Result<(), TestCaseError> {
    let parsed = ConfigFile::parse(text, "collector-fuzz.toml")
        .and_then(|f| f.layer::<CollectorConfig>(Default::default()));
    match parsed {
        Ok(c) => {
            let _ = c.check();
            let _ = c.server_config();
        }
        Err(e) => {
            prop_assert!(
                e.to_string().starts_with("config collector-fuzz.toml"),
                "{}",
                e
            );
            if let Some(line) = e.line {
                prop_assert!(line >= 1 && line <= text.split('\n').count(), "{}", e);
            }
        }
    }
    if let Err(e) = AlertsConfig::parse_file_text(text, "collector-fuzz.toml") {
        prop_assert!(e.to_string().starts_with("collector-fuzz.toml:"), "{}", e);
    }
    Ok(())
}

fn check_policy(text: &str) -> Result<(), TestCaseError> {
    match Policy::parse(text, "policy-fuzz.toml") {
        Ok(p) => {
            prop_assert!(!p.rules.is_empty());
            for r in &p.rules {
                prop_assert!(
                    !r.constraints.is_empty(),
                    "rule {} constrains nothing",
                    r.name
                );
            }
        }
        Err(e) => {
            prop_assert!(
                e.to_string().starts_with("policy policy-fuzz.toml"),
                "{}",
                e
            );
            if let Some(line) = e.line {
                prop_assert!(line >= 1 && line <= text.split('\n').count(), "{}", e);
            }
        }
    }
    Ok(())
}

// --- samples for the chunk -----------------------------------------------------------------

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..1000u64,
        Just(u64::MAX),
        Just(i64::MAX as u64 + 1),
        any::<u64>()
    ]
}

fn gpu_sample() -> impl Strategy<Value = pb::GpuSample> {
    (
        (0..4u32, "GPU-[0-9a-f]{0,4}", 0..5i32),
        (
            prop::option::of(any::<i32>()),
            prop::option::of(any::<u32>()),
            prop::option::of(extreme_u64()),
            prop::option::of(any::<bool>()),
            prop::option::of(any::<u32>()),
        ),
        prop::collection::vec(
            (
                0..20u32,
                prop::option::of(any::<bool>()),
                prop::option::of(extreme_u64()),
            ),
            0..3,
        ),
    )
        .prop_map(
            |((index, uuid, status), (temp, power, energy, pending, sm), links)| pb::GpuSample {
                index,
                uuid,
                status,
                temperature_gpu_celsius: temp,
                power_usage_milliwatts: power,
                total_energy_millijoules: energy,
                remapped_rows_pending: pending,
                sm_clock_mhz: sm,
                gpm_sm_active_percent: sm.map(f32::from_bits).filter(|_| index % 2 == 0),
                nvlinks: links
                    .into_iter()
                    .map(|(link, active, replay)| pb::NvLinkSample {
                        link,
                        active,
                        replay_errors: replay,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        )
}

fn host_sample() -> impl Strategy<Value = pb::HostSample> {
    (
        prop::option::of(any::<f32>()),
        prop::collection::vec(any::<f32>(), 0..4),
        prop::option::of(any::<f64>()),
        extreme_u64(),
        prop::collection::vec(("[a-z/]{0,4}", extreme_u64()), 0..2),
        prop::collection::vec(
            (
                "[a-z0-9]{0,4}",
                extreme_u64(),
                prop::option::of(extreme_u64()),
            ),
            0..2,
        ),
    )
        .prop_map(|(cpu, cores, load, mem, disks, nics)| pb::HostSample {
            cpu_percent: cpu,
            cpu_per_core_percent: cores,
            load_average_1m: load,
            memory_used_bytes: mem,
            disks: disks
                .into_iter()
                .map(|(mount_point, total_bytes)| pb::DiskSample {
                    mount_point,
                    total_bytes,
                    ..Default::default()
                })
                .collect(),
            nics: nics
                .into_iter()
                .map(|(name, rx, err)| pb::NicSample {
                    name,
                    rx_bytes_per_second: rx,
                    rx_errors: err,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
}

fn sample() -> impl Strategy<Value = pb::Sample> {
    (
        prop_oneof![any::<i64>(), 1_700_000_000_000..1_700_000_100_000i64],
        prop::collection::vec(gpu_sample(), 0..3),
        prop::option::of(host_sample()),
    )
        .prop_map(|(timestamp_unix_ms, gpus, host)| pb::Sample {
            timestamp_unix_ms,
            gpus,
            host,
        })
}

/// Samples compared as their bytes on the wire (NaN is not equal to itself; its bits are).
fn wire(samples: &[pb::Sample]) -> Vec<Vec<u8>> {
    samples.iter().map(Message::encode_to_vec).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn collector_config_text_parses_or_names_the_file_and_line(text in collector_config_like()) {
        check_collector_config(&text)?;
    }

    #[test]
    fn arbitrary_collector_config_text_never_panics(text in ".{0,200}") {
        check_collector_config(&text)?;
    }

    #[test]
    fn policy_text_parses_or_names_the_file_and_line(text in policy_like()) {
        check_policy(&text)?;
    }

    #[test]
    fn arbitrary_policy_text_never_panics(text in ".{0,200}") {
        check_policy(&text)?;
    }

    #[test]
    fn query_requests_from_arbitrary_bytes_are_checked_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let invalid = |r: Result<gpufleet_model::Selector, tonic::Status>| match r {
            Ok(_) => Ok(()),
            Err(s) => {
                prop_assert_eq!(s.code(), tonic::Code::InvalidArgument);
                prop_assert!(s.message().contains("selector"), "{}", s.message());
                Ok(())
            }
        };
        if let Ok(r) = pb::ListNodesRequest::decode(bytes.as_slice()) {
            invalid(parse_selector(&r.selector))?;
        }
        if let Ok(r) = pb::VersionsRequest::decode(bytes.as_slice()) {
            invalid(parse_selector(&r.selector))?;
            let _ = fields::field(&r.field);
        }
        if let Ok(r) = pb::ChangesRequest::decode(bytes.as_slice()) {
            invalid(parse_selector(&r.selector))?;
        }
        if let Ok(r) = pb::AuditRequest::decode(bytes.as_slice()) {
            invalid(parse_selector(&r.selector))?;
            check_policy(&r.policy_toml)?;
        }
        let _ = pb::AddSilenceRequest::decode(bytes.as_slice());
        let _ = pb::RemoveSilenceRequest::decode(bytes.as_slice());
        let _ = pb::TestAlertSinkRequest::decode(bytes.as_slice());
        let _ = pb::RemoveNodeRequest::decode(bytes.as_slice());
        if let Ok(r) = pb::SeriesRequest::decode(bytes.as_slice()) {
            let _ = gpufleet_collector::series::lookup(&r.series);
            let until = r.until_unix_ms.unwrap_or(r.since_unix_ms.saturating_add(1));
            if let Ok(step) = gpufleet_collector::series::plan(r.since_unix_ms, until, r.step_ms) {
                prop_assert!(step > 0);
                prop_assert!(until.saturating_sub(r.since_unix_ms) / step <= gpufleet_collector::series::MAX_POINTS);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_a_chunk(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(chunk::decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_compressed_bytes_are_refused_or_round_trip(
        raw in proptest::collection::vec(any::<u8>(), 0..256),
        version in any::<bool>(),
    ) {
        // Past zstd: the chunk's own format is what is damaged.
        let mut raw = raw;
        if version {
            raw.insert(0, 1);
        }
        let blob = zstd::bulk::compress(&raw, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(samples) = chunk::decode(&blob) {
            let again = chunk::decode(&chunk::encode(samples.clone())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(wire(&again), wire(&samples));
        }
    }

    #[test]
    fn samples_come_back_from_a_chunk_bit_for_bit(samples in prop::collection::vec(sample(), 0..6)) {
        let blob = chunk::encode(samples.clone());
        let back = chunk::decode(&blob).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(wire(&back), wire(&samples));
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics(
        samples in prop::collection::vec(sample(), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut blob = chunk::encode(samples);
        let i = at.index(blob.len());
        if cut {
            blob.truncate(i);
        } else {
            blob[i] ^= byte | 1;
        }
        let _ = chunk::decode(&blob);
    }
}
