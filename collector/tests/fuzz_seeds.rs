//! The seeds of the `chunk_decode` fuzz target (`fuzz/corpus/chunk_decode/`,
//! docs/fuzzing.md): chunks as the store writes them. The test checks the committed ones still
//! decode to the samples they were made of; `GPUFLEET_WRITE_FUZZ_SEEDS=1` rewrites them.

use std::path::PathBuf;

use gpufleet_collector::store::chunk;
use gpufleet_proto::v1 as pb;
use prost::Message;

/// `n` seconds of a 2-GPU node with NVLinks, a disk, a NIC and per-core CPU; a GPU goes
/// missing half-way, so the chunk holds sparse columns too.
fn samples(n: i64) -> Vec<pb::Sample> {
    (0..n)
        .map(|t| pb::Sample {
            timestamp_unix_ms: 1_760_000_000_000 + t * 1_000,
            gpus: (0..if t < n / 2 { 2 } else { 1 })
                .map(|i| pb::GpuSample {
                    index: i,
                    uuid: format!("GPU-{i}"),
                    status: pb::GpuStatus::Ok as i32,
                    temperature_gpu_celsius: Some(60 + (t % 3) as i32),
                    power_usage_milliwatts: Some(650_000 + (t * 7919 % 5000) as u32),
                    total_energy_millijoules: Some(1_000_000_000 + t as u64 * 650_000),
                    sm_clock_mhz: Some(1980),
                    utilization_gpu_percent: (t % 5 != 0).then_some(97),
                    gpm_sm_active_percent: Some(88.5),
                    nvlinks: (0..4)
                        .map(|l| pb::NvLinkSample {
                            link: l,
                            active: Some(true),
                            replay_errors: Some(u64::from(l)),
                            ..Default::default()
                        })
                        .collect(),
                    processes: vec![pb::GpuProcess {
                        pid: 4242,
                        name: "python".into(),
                        used_memory_bytes: Some(60 << 30),
                    }],
                    ..Default::default()
                })
                .collect(),
            host: Some(pb::HostSample {
                cpu_percent: Some(12.5),
                cpu_per_core_percent: vec![10.0, 15.0, 12.0, 13.0],
                load_average_1m: Some(3.2),
                memory_used_bytes: 100 << 30,
                memory_total_bytes: 2048 << 30,
                disks: vec![pb::DiskSample {
                    mount_point: "/".into(),
                    total_bytes: 1 << 40,
                    available_bytes: (1 << 39) - t as u64,
                }],
                nics: vec![pb::NicSample {
                    name: "eth0".into(),
                    rx_bytes_per_second: 1_000_000 + t as u64,
                    rx_errors: Some(0),
                    speed_mbps: Some(100_000),
                    ..Default::default()
                }],
                uptime_seconds: 86_400 + t as u64,
                ..Default::default()
            }),
        })
        .collect()
}

#[test]
fn committed_chunk_seeds_decode_to_their_samples() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/chunk_decode");
    for n in [1, 10] {
        let path = dir.join(format!("samples-{n}"));
        if std::env::var_os("GPUFLEET_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, chunk::encode(samples(n))).unwrap();
        }
        let blob = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (GPUFLEET_WRITE_FUZZ_SEEDS=1 cargo test -p gpufleet-collector --test fuzz_seeds writes it)", path.display())
        });
        let got: Vec<Vec<u8>> = chunk::decode(&blob)
            .unwrap()
            .iter()
            .map(Message::encode_to_vec)
            .collect();
        let want: Vec<Vec<u8>> = samples(n).iter().map(Message::encode_to_vec).collect();
        assert_eq!(got, want);
    }
}
