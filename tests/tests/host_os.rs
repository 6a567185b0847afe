//! The OS, Ethernet-link and kernel-log parts over the real agent binary, on the HGX fixture
//! trees
//! (`tests/fixtures/sysfs/hgx-h100-8x-ndr` for `/sys/class/net`, `tests/fixtures/procfs/hgx-h100`
//! for file handles, vmstat and the process list), as node_exporter's tests do with
//! `--path.sysfs` / `--path.procfs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpufleet_tests::{
    Proc, agent, copy_tree, fake_nvml_lib, free_port, gpufleet, nvml_fixture, repo_root, run,
    serve, wait_for_findings,
};

fn fixture(kind: &str, name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(kind).join(name)
}

fn probe(sysfs: &Path, procfs: &Path, json: bool) -> String {
    let mut cmd = agent();
    cmd.args(["probe", "--window", "100ms", "--nvml-lib"])
        .arg(fake_nvml_lib())
        .arg("--sysfs-root")
        .arg(sysfs)
        .arg("--procfs-root")
        .arg(procfs)
        .arg("--host-root")
        .arg(fixture("rootfs", "hgx-h100"))
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
fn probe_shows_the_physical_ethernet_ports_and_the_os_counters() {
    let (sys, proc) = (
        fixture("sysfs", "hgx-h100-8x-ndr"),
        fixture("procfs", "hgx-h100"),
    );
    let text = probe(&sys, &proc, false);
    for line in [
        "ethernet eno1: up, 10000 Mb/s, duplex full, carrier changes 2, MTU 1500, PCI 0000:03:00.0",
        "ethernet enp170s0f0np0: up, 200000 Mb/s, duplex full, carrier changes 2, MTU 9000, PCI 0000:aa:00.0",
        "ethernet enp170s0f1np1: up, 200000 Mb/s, duplex full",
        "os: file handles 21504 of 9223372036854775807, pages swapped in 0 out 0, OOM kills 0, processes in D state 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // IPoIB, the bridge and loopback are not Ethernet ports.
    for skipped in ["ethernet ibp24s0", "ethernet docker0", "ethernet lo"] {
        assert!(!text.contains(skipped), "{skipped}:\n{text}");
    }
    assert!(!text.contains("Not available on this machine"), "{text}");

    let v: serde_json::Value = serde_json::from_str(&probe(&sys, &proc, true)).unwrap();
    assert_eq!(v["sample"]["host"]["ethernet"].as_array().unwrap().len(), 3);
    assert_eq!(v["sample"]["host"]["os"]["file_handles"], 21504);
}

#[test]
fn probe_says_which_part_is_missing_and_why() {
    let empty = tempfile::tempdir().unwrap();
    let text = probe(empty.path(), empty.path(), false);
    assert!(text.contains("Not available on this machine"), "{text}");
    assert!(text.contains("ethernet: cannot list "), "{text}");
    assert!(
        text.contains("os: cannot read ") && text.contains("--procfs-root"),
        "{text}"
    );
}

/// The storage port's link dropped, the kernel's file handles nearly gone, the OOM killer at
/// work, a fatal NVSwitch SXid and a disk write error in the kernel log: the collector names
/// all five on the right node, from the real agent reading the kernel's files.
#[test]
fn link_handles_oom_sxid_and_disk_errors_are_diagnosed() {
    let sys = copy_tree(&fixture("sysfs", "hgx-h100-8x-ndr"));
    let proc = copy_tree(&fixture("procfs", "hgx-h100"));
    let kmsg = proc.path().join("kmsg.txt");
    std::fs::copy(repo_root().join("tests/fixtures/kmsg/hgx-h100.txt"), &kmsg).unwrap();
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
        "hgx-08",
        "--nvml-lib",
    ])
    .arg(fake_nvml_lib())
    .arg("--sysfs-root")
    .arg(sys.path())
    .arg("--procfs-root")
    .arg(proc.path())
    .arg("--host-root")
    .arg(fixture("rootfs", "hgx-h100"))
    .arg("--state-dir")
    .arg(state.path())
    .args(["--collector", &url])
    .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
    .arg("--kmsg-path")
    .arg(&kmsg)
    .env("GPUFLEET_CONFIG", "/dev/null");
    let mut a = Proc::spawn(cmd, "agent hgx-08");
    // Healthy first (the port is seen up), then the faults, as the kernel would write them.
    std::thread::sleep(Duration::from_secs(3));
    let nic = sys.path().join("class/net/enp170s0f1np1");
    std::fs::write(nic.join("operstate"), "down\n").unwrap();
    std::fs::write(nic.join("speed"), "-1\n").unwrap();
    std::fs::write(nic.join("duplex"), "unknown\n").unwrap();
    std::fs::write(nic.join("carrier_changes"), "3\n").unwrap();
    std::fs::write(proc.path().join("sys/fs/file-nr"), "2000000\t0\t2097152\n").unwrap();
    let vmstat = std::fs::read_to_string(proc.path().join("vmstat")).unwrap();
    std::fs::write(
        proc.path().join("vmstat"),
        vmstat.replace("oom_kill 0", "oom_kill 1"),
    )
    .unwrap();

    // And the kernel log: a fatal SXid and a write error, stamped now (records count
    // microseconds from boot).
    let uptime_us = (std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1e6) as u64;
    let mut log = std::fs::read_to_string(&kmsg).unwrap();
    log += &format!(
        "3,100,{uptime_us},-;nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 12028, Fatal, Link 46 egress non-posted PRIV error (First)\n\
         3,101,{},-;I/O error, dev nvme1n1, sector 1953525168 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 2\n",
        uptime_us + 1000
    );
    std::fs::write(&kmsg, log).unwrap();

    let [link, files, oom, sxid, storage] = wait_for_findings(
        &url,
        "hgx-08",
        [
            "host.nic.link_down",
            "host.os.file_handles",
            "host.memory.oom_kills",
            "fabric.nvswitch.sxid_fatal",
            "host.kernel.storage_errors",
        ],
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("not diagnosed:\n{}\n{}", collector.log(), a.log()));
    assert_eq!(
        link["summary"], "Ethernet link down: enp170s0f1np1 (PCI 0000:aa:00.1)",
        "{link}"
    );
    assert_eq!(files["severity"], "warning", "{files}");
    assert!(
        files["summary"]
            .as_str()
            .unwrap()
            .starts_with("95.4% of the kernel's file handles allocated (2000000 of 2097152)"),
        "{files}"
    );
    assert!(
        oom["summary"]
            .as_str()
            .unwrap()
            .starts_with("the OOM killer ended 1 process in the last"),
        "{oom}"
    );
    assert_eq!(
        sxid["summary"],
        "fatal NVSwitch SXid: NVSwitch 1 (0000:06:00.0) SXid 12028 (1×); NVML shows all 144 GPU \
         NVLinks active",
        "{sxid}"
    );
    assert_eq!(sxid["severity"], "critical");
    assert_eq!(
        storage["summary"], "storage errors: nvme1n1: I/O error (1×)",
        "{storage}"
    );
    // The boot-time non-fatal SXids of the fixture log are not a finding.
    assert!(
        !run(
            gpufleet().args(["diagnose", "hgx-08", "-o", "json", "--collector", &url]),
            false
        )
        .stdout
        .windows(13)
        .any(|w| w == b"sxid_nonfatal"),
    );
    assert!(a.terminate(Duration::from_secs(10)).is_some());
    assert!(collector.terminate(Duration::from_secs(10)).is_some());
}
