//! `NvmlSource` against the fake NVML library (`tests/fake-nvml`) and the fixtures in
//! `tests/fixtures/nvml/`: what it reads, what it leaves absent, how it survives a lost GPU,
//! which events it reports, and that it only ever calls read-only NVML functions.
//!
//! The fake reads its fixture and call log from environment variables when NVML is
//! initialised, so these tests take turns (`serial`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gpufleet_agent::sources::cadence::{Cadence, DEFAULT_SLOW_INTERVAL};
use gpufleet_agent::sources::nvml::NvmlSource;
use gpufleet_agent::sources::nvml::kmsg::KmsgReader;
use gpufleet_agent::sources::{GpuSource, SourceError};
use gpufleet_model::{EventKind, GpuStatus, Severity, UnixMs};
use gpufleet_tests::{fake_nvml_lib as fake_lib, nvml_fixture as fixture};

/// Holds the lock that makes fake-NVML tests take turns (its environment is process-wide).
struct Fake {
    _turn: MutexGuard<'static, ()>,
}

/// Points the fake at `fixture` (and `call_log`, if given) for the next `NvmlSource::open`.
fn fake(fixture: &Path, call_log: Option<&Path>) -> Fake {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: tests that touch these variables hold `TURN`, and nothing else in this process
    // reads them.
    unsafe {
        std::env::set_var("FAKE_NVML_FIXTURE", fixture);
        match call_log {
            Some(p) => std::env::set_var("FAKE_NVML_CALL_LOG", p),
            None => std::env::remove_var("FAKE_NVML_CALL_LOG"),
        }
    }
    Fake { _turn: turn }
}

/// An `NvmlSource` on the fake library, without the host's kernel log.
fn open() -> NvmlSource {
    NvmlSource::open(Some(fake_lib()))
        .expect("NvmlSource opens the fake library")
        .with_kmsg(None)
}

const NOW: UnixMs = UnixMs(1_795_975_097_000);

/// An `NvmlSource` that reads every field at every sample (slow fields included), for tests
/// of what a read answers rather than of when it is read.
fn open_reading_all() -> NvmlSource {
    let mut src = open();
    src.set_cadence(Cadence {
        slow_interval: Duration::ZERO,
    });
    src
}

#[test]
fn h100_node_reads_every_field() {
    let _f = fake(&fixture("h100-8gpu.json"), None);
    let mut src = open();
    assert_eq!(src.kind(), "nvml");

    let inv = src.inventory(NOW).unwrap();
    assert_eq!(inv.driver.driver_version, "550.54.15");
    assert_eq!(inv.driver.nvml_version, "12.550.54.15");
    assert_eq!(inv.driver.cuda_driver_version, "12.4");
    assert_eq!(inv.gpus.len(), 8);
    for (i, g) in inv.gpus.iter().enumerate() {
        assert_eq!(g.index, i as u32);
        assert_eq!(
            g.uuid,
            format!("GPU-9b2e4c1a-55d3-4f0e-8a7b-00000000000{i}")
        );
        assert_eq!(g.serial, format!("165422005{i:04}"));
        assert_eq!(g.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.architecture, "Hopper");
        assert_eq!(g.memory_total_bytes, Some(85_520_809_984));
        assert_eq!(g.bar1_total_bytes, Some(137_438_953_472));
        assert_eq!(g.vbios_version, "96.00.74.00.09");
        assert_eq!(g.inforom_image_version, "G520.0200.00.05");
        assert_eq!(g.gsp_firmware_version, "550.163.01");
        assert_eq!(g.persistence_mode, Some(true));
        assert_eq!(g.compute_mode, "Default");
        assert_eq!(g.mig_enabled, Some(false));
        assert_eq!(g.ecc_enabled, Some(true));
        assert_eq!(
            (g.pcie_link_gen_max, g.pcie_link_width_max),
            (Some(5), Some(16))
        );
        assert_eq!(g.sm_clock_max_mhz, Some(1980));
        assert_eq!(g.memory_clock_max_mhz, Some(2619));
        assert_eq!(g.graphics_clock_max_mhz, Some(1980));
        assert_eq!(g.power_limit_default_milliwatts, Some(700_000));
        assert_eq!(g.power_limit_min_milliwatts, Some(200_000));
        assert_eq!(g.power_limit_max_milliwatts, Some(700_000));
        assert_eq!(g.temperature_slowdown_celsius, Some(89));
        assert_eq!(g.temperature_shutdown_celsius, Some(95));
        assert_eq!(g.temperature_max_operating_celsius, Some(87));
        assert_eq!(g.memory_temperature_max_operating_celsius, Some(95));
        assert_eq!(g.cuda_compute_capability, "9.0");
        assert_eq!(g.nvlink_count, 18);
        assert_eq!(g.fan_count, Some(0));
        assert_eq!(g.board_part_number, "692-2G520-0200-000");
    }
    let buses: Vec<&str> = inv.gpus.iter().map(|g| g.pci_bus_id.as_str()).collect();
    assert_eq!(
        buses,
        [
            "00000000:1A:00.0",
            "00000000:1B:00.0",
            "00000000:4A:00.0",
            "00000000:4B:00.0",
            "00000000:8A:00.0",
            "00000000:8B:00.0",
            "00000000:CA:00.0",
            "00000000:CB:00.0"
        ]
    );

    let mut temps = Vec::new();
    for _ in 0..4 {
        let samples = src.sample(NOW);
        assert_eq!(samples.len(), 8);
        temps.push(samples[3].temperature_gpu_celsius);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.status, GpuStatus::Ok, "{s:?}");
            assert_eq!(s.uuid, inv.gpus[i].uuid);
            let present = [
                ("temperature_gpu", s.temperature_gpu_celsius.is_some()),
                ("temperature_memory", s.temperature_memory_celsius.is_some()),
                ("power_usage", s.power_usage_milliwatts.is_some()),
                (
                    "power_limit_enforced",
                    s.power_limit_enforced_milliwatts.is_some(),
                ),
                ("total_energy", s.total_energy_millijoules.is_some()),
                ("memory_used", s.memory_used_bytes.is_some()),
                ("memory_total", s.memory_total_bytes.is_some()),
                ("bar1_used", s.bar1_used_bytes.is_some()),
                ("utilization_gpu", s.utilization_gpu_percent.is_some()),
                ("utilization_memory", s.utilization_memory_percent.is_some()),
                (
                    "utilization_encoder",
                    s.utilization_encoder_percent.is_some(),
                ),
                (
                    "utilization_decoder",
                    s.utilization_decoder_percent.is_some(),
                ),
                ("sm_clock", s.sm_clock_mhz.is_some()),
                ("memory_clock", s.memory_clock_mhz.is_some()),
                ("graphics_clock", s.graphics_clock_mhz.is_some()),
                (
                    "sm_clock_applications",
                    s.sm_clock_applications_mhz.is_some(),
                ),
                (
                    "memory_clock_applications",
                    s.memory_clock_applications_mhz.is_some(),
                ),
                ("clock_event_reasons", s.clock_event_reasons.is_some()),
                ("violation_power", s.violation_power_ns.is_some()),
                ("violation_thermal", s.violation_thermal_ns.is_some()),
                ("violation_sync_boost", s.violation_sync_boost_ns.is_some()),
                (
                    "violation_board_limit",
                    s.violation_board_limit_ns.is_some(),
                ),
                (
                    "violation_low_utilization",
                    s.violation_low_utilization_ns.is_some(),
                ),
                (
                    "violation_reliability",
                    s.violation_reliability_ns.is_some(),
                ),
                ("pcie_link_gen", s.pcie_link_gen.is_some()),
                ("pcie_link_width", s.pcie_link_width.is_some()),
                ("pcie_tx", s.pcie_tx_kbps.is_some()),
                ("pcie_rx", s.pcie_rx_kbps.is_some()),
                ("pcie_replay", s.pcie_replay_count.is_some()),
                ("ecc_corrected_volatile", s.ecc_corrected_volatile.is_some()),
                (
                    "ecc_uncorrected_volatile",
                    s.ecc_uncorrected_volatile.is_some(),
                ),
                (
                    "ecc_corrected_aggregate",
                    s.ecc_corrected_aggregate.is_some(),
                ),
                (
                    "ecc_uncorrected_aggregate",
                    s.ecc_uncorrected_aggregate.is_some(),
                ),
                (
                    "remapped_correctable",
                    s.remapped_rows_correctable.is_some(),
                ),
                (
                    "remapped_uncorrectable",
                    s.remapped_rows_uncorrectable.is_some(),
                ),
                ("remapped_pending", s.remapped_rows_pending.is_some()),
                ("remapped_failure", s.remapped_rows_failure.is_some()),
                ("performance_state", s.performance_state.is_some()),
            ];
            let missing: Vec<&str> = present
                .iter()
                .filter(|(_, p)| !p)
                .map(|(n, _)| *n)
                .collect();
            assert!(missing.is_empty(), "GPU {i} lacks {missing:?}");
            // An SXM H100 has no fans, and Hopper remaps rows instead of retiring pages.
            assert_eq!(s.fan_speed_percent, None);
            assert_eq!(s.retired_pages_single_bit, None);
            assert_eq!(s.retired_pages_pending, None);
            assert_eq!(s.nvlinks.len(), 18);
            assert!(
                s.nvlinks
                    .iter()
                    .all(|l| l.active == Some(true) && l.crc_flit_errors == Some(0))
            );
            assert_eq!(s.processes.len(), 1);
            assert_eq!(s.processes[0].pid, 1000 + i as u32);
            assert_eq!(s.processes[0].used_memory_bytes, Some(76_235_669_504));
        }
        let s = &samples[3];
        assert_eq!(s.power_limit_enforced_milliwatts, Some(700_000));
        assert_eq!(s.memory_used_bytes, Some(77_309_411_328));
        assert_eq!(
            (s.sm_clock_mhz, s.memory_clock_mhz),
            (Some(1980), Some(2619))
        );
        assert_eq!(s.temperature_memory_celsius, Some(61));
        assert_eq!(s.performance_state, Some(0));
    }
    // Values that change per read, last one repeating.
    assert_eq!(temps, [Some(47), Some(48), Some(49), Some(49)]);
}

#[test]
fn unsupported_and_forbidden_fields_are_absent_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let _f = fake(&fixture("mixed-notsupported.json"), Some(&log));
    let mut src = open_reading_all();
    let inv = src.inventory(NOW).unwrap();
    assert_eq!(inv.driver.cuda_driver_version, "12.2");
    let (a10, quadro) = (&inv.gpus[0], &inv.gpus[1]);
    assert_eq!(a10.name, "NVIDIA A10");
    assert_eq!(a10.architecture, "Ampere");
    assert_eq!(a10.cuda_compute_capability, "8.6");
    assert_eq!(a10.board_part_number, "");
    assert_eq!(a10.gsp_firmware_version, "");
    assert_eq!(a10.persistence_mode, None);
    assert_eq!(a10.mig_enabled, None);
    assert_eq!(a10.ecc_enabled, Some(false));
    assert_eq!(a10.memory_temperature_max_operating_celsius, None);
    assert_eq!(a10.power_limit_default_milliwatts, Some(150_000));
    assert_eq!(a10.nvlink_count, 0);
    assert_eq!(quadro.architecture, "Turing");
    assert_eq!(quadro.fan_count, Some(1));
    assert_eq!(quadro.nvlink_count, 2);

    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(src.sample(NOW));
    }
    for samples in &all {
        let s = &samples[0];
        assert_eq!(s.status, GpuStatus::Ok);
        assert_eq!(s.temperature_memory_celsius, None);
        assert_eq!(s.power_usage_milliwatts, None);
        assert_eq!(s.total_energy_millijoules, None);
        assert_eq!((s.pcie_tx_kbps, s.pcie_rx_kbps), (None, None));
        assert_eq!(s.utilization_encoder_percent, None);
        assert_eq!(s.violation_board_limit_ns, None);
        assert_eq!(s.violation_low_utilization_ns, None);
        assert_eq!(s.violation_reliability_ns, None);
        assert_eq!(s.remapped_rows_correctable, None);
        assert_eq!(s.remapped_rows_failure, None);
        assert_eq!(s.ecc_corrected_volatile, None, "ECC is off on this GPU");
        assert_eq!(s.ecc_uncorrected_aggregate, None);
        assert_eq!(s.fan_speed_percent, None);
        assert!(s.processes.is_empty());
        assert!(s.nvlinks.is_empty());
        // What the GPU does answer is still there.
        assert_eq!(s.temperature_gpu_celsius, Some(52));
        assert_eq!(s.clock_event_reasons, Some(0x4));
        assert_eq!(s.power_limit_enforced_milliwatts, Some(150_000));
        assert_eq!(s.violation_power_ns, Some(1_250_000_000));

        let q = &samples[1];
        assert_eq!(q.fan_speed_percent, Some(38));
        assert_eq!(q.retired_pages_single_bit, Some(2));
        assert_eq!(q.retired_pages_double_bit, Some(1));
        assert_eq!(q.retired_pages_pending, Some(true));
        assert_eq!(q.remapped_rows_pending, None);
        assert_eq!(q.temperature_memory_celsius, None);
        assert_eq!(q.nvlinks.len(), 2);
    }
    let flits: Vec<_> = all
        .iter()
        .map(|s| s[1].nvlinks[0].crc_flit_errors)
        .collect();
    assert_eq!(flits, [Some(0), Some(3), Some(7), Some(7), Some(7)]);

    // The A10 answers its counters through one nvmlDeviceGetFieldValues call per sample (its
    // HBM temperature, NotSupported, is asked once); the Quadro refuses that call once and is
    // then read field by field (its memory temperature once more, alone).
    drop(src);
    let calls = std::fs::read_to_string(&log).unwrap();
    let count = |f: &str| calls.lines().filter(|l| *l == f).count();
    assert_eq!(count("nvmlDeviceGetFieldValues"), (1 + 5) + 2);
    assert_eq!(count("nvmlDeviceGetTotalEnergyConsumption"), 5);
    assert_eq!(count("nvmlDeviceGetViolationStatus"), 6 * 5);
    assert_eq!(count("nvmlDeviceGetPowerUsage"), 5 + 5);
    assert_eq!(count("nvmlDeviceGetPcieThroughput"), 2 * 5 + 2 * 5);
    assert_eq!(count("nvmlDeviceGetApplicationsClock"), 2 * 5 + 2 * 5);
    // Neither GPU has GPM: asked once each, never sampled.
    assert_eq!(count("nvmlGpmQueryDeviceSupport"), 2);
    assert_eq!(count("nvmlGpmSampleGet"), 0);
    assert!(
        all.iter()
            .flatten()
            .all(|s| s.gpm_sm_active_percent.is_none())
    );
}

/// A field that was NotSupported once is not asked again, in the batched field values and
/// one by one; NoPermission is asked again (it can be granted later). The fixture answers
/// differently on the second read, so a repeated question would show in the readings.
#[test]
fn not_supported_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("flaky.json");
    let ns = r#"{"error": "NOT_SUPPORTED"}"#;
    let np = r#"{"error": "NO_PERMISSION"}"#;
    let fields = format!(
        r#""total_energy": [{ns}, 777], "violation_thermal": [{ns}, 5],
           "temperature_memory": [{ns}, 40], "fan_speed": [{ns}, 50], "fan_count": 1,
           "power_usage": [{np}, 300000]"#
    );
    std::fs::write(
        &fx,
        format!(r#"{{"gpus": [{{{fields}}}, {{"field_values": {ns}, {fields}}}]}}"#),
    )
    .unwrap();
    let _f = fake(&fx, None);
    let mut src = open_reading_all();
    let first = src.sample(NOW);
    for s in &first {
        assert_eq!(s.power_usage_milliwatts, None);
    }
    for _ in 0..3 {
        for s in src.sample(NOW) {
            let gpu = s.index;
            assert_eq!(s.total_energy_millijoules, None, "GPU {gpu}");
            assert_eq!(s.violation_thermal_ns, None, "GPU {gpu}");
            assert_eq!(s.temperature_memory_celsius, None, "GPU {gpu}");
            assert_eq!(s.fan_speed_percent, None, "GPU {gpu}");
            assert_eq!(s.power_usage_milliwatts, Some(300_000), "GPU {gpu}");
            assert_eq!(s.violation_power_ns, Some(1_250_000_000), "GPU {gpu}");
        }
    }
}

#[test]
fn a_lost_gpu_is_reported_lost_while_the_others_keep_reading() {
    let _f = fake(&fixture("gpu-lost.json"), None);
    let mut src = open();
    let inv = src.inventory(NOW).unwrap();
    assert_eq!(inv.gpus.len(), 4);
    let lost_uuid = inv.gpus[2].uuid.clone();

    let statuses = |samples: &[gpufleet_model::GpuSample]| -> Vec<GpuStatus> {
        samples.iter().map(|s| s.status).collect()
    };
    for _ in 0..2 {
        assert_eq!(statuses(&src.sample(NOW)), [GpuStatus::Ok; 4]);
    }
    for _ in 0..3 {
        let samples = src.sample(NOW);
        use GpuStatus::{Lost, Ok};
        assert_eq!(statuses(&samples), [Ok, Ok, Lost, Ok]);
        let lost = &samples[2];
        assert_eq!((lost.index, lost.uuid.as_str()), (2, lost_uuid.as_str()));
        assert!(lost.error.contains("lost"), "{}", lost.error);
        assert_eq!(lost.power_usage_milliwatts, None);
        assert_eq!(lost.temperature_gpu_celsius, None);
        for s in [&samples[0], &samples[1], &samples[3]] {
            assert_eq!(s.power_usage_milliwatts, Some(612_000));
        }
    }
    // The inventory keeps what it knew about the lost GPU.
    let again = src.inventory(NOW).unwrap();
    assert_eq!(again.gpus[2], inv.gpus[2]);
    // Its Xid 79 still arrives (due after two waits on the event set).
    let events: Vec<_> = (0..3).flat_map(|_| src.events(NOW)).collect();
    assert!(
        events
            .iter()
            .any(|e| e.xid == Some(79) && e.gpu_index == Some(2)),
        "{events:?}"
    );
}

#[test]
fn xids_and_ecc_errors_come_from_the_event_set() {
    let _f = fake(&fixture("xid.json"), None);
    let mut src = open();
    let inv = src.inventory(NOW).unwrap();
    let events = src.events(NOW);
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.code.as_str(),
                e.gpu_index,
                e.severity,
                e.source.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                EventKind::Xid,
                "xid.31",
                Some(0),
                Severity::Critical,
                "nvml"
            ),
            (
                EventKind::Nvml,
                "nvml.double_bit_ecc",
                Some(0),
                Severity::Critical,
                "nvml"
            ),
            (
                EventKind::Xid,
                "xid.79",
                Some(1),
                Severity::Critical,
                "nvml"
            ),
        ]
    );
    assert_eq!(events[0].xid, Some(31));
    assert_eq!(events[0].gpu_uuid, inv.gpus[0].uuid);
    assert_eq!(events[0].nvml_event_type, Some(0x8));
    assert!(
        events[2].message.contains("fallen off the bus"),
        "{}",
        events[2].message
    );
    assert!(src.events(NOW).is_empty(), "each event once");
}

#[test]
fn an_xid_in_both_nvml_and_the_kernel_log_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg.txt");
    // Both records are dated NOW (boot + 100 s); GPU 1 sits at 00000000:1B:00.0.
    std::fs::write(
        &kmsg,
        "4,17,100000000,-;NVRM: Xid (PCI:0000:1b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n\
         4,18,100000000,-;NVRM: Xid (PCI:0000:1b:00): 13, Graphics SM Warp Exception\n",
    )
    .unwrap();
    let _f = fake(&fixture("xid.json"), None);
    let reader = KmsgReader::from_text_file(&kmsg, NOW.plus_ms(-100_000));
    let mut src = NvmlSource::open(Some(fake_lib()))
        .unwrap()
        .with_kmsg(Some(reader));
    let events = src.events(NOW);
    let xids: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Xid)
        .map(|e| (e.xid, e.gpu_index, e.source.as_str()))
        .collect();
    assert_eq!(
        xids,
        [
            (Some(79), Some(1), "kmsg"),
            (Some(13), Some(1), "kmsg"),
            (Some(31), Some(0), "nvml"),
        ]
    );
    assert_eq!(events[0].details["pci_bus_id"], "00000000:1B:00.0");
}

#[test]
fn no_event_sets_means_no_nvml_events_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("no-events.json");
    std::fs::write(
        &fx,
        r#"{"event_set": {"error": "NOT_SUPPORTED"}, "gpus": [{"events": [{"type": "xid", "data": 79}]}]}"#,
    )
    .unwrap();
    let _f = fake(&fx, None);
    let mut src = open();
    assert!(src.events(NOW).is_empty());
    assert_eq!(src.sample(NOW)[0].status, GpuStatus::Ok);
}

#[test]
fn a_missing_library_says_to_use_nvml_lib_or_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libnvidia-ml.so.1");
    let err = match NvmlSource::open(Some(&missing)) {
        Ok(_) => panic!("opened a library that does not exist"),
        Err(e) => e,
    };
    assert!(matches!(err, SourceError::LibraryMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("--simulate"), "{msg}");
    assert!(msg.contains("--nvml-lib"), "{msg}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

#[test]
fn a_broken_fixture_fails_init_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("broken.json");
    std::fs::write(&fx, r#"{"gpus": [{"temprature_gpu": 40}]}"#).unwrap();
    let _f = fake(&fx, None);
    let err = NvmlSource::open(Some(fake_lib()))
        .err()
        .expect("init fails");
    assert!(
        matches!(
            err,
            SourceError::Nvml {
                call: "nvmlInit",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Runs inventory, samples and events many times on every fixture with the call log on, and
/// returns every NVML function called.
fn called_functions() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut called = BTreeSet::new();
    for name in [
        "h100-8gpu.json",
        "mixed-notsupported.json",
        "gpu-lost.json",
        "xid.json",
    ] {
        let log = dir.path().join(format!("{name}.log"));
        {
            let _f = fake(&fixture(name), Some(&log));
            let mut src = open();
            for round in 0..25 {
                let now = NOW.plus_ms(round * 1000);
                if round % 10 == 0 {
                    src.inventory(now).unwrap();
                }
                src.sample(now);
                src.events(now);
            }
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("nvmlShutdown"),
            "{name}: the source shuts NVML down when dropped"
        );
        called.extend(text.lines().map(str::to_string));
    }
    called
}

#[test]
fn the_agent_only_calls_read_only_functions() {
    let called = called_functions();
    let changing = gpufleet_tests::state_changing_calls(called.iter().map(String::as_str));
    assert!(
        changing.is_empty(),
        "state-changing NVML calls: {changing:?}"
    );
}

#[test]
fn the_fake_implements_every_function_the_agent_calls() {
    let called = called_functions();
    let implemented: BTreeSet<String> = std::fs::read_to_string(
        gpufleet_tests::repo_root().join("tests/fake-nvml/implemented.txt"),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
    .map(str::to_string)
    .collect();
    let unanswered: Vec<&String> = called.difference(&implemented).collect();
    assert!(
        unanswered.is_empty(),
        "called but not served from fixture data: {unanswered:?}"
    );
    eprintln!(
        "NVML functions the agent calls ({}):\n{}",
        called.len(),
        called.iter().cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Not a pass/fail check: prints how long a full sample of 8 fake GPUs takes
/// (`cargo test -p gpufleet-tests --test fake_nvml sample_timing -- --nocapture`).
#[test]
fn sample_timing() {
    let _f = fake(&fixture("h100-8gpu.json"), None);
    let mut src = open();
    src.inventory(NOW).unwrap();
    src.sample(NOW);
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        src.sample(NOW);
    }
    let per = started.elapsed() / rounds;
    eprintln!(
        "one sample of 8 fake H100s: {:.3} ms ({:.3} ms per GPU)",
        per.as_secs_f64() * 1e3,
        per.as_secs_f64() * 1e3 / 8.0
    );
}

/// The same source against the real driver, on a machine with an NVIDIA GPU:
/// `cargo test -p gpufleet-tests --test fake_nvml real_nvml -- --ignored --nocapture`.
/// Prints what the GPUs answer and how long reads take.
#[test]
#[ignore = "needs an NVIDIA GPU and driver"]
fn real_nvml_smoke() {
    let lib = std::env::var_os("GPUFLEET_NVML_LIB").map(PathBuf::from);
    let started = Instant::now();
    let mut src = NvmlSource::open(lib.as_deref()).expect("NVML opens");
    eprintln!("open: {:?}", started.elapsed());
    let t = Instant::now();
    let inv = src.inventory(UnixMs::now()).unwrap();
    eprintln!("inventory: {:?}\n{:#?}", t.elapsed(), inv);
    assert!(!inv.gpus.is_empty());
    assert!(inv.gpus.iter().all(|g| g.uuid.starts_with("GPU-")));
    assert!(!inv.driver.driver_version.is_empty());
    let mut samples = Vec::new();
    for round in 0..12 {
        let t = Instant::now();
        let s = src.sample(UnixMs::now());
        eprintln!("sample {round}: {:?}", t.elapsed());
        samples = s;
    }
    eprintln!("{samples:#?}");
    assert!(
        samples.iter().all(|s| s.status == GpuStatus::Ok),
        "{samples:?}"
    );
    assert!(samples.iter().all(|s| s.temperature_gpu_celsius.is_some()));
    eprintln!("events: {:?}", src.events(UnixMs::now()));
}

/// GPM needs two samples: the first read takes one and reports nothing, every later read the
/// metrics over the interval since the previous, in the units of `sample.proto`. The two
/// sample buffers per GPU are allocated once and freed at shutdown.
#[test]
fn gpm_metrics_come_from_two_samples_an_interval_apart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let _f = fake(&fixture("h100-8gpu.json"), Some(&log));
    let mut src = open();
    let first = src.sample(NOW);
    assert!(first.iter().all(|s| s.gpm_sm_active_percent.is_none()));
    for round in 1..=5 {
        for s in src.sample(NOW.plus_ms(round * 1000)) {
            assert_eq!(s.gpm_graphics_active_percent, Some(97.5), "GPU {}", s.index);
            assert_eq!(s.gpm_sm_active_percent, Some(86.2));
            assert_eq!(s.gpm_sm_occupancy_percent, Some(36.4));
            assert_eq!(s.gpm_tensor_active_percent, Some(47.1));
            assert_eq!(s.gpm_dram_active_percent, Some(44.8));
            assert_eq!(s.gpm_fp64_active_percent, Some(0.0), "a zero is a value");
            assert_eq!(s.gpm_fp32_active_percent, Some(11.3));
            assert_eq!(s.gpm_fp16_active_percent, Some(8.6));
            assert_eq!(s.gpm_pcie_tx_bytes_per_second, Some(402 << 20));
            assert_eq!(s.gpm_pcie_rx_bytes_per_second, Some(1220 << 20));
            assert_eq!(s.gpm_nvlink_rx_bytes_per_second, Some(81_000 << 20));
            assert_eq!(s.gpm_nvlink_tx_bytes_per_second, Some(80_500 << 20));
        }
    }
    drop(src);
    let calls = std::fs::read_to_string(&log).unwrap();
    let count = |f: &str| calls.lines().filter(|l| *l == f).count();
    assert_eq!(count("nvmlGpmQueryDeviceSupport"), 8);
    assert_eq!(count("nvmlGpmSampleAlloc"), 8 * 2);
    assert_eq!(count("nvmlGpmSampleGet"), 8 * 6);
    assert_eq!(count("nvmlGpmMetricsGet"), 8 * 5);
    assert_eq!(count("nvmlGpmSampleFree"), 8 * 2);
}

/// A GPM metric the GPU refuses alone is absent while the others read; a GPU that refuses
/// GPM sampling (MIG mode on a Hopper) reads no GPM at all and is not asked again.
#[test]
fn gpm_refused_is_absent_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("gpm.json");
    std::fs::write(
        &fx,
        r#"{"gpus": [
            {"gpm_any_tensor_util": {"error": "NOT_SUPPORTED"}},
            {"gpm_supported": true, "mig_mode": true},
            {"gpm_supported": {"error": "NO_PERMISSION"}}
        ]}"#,
    )
    .unwrap();
    let log = dir.path().join("calls.log");
    let _f = fake(&fx, Some(&log));
    let mut src = open();
    for round in 0..4 {
        let s = src.sample(NOW.plus_ms(round * 1000));
        assert!(s.iter().all(|g| g.status == GpuStatus::Ok));
        if round > 0 {
            assert_eq!(s[0].gpm_tensor_active_percent, None);
            assert_eq!(s[0].gpm_sm_active_percent, Some(86.2));
        }
        assert_eq!(s[1].gpm_sm_active_percent, None);
        assert_eq!(s[2].gpm_sm_active_percent, None);
        assert_eq!(s[2].temperature_gpu_celsius, Some(52));
    }
    drop(src);
    let calls = std::fs::read_to_string(&log).unwrap();
    let count = |f: &str| calls.lines().filter(|l| *l == f).count();
    assert_eq!(count("nvmlGpmQueryDeviceSupport"), 3);
    // GPU 0 every round, GPU 1 once (NotSupported is not asked again), GPU 2 never.
    assert_eq!(count("nvmlGpmSampleGet"), 4 + 1);
}

/// What ships: counters and slow fields are read every `slow_interval` (10 s) and repeated in
/// between; fast readings every sample.
#[test]
fn slow_fields_are_read_every_slow_interval_and_repeated_between() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("counting.json");
    std::fs::write(
        &fx,
        r#"{"gpus": [{"total_energy": [100, 200, 300], "temperature_gpu": [40, 41, 42, 43],
                       "pcie_replay": [0, 5, 9]}]}"#,
    )
    .unwrap();
    let log = dir.path().join("calls.log");
    let _f = fake(&fx, Some(&log));
    let mut src = open();
    assert_eq!(DEFAULT_SLOW_INTERVAL, Duration::from_secs(10));
    let mut seen = Vec::new();
    for t in 0..25 {
        let s = src.sample(NOW.plus_ms(t * 1000)).remove(0);
        seen.push((
            s.total_energy_millijoules,
            s.pcie_replay_count,
            s.temperature_gpu_celsius,
            s.nvlinks.len(),
            s.processes.len(),
        ));
    }
    assert_eq!(seen[0], (Some(100), Some(0), Some(40), 18, 1));
    assert_eq!(
        seen[9],
        (Some(100), Some(0), Some(43), 18, 1),
        "held, not absent"
    );
    assert_eq!(seen[10], (Some(200), Some(5), Some(43), 18, 1));
    assert_eq!(seen[20], (Some(300), Some(9), Some(43), 18, 1));
    drop(src);
    let calls = std::fs::read_to_string(&log).unwrap();
    let count = |f: &str| calls.lines().filter(|l| *l == f).count();
    // Read at 0, 10 and 20 s.
    assert_eq!(count("nvmlDeviceGetNvLinkErrorCounter"), 3 * 18 * 4);
    // (nvml-wrapper asks for the count, then the list.)
    assert_eq!(count("nvmlDeviceGetComputeRunningProcesses_v3"), 3 * 2);
    assert_eq!(count("nvmlDeviceGetTotalEccErrors"), 3 * 4);
    assert_eq!(count("nvmlDeviceGetPcieThroughput"), 3 * 2);
    // Every sample.
    assert_eq!(count("nvmlDeviceGetTemperature"), 25);
    assert_eq!(count("nvmlDeviceGetPowerUsage"), 25);
}
