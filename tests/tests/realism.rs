//! The fake NVML library's default GPU and the simulator's `h100-sxm-80gb` describe the same
//! GPU as a real H100 80GB HBM3: `tests/fixtures/real/h100-sxm-580.159.04.probe.json` is
//! `gpufleet-agent probe --json` on one (driver 580.159.04), and both stand-ins are read
//! through the same `probe --json`, so the three documents compare field by field and cannot
//! drift apart.

use std::collections::BTreeMap;

use gpufleet_tests::{agent, fake_nvml_lib, repo_root, run};
use serde_json::Value;

const CAPTURE: &str = "tests/fixtures/real/h100-sxm-580.159.04.probe.json";

/// Facts of a GPU model that do not change while it runs, as `probe --json` names them.
const STATIC_FIELDS: &[&str] = &[
    "name",
    "architecture",
    "memory_total_bytes",
    "bar1_total_bytes",
    "inforom_image_version",
    "board_part_number",
    "power_limit_default_milliwatts",
    "power_limit_min_milliwatts",
    "power_limit_max_milliwatts",
    "sm_clock_max_mhz",
    "memory_clock_max_mhz",
    "graphics_clock_max_mhz",
    "temperature_slowdown_celsius",
    "temperature_shutdown_celsius",
    "temperature_max_operating_celsius",
    "memory_temperature_max_operating_celsius",
    "pcie_link_gen_max",
    "pcie_link_width_max",
    "cuda_compute_capability",
    "fan_count",
];

fn capture() -> Value {
    let text = std::fs::read_to_string(repo_root().join(CAPTURE)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `gpufleet-agent probe --json --window 0s <args>`, parsed.
fn probe(args: &[&str], fake_nvml: bool) -> Value {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = agent();
    cmd.args(["probe", "--json", "--window", "0s", "--state-dir"])
        .arg(state.path())
        .args(args)
        // No fixture: the fake serves its default GPU.
        .env_remove("FAKE_NVML_FIXTURE")
        .env_remove("FAKE_NVML_CALL_LOG")
        .env_remove("GPUFLEET_NVML_LIB");
    if fake_nvml {
        cmd.arg("--nvml-lib").arg(fake_nvml_lib());
    }
    let out = run(&mut cmd, true);
    serde_json::from_slice(&out.stdout).expect("probe --json prints JSON")
}

/// `96.00.DA.00.0C` → `96.00.xx.xx.xx`: the VBIOS family and format. The build itself differs
/// from fleet to fleet.
fn vbios_family(v: &str) -> String {
    let parts: Vec<&str> = v.split('.').collect();
    let format_ok = parts.len() == 5
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if format_ok {
        format!("{}.{}.xx.xx.xx", parts[0], parts[1])
    } else {
        format!("not a VBIOS version: {v:?}")
    }
}

/// The static facts of GPU 0 of a probe document.
fn static_facts(doc: &Value) -> BTreeMap<&'static str, Value> {
    let gpu = &doc["inventory"]["gpus"][0];
    let mut facts: BTreeMap<&str, Value> = STATIC_FIELDS
        .iter()
        .map(|f| (*f, gpu.get(*f).cloned().unwrap_or(Value::Null)))
        .collect();
    facts.insert(
        "vbios_version (family)",
        vbios_family(gpu["vbios_version"].as_str().unwrap_or("")).into(),
    );
    facts
}

#[test]
fn the_capture_is_the_h100_the_tests_expect() {
    let real = capture();
    assert_eq!(real["schema"], "gpufleet.probe/v1");
    assert_eq!(real["gpu_source"], "nvml");
    let facts = static_facts(&real);
    assert_eq!(facts["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(facts["memory_total_bytes"], 85_520_809_984_u64);
    assert_eq!(facts["inforom_image_version"], "G520.0200.00.05");
    assert_eq!(facts["board_part_number"], "692-2G520-0200-000");
    assert_eq!(facts["vbios_version (family)"], "96.00.xx.xx.xx");
    assert!(facts.values().all(|v| !v.is_null()), "{facts:#?}");
}

#[test]
fn the_fake_nvml_default_gpu_is_the_captured_h100() {
    let fake = probe(&[], true);
    assert_eq!(fake["gpu_source"], "nvml");
    assert_eq!(fake["inventory"]["gpus"].as_array().map(Vec::len), Some(1));
    assert_eq!(static_facts(&fake), static_facts(&capture()));
}

#[test]
fn the_simulated_h100_is_the_captured_h100() {
    let sim = probe(&["--simulate", "1", "--model", "h100-sxm-80gb"], false);
    assert_eq!(sim["gpu_source"], "simulated");
    assert_eq!(static_facts(&sim), static_facts(&capture()));
}

/// The captured GPU was idle: 72.9 W in P0 at idle clocks (SM 345 MHz, `gpu_idle` reason),
/// no process. The simulator's idle H100 reads the same.
#[test]
fn the_simulated_idle_h100_draws_the_captured_idle_power() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("idle.toml");
    std::fs::write(
        &scenario,
        "name = \"idle\"\n[fleet]\nmodel = \"h100-sxm-80gb\"\nworkload = \"idle\"\n",
    )
    .unwrap();
    let scenario = scenario.to_str().unwrap();
    let sim = probe(&["--simulate", "1", "--scenario", scenario], false);
    let real = capture();
    let watts = |doc: &Value| doc["sample"]["gpus"][0]["power_usage_milliwatts"].as_f64();
    let (sim_w, real_w) = (watts(&sim).unwrap(), watts(&real).unwrap());
    assert!(
        (sim_w - real_w).abs() <= 0.05 * real_w,
        "idle power: simulated {sim_w} mW, real {real_w} mW"
    );
    let (g, r) = (&sim["sample"]["gpus"][0], &real["sample"]["gpus"][0]);
    for field in [
        "utilization_gpu_percent",
        "sm_clock_mhz",
        "memory_clock_mhz",
        "clock_event_reasons",
        "performance_state",
    ] {
        assert_eq!(g[field], r[field], "idle {field}");
    }
}
