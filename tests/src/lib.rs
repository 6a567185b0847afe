//! Helpers for end-to-end tests: build and locate the workspace's binaries and the fake NVML
//! library, start them as real processes on loopback, and wait for conditions with a deadline.

pub mod pki;
pub mod receiver;

pub use gpufleet_harness::agents::spawn_simulated_agent;
pub use gpufleet_harness::virtual_fleet;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `target/<profile>` of the running test binary (target/<profile>/deps/<test>), or of a
/// bench binary of this crate (target/<profile>/<bin>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("binaries live in target/<profile>");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// `cargo` as the tests call it: without the variables cargo sets for a test process
/// (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …). Build scripts that watch them (ring's does)
/// would otherwise rerun here and again in the next `cargo test`, rebuilding everything above
/// them twice per run.
fn cargo() -> Command {
    const SET_FOR_TESTS: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_") || SET_FOR_TESTS.contains(&k.as_ref()) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Builds `gpufleet` and `gpufleet-agent` once per test process (cargo does nothing when they
/// are fresh) and returns the directory holding them.
pub fn binaries() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = target_dir();
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
        let mut cmd = cargo();
        cmd.args([
            "build",
            "-q",
            "-p",
            "gpufleet-agent",
            "-p",
            "gpufleet-cli",
            "--bins",
        ]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building the gpufleet binaries failed");
        dir
    })
}

/// Builds the fake NVML library (`tests/fake-nvml`) once per test process and returns the
/// path of its `libnvidia_ml.so`, for `--nvml-lib` or `NvmlSource::open`.
pub fn fake_nvml_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = target_dir();
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
        let mut cmd = cargo();
        cmd.args(["build", "-q", "-p", "fake-nvml"])
            .current_dir(repo_root());
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p fake-nvml");
        assert!(status.success(), "building the fake NVML library failed");
        let lib = dir.join("libnvidia_ml.so");
        assert!(lib.exists(), "{} missing after the build", lib.display());
        lib
    })
}

/// `tests/fixtures/nvml/<name>`: a fixture for the fake NVML library.
pub fn nvml_fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/nvml").join(name)
}

/// The NVML functions in a fake-NVML call log that change GPU state (setters, resets, clears
/// and the like). Event sets are the agent's own listening state, not the GPU's, so
/// `nvmlEventSet*` does not count.
pub fn state_changing_calls<'a>(called: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    const CHANGING: &[&str] = &[
        "Set", "Reset", "Clear", "Freeze", "Modify", "Remove", "Validate", "Create", "Destroy",
    ];
    let mut out: Vec<&str> = called
        .into_iter()
        .filter(|f| !f.starts_with("nvmlEventSet"))
        .filter(|f| CHANGING.iter().any(|w| f.contains(w)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub fn gpufleet() -> Command {
    Command::new(binaries().join("gpufleet"))
}

/// `gpufleet ARGS --collector URL`, run to the end, its output kept.
pub fn query(url: &str, args: &[&str]) -> std::process::Output {
    gpufleet()
        .args(args)
        .args(["--collector", url])
        .output()
        .expect("running gpufleet")
}

pub fn agent() -> Command {
    Command::new(binaries().join("gpufleet-agent"))
}

/// A free loopback port for a server a test starts. Drawn below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default): whatever binds port 0 meanwhile
/// — a collector's `/metrics`, `gpufleet demo`, any outgoing connection — gets its port from
/// that range and so can never take this one before the test's server does. Never the same
/// port twice in one test process (tests run in parallel, and a collector may be restarted
/// on its port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = ephemeral_start().saturating_sub(1).min(32767);
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    loop {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 10_000 + ((seed >> 33) % u64::from(low - 10_000)) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// First port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|p: &u16| *p > 11_000)
        .unwrap_or(32768)
}

/// A child process killed when dropped, with its output captured to files for assertions.
pub struct Proc {
    pub child: Child,
    pub name: String,
    log: tempfile::NamedTempFile,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str) -> Proc {
        let log = tempfile::NamedTempFile::new().expect("temp log file");
        cmd.stdout(Stdio::from(log.reopen().expect("log")))
            .stderr(Stdio::from(log.reopen().expect("log")));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to end on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.exited())
    }

    /// Asks the process to stop (SIGTERM, as a service manager would) and waits up to
    /// `timeout`; kills it if it has not ended by then. Returns how it ended.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            // The shell's built-in `kill`: present even where no kill binary is installed.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -TERM {}", self.child.id())])
                .status();
        }
        let status = self.wait_exit(timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an outside program the test needs is installed (it starts at all). When not,
/// prints `skipped: PROGRAM not installed (apt-get install PACKAGE)`, and fails under
/// `CI=true`, where `.ci/run` installs it first.
pub fn installed(program: &str, package: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is required in CI (apt-get install {package})"
        );
        eprintln!("skipped: {program} not installed (apt-get install {package})");
    }
    found
}

/// Runs a command to completion and returns its output; panics with both streams on failure
/// unless `expect_success` is false.
pub fn run(cmd: &mut Command, expect_success: bool) -> Output {
    let out = cmd.output().expect("running command");
    if expect_success && !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Repository root (for scenario files and fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// `gpufleet serve` on 127.0.0.1:`port` with its database in `data`, as a supervised process.
/// Its `/metrics` goes on a port of the system's choosing, so collectors started in parallel
/// never fight over the default 9400; [`serve_with_metrics`] puts it on a known port.
pub fn serve(port: u16, data: &Path) -> Proc {
    serve_with(port, data, &[])
}

/// [`serve`] with `/metrics` on 127.0.0.1:`metrics_port`.
pub fn serve_with_metrics(port: u16, data: &Path, metrics_port: u16) -> Proc {
    serve_with(
        port,
        data,
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    )
}

/// [`serve`] with more arguments (`--alert-webhook URL`, `--config FILE`, …); without a
/// `--metrics-listen` among them, `/metrics` goes on a port of the system's choosing.
pub fn serve_with(port: u16, data: &Path, args: &[&str]) -> Proc {
    let mut serve = gpufleet();
    serve
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(args)
        // A config file or settings of the machine running the tests must not leak in.
        .env("GPUFLEET_CONFIG", "/dev/null")
        .env_remove("GPUFLEET_METRICS_LISTEN");
    if !args.contains(&"--metrics-listen") {
        serve.args(["--metrics-listen", "127.0.0.1:0"]);
    }
    Proc::spawn(serve, "gpufleet serve")
}

/// Families that carry dcgm-exporter's label names (`modelName`, …) so they join with the
/// DCGM series: promtool's camelCase complaint about those labels is by design.
const DCGM_LABELLED: &[&str] = &["gpufleet_gpu_info", "gpufleet_gpu_xid_events_total"];

/// What `promtool check metrics` finds in `exposition`, less the complaints dcgm-exporter's
/// `DCGM_FI_*` names (and its label names on the families above) carry by design. `None`
/// when promtool is not installed.
pub fn promtool_problems(exposition: &str) -> Option<Vec<String>> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        all.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("DCGM_FI_"))
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

/// A copy of the fixture tree `from` in a new temporary directory (symlinks kept), for a test
/// to break under a running agent.
pub fn copy_tree(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree_into(from, dir.path());
    dir
}

/// Copies the fixture tree `from` into `to` (created if missing), symlinks kept.
pub fn copy_tree_into(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success(), "cp -a {} {}", from.display(), to.display());
}

/// Waits until `gpufleet diagnose NODE` against `url` lists a finding of each cause in `ids` on
/// `node`, and returns them in the order asked; `None` at the time-out.
pub fn wait_for_findings<const N: usize>(
    url: &str,
    node: &str,
    ids: [&str; N],
    timeout: Duration,
) -> Option<[serde_json::Value; N]> {
    wait_for(timeout, || {
        let out = run(
            gpufleet().args(["diagnose", node, "-o", "json", "--collector", url]),
            false,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let findings = v["findings"].as_array()?;
        let found: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                findings
                    .iter()
                    .find(|f| f["rule_id"] == *id && f["node"] == node)
                    .cloned()
            })
            .collect::<Option<_>>()?;
        found.try_into().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changing_calls_are_found_and_event_sets_are_not() {
        let log = [
            "nvmlInit_v2",
            "nvmlEventSetCreate",
            "nvmlDeviceSetPowerManagementLimit",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceResetGpuLockedClocks",
            "nvmlDeviceSetPowerManagementLimit",
            "nvmlEventSetWait_v2",
            "nvmlDeviceClearEccErrorCounts",
        ];
        assert_eq!(
            state_changing_calls(log),
            [
                "nvmlDeviceClearEccErrorCounts",
                "nvmlDeviceResetGpuLockedClocks",
                "nvmlDeviceSetPowerManagementLimit"
            ]
        );
    }
}
