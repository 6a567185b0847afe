//! Compliance policy files (`--policy`, an Audit request's `policy_toml`): a bad one is an
//! error naming the file and, when it knows it, a line that exists.
#![no_main]

use gpufleet_collector::compliance::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.toml") {
        Ok(p) => {
            let _ = p.describe();
        }
        Err(e) => {
            assert!(e.to_string().starts_with("policy fuzz.toml"), "{e}");
            if let Some(line) = e.line {
                assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "{e}");
            }
        }
    }
});
