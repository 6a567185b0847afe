//! The agent's on-disk spool: whatever a segment file holds, opening the spool does not panic
//! and the spool opens again afterwards.
#![no_main]

use gpufleet_agent::spool::Spool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("00000000000000000001.seg"), data).is_err() {
        return;
    }
    if let Ok((spool, _recovered)) = Spool::open(dir.path(), 0, "fuzz") {
        drop(spool);
        Spool::open(dir.path(), 0, "fuzz").expect("a spool it wrote opens again");
    }
});
