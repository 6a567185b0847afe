//! Config file text: the agent's and the collector's config files (layered TOML) and the
//! collector's `[alerts]` table.
#![no_main]

use gpufleet_agent::config::AgentConfig;
use gpufleet_collector::alerting::config::AlertsConfig;
use gpufleet_collector::config::CollectorConfig;
use gpufleet_model::config_file::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = ConfigFile::parse(text, "fuzz.toml") {
        if let Ok(a) = file.layer::<AgentConfig>(Default::default()) {
            let _ = a.check();
        }
        if let Ok(c) = file.layer::<CollectorConfig>(Default::default()) {
            let _ = c.check();
        }
    }
    let _ = AlertsConfig::parse_file_text(text, "fuzz.toml");
});
