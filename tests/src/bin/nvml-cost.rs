//! Benchmark: what reading NVML costs the agent, against the fake NVML library with the 8-GPU
//! H100 fixture (or, with `--nvml-lib PATH`, against a real driver).
//!
//!   cargo run --release -p gpufleet-tests --bin nvml-cost -- [--samples N] [--nvml-lib PATH]
//!
//! Prints (1) ns per call of each NVML function the agent uses, on GPU 0 through nvml-wrapper;
//! (2) one whole 8-GPU sample through `NvmlSource`: every field read, fast fields only (slow
//! ones held), and the steady state at 1 Hz with the shipped cadence, each with the time spent
//! inside NVML and the agent's heap allocations per sample (a counting global allocator; the
//! fake library allocates through its own, uncounted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use gpufleet_agent::sources::GpuSource;
use gpufleet_agent::sources::cadence::Cadence;
use gpufleet_agent::sources::nvml::NvmlSource;
use gpufleet_model::UnixMs;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformancePolicy, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new as u64, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

const T0: UnixMs = UnixMs(1_795_975_097_000);

fn main() {
    let mut samples: u64 = 600;
    let mut lib: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--samples" => samples = args.next().and_then(|v| v.parse().ok()).unwrap_or(samples),
            "--nvml-lib" => lib = args.next().map(PathBuf::from),
            other => {
                eprintln!("nvml-cost: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let lib = match lib {
        Some(l) => l,
        None => {
            let fixture = gpufleet_tests::nvml_fixture("h100-8gpu.json");
            // SAFETY: set before any other thread exists; the fake reads it at nvmlInit.
            unsafe {
                std::env::set_var("FAKE_NVML_FIXTURE", &fixture);
                std::env::remove_var("FAKE_NVML_CALL_LOG");
            }
            gpufleet_tests::fake_nvml_lib().to_path_buf()
        }
    };
    println!("library: {}", lib.display());
    per_function(&lib, (samples * 30).max(1_000));
    per_sample(&lib, samples);
}

/// ns per call of `f`, over `n` calls.
fn time_call<T>(n: u64, mut f: impl FnMut() -> T) -> f64 {
    black_box(f());
    let started = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn per_function(lib: &std::path::Path, n: u64) {
    let nvml = Nvml::builder()
        .lib_path(lib.as_os_str())
        .init()
        .expect("NVML initialises");
    let d = nvml.device_by_index(0).expect("GPU 0");
    let counters: Vec<FieldId> = [
        field_id::NVML_FI_DEV_PERF_POLICY_POWER,
        field_id::NVML_FI_DEV_PERF_POLICY_THERMAL,
        field_id::NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
        field_id::NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
        field_id::NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
        field_id::NVML_FI_DEV_PERF_POLICY_RELIABILITY,
        field_id::NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
        field_id::NVML_FI_DEV_PCIE_REPLAY_COUNTER,
    ]
    .into_iter()
    .map(FieldId)
    .collect();
    let memory_temp = [FieldId(field_id::NVML_FI_DEV_MEMORY_TEMP)];
    println!("\nper NVML call, GPU 0, {n} calls each (ns/call):");
    let rows: Vec<(&str, f64)> = vec![
        (
            "nvmlDeviceGetTemperature",
            time_call(n, || d.temperature(TemperatureSensor::Gpu)),
        ),
        ("nvmlDeviceGetPowerUsage", time_call(n, || d.power_usage())),
        (
            "nvmlDeviceGetEnforcedPowerLimit",
            time_call(n, || d.enforced_power_limit()),
        ),
        (
            "nvmlDeviceGetMemoryInfo_v2",
            time_call(n, || d.memory_info()),
        ),
        (
            "nvmlDeviceGetBAR1MemoryInfo",
            time_call(n, || d.bar1_memory_info()),
        ),
        (
            "nvmlDeviceGetUtilizationRates",
            time_call(n, || d.utilization_rates()),
        ),
        (
            "nvmlDeviceGetEncoderUtilization",
            time_call(n, || d.encoder_utilization()),
        ),
        (
            "nvmlDeviceGetClockInfo",
            time_call(n, || d.clock_info(Clock::SM)),
        ),
        (
            "nvmlDeviceGetCurrentClocksThrottleReasons",
            time_call(n, || d.current_throttle_reasons()),
        ),
        (
            "nvmlDeviceGetCurrPcieLinkGeneration",
            time_call(n, || d.current_pcie_link_gen()),
        ),
        (
            "nvmlDeviceGetPerformanceState",
            time_call(n, || d.performance_state()),
        ),
        (
            "nvmlDeviceGetFieldValues (HBM temperature)",
            time_call(n, || d.field_values_for(&memory_temp)),
        ),
        (
            "nvmlDeviceGetFieldValues (8 counters)",
            time_call(n, || d.field_values_for(&counters)),
        ),
        (
            "nvmlDeviceGetTotalEnergyConsumption",
            time_call(n, || d.total_energy_consumption()),
        ),
        (
            "nvmlDeviceGetViolationStatus",
            time_call(n, || d.violation_status(PerformancePolicy::Power)),
        ),
        (
            "nvmlDeviceGetPcieThroughput",
            time_call(n, || d.pcie_throughput(PcieUtilCounter::Send)),
        ),
        (
            "nvmlDeviceGetPcieReplayCounter",
            time_call(n, || d.pcie_replay_counter()),
        ),
        (
            "nvmlDeviceGetTotalEccErrors",
            time_call(n, || {
                d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            }),
        ),
        (
            "nvmlDeviceGetApplicationsClock",
            time_call(n, || d.applications_clock(Clock::SM)),
        ),
        (
            "nvmlDeviceGetNvLinkState",
            time_call(n, || d.link_wrapper_for(0).is_active()),
        ),
        (
            "nvmlDeviceGetNvLinkErrorCounter",
            time_call(n, || {
                d.link_wrapper_for(0).error_counter(ErrorCounter::DlCrcFlit)
            }),
        ),
        (
            "nvmlDeviceGetComputeRunningProcesses_v3 (x2)",
            time_call(n, || d.running_compute_processes()),
        ),
        (
            "nvmlGpmSampleAlloc+Get+Free",
            time_call(n, || d.gpm_sample().map(drop)),
        ),
    ];
    for (name, ns) in rows {
        println!("  {name:<46} {ns:>9.0}");
    }
}

struct Run {
    per_sample: Duration,
    nvml_per_sample: Duration,
    allocs: f64,
    bytes: f64,
}

/// `n` samples of every GPU, `step_ms` apart.
fn run(src: &mut NvmlSource, start: UnixMs, step_ms: i64, n: u64) -> Run {
    let nvml0 = src.read_time();
    let (a0, b0) = allocs();
    let started = Instant::now();
    for i in 0..n {
        black_box(src.sample(start.plus_ms(i as i64 * step_ms)));
    }
    let wall = started.elapsed();
    let (a1, b1) = allocs();
    Run {
        per_sample: wall / n as u32,
        nvml_per_sample: (src.read_time() - nvml0) / n as u32,
        allocs: (a1 - a0) as f64 / n as f64,
        bytes: (b1 - b0) as f64 / n as f64,
    }
}

fn per_sample(lib: &std::path::Path, n: u64) {
    let mut src = NvmlSource::open(Some(lib))
        .expect("NvmlSource opens")
        .with_kmsg(None);
    let gpus = src.gpu_count();
    src.inventory(T0).expect("inventory");
    // The first sample finds NVLinks, takes GPM's first sample and reads every field.
    src.sample(T0);
    println!("\none sample of all {gpus} GPUs through NvmlSource, {n} samples each:");
    src.set_cadence(Cadence {
        slow_interval: Duration::ZERO,
    });
    let all = run(&mut src, T0.plus_ms(1000), 1000, n);
    src.set_cadence(Cadence::default());
    // Slow fields read once at the start, then held: every later sample is fast-only.
    let fast_start = T0.plus_ms(10_000_000);
    src.sample(fast_start);
    let fast = run(&mut src, fast_start, 0, n);
    let steady = run(&mut src, T0.plus_ms(20_000_000), 1000, n);
    for (label, r) in [
        ("every field (slow fields due)", &all),
        ("fast fields only (slow ones held)", &fast),
        ("steady state at 1 Hz, slow_interval 10 s", &steady),
    ] {
        println!(
            "  {label:<42} {:>8.1} µs/sample ({:>7.1} µs in NVML, {:>5.1} µs/GPU), {:>6.1} allocations ({:>7.0} B) per sample",
            r.per_sample.as_secs_f64() * 1e6,
            r.nvml_per_sample.as_secs_f64() * 1e6,
            r.per_sample.as_secs_f64() * 1e6 / gpus.max(1) as f64,
            r.allocs,
            r.bytes,
        );
    }
}
