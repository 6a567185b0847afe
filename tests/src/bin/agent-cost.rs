//! Benchmark: the agent's own CPU per sample beyond NVML — sampling through `NvmlSource` (the
//! fake NVML library, 8-GPU H100 fixture) and the host source, local detection, and the
//! uplink's work per sample (sealing the batch, converting it to protobuf, encoding it) —
//! over N samples 1 s apart in virtual time, with the shipped read cadence.
//!
//!   cargo run --release -p gpufleet-tests --bin agent-cost -- [SAMPLES]
//!
//! CPU is the sampling thread's (getrusage RUSAGE_THREAD); the time spent inside NVML calls
//! (`NodeAgent::gpu_read_time`) is subtracted to give the agent's own work. Also prints heap
//! allocations per sample (a counting global allocator) and the encoded batch size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use gpufleet_agent::detect::{DEFAULT_SATURATION_HOLD, Detector, saturation::Thresholds};
use gpufleet_agent::sampler::NodeAgent;
use gpufleet_agent::sources::host::SysinfoHost;
use gpufleet_agent::sources::nvml::NvmlSource;
use gpufleet_model::convert::Batch;
use gpufleet_model::{NodeIdentity, UnixMs};
use gpufleet_proto::v1 as pb;
use prost::Message;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed local.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

const T0: UnixMs = UnixMs(1_795_975_097_000);

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let fixture = gpufleet_tests::nvml_fixture("h100-8gpu.json");
    // SAFETY: set before any other thread exists; the fake reads it at nvmlInit.
    unsafe {
        std::env::set_var("FAKE_NVML_FIXTURE", &fixture);
        std::env::remove_var("FAKE_NVML_CALL_LOG");
    }
    let lib = gpufleet_tests::fake_nvml_lib();
    let gpu = NvmlSource::open(Some(lib))
        .expect("NvmlSource opens the fake library")
        .with_kmsg(None);
    let host = SysinfoHost::new(&Default::default()).expect("host source");
    let identity = NodeIdentity {
        hostname: "bench-node".into(),
        ..Default::default()
    };
    let detector = Detector::new(None, Thresholds::default(), DEFAULT_SATURATION_HOLD);
    let (mut agent, _) = NodeAgent::new(identity, Box::new(gpu), Box::new(host), detector, T0)
        .expect("agent starts");
    // Warm up: the first tick finds NVLinks and takes GPM's first sample.
    agent.tick(T0);

    let cpu0 = thread_cpu();
    let nvml0 = agent.gpu_read_time();
    let a0 = ALLOCS.load(Relaxed);
    let mut bytes = 0usize;
    for i in 1..=n {
        let tick = agent.tick(T0.plus_ms(i64::from(i) * 1000));
        // What the uplink does per sample: one batch, sealed (a copy kept until acked),
        // converted and encoded for the stream.
        let batch = Batch {
            sequence: u64::from(i),
            samples: vec![tick.sample],
            events: tick.events,
            inventory: tick.inventory,
            ..Default::default()
        };
        let kept = black_box(batch.clone());
        let wire = pb::Batch::from(batch);
        bytes += black_box(wire.encode_to_vec()).len();
        drop(kept);
    }
    let cpu = thread_cpu() - cpu0;
    let nvml = agent.gpu_read_time() - nvml0;
    let allocs = ALLOCS.load(Relaxed) - a0;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    let own = cpu.saturating_sub(nvml);
    println!(
        "agent, 8 fake H100s + host, {n} samples 1 s apart (slow fields every 10 s):\n  \
         CPU {:.1} µs/sample, of it in NVML calls {:.1} µs, agent's own work {:.1} µs \
         ({:.3} % of a core at 1 Hz)\n  {:.0} allocations per sample, {:.0} B encoded per sample",
        per(cpu),
        per(nvml),
        per(own),
        per(own) / 1e6 * 100.0,
        allocs as f64 / f64::from(n),
        bytes as f64 / f64::from(n),
    );
}
