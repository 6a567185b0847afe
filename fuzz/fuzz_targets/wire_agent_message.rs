//! Bytes off the telemetry stream: an `AgentMessage` is decoded, its Hello or Batch goes
//! through the model's validation, and what is accepted converts back to the same thing
//! (compared as Debug text: domain maps are sorted, and a NaN reading equals itself).
#![no_main]

use gpufleet_model::convert::{Batch, Hello};
use gpufleet_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = pb::AgentMessage::decode(data) else {
        return;
    };
    match m.msg {
        Some(pb::agent_message::Msg::Hello(h)) => {
            if let Ok(h) = Hello::try_from(h) {
                let again = Hello::try_from(pb::Hello::from(h.clone()))
                    .expect("an accepted Hello converts back");
                assert_eq!(format!("{again:?}"), format!("{h:?}"), "Hello round trip");
            }
        }
        Some(pb::agent_message::Msg::Batch(b)) => {
            if let Ok(b) = Batch::try_from(b) {
                let again = Batch::try_from(pb::Batch::from(b.clone()))
                    .expect("an accepted Batch converts back");
                assert_eq!(format!("{again:?}"), format!("{b:?}"), "Batch round trip");
            }
        }
        None => {}
    }
});
