//! The standard `process_*` series (the names every Prometheus client library uses) for this
//! process, read from `/proc/self` at scrape time. Where `/proc` cannot be read (not Linux),
//! they are left out rather than reported as 0.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        parse_stat(&stat, btime, tick.max(1) as f64, page.max(1) as u64).map(|mut s| {
            s.open_fds = open_fds;
            s
        })
    }
}

/// Parses `/proc/self/stat` (fields after the parenthesised command name, which may hold
/// spaces).
fn parse_stat(stat: &str, btime: f64, tick: f64, page: u64) -> Option<ProcessStats> {
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcessStats {
        cpu_seconds: (num(14)? + num(15)?) as f64 / tick,
        start_time_seconds: btime + num(22)? as f64 / tick,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page,
        open_fds: None,
    })
}

pub fn encode(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(p) = ProcessStats::read() else {
        return Ok(());
    };
    enc.encode_descriptor(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        None,
        MetricType::Counter,
    )?
    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(&p.cpu_seconds, None)?;
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, help, v) in gauges {
        enc.encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&v)?;
    }
    if let Some(fds) = p.open_fds {
        enc.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(fds as i64))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_name_with_spaces() {
        let stat = "4242 (gpufleet (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 150 0 0 20 0 9 0 1000 104857600 2560 18446744073709551615";
        let s = parse_stat(stat, 1_700_000_000.0, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn this_process_can_be_read() {
        if cfg!(target_os = "linux") {
            let s = ProcessStats::read().expect("/proc/self");
            assert!(s.resident_bytes > 0 && s.open_fds.unwrap() > 0);
        }
    }
}
