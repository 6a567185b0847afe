//! The gpufleet wire protocol: the only contract between `gpufleet-agent` and the `gpufleet`
//! collector. The `.proto` files under `proto/gpufleet/v1/` are the source of truth and are
//! documented field by field; this crate only re-exports the code generated from them.
//!
//! Generated types stay at the wire boundary: agent and collector convert them to the domain
//! types of `gpufleet-model` once, with validation. [`client`] is how both clients (agent and
//! CLI) reach a collector: address, TLS and bearer token.

pub mod client;

/// Protocol major version this build speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Where agents and the CLI find the collector unless told otherwise (`gpufleet serve`'s
/// default port, on this machine).
pub const DEFAULT_COLLECTOR_URL: &str = "http://127.0.0.1:50051";

/// A collector address as people write it: `http://host:port`, `https://host:port`, or a bare
/// `host:port` (read as `http://`). Anything else is an error that shows the expected form.
pub fn collector_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    let url = match t.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => t.to_string(),
        Some((scheme, _)) => {
            return Err(format!(
                "collector address {text:?} has scheme {scheme:?}; use http://HOST:PORT or https://HOST:PORT"
            ));
        }
        None if !t.is_empty() && !t.contains('/') => format!("http://{t}"),
        None => {
            return Err(format!(
                "{text:?} is not a collector address; use http://HOST:PORT (e.g. {DEFAULT_COLLECTOR_URL})"
            ));
        }
    };
    match url.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => Ok(url),
        _ => Err(format!(
            "collector address {text:?} has no port; use http://HOST:PORT (gpufleet serve listens on 50051 by default)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::collector_url;

    #[test]
    fn addresses_are_read_as_people_write_them() {
        let ok = |s: &str| collector_url(s).unwrap();
        assert_eq!(ok("http://10.0.0.5:50051"), "http://10.0.0.5:50051");
        assert_eq!(
            ok("https://collector.example:443"),
            "https://collector.example:443"
        );
        assert_eq!(ok("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(ok("[::1]:50051"), "http://[::1]:50051");
        assert_eq!(
            ok(super::DEFAULT_COLLECTOR_URL),
            super::DEFAULT_COLLECTOR_URL
        );
        for (bad, says) in [
            ("grpc://x:1", "scheme \"grpc\""),
            ("collector", "no port"),
            ("http://collector", "no port"),
            ("", "not a collector address"),
            ("a/b:1", "not a collector address"),
        ] {
            let e = collector_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("gpufleet.v1");

    /// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/gpufleet_descriptor.bin"));
}
