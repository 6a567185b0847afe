//! Hardware and driver errors from the kernel log beyond Xids: NVSwitch SXids, PCIe AER
//! reports, block-device and filesystem errors, NIC transmit timeouts, hung tasks
//! ([`gpufleet_model::kernel_log`] classifies the lines). Reads its own handle on `/dev/kmsg`
//! (each opener gets its own position; the NVML source keeps reading Xids from another), so
//! the first read replays the ring buffer and later reads see only new records. A log that
//! cannot be read (no CAP_SYSLOG, `kernel.dmesg_restrict`, no such device in a container) is
//! not an error for the sample: the part is listed as unavailable with the reason.

use std::path::Path;

use gpufleet_model::kernel_log::classify;
use gpufleet_model::{Event, HostInfo, HostSample, UnixMs};

use super::HostPart;
use super::nvml::kmsg::KmsgReader;

pub struct KernelLog {
    reader: KmsgReader,
}

impl KernelLog {
    /// Opens the kernel log at `path` (`/dev/kmsg`, or a file of records).
    pub fn open(path: &Path) -> Self {
        KernelLog {
            reader: KmsgReader::open_path(path),
        }
    }
}

impl HostPart for KernelLog {
    fn name(&self) -> &'static str {
        "kernel_log"
    }

    fn info(&mut self, _info: &mut HostInfo) -> Result<(), String> {
        Ok(())
    }

    fn sample(&mut self, _now: UnixMs, _sample: &mut HostSample) -> Result<(), String> {
        match self.reader.unavailable() {
            Some(why) => Err(why.replace(
                "Xids are seen only through NVML events, and not those from before the agent started",
                "NVSwitch SXids and kernel PCIe, storage and NIC errors are not seen (run the agent with CAP_SYSLOG, or pass --kmsg-path)",
            )),
            None => Ok(()),
        }
    }

    fn events(&mut self, now: UnixMs) -> Vec<Event> {
        let records = self.reader.read_new();
        records
            .iter()
            .filter_map(|r| Some(classify(&r.message)?.event(self.reader.dated(r, now), "kmsg")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{EventKind, Severity};

    #[test]
    fn classifies_new_records_once_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kmsg");
        std::fs::write(
            &log,
            "6,1,1000000,-;Linux version 5.15.0-105-generic\n\
             3,2,38175561,-;nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Data {0x0000002b}\n\
             3,3,38178720,-;nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt\n\
             4,4,39000000,-;NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.\n",
        )
        .unwrap();
        let mut part = KernelLog::open(&log);
        let mut s = HostSample::default();
        part.sample(UnixMs(1), &mut s).unwrap();
        let first = part.events(UnixMs(1));
        assert_eq!(first.len(), 1, "{first:#?}");
        assert_eq!(first[0].kind, EventKind::Kernel);
        assert_eq!(first[0].code, "kernel.sxid.22013");
        assert_eq!(first[0].severity, Severity::Warning);
        assert!(part.events(UnixMs(2)).is_empty(), "each record once");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("3,5,40000000,-;EXT4-fs (md0): Remounting filesystem read-only\n");
        std::fs::write(&log, text).unwrap();
        let later = part.events(UnixMs(3));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].code, "kernel.storage");
        assert_eq!(later[0].details["read_only"], "true");
    }

    #[test]
    fn an_unreadable_log_is_unavailable_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = KernelLog::open(&dir.path().join("no-such-kmsg"));
        let err = part
            .sample(UnixMs(1), &mut HostSample::default())
            .unwrap_err();
        assert!(
            err.contains("no-such-kmsg") && err.contains("CAP_SYSLOG"),
            "{err}"
        );
        assert!(part.events(UnixMs(1)).is_empty());
    }
}
