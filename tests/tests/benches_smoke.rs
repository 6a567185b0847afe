//! The bench binaries run briefly in CI (tiny sizes) so they never rot; their numbers come
//! from full runs by hand (BENCHMARKS.md). These tests check that each run works end to end and
//! reports what it promises, never how fast.

use std::process::Command;

use gpufleet_tests::{binaries, installed};

/// Runs a bench that ends with a JSON summary line; its stdout and that line, or a failure
/// with both output streams.
fn summary(bench: &str, cmd: &mut Command) -> (String, serde_json::Value) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {bench}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bench} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{bench} printed no JSON summary line:\n{stdout}"));
    (stdout, json)
}

#[test]
fn ingest_load_drives_a_real_collector_and_reports_every_figure() {
    binaries(); // gpufleet serve, built as it ships
    let (stdout, json) = summary(
        "ingest-load",
        Command::new(env!("CARGO_BIN_EXE_ingest-load")).args([
            "--nodes",
            "20",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--json",
        ]),
    );
    assert_eq!(json["errors"], 0, "{stdout}");
    assert!(
        json["gpu_samples_per_s"].as_f64().unwrap() > 0.0,
        "{stdout}"
    );
    for key in [
        "collector_cpu_us_per_gpu_sample",
        "collector_peak_rss_kib_per_gpu",
        "ack_p99_ms",
        "loadgen_cpu_us_per_gpu_sample",
    ] {
        assert!(json[key].as_f64().is_some(), "{key} missing in {stdout}");
    }
}

#[test]
fn ingest_stages_measures_each_stage_and_the_chunk() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingest-stages"))
        .arg("20")
        .output()
        .expect("running ingest-stages");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in ["protobuf decode", "chunk of 120 samples", "chunk decode"] {
        assert!(stdout.contains(line), "{line:?} missing in {stdout}");
    }
}

#[test]
fn storage_compare_stores_one_fleet_three_ways_and_counts_every_sample() {
    if !installed("promtool", "prometheus") || !installed("victoria-metrics", "victoria-metrics") {
        return;
    }
    // The bench itself fails when a store holds other than every sample written to it.
    let (stdout, json) = summary(
        "storage-compare",
        Command::new(env!("CARGO_BIN_EXE_storage-compare"))
            .args(["--nodes", "1", "--hours", "0.1", "--json"]),
    );
    assert_eq!(json["gpu_samples"], 360 * 8, "{stdout}");
    for key in [
        "gpufleet_all_fields_b_per_gpu_sample",
        "gpufleet_same_fields_b_per_gpu_sample",
        "prometheus_b_per_gpu_sample",
        "victoriametrics_b_per_gpu_sample",
    ] {
        assert!(
            json[key].as_f64().is_some_and(|b| b > 0.0),
            "{key} in {stdout}"
        );
    }
    assert!(stdout.contains("largest columns"), "{stdout}");
}
