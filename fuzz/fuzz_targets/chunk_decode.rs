//! Sample chunks read back from the store: damaged bytes are an error, never a panic; what
//! decodes encodes and decodes again to the same samples.
#![no_main]

use gpufleet_collector::store::chunk::{decode, encode};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(samples) = decode(data) else {
        return;
    };
    let bytes: Vec<Vec<u8>> = samples.iter().map(Message::encode_to_vec).collect();
    let again = decode(&encode(samples)).expect("an encoded chunk decodes");
    let again: Vec<Vec<u8>> = again.iter().map(Message::encode_to_vec).collect();
    assert_eq!(again, bytes, "chunk round trip");
});
