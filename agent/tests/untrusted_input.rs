//! Property tests: scenario files and /proc text are input from outside; nothing in them may
//! make the agent panic — a bad file gets an error that names it.

use gpufleet_agent::sources::host::parse_proc_net_dev;
use gpufleet_sim::Scenario;
use proptest::prelude::*;

/// Fragments that make random text look like a scenario, so the parser gets past TOML syntax.
fn scenario_like() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "thermal_throttle",
        "pcie_downtrain",
        "xid",
        "clocks_locked",
        "nope",
    ]);
    (
        kinds,
        "[0-9]{1,3}",
        "[0-9a-z]{0,4}",
        prop::sample::select(vec!["gen", "xid", "width", "sm_clock_mhz", "memory_clock_mhz", "bogus"]),
        "-?[0-9]{1,6}",
    )
        .prop_map(|(kind, gpu, start, key, val)| {
            format!(
                "name = \"p\"\n[fleet]\nnodes = 2\n[[fault]]\nkind = \"{kind}\"\ngpu = {gpu}\nstart = \"{start}\"\n{key} = {val}\n"
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = Scenario::parse(&text, "fuzz");
    }

    #[test]
    fn scenario_like_text_parses_or_names_the_problem(text in scenario_like()) {
        if let Err(e) = Scenario::parse(&text, "fuzz.toml") {
            prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e);
        }
    }

    #[test]
    fn proc_net_dev_never_panics(text in "(.{0,60}\n){0,6}") {
        let _ = parse_proc_net_dev(&text);
    }

    #[test]
    fn procfs_texts_never_panic(text in "[0-9a-zA-Z ()_:\t\n-]{0,120}") {
        use gpufleet_agent::sources::os;
        let _ = os::parse_stat(&text);
        let _ = os::parse_file_nr(&text);
        let _ = os::parse_vmstat(&text);
        let _ = os::context_switches(&text);
        let _ = gpufleet_agent::sources::ethernet::parse_speed(&text);
    }
}

// --- the agent's config file --------------------------------------------------------------

/// Lines a `gpufleet-agent` config file holds: real keys with values of the right or the
/// wrong type, unknown keys, the labels table.
fn agent_config_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "node_name",
        "simulate",
        "model",
        "seed",
        "state_dir",
        "collector",
        "interval",
        "slow_interval",
        "inventory_interval",
        "buffer_samples",
        "spool_max_bytes",
        "saturation_hold",
        "metrics_listen",
        "log_format",
        "tls_ca",
        "token_file",
        "intervall",
    ]);
    let value = prop_oneof![
        "-?[0-9]{1,20}".prop_map(|v| v.to_string()),
        "[0-9]{1,4}(ms|s|m|h|d|x)?".prop_map(|d| format!("\"{d}\"")),
        prop::sample::select(vec![
            "\"json\"",
            "\"human\"",
            "\"off\"",
            "\"127.0.0.1:9400\"",
            "\"http://127.0.0.1:50051\"",
            "\"https://collector:50051\"",
            "\"ftp://x\"",
            "true",
            "[1, 2]",
            "\"\"",
        ])
        .prop_map(str::to_string),
    ];
    let line = prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[a-z0-9/._-]{0,12}( = \"[a-z0-9._-]{0,8}\")?".prop_map(|l| format!("[labels]\n{l}")),
        1 => ".{0,16}",
    ];
    prop::collection::vec(line, 0..6).prop_map(|l| l.join("\n"))
}

/// The file alone as the agent's config: an error names the file (and its line when TOML
/// knows it); an accepted config is checked and written back to the same config.
fn check_agent_config(text: &str) -> Result<(), TestCaseError> {
    use gpufleet_agent::config::AgentConfig;
    use gpufleet_model::config_file::ConfigFile;
    let parsed = ConfigFile::parse(text, "agent-fuzz.toml")
        .and_then(|f| f.layer::<AgentConfig>(Default::default()));
    match parsed {
        Ok(c) => {
            // Usable or not, `check` says which key.
            if let Err(e) = c.check() {
                prop_assert!(e.contains('`'), "{}", e);
            }
            let written = toml::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = ConfigFile::parse(&written, "written.toml")
                .and_then(|f| f.layer::<AgentConfig>(Default::default()));
            prop_assert_eq!(back.as_ref(), Ok(&c), "{}", written);
        }
        Err(e) => {
            prop_assert!(e.to_string().starts_with("config agent-fuzz.toml"), "{}", e);
            if let Some(line) = e.line {
                prop_assert!(line >= 1 && line <= text.split('\n').count(), "{}", e);
            }
        }
    }
    Ok(())
}

// --- the spool ----------------------------------------------------------------------------

/// One spool record, framed as the agent writes it (`length | crc32 | kind | payload`).
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Well-framed records of every kind with any numbers in them (and some unknown kinds and
/// payloads of the wrong size), as a damaged or hostile state dir may hold them.
fn spool_records() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let big = prop_oneof![
        0..10u64,
        Just(u64::MAX),
        Just(i64::MAX as u64),
        any::<u64>()
    ];
    let rec = prop_oneof![
        "[a-z0-9-]{0,12}".prop_map(|s| record(1, s.as_bytes())),
        (0..3usize).prop_map(|n| {
            use prost::Message as _;
            let b = gpufleet_proto::v1::Batch {
                samples: (0..n)
                    .map(|i| gpufleet_proto::v1::Sample {
                        timestamp_unix_ms: 1_000 + i as i64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            record(2, &b.encode_to_vec())
        }),
        (big.clone(), big.clone(), big.clone()).prop_map(|(a, b, c)| record(3, &u64s(&[a, b, c]))),
        big.clone().prop_map(|a| record(4, &u64s(&[a]))),
        (big.clone(), big.clone(), big).prop_map(|(a, b, c)| record(5, &u64s(&[a, b, c]))),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..30))
            .prop_map(|(k, p)| record(k, &p)),
    ];
    proptest::collection::vec(rec, 0..8)
}

/// Opens a spool whose only segment holds `bytes`: no panic, damage is reported when the
/// segment holds any, and the spool the agent leaves behind opens cleanly. `None`: the spool
/// was refused, with an error naming the segment.
fn open_segment(
    name: &str,
    bytes: &[u8],
) -> Result<Option<gpufleet_agent::spool::Recovered>, TestCaseError> {
    use gpufleet_agent::spool::{Spool, SpoolError};
    // On tmpfs where there is one: the spool fsyncs each new segment, slow on a disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(dir.path().join(name), bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (spool, recovered) = match Spool::open(dir.path(), 0, "new-session") {
        Ok(x) => x,
        Err(e @ SpoolError::Exhausted { .. }) => {
            prop_assert!(e.to_string().contains(name), "{}", e);
            return Ok(None);
        }
        Err(e) => return Err(TestCaseError::fail(e.to_string())),
    };
    drop(spool);
    let (_, again) = Spool::open(dir.path(), 0, "new-session")
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(again.damaged.is_empty(), "reopened: {:?}", again.damaged);
    prop_assert_eq!(
        &again.session_id,
        &Some(recovered.session_id.clone().unwrap_or("new-session".into()))
    );
    Ok(Some(recovered))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agent_config_text_parses_or_names_the_file_and_line(text in agent_config_like()) {
        check_agent_config(&text)?;
    }

    #[test]
    fn arbitrary_agent_config_text_never_panics(text in ".{0,200}") {
        check_agent_config(&text)?;
    }

    #[test]
    fn arbitrary_segment_bytes_are_reported_as_damage(
        bytes in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let rec = open_segment("00000000000000000001.seg", &bytes)?.expect("segment 1 opens");
        // Random bytes are not a record with a matching CRC.
        prop_assert!(!rec.damaged.is_empty());
        prop_assert!(rec.damaged.iter().all(|d| d.contains("00000000000000000001.seg")), "{:?}", rec.damaged);
    }

    #[test]
    fn well_framed_records_with_any_numbers_never_panic(
        records in spool_records(),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        index in prop_oneof![Just(1u64), Just(i64::MAX as u64), Just(u64::MAX)],
    ) {
        let boundaries: Vec<usize> = records
            .iter()
            .scan(0, |at, r| {
                *at += r.len();
                Some(*at)
            })
            .collect();
        let mut bytes: Vec<u8> = records.concat();
        if do_cut && !bytes.is_empty() {
            bytes.truncate(cut.index(bytes.len()));
        }
        let rec = open_segment(&format!("{index:020}.seg"), &bytes)?;
        // A segment numbered i64::MAX or more has no successor: the spool is refused.
        prop_assert_eq!(rec.is_none(), index >= i64::MAX as u64);
        if let Some(rec) = rec && !bytes.is_empty() && !boundaries.contains(&bytes.len()) {
            prop_assert!(!rec.damaged.is_empty(), "a record cut in two is damage");
        }
    }
}
