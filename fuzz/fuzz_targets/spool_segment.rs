//! The agent's on-disk spool: whatever a segment file holds, opening the spool does not panic
//! and the spool opens again afterwards.
#![no_main]

use gpufleet_agent::spool::Spool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // On tmpfs where there is one: the spool fsyncs each new segment, which on a disk would
    // hold the fuzzer to a few dozen runs a second.
    let dir = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    };
    let Ok(dir) = dir else {
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
