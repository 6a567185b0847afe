//! Compiles `proto/gpufleet/v1/*.proto` with protox (a protobuf compiler in Rust), so the build
//! needs no system `protoc`. The file descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/gpufleet/v1/telemetry.proto",
    "proto/gpufleet/v1/inventory.proto",
    "proto/gpufleet/v1/sample.proto",
    "proto/gpufleet/v1/event.proto",
    "proto/gpufleet/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("gpufleet_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
