//! The storage host part over the real agent binary: the fake NVML library for the GPUs, and
//! procfs / sysfs / root-filesystem fixture trees (`tests/fixtures/{procfs,sysfs,rootfs}`, real
//! layouts) for the mounts (`/proc/self/mountinfo`, statfs under `--host-root`) and the NVMe
//! controllers (`/sys/class/nvme`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, copy_tree_into, fake_nvml_lib, free_port, gpufleet, nvml_fixture, repo_root, run,
    serve, wait_for_findings,
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

fn probe(procfs: &Path, extra: &[&str]) -> String {
    let mut cmd = agent();
    cmd.args(["probe", "--window", "100ms"]).args(extra);
    roots(&mut cmd, procfs, &fixture("sysfs"), &fixture("rootfs"));
    String::from_utf8(run(&mut cmd, true).stdout).unwrap()
}

#[test]
fn probe_shows_the_mounts_and_nvme_drives_of_an_hgx_node() {
    let text = probe(&fixture("procfs"), &[]);
    for line in [
        "mount /: ext4 /dev/nvme0n1p2, read-write, statfs ",
        "mount /datasets: nfs4 storage01:/export/datasets, read-write, statfs ",
        "mount /checkpoints: lustre 10.0.0.2@o2ib:10.0.0.3@o2ib:/ckpt, read-write, statfs ",
        "nvme nvme0: SAMSUNG MZ1L21T9HCLS-00A07 firmware GDC7302Q, live, temperature 36.85 °C (critical 84.85 °C), alarm off",
        "nvme nvme1: SAMSUNG MZ1L21T9HCLS-00A07 firmware GDC7302Q, live, temperature 38.85 °C",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    // The local RAID and the pseudo filesystems are not watched by default.
    assert!(
        !text.contains("mount /raid") && !text.contains("mount /sys"),
        "{text}"
    );
    assert!(!text.contains("Not available on this machine"), "{text}");

    let v: serde_json::Value =
        serde_json::from_str(&probe(&fixture("procfs"), &["--json"])).unwrap();
    let mounts = v["sample"]["host"]["storage"]["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 3);
    assert_eq!(mounts[1]["mount_point"], "/datasets");
    assert_eq!(mounts[1]["unresponsive"], false);
    assert!(mounts[1]["total_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(mounts[1]["statfs_latency_ms"].as_f64().is_some(), "{v}");
    let nvme = v["inventory"]["host"]["storage"]["nvme"]
        .as_array()
        .unwrap();
    assert_eq!(nvme[1]["serial"], "S666NE0T812346");
}

#[test]
fn configured_mounts_replace_the_default_and_a_missing_one_says_so() {
    let text = probe(
        &fixture("procfs"),
        &[
            "--watch-mount",
            "/checkpoints",
            "--watch-mount",
            "/scratch/",
        ],
    );
    assert!(text.contains("mount /checkpoints: lustre"), "{text}");
    assert!(text.contains("mount /scratch: not mounted"), "{text}");
    assert!(!text.contains("mount /datasets"), "{text}");

    let mut cmd = agent();
    cmd.args(["probe", "--watch-mount", "datasets"]);
    roots(
        &mut cmd,
        &fixture("procfs"),
        &fixture("sysfs"),
        &fixture("rootfs"),
    );
    let out = run(&mut cmd, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not an absolute path"),
        "{err}"
    );
}

#[test]
fn probe_says_plainly_when_mountinfo_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let text = probe(empty.path(), &[]);
    assert!(
        text.contains("storage: cannot read") && text.contains("mountinfo"),
        "{text}"
    );
    // The NVMe drives are read all the same.
    assert!(text.contains("nvme nvme0: SAMSUNG"), "{text}");
}

/// The Lustre checkpoint mount remounted read-only under a running agent, and an NVMe
/// controller gone dead: the collector names both on the right node, from the real agent
/// reading the kernel's files.
#[test]
fn a_read_only_remount_and_a_dead_nvme_controller_are_diagnosed() {
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
        "hgx-09",
    ])
    .arg("--state-dir")
    .arg(state.path())
    .args(["--collector", &url]);
    roots(&mut cmd, &procfs, &sysfs, &root);
    let mut a = Proc::spawn(cmd, "agent hgx-09");
    // Healthy first (the agent sees the mount read-write), then the faults as the kernel
    // shows them: the Lustre client evicted and remounted read-only, nvme1 given up on.
    std::thread::sleep(Duration::from_secs(2));
    let mountinfo = procfs.join("self/mountinfo");
    let text = std::fs::read_to_string(&mountinfo).unwrap();
    let ro = text.replace(
        "/checkpoints rw,relatime shared:41 - lustre 10.0.0.2@o2ib:10.0.0.3@o2ib:/ckpt rw,",
        "/checkpoints ro,relatime shared:41 - lustre 10.0.0.2@o2ib:10.0.0.3@o2ib:/ckpt ro,",
    );
    assert_ne!(ro, text, "the fixture's /checkpoints line changed");
    std::fs::write(&mountinfo, ro).unwrap();
    std::fs::write(sysfs.join("class/nvme/nvme1/state"), "dead\n").unwrap();

    let [ro, nvme] = wait_for_findings(
        &url,
        "hgx-09",
        ["storage.mount.read_only", "storage.nvme.unhealthy"],
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("not diagnosed:\n{}\n{}", collector.log(), a.log()));
    let summary = |f: &serde_json::Value| f["summary"].as_str().unwrap().to_string();
    assert!(
        summary(&ro)
            .contains("/checkpoints (lustre 10.0.0.2@o2ib:10.0.0.3@o2ib:/ckpt) is read-only"),
        "{ro}"
    );
    assert_eq!(ro["severity"], "critical", "{ro}");
    assert!(summary(&nvme).contains("nvme1 is dead"), "{nvme}");
    // Nothing else about storage: the other mounts and nvme0 are healthy. (The fixture's
    // mount directories statfs the test machine's own disk, so how full it is is that disk's
    // business: storage.mount.full is left out.)
    let out = run(
        gpufleet().args(["diagnose", "hgx-09", "-o", "json", "--collector", &url]),
        true,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut storage: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["rule_id"].as_str())
        .filter(|id| id.starts_with("storage.") && *id != "storage.mount.full")
        .collect();
    storage.sort_unstable();
    assert_eq!(
        storage,
        ["storage.mount.read_only", "storage.nvme.unhealthy"]
    );
    assert!(a.terminate(Duration::from_secs(10)).is_some());
    assert!(collector.terminate(Duration::from_secs(10)).is_some());
}
