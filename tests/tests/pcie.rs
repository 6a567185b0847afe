//! The PCIe host part over the real agent binary: the fake NVML library for the GPUs and the
//! HGX sysfs fixture (`tests/fixtures/sysfs/make-hgx.py`: four PCIe switches with two GPUs and
//! two HCAs each) for the PCI bus.

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

/// The switch port above GPU 0 (`0000:1a:00.0`) and where make-hgx.py puts its ACS Control
/// register (ACS capability at 0x148, control at +6).
const GPU0_PORT: &str = "devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:01.0";
const ACS_CTL_AT: usize = 0x148 + 6;

fn probe(sysfs: &Path, json: bool) -> String {
    let mut cmd = agent();
    cmd.args(["probe", "--window", "100ms", "--nvml-lib"])
        .arg(fake_nvml_lib())
        .arg("--sysfs-root")
        .arg(sysfs)
        .arg("--procfs-root")
        .arg(repo_root().join("tests/fixtures/procfs/hgx-h100"))
        .arg("--host-root")
        .arg(repo_root().join("tests/fixtures/rootfs/hgx-h100"))
        .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
        .env("GPUFLEET_CONFIG", "/dev/null");
    if json {
        cmd.arg("--json");
    }
    String::from_utf8(run(&mut cmd, true).stdout).unwrap()
}

#[test]
fn probe_shows_the_pcie_tree_of_an_hgx_node() {
    let text = probe(&hgx(), false);
    for want in [
        "pcie 0000:1a:00.0 GPU 0: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 0 nonfatal 0 fatal 0, below 0000:17:01.0",
        "pcie 0000:4b:00.0 GPU 3: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 3 nonfatal 0 fatal 0",
        "pcie 0000:cb:00.0 GPU 7: 32 GT/s x16 of 32 GT/s x16, NUMA node 1",
        "pcie 0000:18:00.0 nic mlx5_0: 32 GT/s x16 of 32 GT/s x16, NUMA node 0",
        "pcie 0000:65:00.0 nvme nvme0: 16 GT/s x4 of 16 GT/s x4",
        "pcie 0000:15:01.0 bridge: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 0 nonfatal 0 fatal 0, ACSCtl SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-",
        "pcie 0000:16:00.0 bridge: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 0 nonfatal 0 fatal 0, no ACS",
        "pcie 0000:17:01.0 bridge: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 0 nonfatal 0 fatal 0, ACSCtl SrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-",
    ] {
        assert!(text.contains(want), "want {want:?} in\n{text}");
    }
    assert!(!text.contains("Not available on this machine"), "{text}");

    let v: serde_json::Value = serde_json::from_str(&probe(&hgx(), true)).unwrap();
    let devices = v["inventory"]["host"]["pcie_devices"].as_array().unwrap();
    let kinds = |k: &str| devices.iter().filter(|d| d["kind"] == k).count();
    assert_eq!(
        (
            kinds("Gpu"),
            kinds("NvSwitch"),
            kinds("Nic"),
            kinds("Nvme"),
            kinds("Bridge")
        ),
        (8, 4, 10, 2, 33)
    );
    assert_eq!(
        v["sample"]["host"]["pcie_devices"]
            .as_array()
            .unwrap()
            .len(),
        devices.len()
    );
}

#[test]
fn acs_is_unknown_not_off_when_the_agent_is_not_root() {
    let sys = hgx_copy();
    // What a non-root reader gets: the first 64 bytes of config space.
    let config = sys.path().join(GPU0_PORT).join("config");
    let head = std::fs::read(&config).unwrap()[..64].to_vec();
    std::fs::write(&config, head).unwrap();
    let text = probe(sys.path(), false);
    assert!(
        text.contains("pcie 0000:17:01.0 bridge: 32 GT/s x16 of 32 GT/s x16, NUMA node 0, AER correctable 0 nonfatal 0 fatal 0, ACS unknown (the extended config space is readable only as root)"),
        "{text}"
    );
}

#[test]
fn probe_says_plainly_when_there_is_no_pci_bus() {
    let empty = tempfile::tempdir().unwrap();
    let text = probe(empty.path(), false);
    assert!(
        text.contains("pcie: no ") && text.contains("no PCI bus visible"),
        "{text}"
    );
}

/// ACS redirect left on at the switch port above GPU 0 (set before the agent starts, as a BIOS
/// does), and, while it runs, fatal AER errors on GPU 3 and HCA mlx5_0 retrained at x8: the
/// collector names all three on the right node, port, GPU and HCA, from the real agent reading
/// the kernel's files.
#[test]
fn acs_on_a_switch_port_fatal_aer_errors_and_a_narrow_nic_link_are_diagnosed() {
    let sys = hgx_copy();
    let config = sys.path().join(GPU0_PORT).join("config");
    let mut bytes = std::fs::read(&config).unwrap();
    assert_eq!(
        &bytes[0x148..0x14a],
        &[0x0d, 0x00],
        "ACS is where make-hgx.py writes it"
    );
    // SrcValid ReqRedir CmpltRedir UpstreamFwd, as Linux sets it with an IOMMU on.
    bytes[ACS_CTL_AT..ACS_CTL_AT + 2].copy_from_slice(&0x001du16.to_le_bytes());
    std::fs::write(&config, bytes).unwrap();

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
        "hgx-09",
        "--nvml-lib",
    ])
    .arg(fake_nvml_lib())
    .arg("--sysfs-root")
    .arg(sys.path())
    .arg("--state-dir")
    .arg(state.path())
    .args(["--collector", &url])
    .env("FAKE_NVML_FIXTURE", nvml_fixture("h100-8gpu.json"))
    .env("GPUFLEET_CONFIG", "/dev/null");
    let mut a = Proc::spawn(cmd, "agent hgx-09");
    std::thread::sleep(Duration::from_secs(2));
    let gpu3 = sys
        .path()
        .join("devices/pci0000:47/0000:47:01.0/0000:48:00.0/0000:49:01.0/0000:4b:00.0");
    let fatal = std::fs::read_to_string(gpu3.join("aer_dev_fatal")).unwrap();
    let fatal = fatal.replace("Completion Timeout 0", "Completion Timeout 1");
    let fatal = fatal.replace("TOTAL_ERR_FATAL 0", "TOTAL_ERR_FATAL 1");
    std::fs::write(gpu3.join("aer_dev_fatal"), fatal).unwrap();
    let mlx5_0 = sys
        .path()
        .join("devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0");
    std::fs::write(mlx5_0.join("current_link_width"), "8\n").unwrap();

    let [acs, fatal, link] = wait_for_findings(
        &url,
        "hgx-09",
        [
            "pcie.acs_enabled",
            "pcie.aer.fatal",
            "pcie.link_downtrained",
        ],
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("not diagnosed:\n{}\n{}", collector.log(), a.log()));
    let summary = acs["summary"].as_str().unwrap();
    assert!(
        summary.contains("port 0000:17:01.0") && summary.contains("GPU 0 (0000:1a:00.0)"),
        "{acs}"
    );
    // The other switch ports, and the root ports' own ACS, are not named.
    assert_eq!(acs["evidence"].as_array().unwrap().len(), 1, "{acs}");
    assert_eq!(
        fatal["summary"], "PCIe fatal errors: GPU 3 (0000:4b:00.0) +1",
        "{fatal}"
    );
    assert_eq!(fatal["gpu_index"], 3, "{fatal}");
    assert_eq!(
        link["summary"],
        "PCIe link downtrained: NIC mlx5_0 (0000:18:00.0) at 32 GT/s x8 instead of 32 GT/s x16 \
         (50% of its bandwidth)",
        "{link}"
    );
    assert!(a.terminate(Duration::from_secs(10)).is_some());
    assert!(collector.terminate(Duration::from_secs(10)).is_some());
}
