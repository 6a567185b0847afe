//! An independent gRPC implementation (Python grpcio) talks to the collector: health checks,
//! server reflection, and a Query call built from reflected descriptors only.

use std::process::Command;
use std::time::Duration;

use gpufleet_collector::server::{self, ServerConfig};
use gpufleet_tests::{repo_root, spawn_simulated_agent};

fn python_grpc_available() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.proto_reflection_descriptor_database"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_sees_health_reflection_and_query() {
    if !python_grpc_available() {
        let msg = "skipped: python grpcio not installed (pip install grpcio grpcio-health-checking grpcio-reflection)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; CI must install it"
        );
        println!("{msg}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = server::start(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().into(),
    ))
    .await
    .unwrap();
    // One simulated agent so ListNodes has something to return.
    let running = spawn_simulated_agent(
        "interop-node",
        "h100",
        2,
        gpufleet_agent::uplink::UplinkConfig::new(server.url()),
        Duration::from_millis(200),
    );
    let addr = server.addr.to_string();
    let script = repo_root().join("tests/interop/grpc_check.py");
    let mut last = String::new();
    for _ in 0..50 {
        let out = tokio::process::Command::new("python3")
            .arg(&script)
            .arg(&addr)
            .output()
            .await
            .unwrap();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let services: Vec<&str> = v["services"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s.as_str())
                .collect();
            for s in [
                "gpufleet.v1.Telemetry",
                "gpufleet.v1.Query",
                "grpc.health.v1.Health",
            ] {
                assert!(services.contains(&s), "{s} not in {services:?}");
            }
            if v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "interop-node")
            {
                running.stop().await;
                server.stop().await.unwrap();
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("python client never saw the node: {last}");
}
