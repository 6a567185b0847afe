//! `/metrics` as specified: a populated collector renders every family the golden file lists
//! (name, type, help, label names), in both formats; promtool finds nothing wrong with the
//! gpufleet series; absent readings give no series while counts are present at 0.
//!
//! `GPUFLEET_BLESS=1 cargo test -p gpufleet-collector --test metrics_exposition` rewrites
//! `tests/golden/metrics.txt` after a deliberate change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use gpufleet_collector::diagnose::EngineConfig;
use gpufleet_collector::evaluator::Evaluator;
use gpufleet_collector::fleet::{Fleet, Window};
use gpufleet_collector::metrics::{Metrics, Rejected};
use gpufleet_model::convert::{Batch, Hello};
use gpufleet_model::exposition::Format;
use gpufleet_model::{
    Acs, DriverDaemons, DriverInfo, DriverStackInfo, EthernetPort, Event, EventKind, GpuInfo,
    GpuSample, GpuStatus, HostInfo, HostSample, Inventory, KernelModuleInfo, NodeIdentity,
    NvLinkSample, OsSample, PcieDeviceInfo, PcieDeviceKind, PcieDeviceSample, Sample, Severity,
    StorageInfo, StorageMountSample, StorageNvmeInfo, StorageNvmeSample, StorageSample,
    StuckProcess, UnixMs,
};

const T0: UnixMs = UnixMs(1_780_000_000_000);

fn gpu_info(i: u32) -> GpuInfo {
    GpuInfo {
        index: i,
        name: "NVIDIA H100 80GB HBM3".into(),
        uuid: format!("GPU-0000000{i}-aaaa-bbbb-cccc-000000000000"),
        pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + i),
        vbios_version: "96.00.99.00.01".into(),
        inforom_image_version: "G520.0200.00.05".into(),
        gsp_firmware_version: "550.54.15".into(),
        ..Default::default()
    }
}

/// A GPU that reads every field.
fn full_sample(i: u32) -> GpuSample {
    GpuSample {
        index: i,
        uuid: gpu_info(i).uuid,
        temperature_gpu_celsius: Some(61),
        temperature_memory_celsius: Some(70),
        fan_speed_percent: Some(40),
        power_usage_milliwatts: Some(612_000),
        power_limit_enforced_milliwatts: Some(700_000),
        total_energy_millijoules: Some(9_000_000),
        memory_used_bytes: Some(40 << 30),
        memory_total_bytes: Some(80 << 30),
        bar1_used_bytes: Some(1 << 20),
        utilization_gpu_percent: Some(97),
        utilization_memory_percent: Some(60),
        utilization_encoder_percent: Some(0),
        utilization_decoder_percent: Some(0),
        sm_clock_mhz: Some(1980),
        memory_clock_mhz: Some(2619),
        graphics_clock_mhz: Some(1980),
        sm_clock_applications_mhz: Some(1980),
        memory_clock_applications_mhz: Some(2619),
        clock_event_reasons: Some(0),
        violation_power_ns: Some(0),
        violation_thermal_ns: Some(0),
        violation_sync_boost_ns: Some(0),
        violation_board_limit_ns: Some(0),
        violation_low_utilization_ns: Some(0),
        violation_reliability_ns: Some(0),
        pcie_link_gen: Some(5),
        pcie_link_width: Some(16),
        pcie_tx_kbps: Some(1000),
        pcie_rx_kbps: Some(2000),
        pcie_replay_count: Some(0),
        ecc_corrected_volatile: Some(0),
        ecc_uncorrected_volatile: Some(0),
        ecc_corrected_aggregate: Some(0),
        ecc_uncorrected_aggregate: Some(0),
        retired_pages_single_bit: Some(0),
        retired_pages_double_bit: Some(0),
        retired_pages_pending: Some(false),
        remapped_rows_correctable: Some(0),
        remapped_rows_uncorrectable: Some(0),
        remapped_rows_pending: Some(false),
        remapped_rows_failure: Some(false),
        performance_state: Some(0),
        gpm_graphics_active_percent: Some(97.5),
        gpm_sm_active_percent: Some(86.2),
        gpm_sm_occupancy_percent: Some(36.4),
        gpm_tensor_active_percent: Some(47.1),
        gpm_dram_active_percent: Some(44.8),
        gpm_fp64_active_percent: Some(0.0),
        gpm_fp32_active_percent: Some(11.3),
        gpm_fp16_active_percent: Some(8.6),
        gpm_pcie_tx_bytes_per_second: Some(402 << 20),
        gpm_pcie_rx_bytes_per_second: Some(1220 << 20),
        gpm_nvlink_tx_bytes_per_second: Some(80_500 << 20),
        gpm_nvlink_rx_bytes_per_second: Some(81_000 << 20),
        nvlinks: vec![NvLinkSample {
            link: 0,
            active: Some(true),
            replay_errors: Some(0),
            recovery_errors: Some(0),
            crc_flit_errors: Some(0),
            crc_data_errors: Some(0),
        }],
        ..Default::default()
    }
}

fn hello(node: &str, gpus: u32) -> Hello {
    Hello {
        protocol_version: gpufleet_proto::PROTOCOL_VERSION,
        node: NodeIdentity {
            hostname: node.into(),
            machine_id: format!("m-{node}"),
            boot_id: String::new(),
        },
        agent_version: "0.1.0".into(),
        session_id: format!("s-{node}"),
        inventory: Inventory {
            read_at: T0,
            driver: DriverInfo {
                driver_version: "550.54.15".into(),
                nvml_version: "12.550.54.15".into(),
                cuda_driver_version: "12.4".into(),
            },
            gpus: (0..gpus).map(gpu_info).collect(),
            host: HostInfo {
                os_name: "Ubuntu 22.04.4 LTS".into(),
                kernel_version: "5.15.0-105-generic".into(),
                driver_stack: Some(DriverStackInfo {
                    modules: vec![KernelModuleInfo {
                        name: "nvidia".into(),
                        version: "550.54.15".into(),
                        state: "Live".into(),
                    }],
                    kernel_driver_version: "550.54.15".into(),
                    libcuda_version: "550.54.15".into(),
                    nvswitch_count: 4,
                    ..Default::default()
                }),
                pcie_devices: vec![
                    PcieDeviceInfo {
                        bdf: "0000:18:00.0".into(),
                        kind: PcieDeviceKind::Gpu,
                        vendor_id: 0x10de,
                        device_id: 0x2330,
                        class_code: 0x030200,
                        numa_node: Some(0),
                        max_link_speed_mts: Some(32_000),
                        max_link_width: Some(16),
                        upstream: vec!["0000:15:01.0".into(), "0000:17:01.0".into()],
                        ..Default::default()
                    },
                    PcieDeviceInfo {
                        bdf: "0000:17:01.0".into(),
                        kind: PcieDeviceKind::Bridge,
                        acs: Acs::Control(0x001d),
                        upstream: vec!["0000:15:01.0".into()],
                        ..Default::default()
                    },
                ],
                storage: Some(StorageInfo {
                    nvme: vec![StorageNvmeInfo {
                        name: "nvme0".into(),
                        model: "SAMSUNG MZ1L21T9HCLS-00A07".into(),
                        serial: "S666NE0T812345".into(),
                        firmware_rev: "GDC7302Q".into(),
                        transport: "pcie".into(),
                        address: "0000:c4:00.0".into(),
                    }],
                }),
                ..Default::default()
            },
        },
        gpu_source: "nvml".into(),
        labels: Default::default(),
    }
}

/// Two nodes: one streaming (GPU 0 reads everything, GPU 1 fell off the bus after an Xid 79),
/// one whose agent went away (an offline finding).
fn populated() -> (Arc<Metrics>, UnixMs) {
    let fleet = Arc::new(Fleet::new(Window::default()));
    let evaluator = Arc::new(Evaluator::new(fleet.clone(), EngineConfig::default()));
    let metrics = Arc::new(Metrics::new(fleet.clone(), evaluator.clone()));
    // Alerting registers its delivery series as `gpufleet serve` does (one webhook sink).
    let dir = tempfile::tempdir().unwrap().keep();
    let store: Arc<dyn gpufleet_collector::store::Store> = Arc::new(
        gpufleet_collector::store::sqlite::SqliteStore::open(&dir.join("gpufleet.db")).unwrap(),
    );
    let alerts = gpufleet_collector::alerting::config::AlertsConfig {
        webhooks: vec!["http://127.0.0.1:9/hook".into()],
        ..Default::default()
    };
    let alerting = Arc::new(
        gpufleet_collector::alerting::Alerting::new(alerts, store, fleet.clone()).unwrap(),
    );
    metrics.register_collector(Box::new(gpufleet_collector::metrics::alerts::AlertSeries(
        alerting,
    )));
    // Authentication registers its refusal counters as `gpufleet serve` does.
    gpufleet_collector::metrics::auth::AuthMetrics::default().register(&metrics);

    fleet.on_hello(&hello("gpu-node-01", 2), T0);
    let node2 = hello("gpu-node-02", 1);
    let node2_stream = fleet.claim(&node2).expect("nobody streams as gpu-node-02");
    fleet.on_hello(&node2, T0);
    let mut now = T0;
    for seq in 0..5 {
        now = T0.plus_ms(seq * 1000);
        let mut xid = Event::new(
            now,
            EventKind::Xid,
            Severity::Critical,
            "xid.79",
            "fell off the bus",
        );
        xid = xid.on_gpu(1, &gpu_info(1).uuid);
        xid.xid = Some(79);
        let batch = Batch {
            sequence: seq as u64,
            samples: vec![Sample {
                timestamp: now,
                gpus: vec![
                    full_sample(0),
                    GpuSample::failed(1, &gpu_info(1).uuid, GpuStatus::Lost, "GPU is lost"),
                ],
                host: HostSample {
                    driver_daemons: Some(DriverDaemons {
                        persistenced: true,
                        fabricmanager: false,
                    }),
                    os: Some(OsSample {
                        file_handles: Some(18_000),
                        file_handles_max: Some(2_097_152),
                        pages_swapped_in: Some(10),
                        pages_swapped_out: Some(20),
                        oom_kills: Some(1),
                        uninterruptible: Some(2),
                        stuck: vec![StuckProcess {
                            pid: 4242,
                            comm: "python3".into(),
                            blocked_seconds: 75,
                            wchan: "nfs_wait_bit_killable".into(),
                        }],
                    }),
                    ethernet: vec![EthernetPort {
                        name: "eth0".into(),
                        operstate: "up".into(),
                        speed_mbps: Some(100_000),
                        duplex: "full".into(),
                        carrier_changes: Some(3),
                        pci_address: "0000:2a:00.0".into(),
                        mtu: Some(9000),
                    }],
                    pcie_devices: vec![PcieDeviceSample {
                        bdf: "0000:18:00.0".into(),
                        link_speed_mts: Some(32_000),
                        link_width: Some(16),
                        aer_correctable: Some(3),
                        aer_nonfatal: Some(0),
                        aer_fatal: Some(0),
                    }],
                    storage: Some(StorageSample {
                        mounts: vec![
                            StorageMountSample {
                                mount_point: "/datasets".into(),
                                mounted: true,
                                fstype: "nfs4".into(),
                                source: "storage01:/export/datasets".into(),
                                was_writable: true,
                                statfs_latency_ms: Some(1.5),
                                total_bytes: Some(1 << 50),
                                available_bytes: Some(1 << 48),
                                ..Default::default()
                            },
                            StorageMountSample {
                                mount_point: "/checkpoints".into(),
                                mounted: true,
                                fstype: "lustre".into(),
                                unresponsive: true,
                                ..Default::default()
                            },
                        ],
                        nvme: vec![StorageNvmeSample {
                            name: "nvme0".into(),
                            state: "live".into(),
                            temperature_millicelsius: Some(36_850),
                            temperature_alarm: Some(false),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                },
            }],
            events: if seq == 0 {
                vec![
                    xid,
                    gpufleet_model::kernel_log::classify(
                        "nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)",
                    )
                    .unwrap()
                    .event(now, "kmsg"),
                ]
            } else {
                vec![]
            },
            inventory: None,
            dropped_samples: 0,
            dropped_events: 0,
        };
        fleet.on_batch("gpu-node-01", &batch, now);
        metrics.ingest.batches.inc();
        metrics.ingest.gpu_samples.inc_by(2);
    }
    fleet.on_disconnect("gpu-node-02", node2_stream);
    metrics.ingest.reject(Rejected::Invalid);
    metrics.store_write_seconds.observe(0.003);
    // The engine's hold time passes in virtual time.
    evaluator.evaluate(now);
    let later = now.plus_ms(10 * 60 * 1000);
    evaluator.evaluate(later);
    (metrics, later)
}

/// Family → (type, help, label-name sets) from a classic-format exposition.
fn families(text: &str) -> BTreeMap<String, (String, String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, String, BTreeSet<String>)> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            current = name.to_string();
            out.entry(current.clone()).or_default().1 = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (_, kind) = rest.rsplit_once(' ').unwrap();
            out.entry(current.clone()).or_default().0 = kind.to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let names = match line.split_once('{') {
                Some((_, rest)) => label_names(rest),
                None => String::new(),
            };
            out.entry(current.clone()).or_default().2.insert(names);
        }
    }
    out
}

/// `a="x",b="y\"z"} 1` → `a,b`.
fn label_names(rest: &str) -> String {
    let mut names = Vec::new();
    let mut chars = rest.chars().peekable();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '}' => break,
            '=' => {
                names.push(std::mem::take(&mut name));
                // Skip the quoted value.
                chars.next();
                while let Some(v) = chars.next() {
                    match v {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            ',' => {}
            c => name.push(c),
        }
    }
    names.join(",")
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics.txt")
}

fn golden_text(text: &str) -> String {
    let mut out = String::from(
        "# Every family gpufleet serve exports on /metrics: name, type, help, label names.\n\
         # Checked by collector/tests/metrics_exposition.rs; regenerate after a deliberate\n\
         # change with GPUFLEET_BLESS=1 cargo test -p gpufleet-collector --test metrics_exposition\n",
    );
    for (name, (kind, help, labels)) in families(text) {
        out.push_str(&format!("\n{name} {kind}\n  help: {help}\n"));
        for l in labels {
            out.push_str(&format!("  labels: {{{l}}}\n"));
        }
    }
    out
}

#[test]
fn every_exported_family_matches_the_golden_file() {
    let (metrics, now) = populated();
    let got = golden_text(&metrics.render(Format::Prometheus, now));
    let path = golden_path();
    if std::env::var("GPUFLEET_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "/metrics families changed; if deliberate, rerun with GPUFLEET_BLESS=1.\n--- golden\n+++ now\n{}",
        diff(&want, &got)
    );
}

fn diff(a: &str, b: &str) -> String {
    let a: BTreeSet<&str> = a.lines().collect();
    let b: BTreeSet<&str> = b.lines().collect();
    let mut out = String::new();
    for l in a.difference(&b) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in b.difference(&a) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

fn sample_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn absent_readings_give_no_series_and_counts_start_at_zero() {
    let (metrics, now) = populated();
    let text = metrics.render(Format::Prometheus, now);
    let gpu0 = r#"DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-00000000-aaaa-bbbb-cccc-000000000000",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-01",pci_bus_id="00000000:18:00.0",DCGM_FI_DRIVER_VERSION="550.54.15"}"#;
    assert_eq!(sample_value(&text, gpu0), Some(61.0), "{text}");
    // GPU 1 is lost: no reading, no series (not a fake 0) …
    assert!(
        !text.contains(r#"DCGM_FI_DEV_GPU_TEMP{gpu="1""#),
        "a lost GPU has no temperature"
    );
    // … but its Xid is counted, and the last Xid is its code.
    assert_eq!(
        sample_value(&text, r#"DCGM_FI_DEV_XID_ERRORS{gpu="1""#),
        Some(79.0)
    );
    assert_eq!(
        sample_value(&text, r#"gpufleet_gpu_xid_events_total{gpu="1""#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&text, r#"gpufleet_gpu_xid_events_total{gpu="0""#),
        Some(0.0)
    );
    assert_eq!(
        sample_value(&text, r#"DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS{gpu="0""#),
        Some(0.0)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_ingest_rejected_total{reason="protocol_version"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample_value(&text, "gpufleet_ingest_batches_total"),
        Some(5.0)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_findings_firing{cause="gpu.xid.memory",severity="critical"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_findings_firing{cause="node.agent_offline",severity="warning"}"#
        ),
        Some(2.0),
        "both nodes are silent ten minutes later: {text}"
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_finding_firing{Hostname="gpu-node-02",gpu="",cause="node.agent_offline""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&text, r#"gpufleet_nodes{state="disconnected"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&text, r#"gpufleet_node_connected{Hostname="gpu-node-01"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_node_last_sample_age_seconds{Hostname="gpu-node-01"}"#
        ),
        Some(600.0)
    );
    assert!(sample_value(&text, "process_resident_memory_bytes").unwrap() > 0.0);

    // Storage: a hung mount reads unresponsive and has no latency or size series.
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_storage_mount_statfs_seconds{Hostname="gpu-node-01",mount_point="/datasets"}"#
        ),
        Some(0.0015)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_storage_mount_unresponsive{Hostname="gpu-node-01",mount_point="/checkpoints",fstype="lustre"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(r#"gpufleet_storage_mount_statfs_seconds{Hostname="gpu-node-01",mount_point="/checkpoints""#)
            && !text.contains(r#"gpufleet_storage_mount_size_bytes{Hostname="gpu-node-01",mount_point="/checkpoints""#),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_storage_nvme_temperature_celsius{Hostname="gpu-node-01",controller="nvme0"}"#
        ),
        Some(36.85)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"gpufleet_storage_nvme_live{Hostname="gpu-node-01",controller="nvme0",state="live"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn an_empty_collector_already_serves_every_count_at_zero() {
    let fleet = Arc::new(Fleet::default());
    let evaluator = Arc::new(Evaluator::new(fleet.clone(), EngineConfig::default()));
    let text = Metrics::new(fleet, evaluator).render(Format::Prometheus, T0);
    for family in [
        "gpufleet_ingest_batches_total 0",
        "gpufleet_ingest_gpu_samples_total 0",
        "gpufleet_ingest_rejected_total{reason=\"store_unavailable\"} 0",
        "gpufleet_store_write_seconds_count 0",
        "gpufleet_nodes{state=\"connected\"} 0",
        "gpufleet_compliance_nodes{status=\"violating\"} 0",
        "gpufleet_findings_firing{cause=\"gpu.thermal.hw_slowdown\",severity=\"critical\"} 0",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
}

#[test]
fn openmetrics_keeps_the_names_and_ends_with_eof() {
    let (metrics, now) = populated();
    let om = metrics.render(Format::OpenMetrics, now);
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION unknown\n"));
    assert!(om.contains("# TYPE gpufleet_ingest_batches counter\n"));
    assert!(om.contains("\ngpufleet_ingest_batches_total 5\n"));
    let text = metrics.render(Format::Prometheus, now);
    assert!(text.contains("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"));
    assert!(text.contains("# TYPE gpufleet_ingest_batches_total counter\n"));
    assert!(!text.contains("# EOF"));
}

#[test]
fn the_registration_hook_adds_series_to_every_scrape() {
    use prometheus_client::metrics::counter::Counter;
    let (metrics, now) = populated();
    let deliveries = Counter::<u64>::default();
    metrics.register(
        "gpufleet_test_deliveries",
        "Test deliveries.",
        deliveries.clone(),
    );
    deliveries.inc_by(3);
    let text = metrics.render(Format::Prometheus, now);
    assert_eq!(
        sample_value(&text, "gpufleet_test_deliveries_total"),
        Some(3.0)
    );
}

/// Families that carry dcgm-exporter's label names (`modelName`, …) so they join with the
/// DCGM series: promtool's camelCase complaint about those labels is by design too.
const DCGM_LABELLED: &[&str] = &["gpufleet_gpu_info", "gpufleet_gpu_xid_events_total"];

/// promtool's complaints other than the ones dcgm-exporter's names carry by design.
pub fn promtool_problems(exposition: &str) -> Option<Vec<String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        all.lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("DCGM_FI_"))
            .filter(|l| {
                !(l.ends_with("label names should be written in 'snake_case' not 'camelCase'")
                    && DCGM_LABELLED
                        .iter()
                        .any(|f| l.starts_with(&format!("{f} "))))
            })
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn promtool_finds_nothing_wrong_with_gpufleets_own_series() {
    let (metrics, now) = populated();
    let text = metrics.render(Format::Prometheus, now);
    let Some(problems) = promtool_problems(&text) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required in CI (apt-get install prometheus)"
        );
        eprintln!("skipped: promtool not installed (apt-get install prometheus)");
        return;
    };
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{}",
        problems.join("\n")
    );
}
