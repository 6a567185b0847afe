//! The driver-stack host part over the real agent binary: the fake NVML library for the GPUs,
//! and procfs / sysfs / root-filesystem fixture trees (`tests/fixtures/{procfs,sysfs,rootfs}`,
//! real layouts) for the kernel modules, libraries, daemons and Fabric Manager.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, copy_tree_into, fake_nvml_lib, free_port, nvml_fixture, repo_root, run, serve,
    wait_for_findings,
};

fn fixture(kind: &str) -> PathBuf {
    let name = if kind == "sysfs" {
        "hgx-h100-8x-ndr"
    } else {
        "hgx-h100"
    };
    repo_root().join("tests/fixtures").join(kind).join(name)
}

/// The three trees copied into one temporary directory to break (symlinks kept).
fn copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["procfs", "sysfs", "rootfs"] {
        copy_tree_into(&fixture(kind), &dir.path().join(kind));
    }
    dir
}

fn roots(cmd: &mut std::process::Command, procfs: &Path, sysfs: &Path, root: &Path) {
    cmd.arg("--procfs-root")
        .arg(procfs)
        .arg("--sysfs-root")
        .arg(sysfs)
        .arg("--host-root")
        .arg(root)
        .arg("--nvml-lib")
        .arg(fake_nvml_lib())
        .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
        .arg("--kmsg-path")
        .arg(repo_root().join("tests/fixtures/kmsg/hgx-h100.txt"))
        .env("GPUFLEET_CONFIG", "/dev/null");
}

fn probe(procfs: &Path, json: bool) -> String {
    let mut cmd = agent();
    cmd.args(["probe", "--window", "100ms"]);
    roots(&mut cmd, procfs, &fixture("sysfs"), &fixture("rootfs"));
    if json {
        cmd.arg("--json");
    }
    String::from_utf8(run(&mut cmd, true).stdout).unwrap()
}

#[test]
fn probe_shows_the_driver_stack_of_an_hgx_node() {
    let text = probe(&fixture("procfs"), false);
    assert!(
        text.contains(
            "driver stack: kernel module 550.54.15, libcuda 550.54.15, libnvidia-ml 550.54.15, \
             4 NVSwitches, Fabric Manager 550.54.15"
        ),
        "{text}"
    );
    for m in [
        "nvidia",
        "nvidia_drm",
        "nvidia_modeset",
        "nvidia_peermem",
        "nvidia_uvm",
    ] {
        assert!(
            text.contains(&format!("module {m}: 550.54.15 (Live)")),
            "{m}:\n{text}"
        );
    }
    assert!(!text.contains("module ib_core"), "{text}");
    assert!(
        text.contains("daemons: nvidia-persistenced running, nv-fabricmanager running"),
        "{text}"
    );
    assert!(!text.contains("Not available on this machine"), "{text}");

    let v: serde_json::Value = serde_json::from_str(&probe(&fixture("procfs"), true)).unwrap();
    let d = &v["inventory"]["host"]["driver_stack"];
    assert_eq!(d["modules"].as_array().unwrap().len(), 5);
    assert_eq!(d["nvswitch_count"], 4);
    assert_eq!(v["sample"]["host"]["driver_daemons"]["persistenced"], true);
}

#[test]
fn probe_says_plainly_when_procfs_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let text = probe(empty.path(), false);
    assert!(text.contains("Not available on this machine"), "{text}");
    assert!(
        text.contains("driver-stack: cannot read") && text.contains("modules"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&probe(empty.path(), true)).unwrap();
    let sources: Vec<&str> = v["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["source"].as_str())
        .collect();
    assert!(sources.contains(&"driver-stack"), "{sources:?}");
}

/// `nvidia_peermem` unloaded, the user-space libraries upgraded under a running driver, and
/// Fabric Manager stopped: the collector names all three on the right node, from the real
/// agent reading the kernel's files.
#[test]
fn a_missing_module_a_library_mismatch_and_fabric_manager_down_are_diagnosed() {
    let trees = copies();
    let (procfs, sysfs, root) = (
        trees.path().join("procfs"),
        trees.path().join("sysfs"),
        trees.path().join("rootfs"),
    );
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
        "--inventory-interval",
        "1s",
        "--node-name",
        "hgx-08",
    ])
    .arg("--state-dir")
    .arg(state.path())
    .args(["--collector", &url]);
    roots(&mut cmd, &procfs, &sysfs, &root);
    let mut a = Proc::spawn(cmd, "agent hgx-08");
    // Healthy first, then the faults, as the kernel and the package manager would leave them.
    std::thread::sleep(Duration::from_secs(2));
    let modules = std::fs::read_to_string(procfs.join("modules")).unwrap();
    let kept: Vec<&str> = modules
        .lines()
        .filter(|l| !l.starts_with("nvidia_peermem "))
        .collect();
    std::fs::write(procfs.join("modules"), kept.join("\n") + "\n").unwrap();
    let libs = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::write(libs.join("libcuda.so.550.90.07"), "").unwrap();
    std::fs::remove_file(libs.join("libcuda.so.1")).unwrap();
    std::os::unix::fs::symlink("libcuda.so.550.90.07", libs.join("libcuda.so.1")).unwrap();
    std::fs::remove_dir_all(procfs.join("2290")).unwrap();

    let [missing, mismatch, fm] = wait_for_findings(
        &url,
        "hgx-08",
        [
            "driver.module_missing",
            "driver.version_mismatch",
            "driver.fabricmanager_down",
        ],
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("not diagnosed:\n{}\n{}", collector.log(), a.log()));
    let summary = |f: &serde_json::Value| f["summary"].as_str().unwrap().to_string();
    assert!(
        summary(&missing).contains("nvidia_peermem not loaded")
            && summary(&missing).contains("10 RDMA devices"),
        "{missing}"
    );
    assert!(
        summary(&mismatch).contains("kernel driver 550.54.15, but libcuda 550.90.07"),
        "{mismatch}"
    );
    assert!(summary(&fm).contains("4 NVSwitches"), "{fm}");
    assert!(a.terminate(Duration::from_secs(10)).is_some());
    assert!(collector.terminate(Duration::from_secs(10)).is_some());
}
