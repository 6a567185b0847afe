//! The gpufleet wire protocol: the only contract between `gpufleet-agent` and the `gpufleet`
//! collector. The `.proto` files under `proto/gpufleet/v1/` are the source of truth and are
//! documented field by field; this crate only re-exports the code generated from them.
//!
//! Generated types stay at the wire boundary: agent and collector convert them to the domain
//! types of `gpufleet-model` once, with validation.

/// Protocol major version this build speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Where agents and the CLI find the collector unless told otherwise (`gpufleet serve`'s
/// default port, on this machine).
pub const DEFAULT_COLLECTOR_URL: &str = "http://127.0.0.1:50051";

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("gpufleet.v1");

    /// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/gpufleet_descriptor.bin"));
}
