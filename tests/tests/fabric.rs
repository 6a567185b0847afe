//! The host parts beyond NVML over the real agent binary: the fake NVML library for the GPUs
//! and sysfs fixture trees (`tests/fixtures/sysfs/`, real layouts) for the rest, as
//! node_exporter's tests do with `--path.sysfs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, copy_tree, fake_nvml_lib, free_port, nvml_fixture, repo_root, run, serve,
    wait_for_findings,
};

fn hgx() -> PathBuf {
    repo_root().join("tests/fixtures/sysfs/hgx-h100-8x-ndr")
}

/// A copy of the HGX fixture to break (symlinks kept).
fn hgx_copy() -> tempfile::TempDir {
    copy_tree(&hgx())
}

fn probe(sysfs: &Path, json: bool) -> String {
    let mut cmd = agent();
    cmd.args(["probe", "--window", "100ms", "--nvml-lib"])
        .arg(fake_nvml_lib())
        .arg("--sysfs-root")
        .arg(sysfs)
        // The driver-stack part's trees, so this machine's own /proc does not matter.
        .arg("--procfs-root")
        .arg(repo_root().join("tests/fixtures/procfs/hgx-h100"))
        .arg("--host-root")
        .arg(repo_root().join("tests/fixtures/rootfs/hgx-h100"))
        .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
        .arg("--kmsg-path")
        .arg(repo_root().join("tests/fixtures/kmsg/hgx-h100.txt"))
        .env("GPUFLEET_CONFIG", "/dev/null");
    if json {
        cmd.arg("--json");
    }
    String::from_utf8(run(&mut cmd, true).stdout).unwrap()
}

#[test]
fn probe_shows_every_hca_and_port_of_an_hgx_node() {
    let text = probe(&hgx(), false);
    for i in 0..8 {
        assert!(
            text.contains(&format!(
                "ib mlx5_{i}/1: ACTIVE / LinkUp, InfiniBand, 400 Gb/s, symbol errors 0"
            )),
            "mlx5_{i}:\n{text}"
        );
    }
    assert!(text.contains("ib mlx5_8/1: ACTIVE / LinkUp, Ethernet, 200 Gb/s, symbol errors n/a"));
    assert!(text.contains("hca mlx5_0: MT4129 firmware 28.39.1002, PCI 0000:18:00.0, NUMA node 0"));
    assert!(
        text.contains("cpu governor performance×224 (intel_pstate)")
            && text.contains("THP madvise"),
        "{text}"
    );
    assert!(!text.contains("Not available on this machine"), "{text}");

    let v: serde_json::Value = serde_json::from_str(&probe(&hgx(), true)).unwrap();
    let ports = v["sample"]["host"]["ib_ports"].as_array().unwrap();
    assert_eq!(ports.len(), 10);
    assert_eq!(
        v["inventory"]["host"]["ib_devices"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn probe_says_plainly_when_a_machine_has_no_infiniband() {
    let empty = tempfile::tempdir().unwrap();
    let text = probe(empty.path(), false);
    assert!(text.contains("Not available on this machine"), "{text}");
    assert!(
        text.contains("infiniband: no ") && text.contains("no InfiniBand or RoCE device"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&probe(empty.path(), true)).unwrap();
    // Parts failing at the inventory read come before those failing only in samples.
    let sources: Vec<&str> = v["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["source"].as_str())
        .collect();
    assert_eq!(sources[0], "infiniband");
    for part in ["cpu_config", "pcie"] {
        assert!(sources.contains(&part), "{part} in {sources:?}");
    }
}

/// A port pulled, a link retrained at half rate: the collector names both on the right node
/// and HCA, from the real agent reading the kernel's files.
#[test]
fn a_downed_and_a_downgraded_port_are_diagnosed_on_the_right_hca() {
    let sys = hgx_copy();
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut collector = serve(port, data.path());
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = agent();
    cmd.args([
        "run",
        "--interval",
        "500ms",
        "--node-name",
        "hgx-07",
        "--nvml-lib",
    ])
    .arg(fake_nvml_lib())
    .arg("--sysfs-root")
    .arg(sys.path())
    .arg("--state-dir")
    .arg(state.path())
    .args(["--collector", &url])
    .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
    .arg("--kmsg-path")
    .arg(repo_root().join("tests/fixtures/kmsg/hgx-h100.txt"))
    .env("GPUFLEET_CONFIG", "/dev/null");
    let mut a = Proc::spawn(cmd, "agent hgx-07");
    // Healthy first, then the faults, as the kernel would write them.
    std::thread::sleep(Duration::from_secs(2));
    let p3 = sys.path().join("class/infiniband/mlx5_3/ports/1");
    std::fs::write(p3.join("state"), "1: DOWN\n").unwrap();
    std::fs::write(p3.join("phys_state"), "3: Disabled\n").unwrap();
    std::fs::write(p3.join("counters/link_downed"), "1\n").unwrap();
    let p5 = sys.path().join("class/infiniband/mlx5_5/ports/1");
    std::fs::write(p5.join("rate"), "200 Gb/sec (4X HDR)\n").unwrap();

    let [down, rate] = wait_for_findings(
        &url,
        "hgx-07",
        ["fabric.ib.port_down", "fabric.ib.rate_degraded"],
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("not diagnosed:\n{}\n{}", collector.log(), a.log()));
    assert!(
        down["summary"]
            .as_str()
            .unwrap()
            .contains("mlx5_3/1 (DOWN / Disabled)"),
        "{down}"
    );
    assert!(
        rate["summary"]
            .as_str()
            .unwrap()
            .contains("mlx5_5/1 at 200 Gb/s"),
        "{rate}"
    );
    assert!(a.terminate(Duration::from_secs(10)).is_some());
    assert!(collector.terminate(Duration::from_secs(10)).is_some());
}
